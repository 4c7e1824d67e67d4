"""Unit-scaled module wrappers (overparam/scaling/unit_modules.py): wrap-don't-mutate, unwrap,
the wrappers compute the functional ops, bad input."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from overparam.scaling import UmupAlphas, UnitModule, UnitResidual, unit_scale_, unwrap_units_
from overparam.scaling import unit_ops as U


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Embedding(12, 16), nn.LayerNorm(16), nn.Linear(16, 32), nn.SiLU(), nn.Linear(32, 16),
                         nn.RMSNorm(16), nn.GELU(approximate="tanh"), nn.Linear(16, 12))


def test_wrap_keeps_parameters_names_and_mode_and_unwrap_restores():
    m = _model().eval()
    params = list(m.named_parameters())
    keys = list(m.state_dict())
    opt = torch.optim.SGD(m.parameters(), lr=0.1)         # built before wrapping
    layers = list(m)
    assert unit_scale_(m) == [str(i) for i in range(8)]
    assert [(k, id(p)) for k, p in m.named_parameters()] == [(k, id(p)) for k, p in params]
    assert list(m.state_dict()) == keys and not any(x.training for x in m.modules())
    assert m[7].readout and not m[2].readout
    idx = torch.tensor([[1, 5, 11], [0, 2, 3]])
    m(idx).square().sum().backward()
    opt.step()                                            # the shared parameters train
    assert all(p.grad is not None for p in m.parameters())
    m.train()
    assert unwrap_units_(m) == [str(i) for i in range(8)]
    assert [id(x) for x in m] == [id(x) for x in layers] and all(x.training for x in m)
    assert [(k, id(p)) for k, p in m.named_parameters()] == [(k, id(p)) for k, p in params]


def test_wrappers_compute_the_unit_ops():
    m = _model()
    idx = torch.tensor([[1, 5, 11], [0, 2, 3]])
    h = U.embedding(idx, m[0].weight)
    h = U.layer_norm(h, (16,), m[1].weight, m[1].bias)
    h = U.silu(U.linear(h, m[2].weight, m[2].bias), 1.5)
    h = U.rms_norm(U.linear(h, m[4].weight, m[4].bias), (16,), m[5].weight, torch.finfo(h.dtype).eps)
    expect = U.linear_readout(U.gelu(h, 1.5, approximate="tanh"), m[7].weight, m[7].bias)
    unit_scale_(m, alphas=UmupAlphas(ffn_act=1.5))
    torch.testing.assert_close(m(idx), expect, rtol=0, atol=0)


def test_targets_exclude_readout_and_residual():
    m = _model()
    assert unit_scale_(m, targets=nn.Linear, exclude="7") == ["2", "4"]
    assert m[4].readout and isinstance(m[7], nn.Linear)   # the last *wrapped* Linear is the read-out
    unwrap_units_(m)
    unit_scale_(m, readout="4")
    assert m[4].readout and not m[7].readout
    block = UnitResidual(nn.Linear(4, 4, bias=False), tau=0.5)
    x = torch.randn(3, 4)
    torch.testing.assert_close(block(x), U.residual_apply(block.branch, x, 0.5))


def test_bad_input():
    m = _model()
    with pytest.raises(ValueError, match="targets"):
        unit_scale_(m, targets="nothing")
    with pytest.raises(ValueError, match="readout"):
        unit_scale_(m, targets="2", readout="7")
    with pytest.raises(ValueError, match="readout"):
        unit_scale_(m, readout="1")
    with pytest.raises(ValueError, match="itself"):
        unit_scale_(nn.Linear(2, 2))
    unit_scale_(m)
    with pytest.raises(ValueError, match="already"):
        unit_scale_(m)
    with pytest.raises(TypeError, match="base"):
        UnitModule(nn.ReLU())
    with pytest.raises(ValueError, match="readout"):
        UnitModule(nn.LayerNorm(3), readout=True)
    with pytest.raises(ValueError, match="tau"):
        UnitResidual(nn.Identity(), tau=0.0)
    with pytest.raises(TypeError, match="alphas"):
        unit_scale_(_model(), alphas={"ffn_act": 2.0})


class MyGELU(nn.Module):  # a model library's own activation class: no wrapper
    def forward(self, x):
        return nn.functional.gelu(x)


class Scaled(nn.Module):  # a layer holding its own parameter: no wrapper
    def __init__(self):
        super().__init__()
        self.g = nn.Parameter(torch.ones(4))

    def forward(self, x):
        return x * self.g


def test_layers_without_a_wrapper_are_named_unless_excluded_or_targets_given():
    m = nn.Sequential(nn.Linear(4, 4), MyGELU(), Scaled(), nn.Linear(4, 2))
    with pytest.raises(ValueError, match=r"'1' \(MyGELU\), '2' \(Scaled\) cannot be unit-scaled"):
        unit_scale_(m)
    assert type(m[0]) is nn.Linear                       # nothing was wrapped
    with pytest.raises(ValueError, match=r"'2' \(Scaled\)"):
        unit_scale_(m, exclude="1")
    assert unit_scale_(m, exclude=[MyGELU, "2"]) == ["0", "3"]
    unwrap_units_(m)
    assert unit_scale_(m, targets=nn.Linear) == ["0", "3"]  # explicit targets: the user chose
    frozen = nn.Sequential(nn.Linear(4, 4), Scaled(), nn.Linear(4, 2))
    frozen[1].g.requires_grad_(False)
    assert unit_scale_(frozen) == ["0", "2"]             # a frozen constant needs no unit scale


def test_a_plan_is_the_same_before_and_after_wrapping():
    """The u-μP types and rules look through the wrappers: a wrapped LayerNorm/RMSNorm keeps its
    'norm' type (gain kept, not zeroed), a wrapped Embedding its dimension-based LR."""
    from overparam.scaling import umup_plan, umup_types
    m = _model()
    before, rules = umup_types(m), umup_plan(m).rules
    unit_scale_(m)
    assert umup_types(m) == before and before["1.weight"] == "norm" and before["5.weight"] == "norm"
    assert umup_plan(m).rules == rules
