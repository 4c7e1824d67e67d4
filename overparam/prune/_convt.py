"""Which weight dim of a layer is its output and which its input (private to structural removal).

``Linear`` and ``ConvNd`` weights are ``(out, in, *kernel)``; ``ConvTransposeNd`` weights are
``(in, out, *kernel)``; with ``groups > 1`` the second dim holds one group's share (``in/groups``
or ``out/groups``). :mod:`overparam.prune.removal` and :mod:`overparam.prune._depgraph` view every
weight as a dense ``(out, in, ...)`` through :func:`canonical` (block-diagonal for a grouped
layer), ask :func:`in_dim` which dim of the stored tensor a reading layer's input channels index,
and shrink a grouped layer with :func:`regroup`. A depthwise layer (``groups == in == out``) maps
channel ``c`` to channel ``c``: its channels are weight dim 0 for both kinds.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..backend.layers import layout_of

CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
TRANSPOSED = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)

__all__ = ["CONV", "TRANSPOSED", "canonical", "depthwise", "grouped", "in_dim", "regroup"]


def depthwise(mod: nn.Module) -> bool:
    """A Conv or ConvTranspose with ``groups == in_channels == out_channels > 1``."""
    return isinstance(mod, CONV + TRANSPOSED) and 1 < mod.groups == mod.in_channels == mod.out_channels


def grouped(mod: nn.Module) -> bool:
    """A Conv or ConvTranspose with ``groups > 1`` that is not depthwise."""
    return isinstance(mod, CONV + TRANSPOSED) and mod.groups > 1 and not depthwise(mod)


def in_dim(mod: nn.Module) -> int:
    """The weight dim indexed by ``mod``'s input channels (0 for a transposed conv, else 1): the
    layer-kind registry's layout (:func:`overparam.backend.layers.layout_of`); 1 for a depthwise
    layer, whose channels (in and out alike) are dim 0."""
    layout = layout_of(mod)
    return 1 if layout is None or depthwise(mod) else layout.in_dim


def canonical(mod: nn.Module, w: Tensor) -> Tensor:
    """``w`` (``mod``'s weight, or a mask of its shape) as ``(out, in, ...)``: a view, or for a grouped
    layer the block-diagonal dense tensor (zero / ``False`` between the groups)."""
    if not grouped(mod):
        return w.transpose(0, 1) if in_dim(mod) == 0 else w
    g, t = mod.groups, isinstance(mod, TRANSPOSED)
    a, b = w.shape[0] // g, w.shape[1]                     # rows per group, columns per group (stored layout)
    dense = w.new_zeros(w.shape[0], b * g, *w.shape[2:])
    for j in range(g):
        dense[j * a:(j + 1) * a, j * b:(j + 1) * b] = w[j * a:(j + 1) * a]
    return dense.transpose(0, 1) if t else dense


def regroup(mod: nn.Module, name: str, keep_out: Tensor, keep_in: Tensor) -> None:
    """Shrink grouped layer ``mod`` (module ``name``) to output channels ``keep_out`` and input channels
    ``keep_in`` (bool vectors): its weight and ``in_channels``, ``out_channels``, ``groups`` (a group
    losing every channel goes). Raises ``ValueError`` unless every remaining group keeps the same numbers."""
    g = mod.groups
    go = torch.arange(mod.out_channels, device=keep_out.device) // (mod.out_channels // g)
    gi = torch.arange(mod.in_channels, device=keep_in.device) // (mod.in_channels // g)
    ko, ki = go[keep_out], gi[keep_in]
    left, co = ko.unique(return_counts=True)
    left_in, ci = ki.unique(return_counts=True)
    if not (torch.equal(left, left_in) and bool((co == co[0]).all()) and bool((ci == ci[0]).all())):
        per = [[int((v == j).sum()) for j in range(g)] for v in (ko, ki)]
        raise ValueError(f"masks: grouped {type(mod).__name__} {name!r} (groups={g}) would keep output channels "
                         f"{per[0]} and input channels {per[1]} per group: a grouped layer keeps the same numbers "
                         "in every group it keeps (mask the same count of rows and input channels per group)")
    G, co, ci = len(left), int(co[0]), int(ci[0])
    sub = canonical(mod, mod.weight.detach())[keep_out][:, keep_in]           # (G·co, G·ci, k...) block-diagonal
    blocks = [sub[j * co:(j + 1) * co, j * ci:(j + 1) * ci] for j in range(G)]
    w = torch.cat([b.transpose(0, 1) for b in blocks]) if isinstance(mod, TRANSPOSED) else torch.cat(blocks)
    mod.weight = nn.Parameter(w.clone(), requires_grad=mod.weight.requires_grad)
    mod.groups, mod.in_channels, mod.out_channels = G, G * ci, G * co
