"""Wanda (Sun et al. 2023): prune by weight magnitude times input-activation norm, per output row.

The score of weight ``W_ij`` (layer ``W (out, d)``, :mod:`~overparam.prune.calibrate`'s matrix
layout) is ``|W_ij| · ‖X_j‖₂``, the norm of input ``j`` over all calibration rows. Unstructured
Wanda compares scores within each output row and prunes exactly ``round(s·d)`` per row
(:func:`overparam.backend.topk.topk_mask`, ties to the lower index); N:M keeps the ``n``
highest of every ``m`` consecutive inputs (:func:`overparam.backend.nm.nm_mask`). There is no
weight update: the kept weights are unchanged.

:func:`wanda` returns masks and leaves the model as it found it; with ``sequential=True`` it
zeroes each pruned group while calibrating the next one (so later layers see the pruned
model's activations, as the reference code does) and writes the original weights back at the
end. Apply the masks with :func:`overparam.prune.masked` or :func:`overparam.prune.apply_masks_`.

Example:
    >>> import torch
    >>> W = torch.tensor([[1., -2., 3., 0.5]])
    >>> wanda_mask(W, torch.tensor([4., 1., 1., 4.]), 0.5).tolist()     # scores 4, 2, 3, 2
    [[True, False, True, False]]
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn

from ..backend.checks import check_float
from ..backend.nm import nm_mask
from ..backend.select import Spec
from ..backend.topk import fraction_count, topk_mask
from .calibrate import LayerStats, PrunedMatrix, calibrate, check_pattern, layer_sparsities
from .targets import Masks

__all__ = ["wanda_scores", "wanda_mask", "wanda"]


def wanda_scores(W: Tensor, norms: Tensor) -> Tensor:
    """``|W| · norms`` ``(out, d)``: Wanda's importance of each weight.

    Args:
        W: ``(out, d)`` weights; norms: ``(d,)`` input norms ``‖X_j‖₂`` (``LayerStats.norms``).

    Reference: M. Sun, Z. Liu, A. Bair & J. Z. Kolter, "A Simple and Effective Pruning Approach for Large Language
        Models" (Wanda, ICLR 2024)

    Example:
        >>> wanda_scores(torch.tensor([[-1., 2.]]), torch.tensor([3., 0.5]))
        tensor([[3., 1.]])
    """
    check_float(W, "W")
    check_float(norms, "norms")
    if W.ndim != 2 or norms.shape != (W.shape[1],):
        raise ValueError(f"W must be (out, d) and norms (d,), got {tuple(W.shape)} and {tuple(norms.shape)}")
    if bool((norms < 0).any()) or not bool(norms.isfinite().all()):
        raise ValueError("norms must be finite and >= 0")
    return W.abs() * norms.to(W.dtype)


def wanda_mask(W: Tensor, norms: Tensor, sparsity: float | None = None, *, n: int | None = None,
               m: int | None = None) -> Tensor:
    """Wanda's keep-mask ``(out, d)``: per output row (unstructured) or N:M along the inputs.

    Args:
        W: ``(out, d)``; norms: ``(d,)``.
        sparsity: fraction pruned in every row, in [0, 1) (exactly ``round(s·d)`` per row);
            or None with ``n``, ``m``.
        n, m: keep ``n`` of every ``m`` consecutive inputs (``m | d``).

    Reference: M. Sun, Z. Liu, A. Bair & J. Z. Kolter, "A Simple and Effective Pruning Approach for Large Language
        Models" (Wanda, ICLR 2024)

    Example:
        >>> wanda_mask(torch.tensor([[1., 2., 3., 4.]]), torch.ones(4), n=1, m=2).tolist()
        [[False, True, False, True]]
    """
    check_pattern(sparsity, n, m)
    s = wanda_scores(W, norms)
    if bool(torch.isnan(s).any()):
        raise ValueError("W contains NaN")
    if n is not None:
        return nm_mask(s, n, m, dim=1)
    return ~topk_mask(s, fraction_count(sparsity, W.shape[1]), largest=False, dim=1)


def wanda(model: nn.Module, data, sparsity: float | None = None, *, n: int | None = None, m: int | None = None,
          targets: Spec = None, exclude: Spec = None, overrides: Mapping | None = None, blocks: Spec = None,
          sequential: bool = True, dtype: torch.dtype = torch.float64) -> Masks:
    """Wanda masks for the model's Linear / Conv weights from calibration data (model unchanged).

    Args:
        model: the model (deterministic: ``model.eval()`` for dropout / BatchNorm).
        data: an ``(inputs, targets)`` batch or an iterable of them (targets ignored).
        sparsity: pruned fraction of each row in [0, 1), or None with ``n``, ``m``.
        n, m: the N:M pattern along each layer's input (channels, for convolutions).
        targets, exclude: which layers (:func:`overparam.prune.targets`).
        overrides: ``{spec: sparsity}`` per-layer sparsities (:func:`overparam.prune.owl`'s output).
        blocks, sequential: as :func:`~overparam.prune.calibrate.calibrate`.
        dtype: dtype of the accumulated norms.

    Returns:
        masks ``{"<layer>.weight": bool tensor of the weight's shape}``.

    Reference: M. Sun, Z. Liu, A. Bair & J. Z. Kolter, "A Simple and Effective Pruning Approach for Large Language
        Models" (Wanda, ICLR 2024)

    Example:
        >>> net = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.ReLU(), torch.nn.Linear(8, 4))
        >>> masks = wanda(net, (torch.randn(64, 8), None), n=2, m=4)
        >>> [int(v.sum()) for v in masks.values()], int((net[0].weight == 0).sum())
        ([32, 16], 0)
    """
    per_layer = layer_sparsities(model, sparsity, n, m, targets=targets, exclude=exclude, overrides=overrides)

    def rule(name: str, W: Tensor, stats: LayerStats) -> PrunedMatrix:
        s = None if per_layer is None else per_layer[name]
        mask = wanda_mask(W, stats.norms, s, n=n, m=m)
        return PrunedMatrix(W, mask)

    return calibrate(model, data, rule, targets=targets, exclude=exclude, blocks=blocks, sequential=sequential,
                     gram=False, dtype=dtype, restore=True)
