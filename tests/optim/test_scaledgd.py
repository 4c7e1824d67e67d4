import copy

import pytest
import torch
from hypothesis import given, settings, strategies as st

import overparam as op
from overparam.backend.linalg import NotPositiveDefiniteError
from overparam.optim import ScaledGD
from overparam.testing.optim_oracles import damped_precondition as _pre, scaledgd_step

D = torch.float64


def _rand(*shape, seed=0, dtype=D):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def _loss_LR(L, R, M):
    return 0.5 * (L @ R.T - M).square().sum() + (L @ R.T).pow(3).sum() * 1e-2


@pytest.mark.parametrize("lam", [0.0, 0.3])
def test_asymmetric_step_equals_formula(lam):
    L0, R0, M = _rand(7, 3, seed=1), _rand(5, 3, seed=2), _rand(7, 5, seed=3)
    L, R = L0.clone().requires_grad_(), R0.clone().requires_grad_()
    opt = ScaledGD([(L, R)], lr=0.3, damping=lam)
    _loss_LR(L, R, M).backward()
    gL, gR = L.grad.clone(), R.grad.clone()
    opt.step()
    eL, eR = scaledgd_step(L0, R0, gL, gR, 0.3, lam)
    torch.testing.assert_close(L.detach(), eL, rtol=0, atol=1e-12)
    torch.testing.assert_close(R.detach(), eR, rtol=0, atol=1e-12)


@pytest.mark.parametrize("as_tuple", [False, True])
def test_symmetric_step_equals_formula(as_tuple):
    X0, M = _rand(6, 2, seed=4), _rand(6, 6, seed=5)
    X = X0.clone().requires_grad_()
    opt = ScaledGD([(X, X)] if as_tuple else [X], lr=0.5, damping=0.1)
    (0.25 * (X @ X.T - M).square().sum()).backward()
    g = X.grad.clone()
    opt.step()
    torch.testing.assert_close(X.detach(), scaledgd_step(X0, None, g, None, 0.5, 0.1)[0], rtol=0, atol=1e-12)
    assert opt.param_groups[0]["pair_index"] == [(0, 0)] and len(opt.param_groups[0]["params"]) == 1


@settings(max_examples=15, deadline=None)
@given(n1=st.integers(1, 6), n2=st.integers(1, 6), k=st.integers(1, 4), lam=st.sampled_from([0.05, 1.0]))
def test_step_formula_shapes(n1, n2, k, lam):
    L0, R0, M = _rand(n1, k, seed=n1), _rand(n2, k, seed=n2 + 10), _rand(n1, n2, seed=k)
    L, R = L0.clone().requires_grad_(), R0.clone().requires_grad_()
    opt = ScaledGD([(L, R)], lr=0.2, damping=lam)
    _loss_LR(L, R, M).backward()
    gL, gR = L.grad.clone(), R.grad.clone()
    opt.step()
    eL, eR = scaledgd_step(L0, R0, gL, gR, 0.2, lam)
    torch.testing.assert_close(L.detach(), eL, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(R.detach(), eR, rtol=1e-10, atol=1e-12)


def _run(opt_cls, L0, R0, M, steps, **kw):
    L, R = L0.clone().requires_grad_(), R0.clone().requires_grad_()
    opt = opt_cls([(L, R)] if opt_cls is ScaledGD else [L, R], **kw)
    for _ in range(steps):
        opt.zero_grad()
        (0.5 * (L @ R.T - M).square().sum()).backward()
        opt.step()
    return L.detach(), R.detach()


def test_equivariance_under_invertible_reparameterization():
    L0, R0 = _rand(8, 3, seed=6), _rand(6, 3, seed=7)
    M = _rand(8, 3, seed=8) @ _rand(6, 3, seed=9).T
    Q = _rand(3, 3, seed=10) + 3 * torch.eye(3, dtype=D)
    Qit = torch.linalg.inv(Q).T
    L1, R1 = _run(ScaledGD, L0, R0, M, 5, lr=0.3)
    L2, R2 = _run(ScaledGD, L0 @ Q, R0 @ Qit, M, 5, lr=0.3)
    torch.testing.assert_close(L2, L1 @ Q, rtol=0, atol=1e-8)
    torch.testing.assert_close(R2, R1 @ Qit, rtol=0, atol=1e-8)
    # plain GD is not equivariant
    G1, H1 = _run(torch.optim.SGD, L0, R0, M, 5, lr=0.01)
    G2, H2 = _run(torch.optim.SGD, L0 @ Q, R0 @ Qit, M, 5, lr=0.01)
    assert (G2 - G1 @ Q).abs().max() > 1e-3


def test_param_groups_have_their_own_hyperparameters():
    X0, L0, R0 = _rand(5, 2, seed=1), _rand(4, 2, seed=2), _rand(3, 2, seed=3)
    X, L, R = (t.clone().requires_grad_() for t in (X0, L0, R0))
    opt = ScaledGD([{"pairs": [X], "lr": 0.1}, {"pairs": [(L, R)], "damping": 0.5}], lr=0.4)
    for t in (X, L, R):
        t.grad = torch.ones_like(t)
    opt.step()
    torch.testing.assert_close(X.detach(), X0 - 0.1 * _pre(torch.ones_like(X0), X0, 0.0), rtol=0, atol=1e-12)
    torch.testing.assert_close(L.detach(), L0 - 0.4 * _pre(torch.ones_like(L0), R0, 0.5), rtol=0, atol=1e-12)
    assert [g["lr"] for g in opt.param_groups] == [0.1, 0.4]


def test_closure_and_missing_grad():
    L, R = _rand(4, 2, seed=1).requires_grad_(), _rand(3, 2, seed=2).requires_grad_()
    R0 = R.detach().clone()
    opt = ScaledGD([(L, R)], lr=0.5)
    L.grad = torch.ones_like(L)  # R.grad None -> R unchanged
    opt.step()
    assert torch.equal(R.detach(), R0)
    M = _rand(4, 3, seed=3)

    def closure():
        opt.zero_grad()
        f = 0.5 * (L @ R.T - M).square().sum()
        f.backward()
        return f

    assert float(opt.step(closure).detach()) > 0


def test_state_dict_round_trip():
    L, R = _rand(4, 2, seed=1).requires_grad_(), _rand(3, 2, seed=2).requires_grad_()
    opt = ScaledGD([{"pairs": [(L, R)], "lr": 0.25, "damping": 0.1}])
    sd = copy.deepcopy(opt.state_dict())
    L2, R2 = L.detach().clone().requires_grad_(), R.detach().clone().requires_grad_()
    opt2 = ScaledGD([(L2, R2)], lr=1.0)
    opt2.load_state_dict(sd)
    g = opt2.param_groups[0]
    assert g["lr"] == 0.25 and g["damping"] == 0.1 and g["pair_index"] == [(0, 1)]
    assert g["params"][0] is L2 and g["params"][1] is R2


def test_singular_gram_without_damping_raises_clearly():
    X = torch.zeros(5, 3, dtype=D, requires_grad=True)
    X.grad = torch.ones_like(X)
    with pytest.raises(NotPositiveDefiniteError, match="damping"):
        ScaledGD([X], lr=0.5).step()
    X2 = torch.zeros(5, 3, dtype=D, requires_grad=True)
    X2.grad = torch.ones_like(X2)
    ScaledGD([X2], lr=0.5, damping=1e-3).step()
    assert torch.isfinite(X2).all() and X2.abs().max() > 0


def test_bad_input():
    L, R = torch.zeros(4, 2, requires_grad=True), torch.zeros(3, 3, requires_grad=True)
    with pytest.raises(ValueError, match="mismatched rank"):
        ScaledGD([(L, R)])
    with pytest.raises(ValueError, match="lr"):
        ScaledGD([L], lr=-1)
    with pytest.raises(ValueError, match="damping"):
        ScaledGD([L], damping=-0.1)
    with pytest.raises(ValueError, match="damping"):
        ScaledGD([{"pairs": [L], "damping": -1.0}])
    with pytest.raises(ValueError, match="not part of a factor pair"):
        ScaledGD([L, torch.zeros(3, requires_grad=True)])
    with pytest.raises(TypeError, match="ambiguous"):
        ScaledGD((L, torch.zeros(5, 2, requires_grad=True)))
    with pytest.raises(ValueError, match="more than one factor pair"):
        ScaledGD([(L, torch.zeros(3, 2, requires_grad=True)), L])
    with pytest.raises(ValueError, match="dtype"):
        ScaledGD([(L, torch.zeros(3, 2, dtype=D))])
    with pytest.raises(ValueError, match="empty"):
        ScaledGD([])
    with pytest.raises(TypeError, match="pair"):
        ScaledGD([(L, R, R)])
    opt = ScaledGD([L])
    with pytest.raises(ValueError, match="lr"):
        opt.add_param_group({"pairs": [torch.zeros(2, 2, requires_grad=True)], "lr": -0.5})


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_recovers_sensing_in_both_dtypes(dtype):
    P = op.problems.sensing(n=10, r=2, m=600, kappa=10, symmetric=False, generator=0, dtype=dtype)
    L, R = (t.requires_grad_() for t in P.init("spectral"))
    opt = ScaledGD([(L, R)], lr=0.5)
    for _ in range(70):
        opt.zero_grad()
        P.loss((L, R)).backward()
        opt.step()
    assert L.dtype == dtype
    assert float(P.relative_error((L, R)).detach()) < (1e-4 if dtype == torch.float32 else 1e-10)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    L0, R0, M = _rand(7, 3, seed=1), _rand(5, 3, seed=2), _rand(7, 5, seed=3)
    out = []
    for dev in ("cpu", "cuda"):
        L, R = L0.to(dev).requires_grad_(), R0.to(dev).requires_grad_()
        opt = ScaledGD([(L, R)], lr=0.3, damping=0.1)
        _loss_LR(L, R, M.to(dev)).backward()
        opt.step()
        out.append(L.detach().cpu())
    torch.testing.assert_close(out[0], out[1], rtol=1e-10, atol=1e-12)


def test_groups_given_as_params_and_added_later():
    X, Y = _rand(4, 2, seed=1).requires_grad_(), _rand(5, 2, seed=2).requires_grad_()
    L, R = _rand(3, 2, seed=3).requires_grad_(), _rand(6, 2, seed=4).requires_grad_()
    opt = ScaledGD([{"params": [(X, Y)], "lr": 0.1}])
    opt.add_param_group({"pairs": [(L, R)], "damping": 0.2})
    assert opt.param_groups[1]["pair_index"] == [(0, 1)] and opt.param_groups[1]["lr"] == 0.5
    with pytest.raises(ValueError, match="more than one parameter group"):
        opt.add_param_group({"pairs": [X]})
    with pytest.raises(ValueError, match="not both"):
        ScaledGD([{"pairs": [X], "params": [Y]}])
