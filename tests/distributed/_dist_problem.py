"""The curvature problem both hessian test files of this folder use, and their error helper."""

import torch

from overparam.testing import tanh_mlp

SPLIT = 7  # rank 0 holds samples [0, 7), rank 1 [7, 16): unequal shares exercise the weighting
mse = torch.nn.functional.mse_loss


def problem():
    """A 3-6-1 tanh MLP (31 parameters), 16 samples and a vector v, all fp64."""
    net = tanh_mlp([3, 6, 1], generator=0)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(16, 3, generator=g, dtype=torch.float64)
    y = torch.randn(16, 1, generator=g, dtype=torch.float64)
    v = torch.randn(31, generator=g, dtype=torch.float64)
    return net, x, y, v


def expect_error(fn, *args, **kw) -> str:
    """The message of the ValueError ``fn(*args, **kw)`` raises, or "no error"."""
    try:
        fn(*args, **kw)
    except ValueError as err:
        return str(err)
    return "no error"
