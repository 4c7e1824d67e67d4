"""Robust PCA by ScaledGD: ``Y = M* + S*`` with ``M*`` low rank and ``S*`` sparse.

Tong, Ma & Chi (2021), "Accelerating Ill-Conditioned Low-Rank Matrix Estimation via Scaled
Gradient Descent", Sec. robust PCA. Alternate

* a sparse outlier estimate ``S_t = 𝒯(Y − L_t R_tᵀ)`` by hard thresholding: either
  :func:`sparsify` (keep the entries among the ``α``-fraction largest in magnitude of *both*
  their row and their column, the paper's ``𝒯_α``) or :func:`hard_threshold` with a level
  ``ζ_t`` (a number or a schedule ``t -> ζ_t``), and
* one :class:`~overparam.optim.ScaledGD` step on ``f(L, R) = ½‖L Rᵀ + S_t − Y‖_F²``,

from the spectral init ``S_0 = 𝒯(Y)``, ``L_0 R_0ᵀ`` = best rank-``r`` approximation of
``Y − S_0`` (balanced factors ``U√Σ``, ``V√Σ``).

The authors' MATLAB code (``matrix/RPCA.m`` in Titan-Tong/ScaledGD) thresholds with ``α`` at
the init and with ``2α`` in the iterations (the ``γα``, ``γ > 1`` of the analysis); to do the
same pass ``alpha=2 * a, init_alpha=a``. By default both use ``alpha``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor

from ..backend.checks import check_float, check_fraction, check_rank
from ..backend.topk import fraction_count, topk_mask
from .scaledgd import ScaledGD

__all__ = ["sparsify", "hard_threshold", "rpca_scaledgd", "RPCAResult"]


def sparsify(M: Tensor, alpha: float) -> Tensor:
    """``𝒯_α(M)``: keep ``M_ij ≠ 0`` if ``|M_ij|`` is among the ``k₂`` largest of row ``i`` and the
    ``k₁`` largest of column ``j`` (ties with the k-th kept), zero elsewhere. ``M (n1, n2)``;
    ``kᵢ = floor(α nᵢ + 1/2)``, the library's count rule
    (:func:`overparam.backend.topk.topk_mask` with ``ties="keep"``).

    Reference: T. Tong, C. Ma & Y. Chi, "Accelerating Ill-Conditioned Low-Rank Matrix Estimation via Scaled
        Gradient Descent" (JMLR 2021), the operator 𝒯_α of robust PCA.

    Example:
        >>> sparsify(torch.tensor([[5., 1.], [1., 0.]]), 0.5)
        tensor([[5., 0.],
                [0., 0.]])
    """
    _check_outliers(M)
    if M.ndim != 2:
        raise ValueError(f"M must be 2-D, got shape {tuple(M.shape)}")
    alpha = check_fraction(alpha, "alpha")
    n1, n2 = M.shape
    A = M.abs()
    keep = topk_mask(A, fraction_count(alpha, n2), dim=1, ties="keep")
    keep &= topk_mask(A, fraction_count(alpha, n1), dim=0, ties="keep")
    return torch.where(keep & (A > 0), M, torch.zeros_like(M))


def hard_threshold(M: Tensor, zeta: float) -> Tensor:
    """Keep the entries with ``|M_ij| > ζ`` (``M`` any shape, without NaN; ``ζ >= 0``).

    Reference: the sparse estimator of robust PCA by ScaledGD, T. Tong, C. Ma & Y. Chi, "Accelerating Ill-
        Conditioned Low-Rank Matrix Estimation via Scaled Gradient Descent" (JMLR 2021)

    Example:
        >>> hard_threshold(torch.tensor([3., .5]), 1.)
        tensor([3., 0.])
    """
    _check_outliers(M)
    if isinstance(zeta, bool) or not isinstance(zeta, (int, float)) or not zeta >= 0:
        raise ValueError(f"zeta must be a number >= 0, got {zeta!r}")
    return torch.where(M.abs() > zeta, M, torch.zeros_like(M))


def _check_outliers(M: Tensor) -> None:
    check_float(M, "M")
    if bool(torch.isnan(M).any()):
        raise ValueError("M holds NaN entries: no threshold can say whether they are outliers")


@dataclass
class RPCAResult:
    """The result of :func:`rpca_scaledgd`: ``Y ≈ L Rᵀ + S``.

    Attributes:
        L: ``(n1, r)``; R: ``(n2, r)``; S: ``(n1, n2)`` the sparse outlier estimate.
        iterations: steps taken; converged: whether ``tol`` was reached.
        history: ``‖LRᵀ + S − Y‖_F / ‖Y‖_F`` per step.

    Reference: T. Tong, C. Ma & Y. Chi, "Accelerating Ill-Conditioned Low-Rank Matrix Estimation via
    Scaled Gradient Descent" (2021), robust PCA.

    Example:
        >>> Y = torch.outer(torch.arange(1.0, 5.0, dtype=torch.float64), torch.ones(3, dtype=torch.float64))
        >>> Y[0, 0] += 100.0  # one outlier on a rank-1 matrix
        >>> res = rpca_scaledgd(Y, 1, alpha=0.3, iters=60)
        >>> res.L.shape, res.R.shape, res.S.shape, res.iterations == len(res.history)
        (torch.Size([4, 1]), torch.Size([3, 1]), torch.Size([4, 3]), True)
        >>> round(float(res.S[0, 0]), 3), res.history[-1] < 1e-6
        (100.0, True)
    """

    L: Tensor
    R: Tensor
    S: Tensor
    iterations: int
    converged: bool
    history: list[float] = field(default_factory=list)


def rpca_scaledgd(Y: Tensor, rank: int, *, alpha: float | None = None, init_alpha: float | None = None,
                  threshold: float | Callable[[int], float] | None = None, lr: float = 0.5, damping: float = 0.0,
                  iters: int = 200, tol: float = 1e-12,
                  callback: Callable[[int, Tensor, Tensor, Tensor], None] | None = None) -> RPCAResult:
    """Robust PCA ``Y ≈ L Rᵀ + S`` by ScaledGD with hard-thresholded outliers.

    Args:
        Y: ``(n1, n2)`` observed matrix.
        rank: ``r``, the width of ``L``, ``R``.
        alpha: outlier fraction for :func:`sparsify` (give this or ``threshold``).
        init_alpha: the fraction used for the initial ``S_0 = 𝒯(Y)`` (default ``alpha``; needs ``alpha``).
        threshold: level ``ζ`` or schedule ``t -> ζ_t`` for :func:`hard_threshold`.
        lr, damping: the ScaledGD step size and damping.
        iters: maximum number of steps (``0`` returns the spectral initialisation);
            ``tol >= 0``: stop when the relative residual is below it.
        callback: called as ``callback(t, L, R, S)`` after every step.

    Reference: T. Tong, C. Ma & Y. Chi, "Accelerating Ill-Conditioned Low-Rank Matrix Estimation via Scaled
        Gradient Descent" (JMLR 2021), robust PCA.

    Example:
        >>> import overparam as op
        >>> P = op.problems.robust_pca(n=60, r=2, alpha=0.05, generator=0)
        >>> res = op.optim.rpca_scaledgd(P.Y, 2, alpha=0.15, lr=0.8, iters=150)
        >>> float(P.relative_error((res.L, res.R))) < 1e-8
        True
    """
    if (alpha is None) == (threshold is None):
        raise ValueError("give exactly one of alpha (sparsify) and threshold (hard_threshold)")
    if init_alpha is not None and alpha is None:
        raise ValueError("init_alpha needs alpha (it is the sparsify fraction of the initial outlier estimate)")
    check_float(Y, "Y")
    if Y.ndim != 2:
        raise ValueError(f"Y must be 2-D (n1, n2), got shape {tuple(Y.shape)}")
    if not bool(torch.isfinite(Y).all()):
        raise ValueError("Y holds NaN or inf entries: robust PCA needs a finite matrix (outliers may be large, not infinite)")
    if Y.numel() == 0:
        raise ValueError(f"Y must be non-empty, got shape {tuple(Y.shape)}")
    check_rank(rank, tuple(Y.shape), at_most_min=True)
    if isinstance(iters, bool) or not isinstance(iters, int) or iters < 0:
        raise ValueError(f"iters must be an int >= 0, got {iters!r}")
    if isinstance(tol, bool) or not isinstance(tol, (int, float)) or not tol >= 0:
        raise ValueError(f"tol must be a number >= 0, got {tol!r}")

    def outliers(D: Tensor, t: int) -> Tensor:
        if alpha is not None:
            return sparsify(D, alpha)
        z = threshold(t) if callable(threshold) else threshold
        return hard_threshold(D, z)

    ny = torch.linalg.matrix_norm(Y)
    S = sparsify(Y, init_alpha) if init_alpha is not None else outliers(Y, 0)
    U, s, Vh = torch.linalg.svd(Y - S, full_matrices=False)
    L = (U[:, :rank] * s[:rank].sqrt()).clone()
    R = (Vh[:rank].mT * s[:rank].sqrt()).clone()
    opt = ScaledGD([(L, R)], lr=lr, damping=damping)
    hist, converged, t = [], False, 0
    for t in range(1, iters + 1):
        S = outliers(Y - L @ R.mT, t)
        D = L @ R.mT + S - Y
        L.grad, R.grad = D @ R, D.mT @ L
        opt.step()
        L.grad = R.grad = None
        res = float(torch.linalg.matrix_norm(L @ R.mT + S - Y) / ny)
        hist.append(res)
        if callback is not None:
            callback(t, L, R, S)
        if res <= tol:
            converged = True
            break
    return RPCAResult(L=L, R=R, S=S, iterations=t, converged=converged, history=hist)
