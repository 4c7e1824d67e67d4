"""The torch.optim contract for every optimizer in overparam.optim: state_dict round trips that
continue bit for bit, closures under no_grad, zero_grad, fp32/fp64, no global RNG use."""

import copy

import pytest
import torch

import overparam as op
from overparam.optim import PrecGD, ScaledGD, ScaledSGD, ScaledSM, SubGM, geometric, polyak

SENS = op.problems.sensing(n=8, r=2, m=200, symmetric=False, generator=0)
SENS_L1 = op.problems.sensing(n=8, r=2, m=200, symmetric=False, loss="l1", outliers=0.1, generator=0)
COMP = op.problems.completion(n=12, r=2, p=0.6, symmetric=False, generator=0)
BATCHES = [COMP.minibatch(6, generator=s) for s in range(12)]

# name -> (problem, factory(L, R) -> optimizer, feeds the loss as step(loss=...))
CASES = {
    "scaledgd": (SENS, lambda L, R: ScaledGD([(L, R)], lr=0.4, damping=1e-3), False),
    "precgd": (SENS, lambda L, R: PrecGD([(L, R)], lr=0.4, c=0.5), True),
    "scaledsm_polyak_est": (SENS_L1, lambda L, R: ScaledSM([(L, R)], step=polyak(None, gamma0=0.5, decay=0.7)), True),
    "scaledsm_geometric": (SENS_L1, lambda L, R: ScaledSM([(L, R)], step=geometric(0.05, 0.8), damping=1e-2), False),
    # refresh=4 with 5 + 7 steps: the reload happens between refreshes (incremental Gram state matters)
    "scaledsgd": (COMP, lambda L, R: ScaledSGD([(L, R)], lr=0.3, damping=1e-3, refresh=4), False),
    "subgm_polyak_est": (SENS_L1, lambda L, R: SubGM([L, R], step=polyak(None, gamma0=0.5, decay=0.7)), True),
    "subgm_geometric": (SENS_L1, lambda L, R: SubGM([{"params": [L], "step": geometric(0.05, 0.8)},
                                                     {"params": [R], "step": 0.01, "normalize": True}], step=0.1), False),
}


def _init(P, dtype):
    L, R = P.init("small", rank=3, scale=0.3, generator=1) if P is not COMP else P.init("spectral", rank=3)
    return L.to(dtype).requires_grad_(), R.to(dtype).requires_grad_()


def _steps(P, opt, L, R, ts, feed_loss):
    for t in ts:
        opt.zero_grad()
        f = P.loss((L, R), entries=BATCHES[t]) if isinstance(P, op.problems.MatrixCompletion) else P.loss((L, R))
        f.backward()
        opt.step(loss=f) if feed_loss else opt.step()


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("name", list(CASES))
def test_state_dict_round_trip_continues_bit_for_bit(name, dtype):
    P, make, feed = CASES[name]
    P = copy.copy(P)
    for k in ("A", "y", "M_star", "values"):
        if hasattr(P, k):
            setattr(P, k, getattr(P, k).to(dtype))
    L, R = _init(P, dtype)
    opt = make(L, R)
    _steps(P, opt, L, R, range(5), feed)
    sd = copy.deepcopy(opt.state_dict())
    L2, R2 = L.detach().clone().requires_grad_(), R.detach().clone().requires_grad_()
    _steps(P, opt, L, R, range(5, 12), feed)  # uninterrupted
    opt2 = make(L2, R2)  # fresh optimizer (its own fresh defaults), then the saved state
    opt2.load_state_dict(sd)
    _steps(P, opt2, L2, R2, range(5, 12), feed)
    assert L.dtype == dtype and not torch.equal(L.detach(), _init(P, dtype)[0].detach())
    assert torch.equal(L.detach(), L2.detach()) and torch.equal(R.detach(), R2.detach())


def test_fresh_optimizer_without_state_differs():
    # guards the round-trip test: for the optimizers with a step counter / best loss, dropping
    # the saved state changes the continuation
    for name in ("scaledsm_geometric", "subgm_polyak_est", "subgm_geometric"):
        P, make, feed = CASES[name]
        L, R = _init(P, torch.float64)
        opt = make(L, R)
        _steps(P, opt, L, R, range(5), feed)
        L2, R2 = L.detach().clone().requires_grad_(), R.detach().clone().requires_grad_()
        _steps(P, opt, L, R, range(5, 12), feed)
        opt2 = make(L2, R2)
        _steps(P, opt2, L2, R2, range(5, 12), feed)
        assert not torch.equal(L.detach(), L2.detach()), name


@pytest.mark.parametrize("name", list(CASES))
def test_closure_under_no_grad_returns_loss_and_matches_explicit_step(name):
    P, make, feed = CASES[name]
    out = []
    for use_closure in (True, False):
        L, R = _init(P, torch.float64)
        opt = make(L, R)
        for t in range(3):
            def closure():
                opt.zero_grad()
                f = P.loss((L, R), entries=BATCHES[t]) if isinstance(P, op.problems.MatrixCompletion) else P.loss((L, R))
                f.backward()
                return f
            if use_closure:
                with torch.no_grad():  # as torch's LBFGS: the closure is re-run with grad enabled
                    ret = opt.step(closure)
                assert isinstance(ret, torch.Tensor) and ret.ndim == 0 and float(ret.detach()) > 0
            else:
                f = closure()
                opt.step(loss=f) if feed else opt.step()
        out.append((L.detach(), R.detach()))
    assert torch.equal(out[0][0], out[1][0]) and torch.equal(out[0][1], out[1][1])


@pytest.mark.parametrize("name", list(CASES))
def test_zero_grad_and_no_global_rng(name):
    P, make, feed = CASES[name]
    L, R = _init(P, torch.float64)
    opt = make(L, R)
    state = torch.get_rng_state()
    _steps(P, opt, L, R, range(2), feed)
    assert torch.equal(torch.get_rng_state(), state)
    opt.zero_grad()
    assert L.grad is None and R.grad is None


def _all_problems(gen):
    out = []
    for P in (op.problems.sensing(n=5, r=1, m=20, outliers=0.2, generator=gen),
              op.problems.completion(n=5, r=1, p=0.5, generator=gen),
              op.problems.robust_pca(n=5, r=1, alpha=0.2, generator=gen),
              op.problems.deep_linear(3, 2, 1, 2, 10, generator=gen),
              op.problems.teacher_student(4, 2, 10, test_samples=5, generator=gen)):
        X = P.init("small", rank=2, generator=gen)
        out += [X] if isinstance(X, torch.Tensor) else list(X)  # U or (L, R)
    return out + [COMP.minibatch(3, generator=gen)]


def test_problems_touch_the_global_rng_only_for_generator_none():
    state = torch.get_rng_state()
    _all_problems(0)  # explicit seeds: the global stream is untouched
    assert torch.equal(torch.get_rng_state(), state)
    torch.manual_seed(0)  # None: constructions draw from torch's default generator (docs/index.md)
    a = _all_problems(None)
    torch.manual_seed(0)
    b = _all_problems(None)
    assert len(a) == len(b) and all(torch.equal(x, y) for x, y in zip(a, b))


def test_precgd_damping_is_a_floor_not_an_offset():
    X0 = torch.tensor([[1.0, 0.5], [0.2, 1.0], [0.3, -0.4]], dtype=torch.float64)
    X = X0.clone().requires_grad_()
    X.grad = torch.ones_like(X)
    opt = PrecGD([X], c=2.0, min_damping=1e-3)
    opt.step(loss=0.25)  # c·√f = 1.0 > floor: the floor must not be added
    assert opt.last_damping == [1.0]
    from overparam.testing.optim_oracles import scaledgd_step

    torch.testing.assert_close(X.detach(), scaledgd_step(X0, None, torch.ones_like(X0), None, 0.5, 1.0)[0],
                               rtol=0, atol=1e-12)


def test_non_finite_and_non_float_arguments_are_rejected():
    import math

    X = torch.zeros(3, 2, requires_grad=True)
    for bad in (math.nan, math.inf):
        with pytest.raises(ValueError, match="lr"):
            ScaledGD([X], lr=bad)
        with pytest.raises(ValueError, match="damping"):
            ScaledSM([X], damping=bad)
        with pytest.raises(ValueError, match="f_star"):
            polyak(bad)
    with pytest.raises(TypeError, match="floating-point"):
        ScaledGD([torch.zeros(3, 2, dtype=torch.long)])
    with pytest.raises(TypeError, match="normalize"):
        SubGM([X], step=0.1, normalize="yes")
    with pytest.raises(ValueError, match="kappa"):
        op.problems.sensing(n=4, r=1, m=10, kappa=math.nan)


def test_pairs_from_a_model_step_equals_formula_without_side_effects():
    from overparam.testing import assert_no_side_effects
    from overparam.testing.optim_oracles import scaledgd_step

    net = torch.nn.Sequential(op.factor.LowRankLinear(5, 3, rank=2, generator=0, dtype=torch.float64),
                              op.factor.LowRankLinear(3, 3, rank=2, symmetric=True, generator=1, dtype=torch.float64))
    net.eval()
    prs = list(op.factor.pairs(net))
    assert len(prs) == 2 and prs[1][0] is prs[1][1]
    before = [(L.detach().clone(), R.detach().clone()) for L, R in prs]
    x = torch.randn(7, 5, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    with assert_no_side_effects(net):
        opt = ScaledGD([{"pairs": prs[:1], "damping": 0.1}, {"pairs": prs[1:], "lr": 0.2}], lr=0.3)
        net(x).square().sum().backward()
        grads = [(L.grad.clone(), R.grad.clone()) for L, R in prs]
        opt.step()
    (L0, R0), (X0, _) = before
    eL, eR = scaledgd_step(L0, R0, *grads[0], 0.3, 0.1)
    torch.testing.assert_close(prs[0][0].detach(), eL, rtol=0, atol=1e-12)
    torch.testing.assert_close(prs[0][1].detach(), eR, rtol=0, atol=1e-12)
    torch.testing.assert_close(prs[1][0].detach(), scaledgd_step(X0, None, grads[1][0], None, 0.2)[0], rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="not part of a factor pair"):
        ScaledGD([*prs, net[0].bias])
