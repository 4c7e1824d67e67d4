"""Layer-wise reconstruction: the least-squares weights of a layer for a given mask (any pruning method's).

For a layer ``W (out, d)`` with input Gram matrix ``H = XᵀX`` (:mod:`~overparam.prune.calibrate`) and a keep-mask
``M (out, d)``, each row ``i`` gets the weights supported on its kept set ``K = M_i`` that reproduce its output best:

    ŵ_i = argmin_{v: v_j = 0 for j ∉ K} (w_i − v)ᵀ A (w_i − v),     A = H + λI,   λ = damping · mean(diag H),

whose kept entries solve the normal equations ``A_KK v_K = (A w_i)_K`` (the gradient ``2A(v − w_i)`` vanishes on
``K``). SparseGPT (:mod:`~overparam.prune.sparsegpt`) only lets the columns right of each pruned one absorb its
error, so its weights are above this optimum on its own mask; magnitude and Wanda masks have no update at all.
Damping, dead inputs (``H_jj = 0``: weights set to zero) and singular Gram matrices (``damping=0``:
:class:`~overparam.backend.linalg.NotPositiveDefiniteError`) are handled as in SparseGPT (one shared helper).

Two implementations of one signature are registered in :mod:`~overparam.backend.dispatch` as routine
``"reconstruct"``: ``"reference"`` (one Cholesky solve of ``A_KK`` per distinct row mask, all rows sharing that
mask at once: exact, the oracle) and ``"admm"`` (``"auto"``; Boža 2024): on the diagonally rescaled problem
(``Ã = SAS``, ``S = diag(A)^-½``, ``w̃ = S⁻¹w``) every row at once per iteration,

    W ← (W₀Ã + ρ(Z − U)) (Ã + ρI)⁻¹,    Z ← M ⊙ (W + U),    U ← U + W − Z,

warm-started from ``Z = M ⊙ W₀``, with ``(Ã + ρI)⁻¹`` formed from one eigendecomposition of ``Ã`` (so a change of
``ρ`` costs one ``d³`` product, an iteration one ``(out, d) @ (d, d)`` product). ``ρ`` starts at 1 (the mean
eigenvalue of ``Ã``) and is doubled / halved when the primal residual ``‖W − Z‖`` and the dual residual
``ρ‖Z − Z_prev‖`` differ by more than 10× (residual balancing, Boyd et al. 2011 §3.4.1); it stops when both are
below ``tol`` relative to ``‖Z‖`` and ``‖W₀Ã‖``, or after ``iterations``, and returns ``Z`` (exactly zero off
the mask).

Example:
    >>> import torch
    >>> X = torch.randn(64, 8, dtype=torch.float64)
    >>> W = torch.randn(4, 8, dtype=torch.float64)
    >>> mask = W.abs() >= W.abs().median()
    >>> res = reconstruct_matrix(W, X.T @ X, mask, damping=0.0)
    >>> err = lambda V: float((X @ (W - V).T).norm())
    >>> bool((res.weight[~mask] == 0).all()), err(res.weight) <= err(W * mask)
    (True, True)
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..backend import dispatch
from ..backend.checks import check_int, check_real
from ..backend.linalg import NotPositiveDefiniteError
from ..backend.select import Spec
from .calibrate import LayerStats, PrunedMatrix, calibrate, module_name
from .matrix_view import _weight_to_matrix
from .sparsegpt import check_layer, damped_cholesky
from .targets import Masks, check_masks, check_model
from .targets import targets as _targets

__all__ = ["reconstruct_matrix", "reconstruct_"]


@dispatch.register("reconstruct", "reference")
def reconstruct_reference(W: Tensor, gram: Tensor, mask: Tensor, damping: float, iterations: int,
                          tol: float) -> PrunedMatrix:
    """Exact: for each distinct row mask ``K``, one Cholesky solve ``A_KK V = (W₀A)_K`` for all its rows."""
    W0, A, _ = damped_cholesky(W, gram, damping)
    out = torch.zeros_like(W0)
    B = W0 @ A                                                    # rows (A w_i)ᵀ
    patterns, which = torch.unique(mask, dim=0, return_inverse=True)
    for g, keep in enumerate(patterns):
        rows = (which == g).nonzero().squeeze(1)
        if bool(keep.all()):
            out[rows] = W0[rows]
        elif bool(keep.any()):
            idx = keep.nonzero().squeeze(1)
            L, info = torch.linalg.cholesky_ex(A[idx][:, idx])
            if int(info) != 0:
                raise NotPositiveDefiniteError(f"gram: H + λI restricted to a row's kept inputs is singular "
                                               f"(damping = {damping}); use damping > 0")
            out[rows[:, None], idx] = torch.cholesky_solve(B[rows][:, idx].T, L).T
    return PrunedMatrix(out, mask.clone())


@dispatch.register("reconstruct", "admm", priority=1)
def reconstruct_admm(W: Tensor, gram: Tensor, mask: Tensor, damping: float, iterations: int,
                     tol: float) -> PrunedMatrix:
    """ADMM on all rows at once (module docstring): one eigendecomposition, one product per iteration."""
    W0, A, _ = damped_cholesky(W, gram, damping)
    s = A.diagonal().sqrt()
    At = A / s[:, None] / s[None, :]                              # unit diagonal
    lam, Q = torch.linalg.eigh(At)
    keep = mask.to(W0.dtype)
    W0s = W0 * s
    B = W0s @ At
    Z, U = W0s * keep, torch.zeros_like(W0)
    rho, inv = 1.0, None
    primal, dual = tol * float(W0s.norm()), tol * float(B.norm())
    for _ in range(iterations):
        if inv is None:
            inv = (Q / (lam + rho)) @ Q.T                         # (Ã + ρI)⁻¹
        Wk = (B + rho * (Z - U)) @ inv
        Zp, Z = Z, (Wk + U) * keep
        U.add_(Wk - Z)
        r, d = float((Wk - Z).norm()), rho * float((Z - Zp).norm())
        if r <= primal and d <= dual:
            break
        if r > 10 * d:                                            # residual balancing (U is scaled by 1/ρ)
            rho, inv = 2 * rho, None
            U.div_(2)
        elif d > 10 * r:
            rho, inv = rho / 2, None
            U.mul_(2)
    return PrunedMatrix(Z / s, mask.clone())


def reconstruct_matrix(W: Tensor, gram: Tensor, mask: Tensor, *, damping: float = 0.01, impl: str | None = None,
                       iterations: int = 300, tol: float = 1e-6) -> PrunedMatrix:
    """The least-squares weights of one layer on a given keep-mask (see the module docstring).

    Args:
        W: ``(out, d)`` weights (any float dtype; the computation runs in ``gram``'s dtype).
        gram: ``(d, d)`` input Gram matrix ``XᵀX`` (symmetric positive semi-definite).
        mask: ``(out, d)`` bool, True = kept (any method's; rows may be all kept or all pruned).
        damping: ``λ = damping · mean(diag H)`` added to the diagonal (>= 0), as :func:`~overparam.prune.sparsegpt_matrix`.
        impl: ``"reference"`` (exact) | ``"admm"`` | ``"auto"`` (ADMM) | None (:mod:`~overparam.backend.dispatch`).
        iterations, tol: ADMM's iteration cap and relative tolerance on its residuals (``"reference"`` ignores them).

    Returns:
        :class:`~overparam.prune.calibrate.PrunedMatrix`: ``weight (out, d)`` in ``gram``'s dtype, exactly zero off
        the mask, and a copy of ``mask``.

    Reference: B. Boža, "Fast and Effective Weight Update for Pruned Large Language Models" (TMLR 2024)

    Example:
        >>> X = torch.randn(32, 8, dtype=torch.float64); W = torch.randn(3, 8, dtype=torch.float64)
        >>> mask = torch.arange(8).remainder(2).bool().expand(3, 8)
        >>> ref = reconstruct_matrix(W, X.T @ X, mask, impl="reference")
        >>> admm = reconstruct_matrix(W, X.T @ X, mask, impl="admm", tol=1e-12, iterations=3000)
        >>> bool((ref.weight[:, ::2] == 0).all()), torch.allclose(admm.weight, ref.weight, atol=1e-8)
        (True, True)
    """
    check_layer(W, gram, damping)
    if not isinstance(mask, Tensor) or mask.dtype != torch.bool:
        raise TypeError(f"mask must be a bool tensor (True = kept), got {getattr(mask, 'dtype', type(mask).__name__)}")
    if mask.shape != W.shape:
        raise ValueError(f"mask has shape {tuple(mask.shape)}; W is {tuple(W.shape)}")
    check_int(iterations, "iterations")
    check_real(tol, "tol", at_least=0.0, finite=True)
    mask = mask.to(W.device)
    return dispatch.choose("reconstruct", impl, device=W.device)(W, gram, mask, damping, iterations, tol)


def reconstruct_(model: nn.Module, data, masks: Masks, *, targets: Spec = None, exclude: Spec = None,
                 blocks: Spec = None, sequential: bool = True, damping: float = 0.01, impl: str | None = None,
                 dtype: torch.dtype = torch.float64) -> Masks:
    """Set the masked Linear / Conv weights in place to their least-squares values on calibration data.

    Every target layer that has a mask gets :func:`reconstruct_matrix` on its Gram matrix from
    :func:`~overparam.prune.calibrate.calibrate` (sequential: on the outputs of the already reconstructed earlier
    blocks, as SparseGPT); the masks, the other parameters, parameter order and train/eval flags are untouched.

    Args:
        model: the model (deterministic: ``model.eval()`` for dropout / BatchNorm).
        data: an ``(inputs, targets)`` batch or an iterable of them (targets ignored).
        masks: ``{"<layer>.weight": bool tensor of the weight's shape}`` (any method's: magnitude, Wanda, SparseGPT).
        targets, exclude: which of the masked layers to reconstruct (:func:`overparam.prune.targets`).
        blocks, sequential: as :func:`~overparam.prune.calibrate.calibrate`.
        damping, impl: as :func:`reconstruct_matrix`.
        dtype: the statistics' and the computation's dtype (float64 or float32).

    Returns:
        the masks applied ``{"<layer>.weight": bool}`` (those of ``masks`` on the reconstructed layers).

    Reference: B. Boža, "Fast and Effective Weight Update for Pruned Large Language Models" (TMLR 2024)

    Example:
        >>> net = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.ReLU(), torch.nn.Linear(8, 4))
        >>> masks = {"0.weight": net[0].weight.abs() > 0.1}
        >>> done = reconstruct_(net, (torch.randn(64, 8), None), masks)
        >>> list(done), bool((net[0].weight[~masks["0.weight"]] == 0).all())
        (['0.weight'], True)
    """
    check_model(model)
    check_real(damping, "damping", at_least=0.0, finite=True)
    check_masks(masks, dict(model.named_parameters()))
    prunable = set(_targets(model))
    other = [k for k in masks if k not in prunable]
    if other:
        raise ValueError(f"masks: {other} are not weights of Linear / Conv layers (what reconstruct_ updates)")
    names = [n for n in _targets(model, targets, exclude=exclude) if n in masks]
    if not names:
        raise ValueError("masks: no target layer has a mask")
    mods = dict(model.named_modules())

    def rule(name: str, W: Tensor, stats: LayerStats) -> PrunedMatrix:
        keep = _weight_to_matrix(mods[module_name(name)], masks[name])
        return reconstruct_matrix(W, stats.gram, keep.to(W.device), damping=damping, impl=impl)

    return calibrate(model, data, rule, targets=names, blocks=blocks, sequential=sequential, dtype=dtype)
