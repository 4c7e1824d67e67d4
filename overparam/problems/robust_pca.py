"""Robust PCA instances: ``Y = M* + S*`` with ``M*`` rank ``r`` and ``S*`` sparse.

``S*`` has each entry nonzero independently with probability ``alpha``, with value
``s_ij = magnitude · max|M*| · u_ij``, ``u_ij ~ U[-1, 1]`` (large corruptions of arbitrary
sign, as in Tong, Ma & Chi's experiments).

Example:
    >>> import overparam as op
    >>> P = op.problems.robust_pca(n=30, r=2, alpha=0.1, generator=0)
    >>> P.Y.shape, bool((P.S_star != 0).any())
    (torch.Size([30, 30]), True)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ..backend.random import GeneratorLike, construction_generator, uniform
from ..backend.checks import check_int, check_real
from ._checks import check_factors, check_tensor
from .sensing import _initial_factors, ground_truth

__all__ = ["RobustPCA", "robust_pca"]


@dataclass
class RobustPCA:
    """``Y = M_star + S_star``, all ``(n1, n2)``; ``rank`` of ``M_star``. Built by :func:`robust_pca`.

    Reference: T. Tong, C. Ma & Y. Chi, "Accelerating Ill-Conditioned Low-Rank Matrix Estimation via
    Scaled Gradient Descent" (2021), robust PCA.

    Example:
        >>> P = robust_pca(n=6, r=1, alpha=0.1, generator=0)
        >>> torch.equal(P.Y, P.M_star + P.S_star), int(torch.linalg.matrix_rank(P.M_star))
        (True, 1)
    """

    Y: Tensor
    M_star: Tensor
    S_star: Tensor
    rank: int

    def loss(self, X: tuple[Tensor, Tensor], S: Tensor | None = None) -> Tensor:
        """``½‖LRᵀ + S − Y‖_F²`` (``S = 0`` by default); ``L (n1, k)``, ``R (n2, k)``, ``S (n1, n2)``
        in the problem's dtype and on its device (else a TypeError/ValueError naming the argument).
        Returns a 0-dim tensor.

        Example:
            >>> P = robust_pca(n=6, r=1, alpha=0.1, generator=0)
            >>> U, s, Vh = torch.linalg.svd(P.M_star)
            >>> X = (U[:, :1] * s[0], Vh[:1].T)
            >>> torch.allclose(P.loss(X), 0.5 * P.S_star.square().sum()), float(P.loss(X, P.S_star)) < 1e-28
            (True, True)
        """
        L, R = check_factors(X, tuple(self.Y.shape), False, self.Y)
        if S is not None:
            check_tensor(S, "S", tuple(self.Y.shape), self.Y)
        D = L @ R.mT - self.Y
        return 0.5 * (D if S is None else D + S).square().sum()

    def relative_error(self, X: tuple[Tensor, Tensor]) -> Tensor:
        """``‖LRᵀ − M*‖_F / ‖M*‖_F`` (0-dim).

        Example:
            >>> P = robust_pca(n=6, r=1, alpha=0.1, generator=0)
            >>> L, R = torch.zeros(6, 1, dtype=torch.float64), torch.zeros(6, 1, dtype=torch.float64)
            >>> float(P.relative_error((L, R)))
            1.0
        """
        L, R = check_factors(X, tuple(self.Y.shape), False, self.Y)
        return torch.linalg.matrix_norm(L @ R.mT - self.M_star) / torch.linalg.matrix_norm(self.M_star)

    def init(self, kind: str = "spectral", *, rank: int | None = None, scale: float = 1e-3,
             generator: GeneratorLike = None) -> tuple[Tensor, Tensor]:
        """``"small"`` (``scale·G/√n``) or ``"spectral"`` (top-``rank`` factors of ``Y``):
        ``(L (n1, rank), R (n2, rank))``.

        ``generator=None`` draws from torch's default generator (the construction rule, docs/index.md).

        Example:
            >>> P = robust_pca(n=6, r=1, alpha=0.1, generator=0)
            >>> L, R = P.init()  # spectral, rank 1
            >>> U, s, Vh = torch.linalg.svd(P.Y)
            >>> L.shape, torch.allclose(L @ R.T, s[0] * torch.outer(U[:, 0], Vh[0]))
            (torch.Size([6, 1]), True)
        """
        return _initial_factors(kind, shape=tuple(self.Y.shape), rank=self.rank if rank is None else rank, like=self.Y,
                                symmetric=False, scale=scale, generator=generator, spectral_source=lambda: self.Y)


def robust_pca(n: int, r: int, alpha: float, *, kappa: float = 1.0, n2: int | None = None, magnitude: float = 10.0,
               generator: GeneratorLike = None, dtype=torch.float64, device=None) -> RobustPCA:
    """A robust-PCA instance with outlier fraction ``alpha ∈ [0, 1)`` (see the module docstring):
    ``M* (n, n2)`` of rank ``r`` and condition number ``kappa``, outliers of size up to ``magnitude · max|M*|``.

    ``generator=None`` draws from torch's default generator (the construction rule, docs/index.md).

    Reference: T. Tong, C. Ma & Y. Chi (JMLR 2021), robust PCA experiments.

    Example:
        >>> P = robust_pca(n=40, r=2, alpha=0.1, magnitude=5.0, generator=0)
        >>> frac = float((P.S_star != 0).double().mean())
        >>> 0.05 < frac < 0.15, bool(P.S_star.abs().max() <= 5.0 * P.M_star.abs().max())
        (True, True)
    """
    check_int(n, "n")
    if not 0 <= alpha < 1:
        raise ValueError(f"alpha must be in [0, 1), got {alpha}")
    check_real(magnitude, "magnitude", at_least=0.0)
    g = construction_generator(generator)
    M = ground_truth(n, r, kappa=kappa, n2=n2, symmetric=False, generator=g, dtype=dtype, device=device)
    keep = uniform(M.shape, generator=g, device=M.device) < alpha
    u = uniform(M.shape, low=-1.0, high=1.0, generator=g, dtype=dtype, device=M.device)
    S = torch.where(keep, magnitude * M.abs().max() * u, torch.zeros_like(M))
    return RobustPCA(Y=M + S, M_star=M, S_star=S, rank=r)
