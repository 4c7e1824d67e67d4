"""N:M masks: in every group of M consecutive weights along the input dimension keep exactly N.

For ``nn.Linear`` weights ``(out, in)`` the groups run along ``in``; for convolution weights
``(out, in, *kernel)`` along the input channels ``in`` at each (output channel, kernel
position), the layout sparse tensor cores use after the implicit-GEMM reshape. The input
dimension must be divisible by M: nothing is padded.

Ties are broken deterministically: among equal scores the earlier position in the group is
kept. Two implementations of one signature (:class:`~overparam.backend.dispatch.Implementations`):
``"reference"`` (stable sort) and ``"batched"`` (the default: sort-free pairwise ranks for
M <= 8, top-k beyond with a stable sort only for groups tied at the boundary), plus
``"triton"`` (``overparam.backend.kernels.nm``) when Triton is usable.

Example:
    >>> import torch
    >>> w = torch.tensor([[4., -1., 3., 0.5, 1., 2., -3., 0.]])
    >>> nm_mask(w.abs(), 2, 4).int().tolist()
    [[1, 0, 1, 0, 0, 1, 1, 0]]
"""

from __future__ import annotations

import itertools

import einops
import torch
from torch import Tensor, nn

from ..backend.dispatch import Implementations
from ..backend.select import Spec
from .targets import Masks
from .targets import targets as _targets

__all__ = ["check_nm", "check_dim", "nm_groups", "nm_mask", "is_nm", "nm_masks", "transposable_nm_mask", "transposable_patterns"]


def check_nm(n: int, m: int) -> None:
    """Raise unless ``1 <= n < m`` are ints."""
    for name, v in (("n", n), ("m", m)):
        if isinstance(v, bool) or not isinstance(v, int):
            raise TypeError(f"{name} must be an int, got {type(v).__name__}")
    if not 1 <= n < m:
        raise ValueError(f"N:M needs 1 <= N < M, got N={n}, M={m}")


def check_dim(dim: int | None, ndim: int, *, default: int | None = None, argname: str = "dim") -> int:
    """``dim`` as an index in ``[0, ndim)``; ``None`` gives ``default``. Refuses (``ValueError``
    naming ``argname``) a dim outside ``[-ndim, ndim)`` instead of wrapping it modulo ``ndim``.

    Example:
        >>> check_dim(-1, 3), check_dim(None, 1, default=0)
        (2, 0)
    """
    if dim is None:
        dim = default
    if isinstance(dim, bool) or not isinstance(dim, int):
        raise TypeError(f"{argname} must be an int, got {type(dim).__name__}")
    if not -ndim <= dim < ndim:
        raise ValueError(f"{argname}={dim} is out of range for a tensor with {ndim} dimension(s)")
    return dim % ndim


def nm_groups(t: Tensor, m: int, dim: int = 1) -> Tensor:
    """View ``t`` as ``(groups, m)``: dim ``dim`` moved last and split into groups of ``m``."""
    if t.dim() < 1:
        raise ValueError("N:M needs a tensor with at least one dimension")
    d = dim % t.dim() if t.dim() > 1 else 0
    size = t.shape[d]
    if size % m:
        raise ValueError(f"dimension {d} has size {size}, not divisible by M={m} (shape {tuple(t.shape)})")
    return t.movedim(d, -1).reshape(-1, m)


def _ungroup(g: Tensor, like: Tensor, dim: int) -> Tensor:
    d = dim % like.dim() if like.dim() > 1 else 0
    moved = like.movedim(d, -1).shape
    return g.reshape(moved).movedim(-1, d)


def _nm_reference(scores: Tensor, n: int, m: int, dim: int = 1) -> Tensor:
    g = nm_groups(scores, m, dim)
    order = torch.sort(g, dim=1, descending=True, stable=True).indices[:, :n]
    keep = torch.zeros_like(g, dtype=torch.bool).scatter_(1, order, True)
    return _ungroup(keep, scores, dim)


def _has_nan(t: Tensor) -> bool:
    """NaN anywhere in ``t``: ``amax`` propagates NaN and is a reduction (no bool copy of ``t``)."""
    return t.numel() > 0 and bool(torch.isnan(t.amax()))


def _nm_batched(scores: Tensor, n: int, m: int, dim: int = 1) -> Tensor:
    """Sort-free pairwise ranks for ``m <= 8`` (:func:`_nm_pairwise`), top-k beyond (:func:`_nm_topk`)."""
    if m <= _PAIRWISE_MAX_M:
        if _has_nan(scores):
            raise ValueError("scores contain NaN")
        return _nm_pairwise(scores, n, m, dim)
    return _nm_topk(scores, n, m, dim)


_PAIRWISE_MAX_M = 8


def _nm_pairwise(scores: Tensor, n: int, m: int, dim: int = 1) -> Tensor:
    """``keep_i = rank_i < n`` with ``rank_i = #{j : s_j > s_i} + #{j < i : s_j = s_i}`` (the stable
    descending sort's position), from the ``m(m − 1)/2`` comparisons ``s_i >= s_j``, ``i < j``,
    of the columns of the ``(groups, m)`` view: one compare and two integer updates per pair on
    vectors of length ``groups``, no sort. NaN-free scores (the caller checks)."""
    g = nm_groups(scores, m, dim)
    cols = g.unbind(1)
    # rank_i = #{j > i : not s_i >= s_j} + #{j < i : s_j >= s_i} = (m − 1 − i) − Σ_{j>i} b_ij + Σ_{j<i} b_ji
    rank = [torch.full((g.shape[0],), m - 1 - i, dtype=torch.int8, device=g.device) for i in range(m)]
    for i in range(m):
        for j in range(i + 1, m):
            b = torch.ge(cols[i], cols[j])  # i is ranked before j
            rank[i].add_(b, alpha=-1)
            rank[j] += b
    keep = torch.empty(g.shape, dtype=torch.bool, device=g.device)
    for i in range(m):
        torch.lt(rank[i], n, out=keep[:, i])
    return _ungroup(keep, scores, dim)


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
    return _ungroup(keep, scores, dim)


def _load_triton():
    from ..backend.kernels.nm import nm_mask_triton

    return nm_mask_triton


_NM = Implementations("nm_mask", reference=_nm_reference, batched=_nm_batched, triton_loader=_load_triton)


def nm_mask(scores: Tensor, n: int, m: int, *, dim: int | None = None, impl: str | None = None) -> Tensor:
    """Keep the ``n`` highest scores in every group of ``m`` consecutive entries along ``dim``.

    Args:
        scores: ``(out, in)`` or ``(out, in, *kernel)`` (or 1-D ``(in,)``); floating point, no NaN.
        n, m: ``1 <= n < m``; ``scores.shape[dim]`` must be divisible by ``m``.
        dim: the grouped (input) dimension; default 1 (Linear and Conv weights), 0 for a 1-D
            ``scores``. A dim outside ``[-ndim, ndim)`` raises ``ValueError``.
        impl: ``"reference"`` | ``"batched"`` | ``"triton"`` | ``None`` (auto).

    Returns:
        bool mask of ``scores``' shape with exactly ``n`` kept per group.

    Example:
        >>> nm_mask(torch.tensor([1., 3., 2., 0.]), 1, 2).tolist()
        [False, True, True, False]
    """
    check_nm(n, m)
    if not isinstance(scores, Tensor) or not scores.is_floating_point():
        raise TypeError("scores must be a floating-point tensor")
    dim = _input_dim(scores, dim)
    fn = _NM.get(impl, device=scores.device)
    if fn is not _nm_batched and _has_nan(scores):  # batched checks on its own
        raise ValueError("scores contain NaN")
    return fn(scores, n, m, dim)


def _input_dim(t: Tensor, dim: int | None) -> int:
    if t.dim() < 1:
        raise ValueError("N:M needs a tensor with at least one dimension")
    return check_dim(dim, t.dim(), default=1 if t.dim() > 1 else 0)


def is_nm(mask: Tensor, n: int, m: int, *, dim: int | None = None, exact: bool = True) -> bool:
    """Whether every group of ``m`` along ``dim`` (default as in :func:`nm_mask`) holds exactly
    (``exact``) or at most ``n`` non-zeros."""
    check_nm(n, m)
    cnt = (nm_groups(mask, m, _input_dim(mask, dim)) != 0).sum(1)
    return bool((cnt == n).all()) if exact else bool((cnt <= n).all())


def nm_masks(model: nn.Module, n: int, m: int, *, targets: Spec = None, exclude: Spec = None,
             scores: dict[str, Tensor] | None = None, impl: str | None = None) -> Masks:
    """N:M masks for the model's prunable weights (``targets``/``exclude`` as in
    :func:`~overparam.prune.targets.targets`), by magnitude unless ``scores`` are given.

    Args:
        scores: name → score tensor for exactly the selected weights (a missing or an extra
            name raises ``ValueError`` naming ``scores``).

    Example:
        >>> net = torch.nn.Conv2d(8, 4, 3)
        >>> is_nm(nm_masks(net, 2, 4)["weight"], 2, 4)
        True
    """
    params = _targets(model, targets, exclude=exclude)
    if scores is None:
        src = {k: p.detach().abs() for k, p in params.items()}
    else:
        if not isinstance(scores, dict):
            raise TypeError(f"scores must be a dict name -> tensor, got {type(scores).__name__}")
        extra, missing = sorted(set(scores) - set(params)), [k for k in params if k not in scores]
        if extra or missing:
            raise ValueError(f"scores must hold exactly the selected weights {list(params)}: "
                             f"unknown {extra}, missing {missing}")
        src = scores
    return {k: nm_mask(src[k], n, m, impl=impl) for k in params}


# ---------------------------------------------------------------- transposable N:M
def transposable_patterns(n: int, m: int, *, device=None) -> Tensor:
    """All ``m×m`` 0/1 patterns with exactly ``n`` ones in every row and column, ``(P, m, m)`` bool.

    Example:
        >>> transposable_patterns(2, 4).shape
        torch.Size([90, 4, 4])
    """
    check_nm(n, m)
    if m > 5:
        raise ValueError(f"exhaustive transposable patterns are enumerated for M <= 5 only, got M={m}")
    rows = [r for r in itertools.product((0, 1), repeat=m) if sum(r) == n]
    out: list[tuple] = []

    def rec(prefix: list, cols: list[int]) -> None:
        if len(prefix) == m:
            if all(c == n for c in cols):
                out.append(tuple(prefix))
            return
        left = m - len(prefix) - 1
        for r in rows:
            nc = [c + x for c, x in zip(cols, r)]
            if all(c <= n and c + left >= n for c in nc):
                rec(prefix + [r], nc)

    rec([], [0] * m)
    return torch.tensor(out, dtype=torch.bool, device=device)


def _augment(sel: Tensor, n: int) -> None:
    """Complete a partial N-regular selection of an ``m×m`` block in place by augmenting paths."""
    m = sel.shape[0]
    while True:
        rows = (sel.sum(1) < n).nonzero().flatten().tolist()
        if not rows:
            return
        start = rows[0]
        # BFS: row -> unselected column -> selected row -> ...
        prev_col: dict[int, int] = {}
        prev_row: dict[int, int] = {}
        frontier, seen_r, end = [start], {start}, None
        while frontier and end is None:
            nxt = []
            for r in frontier:
                for c in range(m):
                    if sel[r, c] or c in prev_col:
                        continue
                    prev_col[c] = r
                    if int(sel[:, c].sum()) < n:
                        end = c
                        break
                    for r2 in sel[:, c].nonzero().flatten().tolist():
                        if r2 not in seen_r:
                            seen_r.add(r2)
                            prev_row[r2] = c
                            nxt.append(r2)
                if end is not None:
                    break
            frontier = nxt
        if end is None:  # cannot happen for N < M (a regular completion always exists)
            raise RuntimeError("transposable N:M completion failed")
        c = end
        while True:
            r = prev_col[c]
            sel[r, c] = True
            if r == start:
                break
            c = prev_row[r]
            sel[r, c] = False


def _greedy_blocks(blocks: Tensor, n: int) -> Tensor:
    B, m, _ = blocks.shape
    order = torch.sort(blocks.reshape(B, -1), dim=1, descending=True, stable=True).indices
    sel = torch.zeros(B, m * m, dtype=torch.bool, device=blocks.device)
    rc = torch.zeros(B, m, dtype=torch.int64, device=blocks.device)
    cc = torch.zeros_like(rc)
    ar = torch.arange(B, device=blocks.device)
    for t in range(m * m):
        idx = order[:, t]
        i, j = idx // m, idx % m
        ok = (rc[ar, i] < n) & (cc[ar, j] < n)
        sel[ar, idx] |= ok
        rc[ar, i] += ok
        cc[ar, j] += ok
    sel = sel.reshape(B, m, m)
    for b in (sel.reshape(B, -1).sum(1) < n * m).nonzero().flatten().tolist():
        blk = sel[b].cpu()
        _augment(blk, n)
        sel[b] = blk.to(sel.device)
    return sel


def transposable_nm_mask(scores: Tensor, n: int, m: int, *, method: str = "auto") -> Tensor:
    """A mask whose rows and columns are both N:M: every ``m×m`` block has ``n`` per row and column.

    Args:
        scores: ``(rows, cols)``, both divisible by ``m``; higher = keep.
        method: ``"exhaustive"`` (best of all patterns per block, ``m <= 5``), ``"greedy"``
            (largest scores first while row/column budgets allow, then completed by augmenting
            paths), or ``"auto"`` (exhaustive for ``m <= 4``).

    Returns:
        bool ``(rows, cols)``; ``mask`` and ``mask.T`` are both N:M along dim 1.

    Example:
        >>> mk = transposable_nm_mask(torch.rand(8, 8, generator=torch.Generator().manual_seed(0)), 2, 4)
        >>> is_nm(mk, 2, 4) and is_nm(mk.T, 2, 4)
        True
    """
    check_nm(n, m)
    if method not in ("auto", "exhaustive", "greedy"):
        raise ValueError(f"method must be 'auto', 'exhaustive' or 'greedy', got {method!r}")
    if scores.dim() != 2 or scores.shape[0] % m or scores.shape[1] % m:
        raise ValueError(f"scores must be 2-D with both sizes divisible by M={m}, got {tuple(scores.shape)}")
    if bool(torch.isnan(scores).any()):
        raise ValueError("scores contain NaN")
    R, C = scores.shape
    blocks = einops.rearrange(scores, "(a i) (b j) -> (a b) i j", i=m, j=m)
    if method == "exhaustive" or (method == "auto" and m <= 4):
        pats = transposable_patterns(n, m, device=scores.device)
        val = blocks.reshape(blocks.shape[0], -1).double() @ pats.reshape(len(pats), -1).double().T
        sel = pats[val.argmax(1)]
    else:
        sel = _greedy_blocks(blocks, n)
    return einops.rearrange(sel, "(a b) i j -> (a i) (b j)", a=R // m, b=C // m)
