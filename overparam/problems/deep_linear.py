"""Deep linear regression: ``y = W* x``, learned as a product ``W_N ⋯ W_1``.

Arora, Cohen & Hazan (2018), "On the Optimization of Deep Networks: Implicit Acceleration by
Overparameterization". Inputs ``X (N, d_in)`` are standard Gaussian, targets ``Y = X W*ᵀ``
with ``W* (d_out, d_in)`` of rank ``r`` and condition number ``κ``. The loss on the factors
``[W_1 (k, d_in), W_2 (k, k), …, W_N (d_out, k)]`` is the ℓ_p regression loss::

    f = 1/(p N) Σ_i ‖W_N⋯W_1 x_i − y_i‖_p^p            (p = 2: least squares; p = 1: ℓ1)

Example:
    >>> import overparam as op
    >>> P = op.problems.deep_linear(d_in=6, d_out=4, r=2, depth=3, samples=50, generator=0)
    >>> Ws = P.init("small", rank=5, scale=0.1, generator=1)
    >>> [tuple(W.shape) for W in Ws]
    [(5, 6), (5, 5), (4, 5)]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from ..backend.random import GeneratorLike, construction_generator, gaussian
from ..backend.checks import check_int, check_real
from .sensing import ground_truth

__all__ = ["DeepLinearRegression", "deep_linear"]


@dataclass
class DeepLinearRegression:
    """``X (N, d_in)``, ``Y (N, d_out)``, ``W_star (d_out, d_in)``, ``depth`` factors, ℓ_p exponent ``p``.
    Built by :func:`deep_linear`.

    Reference: S. Arora, N. Cohen & E. Hazan, "On the Optimization of Deep Networks: Implicit
    Acceleration by Overparameterization" (2018).

    Example:
        >>> P = deep_linear(d_in=3, d_out=2, r=2, depth=2, samples=20, generator=0)
        >>> P.X.shape, P.Y.shape, torch.allclose(P.Y, P.X @ P.W_star.T)
        (torch.Size([20, 3]), torch.Size([20, 2]), True)
    """

    X: Tensor
    Y: Tensor
    W_star: Tensor
    depth: int
    rank: int
    p: float = 2.0

    def product(self, factors: Sequence[Tensor]) -> Tensor:
        """End-to-end matrix ``W_N ⋯ W_1`` ``(d_out, d_in)`` of ``[W_1 (k, d_in), …, W_N (d_out, k)]``.

        Example:
            >>> P = deep_linear(d_in=3, d_out=2, r=2, depth=2, samples=20, generator=0)
            >>> W1, W2 = torch.ones(4, 3, dtype=torch.float64), torch.ones(2, 4, dtype=torch.float64)
            >>> P.product([W1, W2])
            tensor([[4., 4., 4.],
                    [4., 4., 4.]], dtype=torch.float64)
        """
        if len(factors) != self.depth:
            raise ValueError(f"expected {self.depth} factors, got {len(factors)}")
        W = factors[0]
        for F in factors[1:]:
            W = F @ W
        return W

    def loss(self, factors: Sequence[Tensor]) -> Tensor:
        """``1/(pN) Σ ‖W x − y‖_p^p`` (0-dim), ``W = W_N ⋯ W_1``.

        Example:
            >>> P = deep_linear(d_in=3, d_out=2, r=2, depth=2, samples=20, generator=0)
            >>> Z = [torch.zeros(2, 3, dtype=torch.float64), torch.zeros(2, 2, dtype=torch.float64)]
            >>> torch.allclose(P.loss(Z), P.Y.square().sum() / (2 * 20))
            True
            >>> float(P.loss([P.W_star, torch.eye(2, dtype=torch.float64)]))  # zero at the truth
            0.0
        """
        r = self.X @ self.product(factors).mT - self.Y
        return r.abs().pow(self.p).sum() / (self.p * self.X.shape[0])

    def relative_error(self, factors: Sequence[Tensor]) -> Tensor:
        """``‖W_N⋯W_1 − W*‖_F / ‖W*‖_F`` (0-dim).

        Example:
            >>> P = deep_linear(d_in=3, d_out=2, r=2, depth=2, samples=20, generator=0)
            >>> float(P.relative_error([P.W_star, -torch.eye(2, dtype=torch.float64)]))  # −W*
            2.0
        """
        return torch.linalg.matrix_norm(self.product(factors) - self.W_star) / torch.linalg.matrix_norm(self.W_star)

    def init(self, kind: str = "small", *, rank: int | None = None, scale: float = 1e-3,
             generator: GeneratorLike = None) -> list[Tensor]:
        """Factors of width ``rank`` (default ``min(d_in, d_out)``).

        * ``"small"``: ``W_j = scale · G / √fan_in``;
        * ``"spectral"``: balanced factors of the rank-``rank`` truncated least-squares
          estimate ``USVᵀ``: ``W_1 = S^{1/N}Vᵀ``, ``W_j = S^{1/N}``, ``W_N = US^{1/N}``.

        ``generator=None`` draws from torch's default generator (the construction rule, docs/index.md).

        Example:
            >>> P = deep_linear(d_in=4, d_out=3, r=2, depth=3, samples=30, generator=0)
            >>> Ws = P.init("spectral", rank=2)  # balanced: W_{j+1}ᵀ W_{j+1} = W_j W_jᵀ
            >>> [tuple(W.shape) for W in Ws], float(P.relative_error(Ws)) < 1e-10  # noiseless: exact
            ([(2, 4), (2, 2), (3, 2)], True)
        """
        d_out, d_in = self.W_star.shape
        k = min(d_in, d_out) if rank is None else rank
        if k < 1:
            raise ValueError(f"rank must be >= 1, got {k}")
        dt, dev = self.X.dtype, self.X.device
        dims = [d_in] + [k] * (self.depth - 1) + [d_out]
        if kind == "small":
            g = construction_generator(generator)
            return [scale * gaussian((dims[j + 1], dims[j]), generator=g, dtype=dt, device=dev) / dims[j] ** 0.5
                    for j in range(self.depth)]
        if kind == "spectral":
            if k > min(d_in, d_out):
                raise ValueError(f"rank must be <= min(d_in, d_out) = {min(d_in, d_out)} for spectral init, got {k}")
            W_ls = torch.linalg.lstsq(self.X, self.Y).solution.mT
            U, S, Vh = torch.linalg.svd(W_ls)
            if self.depth == 1:
                return [(U[:, :k] * S[:k]) @ Vh[:k]]
            s = S[:k] ** (1.0 / self.depth)
            mids = [torch.diag(s) for _ in range(self.depth - 2)]
            return [s[:, None] * Vh[:k], *mids, U[:, :k] * s]
        raise ValueError(f"kind must be 'small' or 'spectral', got {kind!r}")


def deep_linear(d_in: int, d_out: int, r: int, depth: int, samples: int, *, kappa: float = 1.0, p: float = 2.0,
                generator: GeneratorLike = None, dtype=torch.float64, device=None) -> DeepLinearRegression:
    """Build a deep-linear regression problem (see the module docstring).

    ``generator=None`` draws from torch's default generator (the construction rule, docs/index.md).

    Args:
        d_in, d_out: input/output dimensions. r: rank of ``W*``. depth: number of factors ``N >= 1``.
        samples: ``N`` data points. kappa: condition number of ``W*``. p: ℓ_p exponent ``>= 1``.

    Returns:
        a :class:`DeepLinearRegression`.

    Reference: S. Arora, N. Cohen & E. Hazan (2018) (ℓ_p regression, ``p > 2``, for the acceleration claim).

    Example:
        >>> P = deep_linear(d_in=5, d_out=3, r=2, depth=4, samples=10, kappa=3.0, p=4.0, generator=0)
        >>> P.depth, P.p, torch.linalg.svdvals(P.W_star)[:2]
        (4, 4.0, tensor([1.0000, 0.3333], dtype=torch.float64))
    """
    for name, v in (("d_in", d_in), ("d_out", d_out), ("depth", depth), ("samples", samples)):
        check_int(v, name)
    check_real(p, "p", at_least=1.0)
    g = construction_generator(generator)
    W = ground_truth(d_out, r, kappa=kappa, n2=d_in, symmetric=False, generator=g, dtype=dtype, device=device)
    X = gaussian((samples, d_in), generator=g, dtype=dtype, device=device)
    return DeepLinearRegression(X=X, Y=X @ W.mT, W_star=W, depth=depth, rank=r, p=p)
