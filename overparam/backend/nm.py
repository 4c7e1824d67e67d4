"""N:M selection: in every group of M consecutive scores along a dimension keep the N highest.

The grouping (:func:`nm_groups` / :func:`nm_ungroup`) moves the grouped dimension last and
splits it into groups of M; it must divide evenly (nothing is padded). Ties are broken by
position: among equal scores the earlier one in the group is kept, i.e. entry ``i`` is kept when

    rank_i = #{j : s_j > s_i} + #{j < i : s_j = s_i} < N.

:func:`nm_mask` is registered in :mod:`~overparam.backend.dispatch` as routine ``"nm_mask"``
with four implementations of one signature ``(scores, n, m, dim)``:

* ``"reference"``: a stable descending sort per group (the oracle);
* ``"batched"``: sort-free pairwise ranks for M <= 8, top-k beyond with a stable sort only for
  the groups tied at the boundary (``"auto"`` off CUDA);
* ``"compiled"``: the pairwise ranks for every M as one ``torch.compile``'d program (opt-in; the
  first call compiles, see :mod:`~overparam.backend.compiled`);
* ``"triton"``: the fused kernel of :mod:`overparam.backend.kernels.nm` (``"auto"`` on CUDA
  when Triton is installed; on CPU only under ``TRITON_INTERPRET=1``).

Example:
    >>> import torch
    >>> w = torch.tensor([[4., -1., 3., 0.5, 1., 2., -3., 0.]])
    >>> nm_mask(w.abs(), 2, 4).int().tolist()
    [[1, 0, 1, 0, 0, 1, 1, 0]]
"""

from __future__ import annotations

import torch
from torch import Tensor

from . import dispatch
from .checks import check_dim, check_float
from .compiled import compile_unavailable, lazy_compile

__all__ = ["check_nm", "nm_groups", "nm_ungroup", "grouped_dim", "nm_mask"]


def check_nm(n: int, m: int) -> None:
    """Raise unless ``1 <= n < m`` are ints.

    Example:
        >>> check_nm(2, 4)
    """
    for name, v in (("n", n), ("m", m)):
        if isinstance(v, bool) or not isinstance(v, int):
            raise TypeError(f"{name} must be an int, got {type(v).__name__}")
    if not 1 <= n < m:
        raise ValueError(f"n, m: N:M needs 1 <= N < M, got n={n}, m={m}")


def nm_groups(t: Tensor, m: int, dim: int = 1) -> Tensor:
    """View ``t`` as ``(groups, m)``: dim ``dim`` moved last and split into groups of ``m``
    (a 1-D ``t`` is grouped along its only dimension).

    Example:
        >>> nm_groups(torch.arange(8.).reshape(2, 4), 2).tolist()
        [[0.0, 1.0], [2.0, 3.0], [4.0, 5.0], [6.0, 7.0]]
    """
    if not isinstance(t, Tensor):
        raise TypeError(f"t must be a torch.Tensor, got {type(t).__name__}")
    if isinstance(m, bool) or not isinstance(m, int) or m < 1:
        raise (ValueError if isinstance(m, int) else TypeError)(f"m must be an int >= 1, got {m!r}")
    if t.dim() < 1:
        raise ValueError("N:M needs a tensor with at least one dimension")
    d = check_dim(dim, t.dim()) if t.dim() > 1 else 0
    size = t.shape[d]
    if size % m:
        raise ValueError(f"dimension {d} has size {size}, not divisible by M={m} (shape {tuple(t.shape)})")
    return t.movedim(d, -1).reshape(-1, m)


def nm_ungroup(g: Tensor, like: Tensor, dim: int = 1) -> Tensor:
    """Inverse of :func:`nm_groups`: ``g (groups, m)`` back to ``like``'s shape.

    Example:
        >>> x = torch.arange(12.).reshape(4, 3)
        >>> torch.equal(nm_ungroup(nm_groups(x, 2, dim=0), x, dim=0), x)
        True
    """
    for name, x in (("g", g), ("like", like)):
        if not isinstance(x, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if g.numel() != like.numel():
        raise ValueError(f"g has {g.numel()} entries but like has {like.numel()} (shape {tuple(like.shape)})")
    d = check_dim(dim, like.dim()) if like.dim() > 1 else 0
    moved = like.movedim(d, -1).shape
    return g.reshape(moved).movedim(-1, d)


def _has_nan(t: Tensor) -> bool:
    """NaN anywhere in ``t``: ``amax`` propagates NaN and is a reduction (no bool copy of ``t``)."""
    return t.numel() > 0 and bool(torch.isnan(t.amax()))


@dispatch.register("nm_mask", "reference")
def nm_reference(scores: Tensor, n: int, m: int, dim: int = 1) -> Tensor:
    """Stable descending sort per group; the first ``n`` are kept."""
    if _has_nan(scores):
        raise ValueError("scores contain NaN")
    g = nm_groups(scores, m, dim)
    order = torch.sort(g, dim=1, descending=True, stable=True).indices[:, :n]
    keep = torch.zeros_like(g, dtype=torch.bool).scatter_(1, order, True)
    return nm_ungroup(keep, scores, dim)


_PAIRWISE_MAX_M = 8


@dispatch.register("nm_mask", "batched", priority=1)
def nm_batched(scores: Tensor, n: int, m: int, dim: int = 1) -> Tensor:
    """Sort-free pairwise ranks for ``m <= 8`` (:func:`_nm_pairwise`), top-k beyond (:func:`_nm_topk`)."""
    if m <= _PAIRWISE_MAX_M:
        if _has_nan(scores):
            raise ValueError("scores contain NaN")
        return _nm_pairwise(scores, n, m, dim)
    return _nm_topk(scores, n, m, dim)


def _nm_pairwise(scores: Tensor, n: int, m: int, dim: int = 1) -> Tensor:
    """``keep_i = rank_i < n`` from the ``m(m − 1)/2`` comparisons ``s_i >= s_j``, ``i < j``, of the
    columns of the ``(groups, m)`` view: one compare and two integer updates per pair on vectors
    of length ``groups``, no sort. NaN-free scores (the caller checks)."""
    g = nm_groups(scores, m, dim)
    rank = _pairwise_ranks(g)
    keep = torch.empty(g.shape, dtype=torch.bool, device=g.device)
    for i in range(m):
        torch.lt(rank[i], n, out=keep[:, i])
    return nm_ungroup(keep, scores, dim)


def _pairwise_ranks(g: Tensor) -> list[Tensor]:
    """The rank of every column of a NaN-free ``(groups, m)`` view under the N:M rule (larger first,
    ties to the earlier position), as ``m`` int8 vectors of length ``groups``; ``rank < n`` is kept.
    No in-place write into a view, so ``torch.compile`` traces it whole (the compiled 2:4 kernel)."""
    m = g.shape[1]
    cols = g.unbind(1)
    # rank_i = #{j > i : not s_i >= s_j} + #{j < i : s_j >= s_i} = (m − 1 − i) − Σ_{j>i} b_ij + Σ_{j<i} b_ji
    rank = [torch.full((g.shape[0],), m - 1 - i, dtype=torch.int8, device=g.device) for i in range(m)]
    for i in range(m):
        for j in range(i + 1, m):
            b = torch.ge(cols[i], cols[j])  # i is ranked before j
            rank[i].add_(b, alpha=-1)
            rank[j] += b
    return rank


def _pairwise_keep(g: Tensor, n: int) -> Tensor:
    """``(groups, m)`` bool ``rank < n`` of a NaN-free ``(groups, m)`` view: the core the ``"compiled"``
    implementation hands to ``torch.compile`` (inductor fuses the ``m(m − 1)/2`` comparisons)."""
    return torch.stack([r < n for r in _pairwise_ranks(g)], 1)


_pairwise_keep_compiled = lazy_compile(_pairwise_keep)


@dispatch.register("nm_mask", "compiled", available=compile_unavailable)
def nm_compiled(scores: Tensor, n: int, m: int, dim: int = 1) -> Tensor:
    """The sort-free pairwise ranks of ``"batched"`` for every ``m`` as one ``torch.compile``'d program
    (the first call compiles, seconds; each new ``(n, m)`` compiles once more, and past dynamo's
    ``recompile_limit`` (8) it runs the same code eagerly); equal to the reference bit for bit. Opt-in
    (``impl="compiled"``): ``"auto"`` keeps ``"batched"`` on CPU."""
    if _has_nan(scores):
        raise ValueError("scores contain NaN")
    return nm_ungroup(_pairwise_keep_compiled(nm_groups(scores, m, dim).contiguous(), n), scores, dim)


def _nm_topk(scores: Tensor, n: int, m: int, dim: int = 1) -> Tensor:
    """``torch.topk`` of ``n + 1`` per group; groups whose n-th and (n+1)-th largest are tied
    (where topk's order is unspecified) are redone with the stable sort of the reference."""
    g = nm_groups(scores, m, dim)
    v, idx = torch.topk(g, n + 1, dim=1, sorted=True)
    if bool(torch.isnan(v[:, 0]).any()):  # topk puts NaN first
        raise ValueError("scores contain NaN")
    keep = torch.zeros_like(g, dtype=torch.bool).scatter_(1, idx[:, :n], True)
    tied = (v[:, n - 1] == v[:, n]).nonzero().squeeze(1)
    if tied.numel():
        sub = g[tied]
        order = torch.sort(sub, dim=1, descending=True, stable=True).indices[:, :n]
        keep[tied] = torch.zeros_like(sub, dtype=torch.bool).scatter_(1, order, True)
    return nm_ungroup(keep, scores, dim)


def grouped_dim(t: Tensor, dim: int | None = None) -> int:
    """The N:M grouped dimension of ``t`` as an index: ``dim``, or by default 1 (the input
    dimension of Linear and Conv weights) and 0 for a 1-D ``t``; out of range is a ``ValueError``.

    Example:
        >>> grouped_dim(torch.zeros(4, 8)), grouped_dim(torch.zeros(8)), grouped_dim(torch.zeros(4, 8), -2)
        (1, 0, 0)
    """
    if not isinstance(t, Tensor):
        raise TypeError(f"t must be a torch.Tensor, got {type(t).__name__}")
    if t.dim() < 1:
        raise ValueError("N:M needs a tensor t with at least one dimension")
    return check_dim(dim, t.dim(), default=1 if t.dim() > 1 else 0)


def nm_mask(scores: Tensor, n: int, m: int, *, dim: int | None = None, impl: str | None = None) -> Tensor:
    """Keep the ``n`` highest scores in every group of ``m`` consecutive entries along ``dim``.

    Args:
        scores: ``(out, in)`` or ``(out, in, *kernel)`` (or 1-D ``(in,)``); floating point, no NaN.
        n, m: ``1 <= n < m``; ``scores.shape[dim]`` must be divisible by ``m``.
        dim: the grouped (input) dimension (:func:`grouped_dim`): default 1 (Linear and Conv
            weights), 0 for a 1-D ``scores``; a dim outside ``[-ndim, ndim)`` raises ``ValueError``.
        impl: ``"reference"`` | ``"batched"`` | ``"triton"`` | ``"auto"`` | ``None`` (see
            :mod:`~overparam.backend.dispatch`).

    Returns:
        bool mask of ``scores``' shape with exactly ``n`` kept per group.

    Reference: A. Mishra et al., "Accelerating Sparse Deep Neural Networks" (arXiv:2104.08378, 2021): the 2:4
        pattern of sparse tensor cores

    Example:
        >>> nm_mask(torch.tensor([1., 3., 2., 0.]), 1, 2).tolist()
        [False, True, True, False]
    """
    check_nm(n, m)
    check_float(scores, "scores")
    dim = grouped_dim(scores, dim)
    return dispatch.choose("nm_mask", impl, device=scores.device)(scores, n, m, dim)
