"""The pair protocol shared with :mod:`overparam.optim` (ScaledGD, ScaledGD(λ), PrecGD).

``pairs(model)`` yields ``(L, R)``: two ``nn.Parameter`` with ``L (n1, k)`` and ``R (n2, k)``
such that the represented matrix (or the adapter update, up to its scaling) is ``L @ R.T``;
the symmetric ``U Uᵀ`` yields ``(U, U)`` (the same object twice). Sources:

* :class:`~overparam.factor.LowRank`, :class:`~overparam.factor.LowRankLinear` (also inside
  :func:`~overparam.factor.lowrank_` wrappers): ``(left, right)``;
* :class:`~overparam.factor.SparseLowRank`: the low-rank part ``(left, right)``;
* :class:`~overparam.factor.LoRALayer`: ``(lora_up, lora_down)`` (``ΔW = s · up @ downᵀ``);
* :func:`~overparam.factor.parametrize_` with ``kind="lowrank"``: ``(original0, original1)``.

Deep products, Hadamard and Kronecker factors are not pairs and are not yielded.

Example:
    >>> import torch, overparam as op
    >>> net = torch.nn.Sequential(op.factor.LowRankLinear(4, 4, rank=2, symmetric=True, generator=0))
    >>> [(L.shape, L is R) for L, R in op.factor.pairs(net)]
    [(torch.Size([4, 2]), True)]
"""

from __future__ import annotations

from collections.abc import Iterator

from torch import nn
from torch.nn.utils.parametrize import ParametrizationList

from ._checks import check_module
from .parametrize import LowRankParametrization

__all__ = ["pairs"]


def pairs(model: nn.Module) -> Iterator[tuple[nn.Parameter, nn.Parameter]]:
    """Yield every ``(L, R)`` factor pair in ``model`` once, in module order.

    Example:
        >>> from overparam.factor import LowRankLinear
        >>> [tuple(p.shape) for p in next(pairs(LowRankLinear(5, 3, rank=2, generator=0)))]
        [(3, 2), (5, 2)]
    """
    return _pairs(check_module(model))          # checked now, not on the first next()


def _pairs(model: nn.Module) -> Iterator[tuple[nn.Parameter, nn.Parameter]]:
    seen: set[tuple[int, int]] = set()
    for m in model.modules():
        if isinstance(m, ParametrizationList):
            found = [(m.original0, m.original1)] if isinstance(m[0], LowRankParametrization) else []
        elif hasattr(m, "factor_pairs"):
            found = m.factor_pairs()
        else:
            continue
        for L, R in found:
            key = (id(L), id(R))
            if key not in seen:
                seen.add(key)
                yield L, R
