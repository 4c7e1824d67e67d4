"""Sparse plus low-rank: ``W = S ⊙ M + L Rᵀ`` (SLTrain, LOST, DSEE).

The support ``M`` of the sparse part is either fixed (a given mask, or a random support of
a given density drawn once from a generator, as in SLTrain) or learned: recomputed in each
forward as the ``density`` fraction of largest ``|S|`` entries (magnitude, as in DSEE).

``state_dict`` keys: ``sparse (m, n)``, ``left (m, k)``, ``right (n, k)``, and the buffer
``mask (m, n)`` (bool) for a fixed support.

Example:
    >>> import torch
    >>> f = SparseLowRank((6, 5), rank=2, density=0.2, generator=0)
    >>> int(f.mask.sum())
    6
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..backend.checks import check_fraction
from ..backend.random import GeneratorLike, construction_generator, uniform
from ..backend.topk import fraction_count
from ..backend.topk import topk_mask as _topk
from .functional import init_factors
from .lowrank import _PairMixin, _register_pair

__all__ = ["SparseLowRank", "topk_mask"]


def topk_mask(scores: Tensor, density: float) -> Tensor:
    """Boolean mask of the ``max(1, floor(density · numel + 1/2))`` largest ``scores``, ties by
    lowest index: :func:`overparam.backend.topk.topk_mask` with the library's count rule.

    Example:
        >>> topk_mask(torch.tensor([0.1, -3.0, 2.0]).abs(), 2 / 3)
        tensor([False,  True,  True])
    """
    density = check_fraction(density, "density", low_open=True)
    if not isinstance(scores, Tensor) or scores.numel() == 0:
        raise ValueError(f"scores must be a non-empty tensor, got "
                         f"{tuple(scores.shape) if isinstance(scores, Tensor) else type(scores).__name__}")
    return _topk(scores, max(1, fraction_count(density, scores.numel())))


class SparseLowRank(_PairMixin, nn.Module):
    """``W (m, n) = S ⊙ M + L Rᵀ``.

    ``generator=None`` draws from torch's default generator (the construction rule, docs/index.md).

    Args:
        shape: ``(m, n)``. rank: ``k`` of the low-rank part.
        mask: a fixed boolean support ``(m, n)``; or None with ``density`` set.
        density: fraction of entries in the support; with ``learned=False`` a random support
            drawn from ``generator``, with ``learned=True`` the top-``|S|`` entries each forward.
        weight: start from this ``(m, n)`` weight: ``L Rᵀ`` its top-``k`` SVD part and
            ``S`` the residual (exact where the support covers the residual).
        init, scale: low-rank init without ``weight`` (``S`` then starts at 0).

    Reference: A. Han et al., "SLTrain: a sparse plus low-rank approach for parameter and memory efficient
        pretraining" (NeurIPS 2024) (random fixed support).

    Example:
        >>> W = torch.randn(5, 4, dtype=torch.float64)
        >>> f = SparseLowRank((5, 4), rank=2, mask=torch.ones(5, 4, dtype=torch.bool), weight=W)
        >>> bool(torch.allclose(f(), W))
        True
    """

    symmetric = False

    def __init__(self, shape: tuple[int, int], rank: int, *, mask: Tensor | None = None, density: float | None = None,
                 learned: bool = False, weight: Tensor | None = None, init: str = "small", scale: float = 1e-3,
                 generator: GeneratorLike = None, dtype: torch.dtype | None = None, device=None) -> None:
        super().__init__()
        self.shape, self.rank, self.learned = (int(shape[0]), int(shape[1])), rank, learned
        if (mask is None) == (density is None):
            raise ValueError("give exactly one of mask (a fixed support) and density")
        if mask is not None:
            if learned:
                raise ValueError("learned=True recomputes the support from density; do not also pass mask")
            if mask.dtype != torch.bool or tuple(mask.shape) != self.shape:
                raise ValueError(f"mask must be a bool tensor of shape {self.shape}, got {mask.dtype} {tuple(mask.shape)}")
        else:
            check_fraction(density, "density", low_open=True)
        self.density = density
        g = construction_generator(generator)
        dtype = dtype if dtype is not None else (weight.dtype if weight is not None else None)
        if weight is not None:
            if tuple(weight.shape) != self.shape:
                raise ValueError(f"weight must have shape {self.shape}, got {tuple(weight.shape)}")
            f = init_factors("svd", self.shape, rank, weight=weight)
            S = (weight.detach() - f.product()).clone()
        else:
            f = init_factors(init, self.shape, rank, scale=scale, generator=g, dtype=dtype, device=device)
            S = torch.zeros(self.shape, dtype=f.left.dtype, device=f.left.device)
        _register_pair(self, f, False)
        self.sparse = nn.Parameter(S)
        if not learned:
            if mask is None:
                scores = uniform(self.shape, generator=g, dtype=torch.float64, device=S.device)
                mask = topk_mask(scores, density)
            self.register_buffer("mask", mask.to(S.device))
        else:
            self.mask = None

    def support(self) -> Tensor:
        """The current boolean support ``(m, n)``: the fixed mask, or (``learned=True``) the
        ``density`` fraction of entries of largest ``|S|``.

        Reference: A. Han et al., "SLTrain: a sparse plus low-rank approach for parameter and memory
        efficient pretraining" (2024) (a random fixed support).

        Example:
            >>> f = SparseLowRank((4, 5), rank=1, density=0.25, generator=0)
            >>> s = f.support()
            >>> s.shape, s.dtype, int(s.sum())  # 25% of the 20 entries
            (torch.Size([4, 5]), torch.bool, 5)
        """
        return topk_mask(self.sparse.detach().abs(), self.density) if self.learned else self.mask

    def forward(self) -> Tensor:
        """The ``(m, n)`` weight ``S ⊙ mask + L Rᵀ``.

        Example:
            >>> f = SparseLowRank((4, 5), rank=1, density=0.25, generator=0)
            >>> with torch.no_grad():
            ...     _ = f.sparse.fill_(1.0)
            >>> torch.equal(f(), f.support().float() + f.left @ f.right.T)
            True
        """
        return self.sparse * self.support() + self.matrix()
