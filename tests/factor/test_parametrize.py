import pytest
import torch
from torch import nn

from overparam.factor import pairs, parametrize_

D = torch.float64


@pytest.mark.parametrize("kind", ["lowrank", "product", "difference"])
def test_parametrize_route(kind):
    lin = nn.Linear(5, 4).double()
    x = torch.randn(3, 5, dtype=D)
    y = lin(x)
    parametrize_(lin, "weight", kind=kind, rank=4 if kind == "lowrank" else None)
    torch.testing.assert_close(lin(x), y, rtol=0, atol=1e-12)
    assert {"parametrizations.weight.original0", "parametrizations.weight.original1"} <= set(lin.state_dict())
    with pytest.raises(ValueError, match="already parametrized"):
        parametrize_(lin, "weight", kind=kind, rank=4)
    found = list(pairs(lin))
    assert len(found) == (1 if kind == "lowrank" else 0)
    if found:
        (L, R), = found
        torch.testing.assert_close(L @ R.T, lin.weight)


def test_parametrize_bad_input():
    with pytest.raises(TypeError, match="rank"):
        parametrize_(nn.Linear(3, 3), kind="product", rank=2)
    with pytest.raises(ValueError, match="rank"):
        parametrize_(nn.Linear(3, 3), kind="lowrank")
    with pytest.raises(ValueError, match="name"):
        parametrize_(nn.Linear(3, 3), "nope", kind="product")
    lin = nn.Linear(5, 3)
    with pytest.raises(ValueError, match="rank"):
        parametrize_(lin, kind="lowrank", rank=4)          # svd init: rank <= min(3, 5)
    assert not torch.nn.utils.parametrize.is_parametrized(lin)
