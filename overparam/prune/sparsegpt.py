"""SparseGPT (Frantar & Alistarh 2023): one-shot pruning with optimal-brain-surgeon weight updates.

For a layer ``W (out, d)`` with input Gram matrix ``H = XᵀX`` (:mod:`~overparam.prune.calibrate`),
each row is pruned column by column, left to right: when entry ``w_j`` of a row is pruned, the
not yet visited entries of that row absorb the error by the OBS update

    w_{j:} ← w_{j:} − (w_j / U_jj) · U_{j, j:},     U = chol(H⁻¹) upper,  H⁻¹ = UᵀU,

which for the first pruned column is the closed-form OBS solution ``δ = −w_j / [H⁻¹]_jj ·
H⁻¹_{:, j}`` (later columns use the inverse Hessian of the remaining columns, which row ``j`` of
``U`` holds). The mask is chosen adaptively: unstructured, at the start of each block of
``blocksize`` columns, the entries with the smallest ``w² / U_jj²`` in the block (exactly
``round(s·out·j₂) − round(s·out·j₁)`` of them, so the layer prunes exactly ``round(s·out·d)``);
N:M, at the start of every group of ``m`` columns, the ``m − n`` smallest of each row's group.

Details: ``H`` is damped by ``damping · mean(diag H)`` (the paper's 1%); an input that is
always zero (``H_jj = 0``) has its weights set to zero; a Gram matrix that is singular after
damping (Cholesky fails) or, with ``damping=0``, numerically singular (a pivot ``L_jj² <= d·eps·H_jj``:
fewer calibration rows than inputs, say) raises
:class:`~overparam.backend.linalg.NotPositiveDefiniteError` (a ``ValueError``).

Two implementations of one signature are registered in :mod:`~overparam.backend.dispatch` as
routine ``"sparsegpt"``: ``"reference"`` (an unblocked loop that updates all later columns after
every column: the oracle) and ``"blocked"`` (the paper's lazy batch updates: the column loop
runs inside a block of ``blocksize`` columns, and the later columns get one matrix product per
block — and, inside a block, the same again for sub-blocks of ~16 columns, with the block held
transposed so that a column is contiguous; ``"auto"``). They give the same mask and weights up to rounding.

Example:
    >>> import torch
    >>> X = torch.randn(64, 8, dtype=torch.float64)
    >>> W = torch.randn(4, 8, dtype=torch.float64)
    >>> res = sparsegpt_matrix(W, X.T @ X, 0.5)
    >>> int(res.mask.sum()), bool((res.weight[~res.mask] == 0).all())
    (16, True)
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn

from ..backend import dispatch
from ..backend.checks import check_float, check_int, check_real
from ..backend.linalg import NotPositiveDefiniteError
from ..backend.nm import nm_mask
from ..backend.select import Spec
from ..backend.topk import fraction_count, topk_mask
from .calibrate import LayerStats, PrunedMatrix, calibrate, check_pattern, layer_sparsities
from .targets import Masks

__all__ = ["sparsegpt_matrix", "sparsegpt_"]


def check_layer(W: Tensor, gram: Tensor, damping: float) -> None:
    """``W (out, d)`` and ``gram (d, d)`` finite floats, ``damping >= 0`` (a ValueError / TypeError naming them)."""
    check_float(W, "W")
    check_float(gram, "gram")
    if W.ndim != 2 or gram.shape != (W.shape[1], W.shape[1]):
        raise ValueError(f"W must be (out, d) and gram (d, d), got {tuple(W.shape)} and {tuple(gram.shape)}")
    check_real(damping, "damping", at_least=0.0, finite=True)
    if not bool(W.isfinite().all()) or not bool(gram.isfinite().all()):
        raise ValueError("W and gram must be finite (NaN or inf found)")


def _check(W: Tensor, gram: Tensor, sparsity, n, m, blocksize: int, damping: float) -> None:
    check_layer(W, gram, damping)
    check_int(blocksize, "blocksize")
    check_pattern(sparsity, n, m)
    if n is not None:
        if W.shape[1] % m:
            raise ValueError(f"m: the input dimension {W.shape[1]} is not divisible by M={m}")
        if blocksize % m:
            raise ValueError(f"blocksize: {blocksize} must be a multiple of m={m} (N:M groups may not straddle blocks)")


def damped_cholesky(W: Tensor, gram: Tensor, damping: float) -> tuple[Tensor, Tensor, Tensor]:
    """``(W with dead inputs zeroed, A = H + λI, L = chol(A) lower)`` in ``gram``'s dtype; ``λ = damping ·
    mean(diag H)`` (dead inputs ``H_jj = 0`` counted as 1). A dead input gets ``A_jj = 1 + λ`` and zero weights;
    a singular ``A`` (or, with ``damping=0``, a pivot ``L_jj² <= d·eps·A_jj``) raises NotPositiveDefiniteError."""
    H = gram.clone()
    W = W.to(H.dtype).clone()
    diag = H.diagonal()
    dead = diag == 0
    if bool(dead.any()):
        diag[dead] = 1.0
        W[:, dead] = 0.0
    if damping:
        diag.add_(damping * float(diag.mean()))
    d = H.shape[0]
    L, info = torch.linalg.cholesky_ex(H)
    # without damping, a pivot that is a rounding error of its column (L_jj² <= d·eps·H_jj) means a singular H
    tiny = not damping and bool((L.diagonal().square() <= d * torch.finfo(H.dtype).eps * diag).any())
    if int(info) != 0 or tiny:
        raise NotPositiveDefiniteError(
            f"gram: the Gram matrix XᵀX (d = {d}) is singular or numerically singular (damping = {damping}); "
            "use damping > 0 or more calibration rows")
    return W, H, L


def _inverse_factor(W: Tensor, gram: Tensor, damping: float) -> tuple[Tensor, Tensor]:
    """``(W with dead inputs zeroed, U)`` with ``UᵀU = (H + λI)⁻¹``, ``U`` upper triangular."""
    W, _, L = damped_cholesky(W, gram, damping)
    return W, torch.linalg.cholesky(torch.cholesky_inverse(L), upper=True)


def _select(W1: Tensor, dU: Tensor, sparsity, n, m, counts: tuple[int, int]) -> Tensor:
    """The entries to prune (True) of the mask block (unstructured: ``counts[1] − counts[0]`` of them) or
    the N:M group (``W1 (out, m)``: ``m − n`` per row) ``W1``, by the score ``w² / U_jj²``."""
    scores = W1.square() / dU.square()
    if n is None:
        return topk_mask(scores, counts[1] - counts[0], largest=False)
    return ~nm_mask(scores, n, m, dim=1)


def _count(sparsity, rows: int, cols: int) -> int:
    return 0 if sparsity is None else fraction_count(sparsity, rows * cols)


@dispatch.register("sparsegpt", "reference")
def sparsegpt_reference(W: Tensor, gram: Tensor, sparsity, n, m, blocksize: int, damping: float) -> PrunedMatrix:
    """The unblocked loop: after each column, all later columns are updated (``O(out·d²)`` in rank-1 updates)."""
    W, U = _inverse_factor(W, gram, damping)
    r, d = W.shape
    prune = torch.zeros_like(W, dtype=torch.bool)
    dU = U.diagonal()
    for j in range(d):
        if j % blocksize == 0 and n is None:
            i2 = min(j + blocksize, d)
            prune[:, j:i2] = _select(W[:, j:i2], dU[j:i2], sparsity, n, m, (_count(sparsity, r, j), _count(sparsity, r, i2)))
        if n is not None and j % m == 0:
            prune[:, j:j + m] = _select(W[:, j:j + m], dU[j:j + m], sparsity, n, m, (0, 0))
        err = torch.where(prune[:, j], W[:, j], 0.0) / U[j, j]
        W[:, j:].sub_(err[:, None] * U[j, j:][None, :])
        W[:, j].masked_fill_(prune[:, j], 0.0)
    return PrunedMatrix(W, ~prune)


@dispatch.register("sparsegpt", "blocked", priority=1)
def sparsegpt_blocked(W: Tensor, gram: Tensor, sparsity, n, m, blocksize: int, damping: float) -> PrunedMatrix:
    """Lazy batch updates on two levels: the column loop runs inside sub-blocks of ~16 columns (a multiple
    of ``m``, so an N:M group never straddles two), each sub-block updates the rest of its block with one
    product, each block the later columns with one ``(out, B) @ (B, d − j₂)`` product. A block is held
    transposed, ``(B, out)``, so that a column is a contiguous row."""
    W, U = _inverse_factor(W, gram, damping)
    r, d = W.shape
    keep = torch.ones_like(W, dtype=torch.bool)
    sub = min(blocksize, 16 if n is None else m * -(-16 // m))
    for i1 in range(0, d, blocksize):
        i2 = min(i1 + blocksize, d)
        Wt, U1 = W[:, i1:i2].T.contiguous(), U[i1:i2, i1:i2]
        dU, B = U1.diagonal(), i2 - i1
        Pt, Et = torch.zeros(B, r, dtype=torch.bool, device=W.device), torch.empty_like(Wt)   # pruned, errors
        if n is None:
            Pt.copy_(_select(Wt.T, dU, sparsity, n, m, (_count(sparsity, r, i1), _count(sparsity, r, i2))).T)
        for s1 in range(0, B, sub):
            s2 = min(s1 + sub, B)
            for j in range(s1, s2):
                if n is not None and j % m == 0:
                    Pt[j:j + m] = _select(Wt[j:j + m].T, dU[j:j + m], sparsity, n, m, (0, 0)).T
                err = Wt[j].masked_fill(~Pt[j], 0.0).div_(U1[j, j])
                Wt[j:s2].addr_(U1[j, j:s2], err, alpha=-1)
                Wt[j].masked_fill_(Pt[j], 0.0)
                Et[j] = err
            if s2 < B:
                Wt[s2:].addmm_(U1[s1:s2, s2:].T, Et[s1:s2], alpha=-1)
        W[:, i1:i2] = Wt.T
        keep[:, i1:i2] = ~Pt.T
        if i2 < d:
            W[:, i2:].addmm_(Et.T, U[i1:i2, i2:], alpha=-1)
    return PrunedMatrix(W, keep)


def sparsegpt_matrix(W: Tensor, gram: Tensor, sparsity: float | None = None, *, n: int | None = None,
                     m: int | None = None, blocksize: int = 128, damping: float = 0.01,
                     impl: str | None = None) -> PrunedMatrix:
    """Prune one weight matrix with SparseGPT's OBS updates (see the module docstring).

    Args:
        W: ``(out, d)`` weights (any float dtype; the computation runs in ``gram``'s dtype).
        gram: ``(d, d)`` input Gram matrix ``XᵀX`` (symmetric positive semi-definite).
        sparsity: pruned fraction in [0, 1) (unstructured); or None with ``n``, ``m``.
        n, m: keep ``n`` of every ``m`` consecutive inputs (``1 <= n < m``, ``m | d``).
        blocksize: columns per lazy-update block and per unstructured mask selection
            (a multiple of ``m``).
        damping: ``λ = damping · mean(diag H)`` added to the diagonal (>= 0).
        impl: ``"reference"`` | ``"blocked"`` | ``"auto"`` | None (:mod:`~overparam.backend.dispatch`).

    Returns:
        :class:`~overparam.prune.calibrate.PrunedMatrix`: ``weight (out, d)`` in ``gram``'s
        dtype with the pruned entries exactly zero, ``mask (out, d)`` bool (True = kept).

    Reference: E. Frantar & D. Alistarh, "SparseGPT: Massive Language Models Can Be Accurately Pruned in One-Shot"
        (ICML 2023)

    Example:
        >>> X = torch.randn(32, 8, dtype=torch.float64)
        >>> res = sparsegpt_matrix(torch.randn(3, 8, dtype=torch.float64), X.T @ X, n=2, m=4)
        >>> res.mask.sum(1).tolist()
        [4, 4, 4]
    """
    _check(W, gram, sparsity, n, m, blocksize, damping)
    return dispatch.choose("sparsegpt", impl, device=W.device)(W, gram, sparsity, n, m, blocksize, damping)


def sparsegpt_(model: nn.Module, data, sparsity: float | None = None, *, n: int | None = None, m: int | None = None,
               targets: Spec = None, exclude: Spec = None, overrides: Mapping | None = None, blocks: Spec = None,
               sequential: bool = True, blocksize: int = 128, damping: float = 0.01,
               dtype: torch.dtype = torch.float64) -> Masks:
    """Prune the model's Linear / Conv weights in place with SparseGPT on calibration data.

    Args:
        model: the model (deterministic: ``model.eval()`` for dropout / BatchNorm).
        data: an ``(inputs, targets)`` batch or an iterable of them (targets ignored).
        sparsity: pruned fraction of each layer in [0, 1), or None with ``n``, ``m`` (N:M).
        n, m: the N:M pattern along each layer's input (channels, for convolutions).
        targets, exclude: which layers (:func:`overparam.prune.targets`).
        overrides: ``{spec: sparsity}`` per-layer sparsities (a key equal to a weight's full
            name selects exactly that weight, so :func:`overparam.prune.owl` output passes as is).
        blocks: blocks run as units (:func:`~overparam.prune.calibrate.calibrate`).
        sequential: calibrate each group on the pruned model's outputs (True) or the dense ones.
        blocksize, damping: as :func:`sparsegpt_matrix`.
        dtype: the statistics' and the computation's dtype (float64 or float32).

    Returns:
        the masks ``{"<layer>.weight": bool}``; the model's weights are updated and pruned.

    Reference: E. Frantar & D. Alistarh, "SparseGPT: Massive Language Models Can Be Accurately Pruned in One-Shot"
        (ICML 2023)

    Example:
        >>> net = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.ReLU(), torch.nn.Linear(8, 4))
        >>> masks = sparsegpt_(net, (torch.randn(64, 8), None), 0.5)
        >>> [int(v.sum()) for v in masks.values()], int((net[0].weight == 0).sum())
        ([32, 16], 32)
    """
    check_int(blocksize, "blocksize")
    check_real(damping, "damping", at_least=0.0, finite=True)
    per_layer = layer_sparsities(model, sparsity, n, m, targets=targets, exclude=exclude, overrides=overrides)

    def rule(name: str, W: Tensor, stats: LayerStats) -> PrunedMatrix:
        s = None if per_layer is None else per_layer[name]
        return sparsegpt_matrix(W, stats.gram, s, n=n, m=m, blocksize=blocksize, damping=damping)

    return calibrate(model, data, rule, targets=targets, exclude=exclude, blocks=blocks, sequential=sequential,
                     dtype=dtype)
