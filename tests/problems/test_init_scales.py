"""The problems' small random inits against their definition ``scale · G / √n`` (draw by draw,
same generator), for the symmetric and asymmetric cases."""

import torch

from overparam.backend.random import gaussian, construction_generator
from overparam.problems import sensing, small_factors


def test_small_factors_are_scale_times_gaussian_over_sqrt_n():
    like = torch.zeros((), dtype=torch.float64)
    L, R = small_factors((9, 4), 3, like=like, scale=0.2, symmetric=False, generator=11)
    g = construction_generator(11)
    assert torch.allclose(L, 0.2 * gaussian((9, 3), generator=g, dtype=torch.float64) / 3, rtol=1e-15, atol=0)
    assert torch.allclose(R, 0.2 * gaussian((4, 3), generator=g, dtype=torch.float64) / 2, rtol=1e-15, atol=0)


def test_sensing_small_init_uses_the_same_rule():
    P = sensing(16, 2, 40, generator=0)
    X = P.init("small", rank=5, scale=0.5, generator=3)
    want = 0.5 * gaussian((16, 5), generator=construction_generator(3), dtype=P.M_star.dtype) / 4
    assert torch.allclose(X, want, rtol=1e-15, atol=0)
