"""Which weight dim of a layer is its output and which its input (private to structural removal).

``Linear`` and ``ConvNd`` weights are ``(out, in, *kernel)``; ``ConvTransposeNd`` weights are
``(in, out, *kernel)``. :mod:`overparam.prune.removal` and :mod:`overparam.prune._depgraph` view
every weight as ``(out, in, ...)`` through :func:`canonical` and ask :func:`in_dim` which dim of
the stored tensor a reading layer's input channels index.
"""

from __future__ import annotations

from torch import Tensor, nn

from ..backend.layers import layout_of

CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
TRANSPOSED = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)

__all__ = ["CONV", "TRANSPOSED", "canonical", "in_dim"]


def in_dim(mod: nn.Module) -> int:
    """The weight dim indexed by ``mod``'s input channels (0 for a transposed conv, else 1): the
    layer-kind registry's layout (:func:`overparam.backend.layers.layout_of`)."""
    layout = layout_of(mod)
    return 1 if layout is None else layout.in_dim


def canonical(mod: nn.Module, w: Tensor) -> Tensor:
    """``w`` (``mod``'s weight, or a mask of its shape) as a view ``(out, in, ...)``."""
    return w.transpose(0, 1) if in_dim(mod) == 0 else w
