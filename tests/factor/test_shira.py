"""SHiRA: SparseUpdate's support size and values, in place through hadamard_(kind="shira"), exact
merge/unmerge, and the gradient reaching only the support."""

import pytest
import torch

import overparam as op
from overparam.factor import SparseUpdate

D = torch.float64


@pytest.mark.parametrize("shape,rank", [((4, 6), 1), ((5, 5), 2), ((8, 3), 1)])
def test_random_support_has_loras_parameter_count(shape, rank):
    u = SparseUpdate(shape, rank, generator=0, dtype=D)
    assert u.values.numel() == rank * sum(shape)
    assert torch.equal(u.index, u.index.sort().values) and u.index.unique().numel() == u.index.numel()
    assert not u().any()
    other = SparseUpdate(shape, rank, generator=0, dtype=D)
    assert torch.equal(u.index, other.index)                         # the generator fixes the support


def test_values_land_on_the_mask_and_gradients_stay_there():
    mask = torch.rand(5, 4, generator=torch.Generator().manual_seed(0)) < 0.4
    u = SparseUpdate((5, 4), mask=mask, dtype=D)
    with torch.no_grad():
        u.values.copy_(torch.arange(1.0, u.values.numel() + 1, dtype=D))
    dense = torch.zeros(5, 4, dtype=D)
    dense[mask] = torch.arange(1.0, int(mask.sum()) + 1, dtype=D)        # row-major order
    assert torch.equal(u(), dense)
    (u() * torch.ones(5, 4, dtype=D)).sum().backward()
    assert torch.equal(u.values.grad, torch.ones(int(mask.sum()), dtype=D))


def test_hadamard_kind_shira_in_place_with_exact_round_trip():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(2, 3, 3), torch.nn.Flatten(), torch.nn.Linear(27, 2)).double()
    x = torch.randn(2, 2, 5, 5, dtype=D)
    y0 = net(x)
    assert op.factor.hadamard_(net, kind="shira", rank=1, generator=0) == ["0", "2"]
    assert torch.equal(net(x), y0)
    W0 = net[2].base.weight.detach().clone()
    with torch.no_grad():
        net[2].param.values.normal_()
    dense = W0 + net[2].param().detach()
    assert torch.allclose(net[2].weight, dense) and int((net[2].weight != W0).sum()) <= 29
    ref = net(x)
    op.factor.merge_(net, unload=False)
    assert (net(x) - ref).abs().max() < 1e-12
    op.factor.unmerge_(net)
    assert (net[2].base.weight - W0).abs().max() < 1e-12 and (net(x) - ref).abs().max() < 1e-12
    assert sorted(op.factor.adapter_state_dict(net)) == ["0.param.values", "2.param.values"]


def test_sparse_update_refuses_bad_arguments():
    with pytest.raises(ValueError, match="exactly one of rank"):
        SparseUpdate((2, 2))
    with pytest.raises(ValueError, match="mask must be a bool"):
        SparseUpdate((2, 2), mask=torch.ones(2, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="mask selects no entry"):
        SparseUpdate((2, 2), mask=torch.zeros(2, 2, dtype=torch.bool))
    with pytest.raises(ValueError, match="rank"):
        SparseUpdate((2, 2), 0)
    with pytest.raises(ValueError, match=r"rank: rank · \(rows \+ cols\) = 12 exceeds the 9 entries"):
        SparseUpdate((3, 3), 2)
