"""HiRA: a Hadamard high-rank adapter ``ΔW = W₀ ⊙ (up @ downᵀ)`` on a frozen base weight ``W₀``.

The update multiplies the frozen weight entry-wise by a rank-``r`` matrix, so ``ΔW`` has rank up
to ``rank(W₀) · r`` for ``r(rows + cols)`` trainable numbers (Huang et al., ICLR 2025). As in
LoRA, ``down (cols, r)`` starts like ``nn.Linear``'s weight (``U(±1/√cols)``) and ``up (rows, r)``
at zero, so the output is unchanged at init. ``state_dict`` keys: ``name.base.*``,
``name.hira_down``, ``name.hira_up``. The weight is seen as its ``(rows, cols)`` matrix
(:mod:`~overparam.factor._layers`): Linear, ConvNd, Embedding and transformers' ``Conv1D``.

Merging is not additive in the factors (``ΔW`` depends on ``W₀``): :meth:`HiRALayer.merge_`
keeps ``W₀`` aside until :meth:`HiRALayer.unmerge_` puts it back, exactly. HiRA's factors are
not a pair of the pair protocol (the update is not ``up @ downᵀ``).

Example:
    >>> import torch
    >>> base = torch.nn.Linear(6, 4)
    >>> layer = HiRALayer(base, rank=2, generator=0)
    >>> x = torch.randn(3, 6)
    >>> bool((layer(x) == base(x)).all())
    True
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..backend.checks import check_float, check_rank
from ..backend.random import GeneratorLike, construction_generator
from . import _layers
from .adapters import _draw_down
from .layer import LayerWrapper

__all__ = ["HiRALayer"]


class HiRALayer(LayerWrapper):
    """A frozen ``base`` layer plus the HiRA update ``W₀ ⊙ (up @ downᵀ)``.

    ``generator=None`` draws from torch's default generator (the construction rule, docs/index.md).

    Args:
        base: an ``nn.Linear``, ``nn.Conv1d/2d/3d``, ``nn.Embedding`` or transformers' ``Conv1D``;
            its parameters are frozen.
        rank: ``1 <= r <= min(rows, cols)``.
        generator: the only source of randomness of the init (``down``).

    Reference: Q. Huang et al., "HiRA: Parameter-Efficient Hadamard High-Rank Adaptation for Large Language Models"
        (ICLR 2025).

    Example:
        >>> layer = HiRALayer(torch.nn.Linear(5, 3).double(), rank=2, generator=0)
        >>> with torch.no_grad():
        ...     _ = layer.hira_up.fill_(1.0)
        >>> W0 = layer.base.weight.detach().clone()
        >>> bool(torch.allclose(layer.weight, W0 + W0 * (layer.hira_up @ layer.hira_down.mT)))
        True
    """

    def __init__(self, base: nn.Module, rank: int, *, generator: GeneratorLike = None) -> None:
        _layers.check_supported(base)
        check_rank(rank, _layers.matrix_shape(base), at_most_min=True)
        check_float(base.weight, "base.weight")
        super().__init__(base, residual=True)
        for p in base.parameters():
            p.requires_grad_(False)
        rows, cols = _layers.matrix_shape(base)
        W = base.weight
        self.rank = rank
        self.hira_down = nn.Parameter(_draw_down("kaiming", cols, rank, construction_generator(generator), W))
        self.hira_up = nn.Parameter(W.new_zeros(rows, rank))
        self.register_buffer("_unmerged", None, persistent=False)

    def update(self) -> Tensor:
        """``W₀ ⊙ (up @ downᵀ)`` as the ``(rows, cols)`` matrix (``W₀`` the unmerged base weight).

        Reference: Q. Huang et al., "HiRA: Parameter-Efficient Hadamard High-Rank Adaptation for Large
        Language Models" (ICLR 2025).

        Example:
            >>> layer = HiRALayer(nn.Linear(5, 3), rank=2, generator=0)
            >>> with torch.no_grad():
            ...     _ = layer.hira_up.fill_(1.0)
            >>> dW = layer.update()
            >>> dW.shape, torch.equal(dW, layer.base.weight * (layer.hira_up @ layer.hira_down.T))
            (torch.Size([3, 5]), True)
            >>> _ = layer.merge_()
            >>> torch.equal(layer.update(), dW)  # still from the unmerged W₀
            True
        """
        W0 = self._unmerged if self.merged else self.base.weight
        return _layers.as_matrix(self.base, W0) * (self.hira_up @ self.hira_down.mT)

    def _merged_weight(self) -> Tensor:
        self._unmerged = self.base.weight.detach().clone()
        return self.base.weight + self._dense_update()

    def _unmerged_weight(self) -> Tensor:
        W0, self._unmerged = self._unmerged, None
        return W0

    def extra_repr(self) -> str:
        return f"rank={self.rank}, merged={self.merged}"
