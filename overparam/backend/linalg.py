"""Small dense linear algebra shared by the solvers and optimizers.

* :func:`orthogonalize`: batched classical Gram-Schmidt projection with one
  re-orthogonalization pass ("twice is enough", CGS2), the kernel of Lanczos with full
  re-orthogonalization.
* :func:`tridiag_eigh`: eigen-decomposition of a batch of symmetric tridiagonal matrices
  (the Lanczos projection), eigenvalues ascending.
* :func:`gram_solve`: ``B (RᵀR + λI)⁻¹`` by Cholesky, the ScaledGD preconditioner, with a
  clear error when the damped Gram matrix is not positive definite.
* :func:`cholesky_qr2`: thin QR of tall-skinny blocks by two Cholesky passes.
* :func:`top_svd`: truncated SVD, exact (:func:`exact_svd`) or randomized (:func:`randomized_svd`),
  registered as routine ``"top_svd"`` in :mod:`~overparam.backend.dispatch`.

All functions accept leading batch dimensions ``...`` and work in the input's dtype.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from . import dispatch
from .checks import check_float, check_floats, check_int, check_rank, check_real
from .random import GeneratorLike, gaussian, measurement_generator

__all__ = ["orthogonalize", "tridiag_eigh", "tridiag_matrix", "gram_solve", "spd_solve", "spd_solve_ex",
           "NotPositiveDefiniteError", "cholesky_qr2", "SVD", "exact_svd", "randomized_svd", "top_svd"]


class NotPositiveDefiniteError(ValueError):
    """A matrix that must be symmetric positive definite is not (numerically)."""


def orthogonalize(v: Tensor, Q: Tensor, *, passes: int = 2, reduce=None) -> tuple[Tensor, Tensor]:
    """Remove from ``v`` its components along the orthonormal columns of ``Q``.

    Classical Gram-Schmidt repeated ``passes`` times (2 = CGS2, which keeps orthogonality to
    working precision; 1 = plain CGS, which loses it on ill-conditioned input).

    Args:
        v: ``(..., n)`` one vector or ``(..., n, j)`` several columns.
        Q: ``(..., n, k)`` with orthonormal columns (``k`` may be 0).
        passes: number of projection passes, >= 1.
        reduce: for rows sharded over ranks, the function that sums partial inner products ``Qᵀv``
            over the ranks (:meth:`overparam.backend.sharded.ShardedSpace.reduce`); None: local rows.

    Returns:
        ``(w, c)``: ``w`` like ``v`` and orthogonal to ``Q``; ``c`` the accumulated coefficients
        ``(..., k)`` (or ``(..., k, j)``) so that ``v = w + Q c``.

    Example:
        >>> Q = torch.eye(3, dtype=torch.float64)[:, :2]
        >>> orthogonalize(torch.tensor([1., 2., 3.], dtype=torch.float64), Q)[0]
        tensor([0., 0., 3.], dtype=torch.float64)
    """
    check_floats({"v": v, "Q": Q}, nonempty=False)
    check_int(passes, "passes")
    vector = v.ndim == Q.ndim - 1
    w = v.unsqueeze(-1) if vector else v
    if w.shape[-2] != Q.shape[-2]:
        raise ValueError(f"v has length {w.shape[-2]} but Q has {Q.shape[-2]} rows")
    coef = torch.zeros(*Q.shape[:-2], Q.shape[-1], w.shape[-1], dtype=Q.dtype, device=Q.device)
    for _ in range(passes):
        c = Q.mT @ w if reduce is None else reduce(Q.mT @ w)
        w = w - Q @ c
        coef = coef + c
    if vector:
        return w.squeeze(-1), coef.squeeze(-1)
    return w, coef


def tridiag_matrix(alpha: Tensor, beta: Tensor) -> Tensor:
    """Dense symmetric tridiagonal matrix ``(..., k, k)`` from its diagonal ``(..., k)`` and
    off-diagonal ``(..., k-1)``."""
    check_floats({"alpha": alpha, "beta": beta}, nonempty=False)
    if alpha.ndim == 0 or alpha.shape[-1] == 0:
        raise ValueError(f"alpha must have shape (..., k) with k >= 1, got {tuple(alpha.shape)}")
    k = alpha.shape[-1]
    if beta.shape[:-1] != alpha.shape[:-1] or beta.shape[-1] != k - 1:
        raise ValueError(f"beta must have shape {(*alpha.shape[:-1], k - 1)} to match alpha {tuple(alpha.shape)}, "
                         f"got {tuple(beta.shape)}")
    T = torch.diag_embed(alpha)
    if k > 1:
        T = T + torch.diag_embed(beta, offset=1) + torch.diag_embed(beta, offset=-1)
    return T


def tridiag_eigh(alpha: Tensor, beta: Tensor, *, eigenvectors: bool = True) -> tuple[Tensor, Tensor | None]:
    """Eigen-decomposition of symmetric tridiagonal matrices.

    Args:
        alpha: ``(..., k)`` diagonals.
        beta: ``(..., k-1)`` off-diagonals.
        eigenvectors: also return the eigenvectors.

    Returns:
        ``(theta, S)``: eigenvalues ``(..., k)`` ascending and eigenvectors ``(..., k, k)``
        (columns), so ``T = S diag(theta) Sᵀ``; ``S`` is None when ``eigenvectors=False``.
        The first row ``S[..., 0, :]`` gives the Gauss quadrature weights ``S[0, i]²`` of SLQ.

    Example:
        >>> theta, _ = tridiag_eigh(torch.tensor([2., 2.]), torch.tensor([1.]))
        >>> theta
        tensor([1., 3.])
    """
    T = tridiag_matrix(alpha, beta)
    check_floats({"alpha": alpha, "beta": beta}, nonempty=False, finite=True)
    if eigenvectors:
        theta, S = torch.linalg.eigh(T)
        return theta, S
    return torch.linalg.eigvalsh(T), None


def gram_solve(R: Tensor, B: Tensor, *, damping: float = 0.0) -> Tensor:
    """Right-multiply by the inverse of a damped Gram matrix: ``B (RᵀR + λI)⁻¹``.

    This is the ScaledGD / ScaledGD(λ) preconditioner: ``∇_L f (RᵀR + λI)⁻¹``.

    Args:
        R: ``(..., m, r)`` factor whose Gram matrix ``RᵀR`` is ``(..., r, r)``.
        B: ``(..., n, r)`` right-hand side (e.g. a gradient).
        damping: ``λ >= 0``.

    Returns:
        ``(..., n, r)``.

    Raises:
        NotPositiveDefiniteError: when ``RᵀR + λI`` is not positive definite (``R``
            rank-deficient and ``λ = 0``); set ``damping > 0``.

    Example:
        >>> R = torch.eye(3, 2, dtype=torch.float64) * 2
        >>> gram_solve(R, torch.ones(4, 2, dtype=torch.float64))[0]
        tensor([0.2500, 0.2500], dtype=torch.float64)
    """
    check_floats({"R": R, "B": B}, nonempty=False)
    if R.ndim < 2 or B.ndim < 2:
        raise ValueError(f"R and B must be at least 2-D, got {tuple(R.shape)} and {tuple(B.shape)}")
    if R.shape[-1] != B.shape[-1]:
        raise ValueError(f"R has rank {R.shape[-1]} but B has {B.shape[-1]} columns")
    return spd_solve(R.mT @ R, B, damping=damping)


def spd_solve(G: Tensor, B: Tensor, *, damping: float = 0.0) -> Tensor:
    """``B (G + λI)⁻¹`` for a symmetric positive (semi-)definite ``G`` by Cholesky.

    The kernel of :func:`gram_solve`, for callers that maintain the Gram matrix ``G = RᵀR``
    themselves (e.g. incrementally, as ScaledSGD does).

    Args:
        G: ``(..., r, r)`` symmetric.
        B: ``(..., n, r)``.
        damping: ``λ >= 0``.

    Returns:
        ``(..., n, r)``.

    Raises:
        NotPositiveDefiniteError: when ``G + λI`` is not positive definite; set ``damping > 0``.

    Example:
        >>> spd_solve(4 * torch.eye(2, dtype=torch.float64), torch.ones(3, 2, dtype=torch.float64))[0]
        tensor([0.2500, 0.2500], dtype=torch.float64)
    """
    X, ok = spd_solve_ex(G, B, damping=damping)
    if not bool(ok.all()):
        if not bool(G.isfinite().all()):
            raise ValueError("G (RᵀR + λI) has NaN or inf entries")
        raise NotPositiveDefiniteError(
            f"RᵀR + λI (r = {G.shape[-1]}, λ = {damping}) is not positive definite: the factor is "
            "rank-deficient; use damping > 0 (ScaledGD(λ))"
        )
    return X


def spd_solve_ex(G: Tensor, B: Tensor, *, damping: float | Tensor = 0.0) -> tuple[Tensor, Tensor]:
    """:func:`spd_solve` for a batch of independent systems that never raises on one bad system.

    Args:
        G: ``(..., r, r)`` symmetric.
        B: ``(..., n, r)``.
        damping: ``λ >= 0``, a number or a tensor of shape ``G.shape[:-2]`` (one per system).

    Returns:
        ``(X, ok)``: ``X (..., n, r) = B (G + λI)⁻¹`` and ``ok (...)`` (bool), False where
        ``G + λI`` is not positive definite or not finite; ``X`` there holds zeros (never NaN, so
        a caller masking by ``ok`` cannot spread a NaN into the good systems).

    Example:
        >>> G = torch.stack([4 * torch.eye(2), -torch.eye(2)]).double()
        >>> X, ok = spd_solve_ex(G, torch.ones(2, 3, 2, dtype=torch.float64))
        >>> ok.tolist(), X[0, 0].tolist(), X[1].abs().sum().item()
        ([True, False], [0.25, 0.25], 0.0)
    """
    check_floats({"G": G, "B": B}, nonempty=False)
    if G.ndim < 2 or G.shape[-1] != G.shape[-2]:
        raise ValueError(f"G must be square (..., r, r), got {tuple(G.shape)}")
    if B.ndim < 2 or B.shape[-1] != G.shape[-1]:
        raise ValueError(f"B must have shape (..., n, {G.shape[-1]}) to match G, got {tuple(B.shape)}")
    eye = torch.eye(G.shape[-1], dtype=G.dtype, device=G.device)
    if isinstance(damping, Tensor):
        if damping.shape != G.shape[:-2]:
            raise ValueError(f"damping must be a number or have shape {tuple(G.shape[:-2])} (one per system), "
                             f"got {tuple(damping.shape)}")
        check_floats({"damping": damping}, nonempty=False)
        if not bool((damping >= 0).all()):
            raise ValueError("damping must be >= 0 for every system")
        G = G + damping.to(G.dtype)[..., None, None] * eye
    else:
        check_real(damping, "damping", at_least=0.0)
        if damping:
            G = G + damping * eye
    finite = G.isfinite().all(-1).all(-1)
    L, info = torch.linalg.cholesky_ex(torch.where(finite[..., None, None], G, eye))
    ok = (info == 0) & finite
    L = torch.where(ok[..., None, None], L, eye)
    # B G⁻¹ = (G⁻¹ Bᵀ)ᵀ because G is symmetric.
    X = torch.cholesky_solve(B.mT, L).mT
    return torch.where(ok[..., None, None], X, torch.zeros((), dtype=X.dtype, device=X.device)), ok


def cholesky_qr2(Y: Tensor) -> tuple[Tensor, Tensor]:
    """Thin QR ``Y = QR`` of a tall ``Y (..., m, q)`` by Cholesky-QR2.

    Two passes of ``YᵀY = LLᵀ``, ``Q = Y L⁻ᵀ``: a few small matmuls instead of Householder QR,
    which is several times slower for tall-skinny blocks; the second pass restores
    orthogonality to working precision. Falls back to Householder QR (``torch.linalg.qr``) when
    a Gram matrix is not numerically positive definite (rank-deficient or very ill-conditioned ``Y``).

    Returns:
        ``(Q, R)``: ``(..., m, q)`` orthonormal columns and ``(..., q, q)`` upper triangular.

    Example:
        >>> Y = torch.tensor([[3., 0.], [4., 1.], [0., 2.]], dtype=torch.float64)
        >>> Q, R = cholesky_qr2(Y)
        >>> torch.allclose(Q @ R, Y), torch.allclose(Q.mT @ Q, torch.eye(2, dtype=torch.float64))
        (True, True)
    """
    check_float(Y, "Y")
    if Y.ndim < 2 or Y.shape[-2] < Y.shape[-1]:
        raise ValueError(f"Y must be tall (..., m, q) with m >= q, got {tuple(Y.shape)}")
    R = None
    Q = Y
    for _ in range(2):
        L, info = torch.linalg.cholesky_ex(Q.mT @ Q)
        if bool(info.any()):
            return torch.linalg.qr(Y)
        Q = torch.linalg.solve_triangular(L, Q.mT, upper=False).mT
        R = L.mT if R is None else L.mT @ R
    return Q, R


@dataclass
class SVD:
    """A (truncated) SVD ``W ≈ U diag(S) Vh``: ``U (m, k)``, ``S (k,)`` descending, ``Vh (k, n)``.

    Example:
        >>> SVD(torch.eye(3, 1), torch.tensor([2.0]), torch.eye(1, 2)).product()
        tensor([[2., 0.],
                [0., 0.],
                [0., 0.]])
    """

    U: Tensor
    S: Tensor
    Vh: Tensor

    def product(self) -> Tensor:
        return (self.U * self.S) @ self.Vh


def _check_svd_args(W: Tensor, rank: int, niter: int, oversample: int) -> None:
    check_floats({"W": W}, finite=True)
    if W.ndim != 2:
        raise ValueError(f"W must be a matrix (m, n), got shape {tuple(W.shape)}")
    check_rank(rank, tuple(W.shape), at_most_min=True)
    check_int(niter, "niter", at_least=0)
    check_int(oversample, "oversample", at_least=0)


@dispatch.register("top_svd", "svd")
def exact_svd(W: Tensor, rank: int, *, niter: int = 4, oversample: int = 8, generator: GeneratorLike = None) -> SVD:
    """Top-``rank`` part of the exact ``torch.linalg.svd`` (the reference; ``niter``, ``oversample``
    and ``generator`` are accepted for the shared signature and unused).

    ``generator=None`` never advances the global RNG (the measurement rule, docs/index.md).

    Example:
        >>> exact_svd(torch.diag(torch.tensor([1., 3., 2.])), 2).S
        tensor([3., 2.])
    """
    _check_svd_args(W, rank, niter, oversample)
    U, S, Vh = torch.linalg.svd(W, full_matrices=False)
    return SVD(U[:, :rank], S[:rank], Vh[:rank])


@dispatch.register("top_svd", "randomized")
def randomized_svd(W: Tensor, rank: int, *, niter: int = 4, oversample: int = 8,
                   generator: GeneratorLike = None) -> SVD:
    """Top-``rank`` SVD of ``W (m, n)`` by a randomized range finder (Halko, Martinsson & Tropp).

    ``Q = orth(W Ω)`` with ``Ω (n, rank + oversample)`` Gaussian, ``niter`` power iterations
    ``Q ← orth(W orth(WᵀQ))`` (each ``orth`` a :func:`cholesky_qr2`), then the exact SVD of the
    small ``QᵀW``. Exact (to rounding) when ``rank + oversample >= min(m, n)``.

    ``generator=None`` never advances the global RNG (the measurement rule, docs/index.md).

    Returns:
        :class:`SVD` with ``U (m, rank)``, ``S (rank,)``, ``Vh (rank, n)``.

    Example:
        >>> W = gaussian((50, 40), generator=1, dtype=torch.float64)
        >>> s = randomized_svd(W, 40, generator=0).S
        >>> bool(torch.allclose(s, torch.linalg.svdvals(W)))
        True
    """
    _check_svd_args(W, rank, niter, oversample)
    q = min(rank + oversample, *W.shape)
    omega = gaussian((W.shape[1], q), generator=measurement_generator(generator), dtype=W.dtype, device=W.device)
    Q = cholesky_qr2(W @ omega)[0]
    for _ in range(niter):
        Q = cholesky_qr2(W.mT @ Q)[0]
        Q = cholesky_qr2(W @ Q)[0]
    # SVD of the small B = QᵀW (q, n) through Bᵀ = Q_b R_b: B = R_bᵀ Q_bᵀ, SVD of the q×q R_bᵀ.
    Qb, Rb = cholesky_qr2(W.mT @ Q)
    Ub, S, Vh_small = torch.linalg.svd(Rb.mT)
    return SVD(Q @ Ub[:, :rank], S[:rank], (Qb @ Vh_small[:rank].mT).mT)


def top_svd(W: Tensor, rank: int, *, method: str = "svd", niter: int = 4, oversample: int = 8,
            generator: GeneratorLike = None) -> SVD:
    """Top-``rank`` SVD of ``W (m, n)``, routine ``"top_svd"`` of :mod:`~overparam.backend.dispatch`:
    ``method="svd"`` (exact, :func:`exact_svd`, the reference) or ``"randomized"``
    (:func:`randomized_svd`, with ``niter``, ``oversample``, ``generator``).

    ``generator=None`` never advances the global RNG (the measurement rule, docs/index.md).

    Returns:
        :class:`SVD` with ``U (m, rank)``, ``S (rank,)``, ``Vh (rank, n)``.

    Example:
        >>> top_svd(torch.eye(4), 2).S
        tensor([1., 1.])
    """
    if method not in ("svd", "randomized"):
        raise ValueError(f"method must be 'svd' or 'randomized', got {method!r}")
    return dispatch.choose("top_svd", method, device=getattr(W, "device", None))(
        W, rank, niter=niter, oversample=oversample, generator=generator)
