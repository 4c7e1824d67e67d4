import math

import pytest

from overparam.optim import StepInfo, as_rule, constant, geometric, polyak
from overparam.optim.steps import Constant


def info(step=0, loss=None, g=4.0, best=None):
    return StepInfo(step=step, loss=loss, grad_sq_norm=g, best_loss=best)


def test_constant_and_geometric():
    assert constant(0.3)(info(7)) == 0.3
    assert geometric(2.0, 0.5)(info(3)) == 0.25
    assert not geometric(1, 0.9).needs_loss
    assert as_rule(0.1) == Constant(0.1)


def test_polyak_known_and_estimated():
    r = polyak(1.0)
    assert r.needs_loss
    assert r(info(loss=3.0, g=4.0)) == 0.5
    assert r(info(loss=0.5, g=4.0)) == 0.0  # below f*: no step
    assert r(info(loss=3.0, g=0.0)) == 0.0
    assert polyak(0.0, max_lr=0.1)(info(loss=3.0, g=1.0)) == 0.1
    est = polyak(None, gamma0=2.0, decay=0.5)
    # f - f_best + γ0 ρ^t = 5 - 3 + 2·0.25
    assert est(info(step=2, loss=5.0, g=1.0, best=3.0)) == pytest.approx(2.5)
    assert est(info(step=0, loss=5.0, g=1.0, best=None)) == pytest.approx(2.0)
    with pytest.raises(ValueError, match="loss"):
        r(info(loss=None))


def test_bad_rules():
    with pytest.raises(ValueError, match="decay"):
        geometric(1.0, 1.5)
    with pytest.raises(ValueError, match="lr0"):
        geometric(-1.0, 0.5)
    with pytest.raises(ValueError, match="lr"):
        constant(-0.1)
    with pytest.raises(TypeError, match="lr"):
        constant(math.nan)
    with pytest.raises(TypeError, match="step"):
        as_rule("fast")
    with pytest.raises(TypeError, match="step"):                     # the name of the argument, not "lr"
        as_rule(math.nan)
    with pytest.raises(ValueError, match="step"):
        as_rule(-1.0)
