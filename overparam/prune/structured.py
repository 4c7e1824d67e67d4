"""Structured masks: whole slices (channels, filters, heads) by their Ln norm, and r×c blocks.

:func:`ln_structured` scores each index ``i`` of dimension ``dim`` by ``‖w.select(dim, i)‖_p``
and prunes exactly ``floor(s·size + 1/2)`` slices (ties: earlier index pruned first);
``groups`` splits the dimension into equal groups of consecutive indices (attention heads:
``dim=0, groups=n_heads`` on a fused ``(n_heads·d_head, d_model)`` projection).
:func:`block_mask` scores each ``r×c`` tile of a 2-D view ``(out, rest)`` by its Ln norm and
prunes exactly that many tiles.

Example:
    >>> import torch
    >>> w = torch.tensor([[1., 1.], [3., 0.], [0., 0.5]])
    >>> ln_structured(w, 1/3, dim=0).tolist()
    [[True, True], [True, True], [False, False]]
"""

from __future__ import annotations

import math

import einops
import torch
from torch import Tensor

from .masks import check_sparsity, n_pruned, prune_smallest
from ..backend.checks import check_dim

__all__ = ["slice_norms", "ln_structured", "block_mask"]


def _check_w(w: Tensor) -> None:
    if not isinstance(w, Tensor):
        raise TypeError(f"w must be a torch.Tensor, got {type(w).__name__}")
    if w.dim() < 1 or w.numel() == 0:
        raise ValueError(f"w must have at least one dimension and one entry, got shape {tuple(w.shape)}")


def _norms(x: Tensor, p: float) -> Tensor:
    """Ln norms of the rows of ``x`` ``(rows, cols)`` in float64, ``(rows,)``; ``p`` a real number, not NaN."""
    if isinstance(p, bool) or not isinstance(p, (int, float)) or math.isnan(p):
        raise ValueError(f"p must be a real number (the norm order), got {p!r}")
    return torch.linalg.vector_norm(x.double(), ord=p, dim=-1)


def _keep_largest(norms: Tensor, sparsity: float) -> Tensor:
    """Bool keep-mask of ``norms`` pruning ``floor(s·n + 1/2)`` of the smallest; NaN norms mean a NaN in ``w``."""
    if bool(torch.isnan(norms).any()):
        raise ValueError("w holds NaN entries: its slice or block norms are NaN")
    return prune_smallest(norms, n_pruned(sparsity, norms.numel()))


def slice_norms(w: Tensor, dim: int, *, p: float = 2.0, groups: int | None = None) -> Tensor:
    """Ln norm of every slice along ``dim`` (or of each of ``groups`` equal slice groups), ``(size,)``.

    Example:
        >>> slice_norms(torch.ones(2, 3), 1, p=1).tolist()
        [2.0, 2.0, 2.0]
    """
    _check_w(w)
    d = check_dim(dim, w.dim())
    moved = w.movedim(d, 0).reshape(w.shape[d], -1)
    if groups is not None:
        if not isinstance(groups, int) or groups < 1 or w.shape[d] % groups:
            raise ValueError(f"groups must divide dimension {d} of size {w.shape[d]}, got {groups}")
        moved = moved.reshape(groups, -1)
    return _norms(moved, p)


def ln_structured(w: Tensor, sparsity: float, *, dim: int, p: float = 2.0, groups: int | None = None) -> Tensor:
    """Bool mask of ``w``'s shape pruning whole slices along ``dim`` with the smallest Ln norms.

    Args:
        w: weight (e.g. Conv ``(out, in, kh, kw)``: ``dim=0`` filters, ``dim=1`` channels).
        sparsity: fraction of slices (or slice groups) pruned, in [0, 1).
        dim: the dimension whose indices are pruned, in ``[-w.dim(), w.dim())``.
        p: the norm order (1, 2, ``float('inf')``, ...).
        groups: prune groups of ``size // groups`` consecutive indices together (heads).

    Reference: H. Li et al., "Pruning Filters for Efficient ConvNets" (ICLR 2017)

    Example:
        >>> m = ln_structured(torch.arange(8.).reshape(4, 2), 0.5, dim=0, groups=2)
        >>> m[:, 0].tolist()
        [False, False, True, True]
    """
    check_sparsity(sparsity)
    norms = slice_norms(w, dim, p=p, groups=groups)
    keep = _keep_largest(norms, sparsity)
    d = check_dim(dim, w.dim())
    keep = keep.repeat_interleave(w.shape[d] // norms.numel())
    shape = [1] * w.dim()
    shape[d] = w.shape[d]
    return keep.reshape(shape).expand(w.shape).clone()


def block_mask(w: Tensor, sparsity: float, *, block: tuple[int, int], p: float = 2.0) -> Tensor:
    """Prune whole ``r×c`` tiles of the 2-D view ``(out, in·kernel)`` with the smallest Ln norms.

    Args:
        w: ``(out, ...)``; viewed as ``(out, rest)`` with ``out % r == 0`` and ``rest % c == 0``.
        sparsity: fraction of tiles pruned, in [0, 1).
        block: ``(r, c)``.

    Example:
        >>> m = block_mask(torch.tensor([[1., 1., 5., 5.], [1., 1., 5., 5.]]), 0.5, block=(2, 2))
        >>> m.int().tolist()
        [[0, 0, 1, 1], [0, 0, 1, 1]]
    """
    check_sparsity(sparsity)
    if not (isinstance(block, tuple) and len(block) == 2 and all(isinstance(b, int) and b >= 1 for b in block)):
        raise ValueError(f"block must be a pair of positive ints (r, c), got {block!r}")
    _check_w(w)
    r, c = block
    w2 = w.reshape(w.shape[0], -1)
    if w2.shape[0] % r or w2.shape[1] % c:
        raise ValueError(f"block {block} does not tile the 2-D view {tuple(w2.shape)} of w")
    tiles = einops.rearrange(w2, "(a r) (b c) -> a b (r c)", r=r, c=c)
    norms = _norms(tiles, p)
    keep = _keep_largest(norms.reshape(-1), sparsity).reshape(norms.shape)
    full = einops.repeat(keep, "a b -> (a r) (b c)", r=r, c=c)
    return full.reshape(w.shape)
