"""HiRA: ΔW = W₀ ⊙ (up downᵀ) against the dense formula, on Linear / Conv2d / Embedding; exact
merge/unmerge; trainable parameters; a high-rank update from rank-1 factors."""

import pytest
import torch

import overparam as op
from overparam.factor import HiRALayer

D = torch.float64


def _perturb(layer, seed=0):
    with torch.no_grad():
        layer.hira_up.copy_(torch.randn(layer.hira_up.shape, dtype=D, generator=torch.Generator().manual_seed(seed)))


@pytest.mark.parametrize("kind", ["linear", "conv", "embedding"])
def test_hira_weight_output_and_round_trip(kind):
    torch.manual_seed(0)
    base, x = {"linear": (torch.nn.Linear(6, 5), torch.randn(3, 6)),
               "conv": (torch.nn.Conv2d(2, 3, 3), torch.randn(2, 2, 5, 5)),
               "embedding": (torch.nn.Embedding(7, 4), torch.tensor([[0, 3, 6]]))}[kind]
    base = base.double()
    x = x.double() if x.is_floating_point() else x
    W0 = base.weight.detach().clone()
    y0 = base(x)
    layer = HiRALayer(base, rank=2, generator=0)
    assert torch.equal(layer(x), y0)
    _perturb(layer)
    M = layer.hira_up @ layer.hira_down.mT
    dense = W0 + W0 * M.reshape(W0.shape)                                  # (rows, cols) of a non-transposed layout
    assert torch.allclose(layer.weight, dense, atol=1e-14)
    ref = layer(x)
    if kind == "linear":
        assert torch.allclose(ref, x @ dense.mT + base.bias, atol=1e-12)
    layer.merge_()
    assert torch.allclose(layer(x), ref, atol=1e-12) and torch.allclose(layer.base.weight, dense, atol=1e-14)
    layer.unmerge_()
    assert torch.equal(layer.base.weight, W0) and torch.allclose(layer(x), ref, atol=1e-12)
    assert [k for k, p in layer.named_parameters() if p.requires_grad] == ["hira_down", "hira_up"]


def test_hira_update_has_rank_beyond_its_factors():
    torch.manual_seed(0)
    layer = HiRALayer(torch.nn.Linear(8, 8).double(), rank=1, generator=0)
    _perturb(layer)
    assert int(torch.linalg.matrix_rank(layer.update().detach())) == 8


def test_hadamard_kind_hira_wraps_in_place_and_unloads():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Tanh(), torch.nn.Linear(4, 2)).double()
    x = torch.randn(3, 4, dtype=D)
    assert op.factor.hadamard_(net, kind="hira", rank=2, generator=0) == ["0", "2"]
    _perturb(net[0])
    ref = net(x)
    assert list(op.factor.adapter_state_dict(net)) == ["0.hira_down", "0.hira_up", "2.hira_down", "2.hira_up"]
    assert list(op.factor.pairs(net)) == []
    assert op.factor.merge_(net, unload=False) == 2 and op.factor.unmerge_(net) == 2
    op.factor.merge_(net)
    assert isinstance(net[0], torch.nn.Linear) and torch.allclose(net(x), ref, atol=1e-12)


def test_hira_refuses_bad_rank():
    with pytest.raises(ValueError, match="rank"):
        HiRALayer(torch.nn.Linear(3, 2), rank=3)
    with pytest.raises(ValueError, match="rank"):
        op.factor.hadamard_(torch.nn.Sequential(torch.nn.Linear(3, 2)), kind="hira", rank=0)
