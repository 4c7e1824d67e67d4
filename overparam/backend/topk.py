"""The one top-k selection of the library, with one count rule and one tie rule.

* Count: a fraction ``f`` of ``n`` entries is :func:`fraction_count` ``= floor(f·n + 1/2)``
  entries (half rounds up, unlike Python's ``round``).
* Ties: :func:`topk_mask` selects exactly ``k`` entries; among entries equal to the boundary
  value the ones with the lowest flat index (row-major; then lower rank first when the scores
  are sharded over a process group) are selected first. ``ties="keep"`` instead selects every
  entry tied with the k-th, so at least ``k`` (robust PCA's trimming ``|x| >= k-th largest``).
* Exact threshold: the k-th value is ``torch.kthvalue`` (on a bracket found from a strided
  sample for large inputs), or :func:`overparam.backend.dist.global_kth_value` across ranks.

Used by prune's unstructured masks (pruned = the ``k`` smallest), sparse-plus-low-rank supports
and robust PCA's outlier trimming (per row and per column, ``dim=``).

Example:
    >>> import torch
    >>> s = torch.tensor([1., 3., 3., 0., 3.])
    >>> topk_mask(s, 2).tolist()
    [False, True, True, False, False]
    >>> topk_mask(s, 2, ties="keep").tolist()
    [False, True, True, False, True]
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from . import dist
from .checks import check_float, check_fraction

__all__ = ["TIES", "fraction_count", "topk_mask"]

TIES = ("index", "keep")
"""Tie rules of :func:`topk_mask`: ``"index"`` (exactly ``k``, lowest index first) or ``"keep"`` (all tied)."""


def fraction_count(fraction: float, n: int) -> int:
    """Number of entries a fraction ``f ∈ [0, 1]`` of ``n`` stands for: ``floor(f·n + 1/2)``.

    Example:
        >>> fraction_count(0.5, 5), fraction_count(0.2, 10), fraction_count(0.25, 2)
        (3, 2, 1)
    """
    f = check_fraction(fraction, "fraction")
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"n must be an int >= 0, got {n!r}")
    return int(math.floor(f * n + 0.5))


def _float(t: Tensor, name: str = "scores") -> Tensor:
    check_float(t, name)
    return t.float() if t.dtype in (torch.float16, torch.bfloat16) else t


def _bracketed_kthvalue(flat: Tensor, k: int) -> Tensor:
    """Exact k-th smallest of a 1-D tensor: ``torch.kthvalue`` restricted to a bracket found
    from a strided sample (fewer passes over large inputs); falls back to the full
    ``torch.kthvalue`` whenever the bracket misses."""
    n = flat.numel()
    if n < (1 << 20):
        return torch.kthvalue(flat, k).values
    stride = n // 65536
    ss = torch.sort(flat[::stride]).values
    ns = ss.numel()
    margin = 4.0 * math.sqrt(ns) + 8
    lo = ss[max(0, math.floor(k / n * ns - margin) - 1)]
    hi = ss[min(ns - 1, math.ceil(k / n * ns + margin) - 1)]
    n_lo = int(torch.count_nonzero(flat < lo))
    if n_lo < k:
        cand = flat[(flat >= lo) & (flat <= hi)]
        if 0 < k - n_lo <= cand.numel():
            return torch.kthvalue(cand, k - n_lo).values
    return torch.kthvalue(flat, k).values


def _smallest_flat(flat: Tensor, k: int, ties: str, group) -> Tensor:
    """Select the ``k`` smallest of a 1-D ``flat`` (``-inf`` first); ties as :func:`topk_mask`."""
    distributed = dist.is_distributed(group)
    t = dist.global_kth_value(flat, k, group=group) if distributed else _bracketed_kthvalue(flat, k)
    below, tied = flat < t, flat == t
    # count_nonzero: a bool .sum() first copies the mask to int64 (14x slower on 8M entries)
    counts = torch.stack([torch.count_nonzero(below), torch.count_nonzero(tied), torch.count_nonzero(flat > t)])
    if int(counts.sum()) != flat.numel():  # NaN compares false with everything
        raise ValueError("scores contain NaN")
    if ties == "keep":
        return below | tied
    if distributed:
        allc = dist.all_gather(counts, group=group)  # (world, 3)
        me = dist.rank(group)
        r = max(0, min(k - int(allc[:, 0].sum()) - int(allc[:me, 1].sum()), int(counts[1])))
    else:
        r = k - int(counts[0])
    if r <= 0:
        return below
    if r >= int(counts[1]):
        return below | tied
    return below | (tied & (torch.cumsum(tied, 0, dtype=torch.int64) <= r))


def topk_mask(scores: Tensor, k: int, *, largest: bool = True, dim: int | None = None, ties: str = "index",
              group=dist.LOCAL) -> Tensor:
    """Bool mask selecting the ``k`` largest (or smallest) entries of ``scores``.

    Args:
        scores: any shape, floating point, no NaN (``±inf`` allowed).
        k: how many to select: over all entries (``dim=None``; over all ranks of ``group`` when
            distributed), or in every 1-D slice along ``dim``. ``0 <= k <=`` that size.
        largest: select the largest (``True``) or the smallest.
        dim: ``None`` (one selection over the whole tensor) or the dimension of the slices.
        ties: ``"index"``: exactly ``k``, entries tied at the boundary taken by lowest index (then
            lowest rank); ``"keep"``: also every entry tied with the ``k``-th (``k = 0`` selects none).
        group: :data:`~overparam.backend.dist.LOCAL` (default: this process's scores alone, also inside
            a process group, e.g. replicated DDP weights), or the process group (``None``: the world)
            whose ranks each hold a shard of the scores (``dim=None`` only).

    Returns:
        bool tensor of ``scores``' shape.

    Example:
        >>> topk_mask(torch.tensor([[1., 2.], [2., 0.]]), 1, dim=1).tolist()
        [[False, True], [True, False]]
    """
    s = _float(scores)
    if ties not in TIES:
        raise ValueError(f"ties must be {' or '.join(map(repr, TIES))}, got {ties!r}")
    if isinstance(k, bool) or not isinstance(k, int):
        raise TypeError(f"k must be an int, got {type(k).__name__}")
    if dim is None:
        flat = s.reshape(-1)
        n = flat.numel()
        if dist.is_distributed(group):
            total = torch.tensor([n], device=flat.device)
            n = int(dist.all_reduce_vec((total,))[0])
        if not 0 <= k <= n:
            raise ValueError(f"k must be in [0, {n}] (the number of scores), got {k}")
        if k == 0:
            if bool(torch.isnan(flat).any()):
                raise ValueError("scores contain NaN")
            return torch.zeros_like(s, dtype=torch.bool)
        return _smallest_flat(-flat if largest else flat, k, ties, group).reshape(s.shape)
    if dist.is_distributed(group):
        raise ValueError("group (sharded scores) needs dim=None")
    if s.ndim == 0 or not -s.ndim <= dim < s.ndim:
        raise ValueError(f"dim must be a dimension of scores (shape {tuple(s.shape)}), got {dim}")
    size = s.shape[dim]
    if not 0 <= k <= size:
        raise ValueError(f"k must be in [0, {size}] (the size of dim {dim}), got {k}")
    if bool(torch.isnan(s).any()):
        raise ValueError("scores contain NaN")
    if k == 0:
        return torch.zeros_like(s, dtype=torch.bool)
    if ties == "keep":
        kth = torch.topk(s, k, dim=dim, largest=largest).values.narrow(dim, k - 1, 1)
        return s >= kth if largest else s <= kth
    # the k-th smallest key per slice, then the tied entries at it by lowest index (no full sort)
    key = -s if largest else s
    kth = torch.kthvalue(key, k, dim=dim, keepdim=True).values
    below = key < kth
    tied = key == kth
    room = k - below.sum(dim=dim, keepdim=True)
    if bool((tied.sum(dim=dim, keepdim=True) == room).all()):   # no surplus tie at the boundary (the usual case)
        return below | tied
    return below | (tied & (torch.cumsum(tied, dim=dim) <= room))
