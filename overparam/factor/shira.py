"""SHiRA: a sparse high-rank adapter, a fixed sparse set of trainable entries of the weight.

:class:`SparseUpdate` is the weight module ``ΔW = scatter(values, support)`` — ``values`` the
trainable entries (zero at init), ``support`` a fixed set of entries of the ``(rows, cols)``
matrix; with :class:`~overparam.factor.FactorizedLayer` (``residual=True``, as
:func:`~overparam.factor.hadamard_` with ``kind="shira"`` builds it) the base weight stays frozen
and ``W = W₀ + ΔW`` merges and unmerges additively. The default support is SHiRA's random one:
``rank · (rows + cols)`` entries (LoRA's parameter count at rank ``rank``), drawn once with
:func:`~overparam.factor.topk_mask` of uniform scores (Bhardwaj et al. 2024).

``state_dict`` keys: ``values (nnz,)`` and the buffer ``index (nnz,)`` (flat indices into the
row-major ``(rows, cols)`` matrix, ascending).

Example:
    >>> import torch
    >>> u = SparseUpdate((4, 6), rank=1, generator=0)
    >>> u.values.shape, u().shape, int(u().count_nonzero())
    (torch.Size([10]), torch.Size([4, 6]), 0)
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..backend.checks import check_rank
from ..backend.random import GeneratorLike, construction_generator, uniform
from .functional import _shape2
from .sparse_lowrank import topk_mask

__all__ = ["SparseUpdate"]


class SparseUpdate(nn.Module):
    """``ΔW (rows, cols)``: trainable ``values`` on a fixed support, zero elsewhere.

    ``generator=None`` draws from torch's default generator (the construction rule, docs/index.md).

    Args:
        shape: ``(rows, cols)``.
        rank: without ``mask``, the support has ``rank · (rows + cols)`` random entries
            (``<= rows · cols``, else ``ValueError``).
        mask: a fixed boolean support ``(rows, cols)`` instead (not with ``rank``).

    Reference: K. Bhardwaj et al., "Sparse High Rank Adapters" (SHiRA, NeurIPS 2024).

    Example:
        >>> m = torch.tensor([[True, False], [False, True]])
        >>> u = SparseUpdate((2, 2), mask=m)
        >>> with torch.no_grad():
        ...     _ = u.values.fill_(2.0)
        >>> u().detach()
        tensor([[2., 0.],
                [0., 2.]])
    """

    def __init__(self, shape: tuple[int, int], rank: int | None = None, *, mask: Tensor | None = None,
                 generator: GeneratorLike = None, dtype: torch.dtype | None = None, device=None) -> None:
        super().__init__()
        self.shape = _shape2(tuple(shape))
        rows, cols = self.shape
        if (mask is None) == (rank is None):
            raise ValueError("give exactly one of rank (a random support) and mask")
        if mask is None:
            check_rank(rank)
            if rank * (rows + cols) > rows * cols:
                raise ValueError(f"rank: rank · (rows + cols) = {rank * (rows + cols)} exceeds the {rows * cols} entries "
                                 f"of the {rows}×{cols} weight")
            scores = uniform(self.shape, generator=construction_generator(generator), dtype=torch.float64)
            mask = topk_mask(scores, rank * (rows + cols) / (rows * cols))
        elif not isinstance(mask, Tensor) or mask.dtype != torch.bool or tuple(mask.shape) != self.shape:
            raise ValueError(f"mask must be a bool tensor of shape {self.shape}, got "
                             f"{getattr(mask, 'dtype', type(mask).__name__)} {tuple(getattr(mask, 'shape', ()))}")
        elif not bool(mask.any()):
            raise ValueError("mask selects no entry")
        index = mask.reshape(-1).nonzero().reshape(-1)
        self.register_buffer("index", index.to(device))
        self.values = nn.Parameter(torch.zeros(index.numel(), dtype=dtype, device=device))

    def forward(self) -> Tensor:
        """The dense ``(rows, cols)`` update: ``values`` at the support, zero elsewhere.

        Reference: K. Bhardwaj et al., "Sparse High Rank Adapters" (SHiRA, 2024).

        Example:
            >>> u = SparseUpdate((4, 6), rank=1, generator=0)  # 1 · (4 + 6) = 10 random entries
            >>> with torch.no_grad():
            ...     _ = u.values.fill_(1.0)
            >>> dW = u()
            >>> dW.shape, int((dW != 0).sum()), u.values.numel()
            (torch.Size([4, 6]), 10, 10)
        """
        flat = self.values.new_zeros(self.shape[0] * self.shape[1])
        return flat.index_put((self.index,), self.values).reshape(self.shape)
