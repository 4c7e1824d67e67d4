"""check_finite=True: a NaN/inf gradient raises naming the parameter, before anything changes;
off (the default) it propagates as in torch's optimizers (the documented behaviour)."""

import copy
import re

import pytest
import torch

from overparam.optim import NonFiniteGradientError, PrecGD, ScaledGD, ScaledSGD, ScaledSM, SubGM, geometric

D = torch.float64
PAIR_OPTS = {
    "scaledgd": lambda ps, **kw: ScaledGD(ps, lr=0.3, damping=1e-3, **kw),
    "precgd": lambda ps, **kw: PrecGD(ps, lr=0.3, c=1.0, **kw),
    "scaledsm": lambda ps, **kw: ScaledSM(ps, step=geometric(0.1, 0.9), damping=1e-3, **kw),
    "scaledsgd": lambda ps, **kw: ScaledSGD(ps, lr=0.3, damping=1e-3, refresh=3, **kw),
}


def _factors():
    g = torch.Generator().manual_seed(0)
    mk = lambda *s: torch.randn(*s, generator=g, dtype=D).requires_grad_()  # noqa: E731
    return mk(6, 2), mk(4, 2), mk(5, 3)  # pairs[0] = (L, R), pairs[1] = X (symmetric)


def _step(opt):
    return opt.step(loss=torch.tensor(0.5, dtype=D)) if isinstance(opt, PrecGD) else opt.step()


def _grads(L, R, X, bad, where):
    for t in (L, R, X):
        t.grad = torch.full_like(t, 0.1)
    t = {"L": L, "R": R, "X": X}[where]
    t.grad[1, 0] = bad


@pytest.mark.parametrize("name", list(PAIR_OPTS))
@pytest.mark.parametrize("bad,where,label", [(float("nan"), "R", "factor R of pairs[0]"),
                                             (float("inf"), "X", "factor X of pairs[1]"),
                                             (-float("inf"), "L", "factor L of pairs[0]")])
def test_pair_optimizers_raise_naming_the_factor_and_change_nothing(name, bad, where, label):
    L, R, X = _factors()
    opt = PAIR_OPTS[name]([(L, R), X], check_finite=True)
    _grads(L, R, X, 0.0, "L")
    _step(opt)  # a clean step first, so there is optimizer state to protect
    before = [t.detach().clone() for t in (L, R, X)]
    state = copy.deepcopy(opt.state_dict())
    _grads(L, R, X, bad, where)
    shape = tuple({"L": L, "R": R, "X": X}[where].shape)
    msg = f"{type(opt).__name__}: the gradient of {label} in param group 0 (shape {shape}) holds"
    with pytest.raises(NonFiniteGradientError, match=re.escape(msg)):
        _step(opt)
    assert all(torch.equal(a, t.detach()) for a, t in zip(before, (L, R, X)))
    assert str(opt.state_dict()) == str(state)
    assert issubclass(NonFiniteGradientError, ValueError)


@pytest.mark.parametrize("name", list(PAIR_OPTS))
def test_off_by_default_a_nan_gradient_propagates(name):
    """The documented default: no check; the NaN reaches the factor (as in torch.optim.SGD)."""
    L, R, X = _factors()
    opt = PAIR_OPTS[name]([(L, R), X])
    assert opt.defaults["check_finite"] is False
    _grads(L, R, X, float("nan"), "R")
    _step(opt)
    assert torch.isnan(R).any() and torch.isfinite(X).all()


def test_per_group_opt_in_and_flag_type():
    L, R, X = _factors()
    opt = ScaledGD([{"pairs": [(L, R)]}, {"pairs": [X], "check_finite": True}], lr=0.3, damping=1e-3)
    _grads(L, R, X, float("nan"), "L")
    opt.step()  # group 0 is not checked
    assert torch.isnan(L).any()
    _grads(L, R, X, float("nan"), "X")
    with pytest.raises(NonFiniteGradientError, match=r"factor X of pairs\[0\] in param group 1"):
        opt.step()
    for bad in ("yes", 1, None):
        with pytest.raises(TypeError, match="check_finite"):
            ScaledGD([X], check_finite=bad)
        with pytest.raises(TypeError, match="check_finite"):
            ScaledGD([{"pairs": [X], "check_finite": bad}])
        with pytest.raises(TypeError, match="check_finite"):
            SubGM([X], step=0.1, check_finite=bad)
        with pytest.raises(TypeError, match="check_finite"):
            SubGM([{"params": [X], "check_finite": bad}], step=0.1)


def test_subgm_names_the_parameter_and_changes_nothing():
    L, R, X = _factors()
    opt = SubGM([{"params": [L]}, {"params": [R, X], "normalize": True}], step=0.1, check_finite=True)
    _grads(L, R, X, float("nan"), "X")
    before = [t.detach().clone() for t in (L, R, X)]
    with pytest.raises(NonFiniteGradientError, match=r"SubGM: the gradient of param_groups\[1\]\['params'\]\[1\] "
                                                     r"\(shape \(5, 3\)\) holds 1 NaN and 0 inf entries"):
        opt.step()
    assert all(torch.equal(a, t.detach()) for a, t in zip(before, (L, R, X))) and not opt.state
    off = SubGM([L, R, X], step=0.1, normalize=True)  # default: the NaN spreads through ‖g‖ into every parameter
    off.step()
    assert torch.isnan(L).all()


def test_sparse_gradients_are_checked_on_their_values():
    p = torch.nn.Parameter(torch.zeros(4, 2, dtype=D))
    opt = SubGM([p], step=0.1, check_finite=True)
    p.grad = torch.sparse_coo_tensor([[1]], torch.tensor([[float("inf"), 0.0]], dtype=D), (4, 2),
                                     check_invariants=True)
    with pytest.raises(NonFiniteGradientError, match="0 NaN and 1 inf"):
        opt.step()
