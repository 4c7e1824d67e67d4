"""AdamAtan2 against a hand-written float64 reference (Python floats, entry by entry), its ε-free
properties (gradient-scale invariance, no NaN at zero gradients), the torch.optim contract, bad input."""

import copy
import math

import pytest
import torch

from overparam.optim import AdamAtan2, NonFiniteGradientError


def reference(x0, grads, lr, betas, wd, a, b):
    """The algorithm of Everett et al. (2024) written out on Python floats."""
    x, m, v = list(x0), [0.0] * len(x0), [0.0] * len(x0)
    b1, b2 = betas
    out = []
    for t, g in enumerate(grads, start=1):
        for i, gi in enumerate(g):
            m[i] = b1 * m[i] + (1 - b1) * gi
            v[i] = b2 * v[i] + (1 - b2) * gi * gi
            mh, vh = m[i] / (1 - b1 ** t), v[i] / (1 - b2 ** t)
            x[i] = x[i] * (1 - lr * wd) - lr * a * math.atan2(mh, b * math.sqrt(vh))
        out.append(list(x))
    return out


@pytest.mark.parametrize("wd,a,b,betas", [(0.0, 4 / math.pi, 1.0, (0.9, 0.999)), (0.1, 1.0, 3.0, (0.5, 0.9)),
                                          (0.0, 2.0, 0.5, (0.0, 0.0))])
def test_matches_the_float64_reference(wd, a, b, betas):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(7, dtype=torch.float64, generator=gen)
    grads = [torch.randn(7, dtype=torch.float64, generator=gen) * 10 ** (-k) for k in range(6)]
    grads[2][3] = 0.0
    want = reference(x.tolist(), [g.tolist() for g in grads], 0.05, betas, wd, a, b)
    p = torch.nn.Parameter(x.clone())
    opt = AdamAtan2([p], lr=0.05, betas=betas, weight_decay=wd, a=a, b=b)
    for g, w in zip(grads, want):
        p.grad = g.clone()
        opt.step()
        torch.testing.assert_close(p.detach(), torch.tensor(w, dtype=torch.float64), rtol=1e-14, atol=1e-15)


def test_eps_free_properties():
    """The same trajectory for gradients ×1e-12 (Adam with ε=1e-8 would barely move), bounded
    steps, zero gradients (Adam with ε=0 gives NaN) move nothing; small |m̂|/√v̂ is Adam's ratio."""
    gen = torch.Generator().manual_seed(1)
    grads = [torch.randn(5, 3, dtype=torch.float64, generator=gen) for _ in range(4)]
    runs = []
    for c in (1.0, 1e-12):
        p = torch.nn.Parameter(torch.zeros(5, 3, dtype=torch.float64))
        opt = AdamAtan2([p], lr=0.01)
        for g in grads:
            p.grad = g * c
            opt.step()
        runs.append(p.detach().clone())
    torch.testing.assert_close(runs[0], runs[1], rtol=1e-12, atol=0)
    assert runs[0].abs().max() <= 4 * 0.01 * 2  # |step| <= lr·a·π/2 = 2·lr
    z = torch.nn.Parameter(torch.ones(3, dtype=torch.float64))
    opt = AdamAtan2([z], lr=0.1)
    z.grad = torch.zeros(3, dtype=torch.float64)
    opt.step()
    assert torch.equal(z.detach(), torch.ones(3, dtype=torch.float64))
    # b large: atan2(m, b√v) ≈ m/(b√v), i.e. Adam (ε = 0) with lr·a/b
    p, q = (torch.nn.Parameter(torch.zeros(4, dtype=torch.float64)) for _ in range(2))
    o1, o2 = AdamAtan2([p], lr=1.0, a=1.0, b=1e6), torch.optim.Adam([q], lr=1e-6, eps=0.0)
    for g in grads[:3]:
        p.grad, q.grad = g.flatten()[:4].clone(), g.flatten()[:4].clone()
        o1.step()
        o2.step()
    torch.testing.assert_close(p.detach(), q.detach(), rtol=1e-9, atol=0)


def test_optimizer_contract_state_dict_groups_closure():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
    x, y = torch.randn(16, 4), torch.randn(16, 1)
    opt = AdamAtan2([{"params": net[0].parameters(), "lr": 1e-2}, {"params": net[2].parameters()}], lr=3e-3,
                    weight_decay=0.01)

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(net(x), y)
        loss.backward()
        return loss

    first = float(opt.step(closure).detach())
    for _ in range(3):
        opt.step(closure)
    twin, state = copy.deepcopy(net), copy.deepcopy(opt.state_dict())
    opt2 = AdamAtan2([{"params": twin[0].parameters(), "lr": 1e-2}, {"params": twin[2].parameters()}], lr=3e-3,
                     weight_decay=0.01)
    opt2.load_state_dict(state)
    rng = torch.random.get_rng_state()
    for _ in range(3):
        opt.step(closure)
        opt2.zero_grad()
        torch.nn.functional.mse_loss(twin(x), y).backward()
        opt2.step()
    assert torch.equal(torch.random.get_rng_state(), rng)
    for p, q in zip(net.parameters(), twin.parameters()):
        assert torch.equal(p, q)
    assert float(closure().detach()) < first
    f32 = torch.nn.Parameter(torch.ones(3))
    o = AdamAtan2([f32])
    f32.grad = torch.ones(3)
    o.step()
    assert f32.dtype == torch.float32 and float(f32[0].detach()) < 1


def test_bad_input():
    p = torch.nn.Parameter(torch.zeros(2))
    for kw, match in ((dict(lr=0.0), "lr"), (dict(lr=float("inf")), "lr"), (dict(weight_decay=-1.0), "weight_decay"),
                      (dict(betas=(0.9, 1.0)), r"betas\[1\]"), (dict(betas=0.9), "betas"), (dict(a=0.0), "a"),
                      (dict(b=-1.0), "b")):
        with pytest.raises(ValueError, match=match):
            AdamAtan2([p], **kw)
    with pytest.raises(TypeError, match="check_finite"):
        AdamAtan2([p], check_finite=1)
    opt = AdamAtan2([p], check_finite=True)
    p.grad = torch.tensor([1.0, float("nan")])
    with pytest.raises(NonFiniteGradientError, match="NaN"):
        opt.step()
    assert torch.equal(p.detach(), torch.zeros(2))
    with pytest.raises(ValueError, match="lr"):
        opt.add_param_group({"params": [torch.nn.Parameter(torch.zeros(1))], "lr": -1.0})
