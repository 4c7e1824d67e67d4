"""One selection spec means the same parts of a model in factor, prune, hessian and scaling, and a
pattern that matches nothing is an error in each (issue: one library, one selection language)."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import overparam as op


class Block(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.attn = nn.Linear(d, d)
        self.norm = nn.LayerNorm(d)
        self.mlp = nn.Sequential(nn.Linear(d, 2 * d), nn.GELU(), nn.Linear(2 * d, d))

    def forward(self, x):
        return x + self.mlp(self.norm(x + self.attn(x)))


class Net(nn.Module):
    def __init__(self, d=4):
        super().__init__()
        self.blocks = nn.ModuleList([Block(d), Block(d)])
        self.head = nn.Linear(d, 2)

    def forward(self, x):
        for b in self.blocks:
            x = b(x)
        return self.head(x)


def net(d=4):
    return op.backend.random.fan_in_normal_(Net(d).double(), generator=0)


DATA = (torch.randn(6, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(1)),
        torch.randn(6, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(2)))

SPECS = [
    ("blocks.0", None),
    (["blocks.*.mlp", "head"], None),
    (nn.Linear, "blocks.1"),
    ("blocks", "*.attn"),
    (lambda name, obj: name.startswith("blocks.1.mlp"), None),
]


def _owner(param_name):
    return param_name.rpartition(".")[0]


@pytest.mark.parametrize("spec,exclude", SPECS)
def test_one_spec_selects_the_same_parts_everywhere(spec, exclude):
    params = set(op.select(net(), spec, exclude=exclude, kind="parameters"))
    layers = {n for n, m in op.select(net(), spec, exclude=exclude).items() if isinstance(m, nn.Linear)}
    assert params and layers

    # hessian: exactly the parameters the spec selects
    H = op.hessian.hessian(net(), F.mse_loss, DATA, params=spec, exclude=exclude)
    assert set(H.names) == params
    assert set(op.hessian.gradient(net(), F.mse_loss, DATA, params=spec, exclude=exclude)) == params

    # prune: the weights of the selected layers
    assert set(op.prune.targets(net(), spec, exclude=exclude)) == {f"{n}.weight" for n in layers}
    assert set(op.prune.magnitude(net(), 0.5, targets=spec, exclude=exclude)) == {f"{n}.weight" for n in layers}

    # factor: the selected layers are the ones wrapped
    assert set(op.factor.lora_(net(), spec, rank=1, exclude=exclude, generator=0)) == layers

    # scaling: a role given to the spec lands on exactly the selected parameters
    if exclude is None:
        base, key = net(2), tuple(spec) if isinstance(spec, list) else spec   # dict keys: a tuple for a list
        fixed = op.scaling.infer_shapes(net(), base=base, roles={key: "fixed"})
        hidden = op.scaling.infer_shapes(net(), base=base, roles={key: "hidden"})
        assert {k for k in fixed if fixed[k].role != hidden[k].role} == params


@pytest.mark.parametrize("bad", ["blocks.7", "nothing", "*.conv", nn.Conv2d])
def test_a_pattern_that_matches_nothing_raises_in_every_package(bad):
    with pytest.raises(ValueError, match="params"):
        op.hessian.hessian(net(), F.mse_loss, DATA, params=["head", bad])
    with pytest.raises(ValueError, match="targets"):
        op.prune.magnitude(net(), 0.5, targets=["head", bad])
    with pytest.raises(ValueError, match="targets"):
        op.factor.lora_(net(), ["head", bad], rank=1)
    with pytest.raises(ValueError, match="roles"):
        op.scaling.infer_shapes(net(), base=net(2), roles={bad: "fixed"})
    with pytest.raises(ValueError, match="exclude"):
        op.hessian.hessian(net(), F.mse_loss, DATA, exclude=bad)
    with pytest.raises(ValueError, match="exclude"):
        op.prune.magnitude(net(), 0.5, exclude=bad)
    with pytest.raises(ValueError, match="exclude"):
        op.factor.lora_(net(), rank=1, exclude=bad)
    with pytest.raises(ValueError, match="overrides"):
        op.prune.magnitude(net(), 0.5, overrides={bad: 0.9})
    with pytest.raises(ValueError, match="modules"):
        op.scaling.coord_check(lambda w: net(w), F.mse_loss, DATA, widths=[2, 4], modules=bad)
