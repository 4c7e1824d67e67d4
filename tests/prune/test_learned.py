import itertools

import pytest
import torch
from hypothesis import given, settings, strategies as st
from torch.nn import functional as F

from overparam.prune import learned as L
from overparam.prune.nm import is_nm, nm_mask


def _mlp(seed=0):
    g = torch.Generator().manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Linear(8, 64), torch.nn.ReLU(), torch.nn.Linear(64, 1))
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * (2 / p.shape[-1]) ** 0.5)
    return net


def test_edge_popup_ste_gradient():
    net = _mlp()
    ep = L.EdgePopup(net, 0.5, generator=1)
    x = torch.randn(16, 8, generator=torch.Generator().manual_seed(2))
    ep(x).square().mean().backward()
    # oracle: gradient w.r.t. the masked weight, times w ⊙ sign(s)
    hard = ep.masks()
    names = ["0.weight", "2.weight"]
    params = dict(net.named_parameters())
    weff = {k: (params[k].detach() * hard[k]).requires_grad_() for k in names}
    out = torch.func.functional_call(net, {**{k: v for k, v in params.items()}, **weff}, (x,))
    gw = torch.autograd.grad(out.square().mean(), [weff[k] for k in names])
    for k, s, g in zip(names, ep.scores, gw):
        torch.testing.assert_close(s.grad, g * params[k].detach() * s.detach().sign())
    assert all(p.grad is None for p in net.parameters())


def test_edge_popup_finds_subnetwork_weights_fixed():
    g = torch.Generator().manual_seed(5)
    x = torch.randn(256, 8, generator=g)
    y = torch.sin(x[:, :1] * 2) + x[:, 1:2]
    net = _mlp(3)
    w0 = {k: v.clone() for k, v in net.state_dict().items()}
    ep = L.EdgePopup(net, 0.5, generator=0)
    opt = torch.optim.SGD(ep.mask_parameters(), lr=0.5, momentum=0.9)
    ep.eval()
    start = F.mse_loss(ep(x), y).item()
    for _ in range(150):
        opt.zero_grad()
        F.mse_loss(ep(x), y).backward()
        opt.step()
    end = F.mse_loss(ep(x), y).item()
    assert end < 0.5 * start
    assert all(torch.equal(w0[k], v) for k, v in net.state_dict().items())  # weights never trained
    assert all(int(m.sum()) == m.numel() // 2 for m in ep.masks().values())


@settings(max_examples=30, deadline=None)
@given(m=st.sampled_from([2, 4, 8]), data=st.data(), seed=st.integers(0, 99), ties=st.booleans())
def test_learnable_nm_always_decodes_valid(m, data, seed, ties):
    n = data.draw(st.integers(1, m - 1))
    net = torch.nn.Linear(2 * m, 3)
    sh = L.LearnableNM(net, n, m, generator=seed)
    with torch.no_grad():
        for lg in sh.logits:
            lg.copy_(torch.randint(0, 2, lg.shape).float() if ties else torch.randn(lg.shape) * 100)
    for mk in sh.masks().values():
        assert is_nm(mk, n, m)
    sm = sh.soft_masks()["weight"]
    assert torch.allclose(sm.reshape(-1, m).sum(1), torch.full((6,), float(n)), atol=1e-5)  # convex comb. of N:M


def test_nm_patterns_exhaustive():
    for n, m in [(1, 2), (2, 4), (3, 8)]:
        P = L.nm_patterns(n, m)
        assert len(P) == len(list(itertools.combinations(range(m), n))) and (P.sum(1) == n).all()
        assert len({tuple(r.tolist()) for r in P}) == len(P)


def test_learnable_nm_learns_best_pattern():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(4, 16, generator=g)
    net = torch.nn.Linear(16, 4, bias=False)
    with torch.no_grad():
        net.weight.copy_(w)
    sh = L.LearnableNM(net, 2, 4, prior=None, tau=0.5, generator=1)
    opt = torch.optim.Adam(sh.mask_parameters(), lr=0.1)
    eye = torch.eye(16)
    for _ in range(200):
        opt.zero_grad()
        loss = -(sh(eye) * w.sign().T).sum()  # = -Σ |w| ⊙ soft mask
        loss.backward()
        opt.step()
    assert torch.equal(sh.masks()["weight"], nm_mask(w.abs(), 2, 4))
    sh.eval()
    assert torch.equal(sh(eye), (w * nm_mask(w.abs(), 2, 4)).T)


def test_learnable_nm_prior_equals_magnitude_mask_and_hard_samples():
    net = torch.nn.Conv2d(8, 2, 3)
    sh = L.LearnableNM(net, 2, 4, hard=True, generator=0)
    assert torch.equal(sh.masks()["weight"], nm_mask(net.weight.detach().abs(), 2, 4))
    s = sh.soft_masks()["weight"]
    assert is_nm(s.detach(), 2, 4)  # hard samples are exact N:M in the forward


def test_learnable_nm_bad_input():
    import pytest

    with pytest.raises(ValueError, match="not divisible"):
        L.LearnableNM(torch.nn.Linear(6, 2), 2, 4)
    with pytest.raises(ValueError, match="1 <= N < M"):
        L.LearnableNM(torch.nn.Linear(8, 2), 4, 4)


def test_learnable_nm_refuses_non_finite_hyperparameters_by_name():
    net = torch.nn.Linear(8, 2)
    for name in ("tau", "scale", "prior_strength"):
        with pytest.raises(ValueError, match=f"{name} must be a finite real number"):
            L.LearnableNM(net, 2, 4, **{name: float("nan")})
    with pytest.raises(ValueError, match="scope"):
        L.EdgePopup(net, 0.5, scope="per_layer")


# ---------------------------------------------------------------- weights trained jointly (train_weights=True)
def _reference_grads(net, masks, x):
    """Hand-written functional_call: every parameter live, masked weights θ ⊙ mask."""
    params = {k: p.detach().clone().requires_grad_() for k, p in net.named_parameters()}
    sub = {k: params[k] * masks[k] if k in masks else params[k] for k in params}
    out = torch.func.functional_call(net, sub, (x,))
    return out, dict(zip(params, torch.autograd.grad(out.square().mean(), list(params.values()))))


def test_edge_popup_joint_gradients_reach_the_weights():
    net = _mlp(7)
    ep = L.EdgePopup(net, 0.5, generator=1, train_weights=True)
    x = torch.randn(16, 8, generator=torch.Generator().manual_seed(2))
    out = ep(x)
    out.square().mean().backward()
    ref_out, ref = _reference_grads(net, ep.masks(), x)
    torch.testing.assert_close(out, ref_out)
    for k, p in net.named_parameters():
        torch.testing.assert_close(p.grad, ref[k])
    assert all(s.grad is not None and bool(s.grad.ne(0).any()) for s in ep.scores)


@pytest.mark.parametrize("hard", [False, True])
def test_learnable_nm_joint_gradients_reach_the_weights(hard):
    net = _mlp(8)
    sh = L.LearnableNM(net, 2, 4, generator=3, hard=hard, train_weights=True)
    x = torch.randn(16, 8, generator=torch.Generator().manual_seed(4))
    sh.eval()                                            # decoded masks: the reference is exact
    sh(x).square().mean().backward()
    _, ref = _reference_grads(net, {k: v.float() for k, v in sh.masks().items()}, x)
    for k, p in net.named_parameters():
        torch.testing.assert_close(p.grad, ref[k])
    net.zero_grad()
    sh.train()                                           # sampled masks: same sample, same gradients
    soft = L.LearnableNM(net, 2, 4, generator=3, hard=hard).soft_masks()
    sh(x).square().mean().backward()
    _, ref = _reference_grads(net, {k: v.detach() for k, v in soft.items()}, x)
    for k, p in net.named_parameters():
        torch.testing.assert_close(p.grad, ref[k])


def test_train_weights_must_be_a_bool_and_default_stays_frozen():
    net = _mlp()
    with pytest.raises(TypeError, match="train_weights must be a bool"):
        L.EdgePopup(net, 0.5, train_weights=1)
    with pytest.raises(TypeError, match="train_weights must be a bool"):
        L.LearnableNM(net, 2, 4, train_weights="yes")
    sh = L.LearnableNM(net, 2, 4, generator=0)
    sh(torch.randn(3, 8)).sum().backward()
    assert all(p.grad is None for p in net.parameters())


@pytest.mark.slow
def test_digits_joint_training_beats_frozen_weight_masks():
    """Reduced size of the digits experiment (full size, 3 seeds: docs/prune.md)."""
    pytest.importorskip("sklearn")
    from _digits import joint_vs_frozen

    r = joint_vs_frozen(0, 200, 200, width=64)
    assert r["joint"] >= r["frozen"] and r["frozen"] >= r["one-shot magnitude"], r
