"""The scale of LoRA's down-projection inits (issue 20: never checked before): ``"gaussian"``
draws ``N(0, 1/r²)``, ``"kaiming"`` ``U(±1/√fan_in)`` (peft's conventions), ``up = 0``."""

import math

import pytest
import torch

from overparam.factor import LoRALayer


def _down(init, cols, rank, seed=0):
    base = torch.nn.Linear(cols, 7, dtype=torch.float64)
    layer = LoRALayer(base, rank=rank, init=init, generator=seed)
    assert torch.count_nonzero(layer.lora_up) == 0
    return layer.lora_down.detach()


@pytest.mark.parametrize("rank", [4, 16])
def test_gaussian_down_init_has_std_one_over_rank(rank):
    d = _down("gaussian", 512, rank)
    assert d.shape == (512, rank)
    # 512·r draws: the sample std is within 4% of 1/r (1/√r would be 2× or 4× off).
    assert abs(float(d.std()) * rank - 1) < 0.04 * max(1.0, 16 / rank) ** 0.5
    assert abs(float(d.mean())) < 4 / (rank * math.sqrt(d.numel()))


@pytest.mark.parametrize("cols", [64, 400])
def test_kaiming_down_init_is_uniform_within_one_over_sqrt_fan_in(cols):
    d = _down("kaiming", cols, 8)
    bound = 1 / math.sqrt(cols)
    assert float(d.abs().max()) <= bound
    assert float(d.abs().max()) >= 0.95 * bound  # 8·cols uniform draws reach the edge
    # U(±b) has std b/√3.
    assert abs(float(d.std()) * math.sqrt(3) / bound - 1) < 0.1
