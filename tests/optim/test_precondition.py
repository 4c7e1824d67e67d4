import copy
import pickle
import warnings

import pytest
import torch
from torch import nn

import overparam as op
from _lora_twins import assert_twins_close, peft_twins  # noqa: E402  (tests/optim helper)
from overparam.backend.linalg import NotPositiveDefiniteError
from overparam.optim import Preconditioned, ScaledGD, precondition_grads_
from overparam.testing.optim_oracles import damped_precondition as _pre, scaledgd_step

D = torch.float64


def _rand(*shape, seed=0, dtype=D):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def _lora_net(seed=0, dtype=D, rank=3):
    """Linear → GELU → LayerNorm → Linear with LoRA on both Linears, B and A both random (B ≠ 0)."""
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(7, 6), nn.GELU(), nn.LayerNorm(6), nn.Linear(6, 4)).to(dtype)
    op.factor.lora_(net, [nn.Linear], rank=rank, alpha=2 * rank, generator=seed)
    with torch.no_grad():
        for B, A in op.factor.pairs(net):
            B.copy_(_rand(*B.shape, seed=seed + 10, dtype=dtype))
            A.copy_(_rand(*A.shape, seed=seed + 11, dtype=dtype))
    return net


def _data(dtype=D):
    return _rand(16, 7, seed=5, dtype=dtype), _rand(16, 4, seed=6, dtype=dtype)


def _loss(net, data):
    x, y = data
    return (net(x) - y).pow(2).mean()


def _trainable(net):
    return [p for p in net.parameters() if p.requires_grad]


@pytest.mark.parametrize("lam", [0.0, 0.3])
def test_sgd_step_equals_the_scaledgd_formula_and_scaledgd(lam):
    net = _lora_net()
    ref = copy.deepcopy(net)
    pairs = list(op.factor.pairs(net))
    opt = Preconditioned(torch.optim.SGD(_trainable(net), lr=0.2), pairs, damping=lam)
    opt.zero_grad(); _loss(net, _data()).backward()
    grads = {id(p): p.grad.clone() for p in _trainable(net)}
    before = {id(p): p.detach().clone() for p in _trainable(net)}
    opt.step()
    for L, R in pairs:
        eL, eR = scaledgd_step(before[id(L)], before[id(R)], grads[id(L)], grads[id(R)], 0.2, lam)
        torch.testing.assert_close(L.detach(), eL, rtol=0, atol=1e-12)
        torch.testing.assert_close(R.detach(), eR, rtol=0, atol=1e-12)
    in_pairs = {id(t) for pr in pairs for t in pr}
    for p in _trainable(net):                 # biases, LayerNorm: plain SGD
        if id(p) not in in_pairs:
            torch.testing.assert_close(p.detach(), before[id(p)] - 0.2 * grads[id(p)], rtol=0, atol=1e-14)
    # the same as overparam's own ScaledGD on the pairs
    sg = ScaledGD(list(op.factor.pairs(ref)), lr=0.2, damping=lam)
    sg.zero_grad(); _loss(ref, _data()).backward(); sg.step()
    for (L, R), (L2, R2) in zip(pairs, op.factor.pairs(ref)):
        torch.testing.assert_close(L.detach(), L2.detach(), rtol=0, atol=1e-12)
        torch.testing.assert_close(R.detach(), R2.detach(), rtol=0, atol=1e-12)


def test_adamw_steps_equal_adamw_on_the_oracle_directions():
    """Three AdamW steps with the wrapper = AdamW fed the explicit-inverse directions by hand."""
    net, lam = _lora_net(1), 1e-2
    ref = copy.deepcopy(net)
    opt = Preconditioned(torch.optim.AdamW(_trainable(net), lr=1e-2, weight_decay=0.1), op.factor.pairs(net),
                         damping=lam)
    ref_opt = torch.optim.AdamW(_trainable(ref), lr=1e-2, weight_decay=0.1)
    ref_pairs = list(op.factor.pairs(ref))
    for t in range(3):
        opt.zero_grad(); _loss(net, _data()).backward(); opt.step()
        ref_opt.zero_grad(); _loss(ref, _data()).backward()
        with torch.no_grad():
            new = [(_pre(L.grad, R, lam), _pre(R.grad, L, lam)) for L, R in ref_pairs]
            for (L, R), (gL, gR) in zip(ref_pairs, new):
                L.grad.copy_(gL); R.grad.copy_(gR)
        ref_opt.step()
    for p, q in zip(net.parameters(), ref.parameters()):
        torch.testing.assert_close(p.detach(), q.detach(), rtol=0, atol=1e-12)


def test_symmetric_factor():
    X0, M = _rand(6, 2, seed=4), _rand(6, 6, seed=5)
    X = X0.clone().requires_grad_()
    opt = Preconditioned(torch.optim.SGD([X], lr=0.5), [X], damping=0.1)
    (0.5 * (X @ X.T - M).square().sum()).backward()
    g = X.grad.clone()
    opt.step()
    torch.testing.assert_close(X.detach(), scaledgd_step(X0, None, g, None, 0.5, 0.1)[0], rtol=0, atol=1e-12)


def test_state_dict_scheduler_zero_grad_and_param_groups_are_the_wrapped_optimizers():
    net = _lora_net(2)
    inner = torch.optim.AdamW(_trainable(net), lr=1e-2)
    opt = Preconditioned(inner, op.factor.pairs(net), damping=1e-2)
    assert opt.param_groups is inner.param_groups and opt.state is inner.state and opt.defaults is inner.defaults
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")                 # no "lr_scheduler.step() before optimizer.step()" warning
        for _ in range(2):
            opt.zero_grad(); _loss(net, _data()).backward(); opt.step(); sched.step()
    assert inner.param_groups[0]["lr"] == pytest.approx(1e-2 * 0.25)
    opt.zero_grad()
    assert all(p.grad is None for p in _trainable(net))
    sd = opt.state_dict()
    assert sd.keys() == inner.state_dict().keys() and int(sd["state"][0]["step"]) == 2
    # resume: a fresh model + wrapper loaded from the saved states continues identically
    twin = copy.deepcopy(net)
    opt2 = Preconditioned(torch.optim.AdamW(_trainable(twin), lr=1.0), op.factor.pairs(twin), damping=1e-2)
    opt2.load_state_dict(copy.deepcopy(sd))
    assert opt2.param_groups[0]["lr"] == pytest.approx(1e-2 * 0.25)
    for o, n in ((opt, net), (opt2, twin)):
        o.zero_grad(); _loss(n, _data()).backward(); o.step()
    for p, q in zip(net.parameters(), twin.parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=0)
    extra = nn.Parameter(torch.zeros(3, dtype=D))
    opt.add_param_group({"params": [extra], "lr": 0.1})
    assert inner.param_groups[-1]["params"][0] is extra
    assert pickle.loads(pickle.dumps(opt)).damping == 1e-2


def test_closure_is_evaluated_before_preconditioning():
    net, ref = _lora_net(3), None
    ref = copy.deepcopy(net)
    opt = Preconditioned(torch.optim.SGD(_trainable(net), lr=0.1), op.factor.pairs(net), damping=0.1)

    def closure():
        opt.zero_grad()
        loss = _loss(net, _data())
        loss.backward()
        return loss

    out = opt.step(closure)
    assert float(out.detach()) == pytest.approx(float(_loss(ref, _data()).detach()))
    sg = Preconditioned(torch.optim.SGD(_trainable(ref), lr=0.1), op.factor.pairs(ref), damping=0.1)
    sg.zero_grad(); _loss(ref, _data()).backward(); sg.step()
    for p, q in zip(net.parameters(), ref.parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=0)


def test_precgd_damping_from_the_loss():
    net = _lora_net(4)
    opt = Preconditioned(torch.optim.SGD(_trainable(net), lr=0.1), op.factor.pairs(net), c=2.0, damping=1e-3)
    opt.zero_grad(); f = _loss(net, _data()); f.backward()
    with pytest.raises(ValueError, match="needs the current loss"):
        opt.step()
    pairs = list(op.factor.pairs(net))
    before = [(L.detach().clone(), R.detach().clone(), L.grad.clone(), R.grad.clone()) for L, R in pairs]
    opt.step(loss=f)
    lam = 2.0 * float(f.detach()) ** 0.5
    assert opt.last_damping == pytest.approx(lam, rel=1e-15)
    for (L, R), (L0, R0, gL, gR) in zip(pairs, before):
        torch.testing.assert_close(L.detach(), scaledgd_step(L0, R0, gL, gR, 0.1, lam)[0], rtol=0, atol=1e-12)
    opt.step(loss=0.0)                                       # the floor
    assert opt.last_damping == 1e-3


def test_lora_at_init_needs_damping_or_pinv():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(5, 5)).double()
    op.factor.lora_(net, rank=2, generator=0)                      # B = 0
    _loss_net = lambda: net(_rand(4, 5)).pow(2).sum()  # noqa: E731
    opt = Preconditioned(torch.optim.SGD(_trainable(net), lr=0.1), op.factor.pairs(net))
    opt.zero_grad(); _loss_net().backward()
    with pytest.raises(NotPositiveDefiniteError, match="factor pair 0"):
        opt.step()
    # pinv (as peft) at λ = 0: B = 0 so the A-direction is pinv(0) = 0 and the B-direction g (AᵀA)⁻¹
    B, A = next(op.factor.pairs(net))
    opt = Preconditioned(torch.optim.SGD(_trainable(net), lr=0.1), op.factor.pairs(net), pinv=True)
    opt.zero_grad(); _loss_net().backward()
    gB = B.grad.clone()
    opt.step()
    torch.testing.assert_close(B.detach(), -0.1 * _pre(gB, A.detach(), 0.0), rtol=0, atol=1e-12)


def test_pinv_equals_cholesky_on_a_pd_gram():
    L, R = _rand(6, 3, seed=1).requires_grad_(), _rand(5, 3, seed=2).requires_grad_()
    (L @ R.T).sin().sum().backward()
    g = L.grad.clone(), R.grad.clone()
    precondition_grads_([(L, R)], damping=1e-3)
    a = L.grad.clone(), R.grad.clone()
    L.grad.copy_(g[0]); R.grad.copy_(g[1])
    precondition_grads_([(L, R)], damping=1e-3, pinv=True)
    for x, y in zip(a, (L.grad, R.grad)):
        torch.testing.assert_close(x, y, rtol=1e-10, atol=1e-12)


def test_low_precision_solves_in_fp32():
    L32, R32 = _rand(8, 2, seed=1, dtype=torch.float32), _rand(6, 2, seed=2, dtype=torch.float32)
    L, R = L32.bfloat16().requires_grad_(), R32.bfloat16().requires_grad_()
    L.grad, R.grad = torch.ones_like(L), torch.ones_like(R)
    precondition_grads_([(L, R)], damping=1e-2)
    want = _pre(torch.ones(8, 2, dtype=D), R.detach().double(), 1e-2)
    assert L.grad.dtype == torch.bfloat16
    torch.testing.assert_close(L.grad.double(), want.bfloat16().double(), rtol=0, atol=0)


def test_bad_input():
    net = _lora_net()
    pairs = list(op.factor.pairs(net))
    with pytest.raises(TypeError, match="optimizer must be"):
        Preconditioned(_trainable(net), pairs)
    with pytest.raises(ValueError, match="is not optimized"):
        Preconditioned(torch.optim.SGD([p for p in _trainable(net) if p is not pairs[0][1]], lr=0.1), pairs)
    with pytest.raises(ValueError, match="requires a closure"):
        Preconditioned(torch.optim.LBFGS(_trainable(net)), pairs)
    with pytest.raises(ValueError, match="pairs is empty"):
        Preconditioned(torch.optim.SGD(_trainable(net), lr=0.1), [])
    with pytest.raises(ValueError, match="damping"):
        Preconditioned(torch.optim.SGD(_trainable(net), lr=0.1), pairs, damping=-1.0)
    with pytest.raises(ValueError, match="more than one pair"):
        Preconditioned(torch.optim.SGD(_trainable(net), lr=0.1), pairs + pairs[:1])
    with pytest.raises(TypeError, match="ambiguous"):
        Preconditioned(torch.optim.SGD(_trainable(net), lr=0.1), pairs[0])
    inner = torch.optim.SGD(_trainable(net), lr=0.1)
    with pytest.raises(TypeError, match="already Preconditioned"):
        Preconditioned(Preconditioned(inner, pairs), pairs)


@pytest.mark.parametrize("reg", [1e-2, 1e-4])
def test_one_step_equals_peft_riemannian_optimizer(reg):
    """Acceptance (issue 15): one preconditioned AdamW step = peft's create_riemannian_optimizer step, fp64."""
    create_riemannian_optimizer = pytest.importorskip("peft.optimizers").create_riemannian_optimizer
    pm, mine = peft_twins()
    x, y = _rand(16, 12, seed=1), _rand(16, 5, seed=2)
    popt = create_riemannian_optimizer(pm, torch.optim.AdamW, lr=1e-2, reg=reg, weight_decay=0.01)
    popt.zero_grad(); (pm(x) - y).pow(2).mean().backward(); popt.step()
    opt = Preconditioned(torch.optim.AdamW(_trainable(mine), lr=1e-2, weight_decay=0.01), op.factor.pairs(mine),
                         damping=reg)
    opt.zero_grad(); (mine(x) - y).pow(2).mean().backward(); opt.step()
    assert_twins_close(pm, mine, atol=1e-10)


def test_check_finite_names_the_parameter_before_anything_changes():
    net = _lora_net(5)
    opt = Preconditioned(torch.optim.AdamW(_trainable(net), lr=1e-2), op.factor.pairs(net), damping=0.1,
                         check_finite=True)
    opt.zero_grad(); _loss(net, _data()).backward()
    B = next(op.factor.pairs(net))[0]
    B.grad[0, 0] = float("nan")
    before = [p.detach().clone() for p in net.parameters()]
    with pytest.raises(op.optim.NonFiniteGradientError, match="Preconditioned: the gradient of param_groups"):
        opt.step()
    assert all(torch.equal(a, b) for a, b in zip(before, net.parameters())) and not opt.state
