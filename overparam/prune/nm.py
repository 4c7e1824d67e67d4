"""N:M masks: in every group of M consecutive weights along the input dimension keep exactly N.

For ``nn.Linear`` weights ``(out, in)`` the groups run along ``in``; for convolution weights
``(out, in, *kernel)`` along the input channels ``in`` at each (output channel, kernel
position), the layout sparse tensor cores use after the implicit-GEMM reshape; for
transformers' ``Conv1D`` weights, stored ``(in, out)``, along storage dim 0 — the input of the
computation, not of the storage (:func:`nm_dims` gives the dim of each weight, from
:mod:`overparam.backend.layers`). The input dimension must be divisible by M: nothing is padded.

Ties are broken deterministically: among equal scores the earlier position in the group is
kept. :func:`nm_mask`, :func:`nm_groups` and :func:`check_nm` are those of
:mod:`overparam.backend.nm`, where the ``"reference"``, ``"batched"`` and ``"triton"``
implementations are registered (``overparam.backend.implementations("nm_mask")``).

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

from collections.abc import Mapping

from ..backend.layers import weights_of
from ..backend.nm import check_nm, grouped_dim, nm_groups, nm_mask
from ..backend.select import Spec
from .targets import Masks, check_model
from .targets import targets as _targets

__all__ = ["check_nm", "nm_groups", "nm_mask", "is_nm", "nm_masks", "nm_dims", "transposable_nm_mask",
           "transposable_patterns"]


def is_nm(mask: Tensor, n: int, m: int, *, dim: int | None = None, exact: bool = True) -> bool:
    """Whether every group of ``m`` along ``dim`` (default as in :func:`nm_mask`) holds exactly
    (``exact``) or at most ``n`` non-zeros.

    Example:
        >>> mask = torch.tensor([[True, False, True, False], [False, False, True, False]])
        >>> is_nm(mask, 2, 4), is_nm(mask, 2, 4, exact=False)
        (False, True)
    """
    check_nm(n, m)
    if not isinstance(mask, Tensor):
        raise TypeError(f"mask must be a torch.Tensor, got {type(mask).__name__}")
    cnt = (nm_groups(mask, m, grouped_dim(mask, dim)) != 0).sum(1)
    return bool((cnt == n).all()) if exact else bool((cnt <= n).all())


def nm_masks(model: nn.Module, n: int, m: int, *, targets: Spec = None, exclude: Spec = None,
             scores: dict[str, Tensor] | None = None, impl: str | None = None) -> Masks:
    """N:M masks for the model's prunable weights (``targets``/``exclude`` as in
    :func:`~overparam.prune.targets.targets`), by magnitude unless ``scores`` are given; the
    groups of each weight run along the input dimension of its computation (:func:`nm_dims`).

    Args:
        scores: name → score tensor for exactly the selected weights (a missing or an extra
            name raises ``ValueError`` naming ``scores``).

    Raises:
        ValueError: a selected weight's input dimension is not divisible by ``m`` (the message
            names the parameter: exclude it, e.g. a ViT's 3-channel patch convolution).

    Reference: A. Mishra et al., "Accelerating Sparse Deep Neural Networks" (arXiv:2104.08378, 2021): the 2:4
        pattern of sparse tensor cores

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
    dims = nm_dims(model, list(params))
    out = {}
    for k in params:
        try:
            out[k] = nm_mask(src[k], n, m, dim=dims[k], impl=impl)
        except ValueError as err:
            raise ValueError(f"{k}: {err}; leave it out with exclude={k!r}") from None
    return out


def nm_dims(model: nn.Module, masks: Mapping[str, Tensor] | list[str]) -> dict[str, int]:
    """``{name: dim}``: the storage dimension of each masked weight along which N:M groups run
    (the computation's input features: 1 for Linear/Conv, 0 for transformers' ``Conv1D``).

    Raises:
        ValueError: a name of ``masks`` is no registered weight of ``model``.

    Example:
        >>> nm_dims(torch.nn.Linear(8, 2), {"weight": torch.ones(2, 8, dtype=torch.bool)})
        {'weight': 1}
    """
    check_model(model)
    if not isinstance(masks, (Mapping, list, tuple)):
        raise TypeError(f"masks must be a dict name -> tensor (or a list of names), got {type(masks).__name__}")
    ws = weights_of(model)
    bad = [k for k in masks if k not in ws]
    if bad:
        raise ValueError(f"masks: {bad} name no weight of a registered layer of the model")
    return {k: ws[k].layout.in_dim for k in masks}


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

    Reference: I. Hubara et al., "Accelerated Sparse Neural Training: A Provable and Efficient Method to Find N:M
        Transposable Masks" (NeurIPS 2021)

    Example:
        >>> mk = transposable_nm_mask(torch.rand(8, 8, generator=torch.Generator().manual_seed(0)), 2, 4)
        >>> is_nm(mk, 2, 4) and is_nm(mk.T, 2, 4)
        True
    """
    check_nm(n, m)
    if method not in ("auto", "exhaustive", "greedy"):
        raise ValueError(f"method must be 'auto', 'exhaustive' or 'greedy', got {method!r}")
    if not isinstance(scores, Tensor):
        raise TypeError(f"scores must be a torch.Tensor, got {type(scores).__name__}")
    if scores.dim() != 2 or scores.numel() == 0 or scores.shape[0] % m or scores.shape[1] % m:
        raise ValueError(f"scores must be 2-D, non-empty, with both sizes divisible by M={m}, got {tuple(scores.shape)}")
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
