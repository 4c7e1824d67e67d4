"""Input patches of a convolution (im2col): the rows a ConvNd's weight matrix multiplies.

A ``nn.Conv1d/2d/3d`` with ``groups=1`` computes ``y = rows @ W_matᵀ + b`` where ``rows`` are the
unfolded input patches ``(batch · ∏L, C_in · ∏k)`` (``L`` the output positions) and ``W_mat`` the
weight as a matrix. Two column orders: ``"channel_major"`` (``(c, k₁, …)``, i.e.
``weight.reshape(out, -1)``, the order of ``F.unfold`` and of :mod:`overparam.backend.layers`'
matrix view) and ``"kernel_major"`` (``(k₁, …, c)``: consecutive columns are consecutive input
channels at one kernel position, the N:M grouping). Any stride, padding (``"same"`` too), padding
mode and dilation.

Example:
    >>> import torch
    >>> conv = torch.nn.Conv2d(2, 3, 3, padding=1)
    >>> x = torch.randn(4, 2, 5, 5)
    >>> y = conv_rows(conv, x) @ conv.weight.reshape(3, -1).T + conv.bias
    >>> torch.allclose(y.reshape(4, 5, 5, 3).permute(0, 3, 1, 2), conv(x), atol=1e-5)
    True
"""

from __future__ import annotations

import einops
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["conv_rows"]

ORDERS = ("channel_major", "kernel_major")


def conv_rows(conv: nn.Module, x: Tensor, *, order: str = "channel_major") -> Tensor:
    """The input rows ``(batch · ∏L, C_in · ∏k)`` of ``conv`` (``nn.Conv1d/2d/3d``, ``groups=1``) on
    ``x (batch, C_in, *spatial)`` (or unbatched ``(C_in, *spatial)``); columns in ``order``.

    Example:
        >>> import torch
        >>> conv = torch.nn.Conv1d(2, 3, 3, bias=False)
        >>> conv_rows(conv, torch.ones(4, 2, 5)).shape
        torch.Size([12, 6])
    """
    if not isinstance(conv, nn.modules.conv._ConvNd) or isinstance(conv, nn.modules.conv._ConvTransposeNd):
        raise TypeError(f"conv must be an nn.Conv1d/2d/3d, got {type(conv).__name__}")
    if conv.groups != 1:
        raise ValueError(f"conv is a grouped convolution (groups={conv.groups}); only groups=1 has one input-row matrix")
    if order not in ORDERS:
        raise ValueError(f"order must be one of {ORDERS}, got {order!r}")
    nd = conv.weight.ndim - 2
    if x.ndim == nd + 1:
        x = x.unsqueeze(0)
    if x.ndim != nd + 2 or x.shape[1] != conv.in_channels:
        raise ValueError(f"x has shape {tuple(x.shape)}; the layer needs (batch, {conv.in_channels}, {nd} spatial dims)")
    mode = "constant" if conv.padding_mode == "zeros" else conv.padding_mode
    x = F.pad(x, conv._reversed_padding_repeated_twice, mode=mode)
    for i, (k, s, dil) in enumerate(zip(conv.kernel_size, conv.stride, conv.dilation)):
        x = x.unfold(2 + i, dil * (k - 1) + 1, s)[..., ::dil]
    ls = " ".join(f"l{i}" for i in range(nd))
    ks = " ".join(f"k{i}" for i in range(nd))
    cols = f"(c {ks})" if order == "channel_major" else f"({ks} c)"
    return einops.rearrange(x, f"b c {ls} {ks} -> (b {ls}) {cols}")
