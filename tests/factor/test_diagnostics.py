import math

import pytest
import torch

from overparam.factor import LowRankLinear
from overparam.factor.diagnostics import (FactorMonitor, balancedness, describe, effective_rank, relative_distance,
                                          singular_values)

D = torch.float64


def test_singular_values_of_pair_list_and_module():
    L, R = torch.randn(5, 2, dtype=D), torch.randn(4, 2, dtype=D)
    torch.testing.assert_close(singular_values((L, R)), torch.linalg.svdvals(L @ R.T))
    torch.testing.assert_close(singular_values([R.T, L]), torch.linalg.svdvals(L @ R.T))
    layer = LowRankLinear(4, 5, rank=2, init="small", scale=1.0, generator=0, dtype=D)
    torch.testing.assert_close(singular_values(layer), torch.linalg.svdvals(layer.weight.detach()))
    with pytest.raises(TypeError):
        singular_values(3)


def test_effective_rank_closed_forms():
    assert math.isclose(float(effective_rank(torch.ones(4, dtype=D))), 4.0, rel_tol=1e-12)
    assert math.isclose(float(effective_rank(torch.tensor([1.0, 0.0, 0.0], dtype=D))), 1.0, rel_tol=1e-12)
    p = torch.tensor([0.75, 0.25], dtype=D)
    assert math.isclose(float(effective_rank(p)), math.exp(-(0.75 * math.log(0.75) + 0.25 * math.log(0.25))))


@pytest.mark.parametrize("s, match", [
    (torch.zeros(0, dtype=D), "empty"),
    (torch.tensor([1.0, -0.5], dtype=D), "singular values"),
    (torch.tensor([1.0, float("nan")], dtype=D), "singular values"),
    (torch.zeros(3, dtype=D), "zeros"),
    (torch.ones(2, 2, dtype=D), "vector"),
    (torch.tensor([1, 2]), "floating"),
])
def test_effective_rank_refuses_what_are_not_singular_values(s, match):
    with pytest.raises(ValueError, match=f"^s .*{match}|^s must .*{match}"):
        effective_rank(s)


def test_describe_of_a_zero_update_has_effective_rank_zero():
    L, R = torch.zeros(4, 2, dtype=D), torch.randn(3, 2, dtype=D)      # a LoRA pair at init
    assert describe((L, R)).effective_rank == 0.0


def test_balancedness_and_distance():
    L, R = torch.eye(3, 2, dtype=D), 2 * torch.eye(3, 2, dtype=D)
    assert math.isclose(float(balancedness((L, R))), math.sqrt(2) * 3, rel_tol=1e-12)
    T = torch.ones(3, 3, dtype=D)
    expect = (torch.diag(torch.tensor([2.0, 2.0, 0.0], dtype=D)) - T).norm() / T.norm()   # L Rᵀ = diag(2, 2, 0)
    assert math.isclose(float(relative_distance((L, R), T)), float(expect), rel_tol=1e-12)
    s = describe((L, R), target=T, top=1)
    assert s.singular_values == [2.0] and s.balancedness is not None and s.distance is not None


def test_monitor_records_every_k_steps_and_as_optimizer_hook():
    layer = LowRankLinear(3, 3, rank=2, init="small", scale=0.1, generator=0, dtype=D)
    seen = []
    mon = FactorMonitor(layer, every=2, callback=lambda step, stats: seen.append(step))
    opt = torch.optim.SGD(layer.parameters(), lr=0.1)
    opt.register_step_post_hook(mon.hook)
    for _ in range(5):
        opt.zero_grad()
        layer(torch.ones(1, 3, dtype=D)).sum().backward()
        opt.step()
    assert [s for s, _ in mon.history] == [0, 2, 4] == seen
    assert len(mon.history[0][1]) == 1 and len(mon.history[0][1][0].singular_values) == 3


def test_diagnostics_bad_input():
    with pytest.raises(ValueError, match="s must"):
        effective_rank(torch.ones(2, 2))
    with pytest.raises(ValueError, match="every"):
        FactorMonitor(LowRankLinear(2, 2, rank=1, generator=0), every=0)
    layer = LowRankLinear(2, 2, rank=1, generator=0)
    with pytest.raises(TypeError, match="model"):
        FactorMonitor("not a module")
    with pytest.raises(TypeError, match="references"):                     # per-pair matrices, not a selection
        FactorMonitor(layer, references="fc")
    with pytest.raises(ValueError, match="references holds 2 matrices but the model has 1"):
        FactorMonitor(layer, references=[torch.eye(2), torch.eye(2)])
    nan = torch.tensor([[1.0, float("nan")], [0.0, 1.0]])
    for fn in (singular_values, describe):
        with pytest.raises(ValueError, match="x holds NaN"):
            fn(nan)
        with pytest.raises(TypeError, match="x must be a matrix"):
            fn("x")
    with pytest.raises(TypeError, match="target"):
        relative_distance(torch.eye(2), "target")
    for eps in (float("nan"), -0.5, 1.0):
        with pytest.raises(ValueError, match="eps"):
            effective_rank(torch.ones(3), eps=eps)
