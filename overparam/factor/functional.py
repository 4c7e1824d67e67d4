"""The math of factorized weights: products of factors and their initializations.

Everything here is a pure function on tensors; the modules in :mod:`~overparam.factor`
are thin shells around it.

Orientation (the pair protocol shared with :mod:`overparam.optim`): a low-rank matrix
``W (n1, n2)`` is held as ``(L, R)`` with ``L (n1, k)`` and ``R (n2, k)`` and
``W = L @ R.T``; the symmetric ``W = U Uᵀ`` is the pair ``(U, U)``.

Initializations of a pair (all return :class:`LowRankFactors`):

* :func:`init_small`: i.i.d. ``N(0, scale²)`` entries (the incremental-learning regime);
* :func:`init_balanced`: a random pair re-balanced so that ``LᵀL = RᵀR``;
* :func:`init_orthogonal`: ``√scale`` times orthonormal columns (balanced, ``LRᵀ`` has all
  singular values ``scale``);
* :func:`init_spectral`: the top-``k`` SVD of an existing weight, ``L = U_k S_k^{1/2}``,
  ``R = V_k S_k^{1/2}``, exact or randomized (:func:`overparam.backend.linalg.top_svd`).

Example:
    >>> import torch
    >>> f = init_balanced((5, 4), 3, scale=0.1, generator=0, dtype=torch.float64)
    >>> bool(torch.allclose(f.left.T @ f.left, f.right.T @ f.right))
    True
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from ..backend.checks import check_float, check_rank
from ..backend.linalg import top_svd
from ..backend.random import GeneratorLike, construction_generator, gaussian, orthonormal
from ._checks import check_finite, check_same_dtype

__all__ = [
    "LowRankFactors", "product", "lowrank_product", "balance",
    "init_small", "init_balanced", "init_orthogonal", "init_spectral", "init_factors",
]


@dataclass
class LowRankFactors:
    """A factor pair: ``left (n1, k)``, ``right (n2, k)``; the matrix is ``left @ right.T``.

    Example:
        >>> LowRankFactors(torch.ones(3, 1), torch.ones(2, 1)).product().shape
        torch.Size([3, 2])
    """

    left: Tensor
    right: Tensor

    def product(self) -> Tensor:
        """The ``(n1, n2)`` matrix ``left @ right.T``.

        Example:
            >>> f = LowRankFactors(torch.tensor([[1.0], [2.0]]), torch.tensor([[3.0], [4.0], [5.0]]))
            >>> f.product()
            tensor([[ 3.,  4.,  5.],
                    [ 6.,  8., 10.]])
        """
        return self.left @ self.right.mT


def product(factors: Sequence[Tensor]) -> Tensor:
    """The end-to-end matrix ``W_L ⋯ W_2 W_1`` of factors given in application order.

    Args:
        factors: ``[W_1 (d_1, d_0), W_2 (d_2, d_1), ..., W_L (d_L, d_{L-1})]``, the order an
            input ``x (d_0,)`` meets them (as in ``nn.Sequential``).

    Returns:
        ``(d_L, d_0)``. A low-rank ``L Rᵀ`` is ``product([R.T, L])``.

    Example:
        >>> A, B = torch.ones(3, 2), torch.ones(4, 3)
        >>> product([A, B]).shape
        torch.Size([4, 2])
    """
    fs = list(factors)
    if not fs:
        raise ValueError("factors must hold at least one matrix")
    for j, (a, b) in enumerate(zip(fs[:-1], fs[1:])):
        if b.shape[-1] != a.shape[-2]:
            raise ValueError(f"factors[{j + 1}] has {b.shape[-1]} columns but factors[{j}] has {a.shape[-2]} rows")
    W = fs[0]
    for f in fs[1:]:
        W = f @ W
    return W


def lowrank_product(left: Tensor, right: Tensor) -> Tensor:
    """``left @ right.T``: ``(n1, k), (n2, k) -> (n1, n2)``.

    Example:
        >>> lowrank_product(torch.ones(3, 2), torch.ones(4, 2)).shape
        torch.Size([3, 4])
    """
    _check_pair(left, right)
    return left @ right.mT


def _check_pair(left: Tensor, right: Tensor) -> int:
    """The common width ``k`` of ``left (..., n1, k)`` and ``right (..., n2, k)``."""
    check_float(left, "left")
    check_float(right, "right")
    check_same_dtype(left, right, ("left", "right"))
    if left.ndim < 2 or right.ndim < 2:
        raise ValueError(f"left and right must be matrices (n, k), got shapes {tuple(left.shape)} and {tuple(right.shape)}")
    if left.shape[-1] != right.shape[-1]:
        raise ValueError(f"left has {left.shape[-1]} columns but right has {right.shape[-1]}")
    return left.shape[-1]


INITS = ("small", "balanced", "orthogonal", "spectral", "svd", "randomized")


def check_init(init) -> None:
    """A ``ValueError`` naming ``init`` unless it is one of :data:`INITS` or an ``(L, R)`` pair."""
    if not isinstance(init, tuple) and init not in INITS:
        raise ValueError(f"init must be one of {', '.join(map(repr, INITS))} or an (L, R) pair, got {init!r}")


def _shape2(shape) -> tuple[int, int]:
    if len(shape) != 2 or any((not isinstance(s, int)) or s < 1 for s in shape):
        raise ValueError(f"shape must be two positive ints (n1, n2), got {shape!r}")
    return int(shape[0]), int(shape[1])


def _check_scale(scale: float) -> float:
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not 0 < scale < float("inf"):
        raise ValueError(f"scale must be a finite number > 0, got {scale!r}")
    return float(scale)


def init_small(shape: tuple[int, int], rank: int, *, scale: float = 1e-3, symmetric: bool = False,
               generator: GeneratorLike = None, dtype: torch.dtype | None = None, device=None) -> LowRankFactors:
    """Small random init: i.i.d. ``N(0, scale²)`` entries in ``L (n1, k)`` and ``R (n2, k)``.

    With ``symmetric=True`` (needs ``n1 = n2``) both are the same tensor ``U``.

    ``generator=None`` draws from torch's default generator (the construction rule, docs/index.md).

    Reference: Y. Li, T. Ma & H. Zhang, "Algorithmic Regularization in Over-parameterized Matrix Sensing and Neural
        Networks with Quadratic Activations" (COLT 2018) (small random initialization)

    Example:
        >>> f = init_small((6, 5), 8, scale=1e-3, generator=0)
        >>> f.left.shape, f.right.shape
        (torch.Size([6, 8]), torch.Size([5, 8]))
    """
    n1, n2 = _shape2(shape)
    check_rank(rank)
    scale = _check_scale(scale)
    g = construction_generator(generator)
    L = scale * gaussian((n1, rank), generator=g, dtype=dtype, device=device)
    if symmetric:
        if n1 != n2:
            raise ValueError(f"symmetric factors need a square shape, got {shape}")
        return LowRankFactors(L, L)
    return LowRankFactors(L, scale * gaussian((n2, rank), generator=g, dtype=dtype, device=device))


def balance(left: Tensor, right: Tensor) -> LowRankFactors:
    """Re-factor ``LRᵀ`` into a balanced pair (``L'ᵀL' = R'ᵀR'``) with the same product.

    ``L = Q₁R₁``, ``R = Q₂R₂`` (QR), ``R₁R₂ᵀ = A S Bᵀ`` (small SVD), then ``L' = Q₁A S^{1/2}``,
    ``R' = Q₂B S^{1/2}``; zero columns pad the width back to ``k`` when ``k > min(n1, n2)``.

    Reference: S. S. Du, W. Hu & J. D. Lee, "Algorithmic Regularization in Learning Deep Homogeneous Models: Layers
        are Automatically Balanced" (NeurIPS 2018)

    Example:
        >>> f = balance(torch.randn(5, 2, dtype=torch.float64), 3 * torch.randn(4, 2, dtype=torch.float64))
        >>> bool(torch.allclose(f.left.T @ f.left, f.right.T @ f.right))
        True
    """
    k = _check_pair(left, right)
    check_finite(left, "left")
    check_finite(right, "right")
    Q1, R1 = torch.linalg.qr(left)
    Q2, R2 = torch.linalg.qr(right)
    A, S, Bh = torch.linalg.svd(R1 @ R2.mT, full_matrices=False)
    s = S.sqrt()
    L, R = (Q1 @ A) * s, (Q2 @ Bh.mT) * s
    q = s.shape[-1]
    if q < k:
        L = torch.cat([L, L.new_zeros(*L.shape[:-1], k - q)], dim=-1)
        R = torch.cat([R, R.new_zeros(*R.shape[:-1], k - q)], dim=-1)
    return LowRankFactors(L, R)


def init_balanced(shape: tuple[int, int], rank: int, *, scale: float = 1e-3, generator: GeneratorLike = None,
                  dtype: torch.dtype | None = None, device=None) -> LowRankFactors:
    """A random balanced pair: :func:`init_small` followed by :func:`balance` (``LᵀL = RᵀR``).

    ``generator=None`` draws from torch's default generator (the construction rule, docs/index.md).

    Reference: S. Arora, N. Cohen, N. Golowich & W. Hu, "A Convergence Analysis of Gradient Descent for Deep Linear
        Neural Networks" (ICLR 2019) (balanced initialization)

    Example:
        >>> f = init_balanced((6, 5), 3, generator=0, dtype=torch.float64)
        >>> float((f.left.T @ f.left - f.right.T @ f.right).abs().max()) < 1e-12
        True
    """
    f = init_small(shape, rank, scale=scale, generator=generator, dtype=dtype, device=device)
    return balance(f.left, f.right)


def init_orthogonal(shape: tuple[int, int], rank: int, *, scale: float = 1.0, symmetric: bool = False,
                    generator: GeneratorLike = None, dtype: torch.dtype | None = None, device=None) -> LowRankFactors:
    """``L = √scale · Q₁``, ``R = √scale · Q₂`` with orthonormal columns (``rank <= min(n1, n2)``).

    ``generator=None`` draws from torch's default generator (the construction rule, docs/index.md).

    Reference: A. M. Saxe, J. L. McClelland & S. Ganguli, "Exact solutions to the nonlinear dynamics of learning in
        deep linear neural networks" (ICLR 2014)

    Example:
        >>> f = init_orthogonal((6, 5), 3, generator=0, dtype=torch.float64)
        >>> torch.linalg.svdvals(f.product())[:4].round(decimals=6)
        tensor([1., 1., 1., 0.], dtype=torch.float64)
    """
    n1, n2 = _shape2(shape)
    check_rank(rank, (n1, n2), at_most_min=True)
    scale = _check_scale(scale)
    g = construction_generator(generator)

    def orth(n):
        return orthonormal(n, rank, generator=g, dtype=dtype, device=device) * scale**0.5

    L = orth(n1)
    if symmetric:
        if n1 != n2:
            raise ValueError(f"symmetric factors need a square shape, got {shape}")
        return LowRankFactors(L, L)
    return LowRankFactors(L, orth(n2))


def init_spectral(W: Tensor, rank: int, *, method: str = "svd", symmetric: bool = False, niter: int = 4,
                  oversample: int = 8, generator: GeneratorLike = None) -> LowRankFactors:
    """Factors of the best rank-``rank`` approximation of ``W (n1, n2)``.

    ``L = U_k S_k^{1/2}``, ``R = V_k S_k^{1/2}`` (balanced). With ``symmetric=True``, ``W`` must be
    square and ``U = V_k Λ_k^{1/2}`` from its top eigenpairs (negative eigenvalues clipped to 0).

    ``generator=None``: the randomized SVD's sketch never advances the global RNG (the measurement
    rule, docs/index.md).

    Reference: the spectral initialization of T. Tong, C. Ma & Y. Chi, "Accelerating Ill-Conditioned Low-Rank Matrix
        Estimation via Scaled Gradient Descent" (JMLR 2021)

    Example:
        >>> W = torch.diag(torch.tensor([3., 2., 1.]))
        >>> f = init_spectral(W, 2)
        >>> f.product().diagonal().round(decimals=4).tolist()
        [3.0, 2.0, 0.0]
    """
    check_float(W, "W")
    if W.ndim != 2:
        raise ValueError(f"W must be a matrix (n1, n2), got shape {tuple(W.shape)}")
    if W.numel() == 0:
        raise ValueError(f"W must be non-empty, got shape {tuple(W.shape)}")
    check_finite(W, "W")
    check_rank(rank, tuple(W.shape), at_most_min=True)
    if symmetric:
        if W.shape[0] != W.shape[1]:
            raise ValueError(f"symmetric init needs a square W, got {tuple(W.shape)}")
        evals, evecs = torch.linalg.eigh((W + W.mT) / 2)
        U = evecs[:, -rank:].flip(-1) * evals[-rank:].flip(-1).clamp_min(0).sqrt()
        return LowRankFactors(U, U)
    svd = top_svd(W, rank, method=method, niter=niter, oversample=oversample, generator=generator)
    s = svd.S.sqrt()
    return LowRankFactors(svd.U * s, svd.Vh.mT * s)


def init_factors(init: str | tuple[Tensor, Tensor], shape: tuple[int, int], rank: int, *, weight: Tensor | None = None,
                 scale: float = 1e-3, symmetric: bool = False, generator: GeneratorLike = None,
                 dtype: torch.dtype | None = None, device=None, **svd_kwargs) -> LowRankFactors:
    """Dispatch on ``init``: ``"small" | "balanced" | "orthogonal" | "spectral"/"svd" |
    "randomized"`` (spectral by randomized SVD), or a user-supplied ``(L, R)`` pair.

    ``weight (n1, n2)`` is required by the spectral inits.

    ``generator=None`` draws from torch's default generator (the construction rule, docs/index.md);
    the spectral inits' randomized SVD sketch follows the measurement rule.

    Example:
        >>> init_factors("small", (4, 3), 2, generator=0).left.shape
        torch.Size([4, 2])
    """
    n1, n2 = _shape2(shape)
    check_rank(rank)
    check_init(init)
    scale = _check_scale(scale)
    if isinstance(init, tuple):
        L, R = init
        if tuple(L.shape) != (n1, rank) or tuple(R.shape) != (n2, rank):
            raise ValueError(f"init pair must have shapes {(n1, rank)} and {(n2, rank)}, "
                             f"got {tuple(L.shape)} and {tuple(R.shape)}")
        return LowRankFactors(L.detach().clone(), L.detach().clone() if symmetric else R.detach().clone())
    if init == "small":
        return init_small(shape, rank, scale=scale, symmetric=symmetric, generator=generator, dtype=dtype, device=device)
    if init == "balanced":
        if symmetric:
            return init_small(shape, rank, scale=scale, symmetric=True, generator=generator, dtype=dtype, device=device)
        return init_balanced(shape, rank, scale=scale, generator=generator, dtype=dtype, device=device)
    if init == "orthogonal":
        return init_orthogonal(shape, rank, scale=scale, symmetric=symmetric, generator=generator, dtype=dtype,
                               device=device)
    # "spectral" | "svd" | "randomized" (check_init refused anything else)
    if weight is None:
        raise ValueError(f"init={init!r} needs the weight to factor (weight=...)")
    if tuple(weight.shape) != (n1, n2):
        raise ValueError(f"weight must have shape {(n1, n2)}, got {tuple(weight.shape)}")
    check_rank(rank, (n1, n2), at_most_min=True)
    method = "randomized" if init == "randomized" else "svd"
    return init_spectral(weight.detach(), rank, method=method, symmetric=symmetric, generator=generator,
                         **svd_kwargs)

