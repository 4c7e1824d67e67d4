"""``fan_in_normal_`` against its definition, draw by draw: ``std·N(0,1)/√fan_in`` for matrices
and kernels (``fan_in = p[0].numel()``), ``bias_std·N(0,1)`` for vectors, in parameter order."""

import torch
from torch import nn

from overparam.backend.random import fan_in_normal_, gaussian, construction_generator


def test_fan_in_normal_equals_the_scaled_draws_in_parameter_order():
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(4 * 6 * 6, 5)).double()
    fan_in_normal_(net, std=2.0, bias_std=0.3, generator=7)
    g = construction_generator(7)
    fans = {"0.weight": 27, "2.weight": 144}
    for name, p in net.named_parameters():
        draw = gaussian(p.shape, generator=g, dtype=p.dtype)
        scale = 2.0 / fans[name] ** 0.5 if name in fans else 0.3
        assert torch.allclose(p.detach(), draw * scale, rtol=1e-15, atol=0), name
