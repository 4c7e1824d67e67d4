"""Low-rank parameterizations: ``W = L Rᵀ`` (asymmetric) and ``W = U Uᵀ`` (symmetric PSD).

* :class:`LowRank`: a matrix ``(n1, n2)`` as a module; ``forward()`` returns it.
* :class:`LowRankLinear`: a linear layer ``y = x W ᵀ + b`` with ``W = L Rᵀ``, computed as
  ``(x R) Lᵀ`` (never forms ``W``).

``state_dict`` keys: ``left (n1, k)``, ``right (n2, k)`` (absent when symmetric: the pair
is ``(left, left)``), and ``bias (out,)`` for the layer. Ranks above ``min(n1, n2)``
(over-parameterization) are allowed except for the spectral inits.

Example:
    >>> import torch
    >>> layer = LowRankLinear(8, 6, rank=3, init="small", scale=0.1, generator=0)
    >>> layer(torch.zeros(2, 8)).shape, layer.weight.shape
    (torch.Size([2, 6]), torch.Size([6, 8]))
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..backend.random import GeneratorLike
from .functional import LowRankFactors, _shape2, check_rank, init_factors

__all__ = ["LowRank", "LowRankLinear"]


def _register_pair(module: nn.Module, f: LowRankFactors, symmetric: bool) -> None:
    module.left = nn.Parameter(f.left.detach().clone())
    if not symmetric:
        module.right = nn.Parameter(f.right.detach().clone())


class _PairMixin:
    """``left``/``right`` storage shared by the low-rank modules."""

    symmetric: bool

    def factor_pairs(self) -> list[tuple[nn.Parameter, nn.Parameter]]:
        """The ``(L, R)`` pairs of the pair protocol (``(U, U)`` when symmetric)."""
        return [(self.left, self.left if self.symmetric else self.right)]

    def matrix(self) -> Tensor:
        """The dense ``(n1, n2)`` matrix ``L Rᵀ`` (or ``U Uᵀ``)."""
        right = self.left if self.symmetric else self.right
        return self.left @ right.mT


class LowRank(_PairMixin, nn.Module):
    """A matrix ``W (n1, n2) = L Rᵀ`` (or ``U Uᵀ`` with ``symmetric=True``) of inner width ``rank``.

    ``generator=None`` draws from torch's default generator (the construction rule, docs/index.md).

    Args:
        shape: ``(n1, n2)``.
        rank: inner width ``k >= 1`` (may exceed ``min(n1, n2)`` except for spectral inits).
        init: see :func:`~overparam.factor.functional.init_factors`; ``weight`` is the matrix to
            factor for ``"spectral"``/``"svd"``/``"randomized"``.
        scale: size of the random inits.
        generator: the only source of randomness.

    Reference: S. Burer & R. D. C. Monteiro, "A Nonlinear Programming Algorithm for Solving Semidefinite Programs
        via Low-Rank Factorization" (Math. Program. 2003)

    Example:
        >>> W = LowRank((4, 3), rank=2, init="orthogonal", scale=1.0, generator=0)()
        >>> W.shape
        torch.Size([4, 3])
    """

    def __init__(self, shape: tuple[int, int], rank: int, *, init="small", scale: float = 1e-3, symmetric: bool = False,
                 weight: Tensor | None = None, generator: GeneratorLike = None, dtype: torch.dtype | None = None,
                 device=None, **svd_kwargs) -> None:
        super().__init__()
        self.shape = _shape2(tuple(shape))
        self.rank = rank
        self.symmetric = symmetric
        dtype = dtype if dtype is not None else (weight.dtype if weight is not None else None)
        f = init_factors(init, self.shape, rank, weight=weight, scale=scale, symmetric=symmetric, generator=generator,
                         dtype=dtype, device=device, **svd_kwargs)
        _register_pair(self, f, symmetric)

    def forward(self) -> Tensor:
        """The dense ``(n1, n2)`` matrix ``L Rᵀ`` (``U Uᵀ`` when symmetric).

        Example:
            >>> m = LowRank((4, 3), rank=2, generator=0)
            >>> W = m()
            >>> W.shape, torch.equal(W, m.left @ m.right.T), int(torch.linalg.matrix_rank(W.detach()))
            (torch.Size([4, 3]), True, 2)
        """
        return self.matrix()

    def linear(self, x: Tensor, bias: Tensor | None = None) -> Tensor:
        """``x Wᵀ + b`` computed as ``(x R) Lᵀ + b``, never forming ``W``: ``x (..., n2)`` → ``(..., n1)``.

        Example:
            >>> m = LowRank((4, 3), rank=2, scale=1.0, generator=0)
            >>> x, b = torch.randn(5, 3, generator=torch.Generator().manual_seed(1)), torch.ones(4)
            >>> y = m.linear(x, b)
            >>> y.shape, torch.allclose(y, x @ m().T + b, atol=1e-6)
            (torch.Size([5, 4]), True)
        """
        right = self.left if self.symmetric else self.right
        return F.linear(x @ right, self.left, bias)

    def extra_repr(self) -> str:
        return f"shape={self.shape}, rank={self.rank}, symmetric={self.symmetric}"


class LowRankLinear(_PairMixin, nn.Module):
    """``y = x Wᵀ + b`` with ``W (out, in) = L Rᵀ``, ``L (out, k)``, ``R (in, k)``.

    ``generator=None`` draws from torch's default generator (the construction rule, docs/index.md).

    Args:
        in_features, out_features: as in ``nn.Linear``.
        rank: inner width ``k``.
        bias: add a bias (initialized to zero, so no RNG is drawn).
        init, scale, weight, symmetric, generator: as for :class:`LowRank` (symmetric needs
            ``in_features == out_features``; then ``W = U Uᵀ``).

    Example:
        >>> dense = torch.randn(6, 8, dtype=torch.float64)
        >>> layer = LowRankLinear(8, 6, rank=6, init="svd", weight=dense, bias=False)
        >>> bool(torch.allclose(layer.weight, dense))
        True
    """

    def __init__(self, in_features: int, out_features: int, rank: int, *, bias: bool = True, init="small",
                 scale: float = 1e-3, symmetric: bool = False, weight: Tensor | None = None,
                 generator: GeneratorLike = None, dtype: torch.dtype | None = None, device=None, **svd_kwargs) -> None:
        super().__init__()
        check_rank(in_features, name="in_features")          # an int >= 1, named
        check_rank(out_features, name="out_features")
        self.in_features, self.out_features, self.rank, self.symmetric = in_features, out_features, rank, symmetric
        if weight is not None and tuple(weight.shape) != (out_features, in_features):
            raise ValueError(f"weight must have shape {(out_features, in_features)}, got {tuple(weight.shape)}")
        dtype = dtype if dtype is not None else (weight.dtype if weight is not None else None)
        f = init_factors(init, (out_features, in_features), rank, weight=weight, scale=scale, symmetric=symmetric,
                         generator=generator, dtype=dtype, device=device, **svd_kwargs)
        _register_pair(self, f, symmetric)
        self.bias = nn.Parameter(torch.zeros(out_features, dtype=f.left.dtype, device=f.left.device)) if bias else None

    @property
    def weight(self) -> Tensor:
        """The dense ``(out, in)`` weight ``L Rᵀ`` (computed, not stored).

        Example:
            >>> layer = LowRankLinear(3, 4, rank=2, generator=0)
            >>> layer.weight.shape, torch.equal(layer.weight, layer.left @ layer.right.T)
            (torch.Size([4, 3]), True)
        """
        return self.matrix()

    def forward(self, x: Tensor) -> Tensor:
        """``x (..., in)`` → ``(x R) Lᵀ + b`` of shape ``(..., out)``, never forming ``W``.

        Example:
            >>> layer = LowRankLinear(3, 4, rank=2, scale=1.0, generator=0)
            >>> x = torch.randn(2, 5, 3, generator=torch.Generator().manual_seed(1))
            >>> y = layer(x)
            >>> y.shape, torch.allclose(y, x @ layer.weight.T + layer.bias, atol=1e-6)
            (torch.Size([2, 5, 4]), True)
        """
        right = self.left if self.symmetric else self.right
        return F.linear(x @ right, self.left, self.bias)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, rank={self.rank}, "
                f"symmetric={self.symmetric}, bias={self.bias is not None}")
