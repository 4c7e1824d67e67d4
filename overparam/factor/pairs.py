"""The pair protocol shared with :mod:`overparam.optim` (ScaledGD, ScaledGD(λ), PrecGD).

``pairs(model)`` yields ``(L, R)``: two ``nn.Parameter`` with ``L (n1, k)`` and ``R (n2, k)``
such that the represented matrix (or the adapter update, up to its scaling) is ``L @ R.T``;
the symmetric ``U Uᵀ`` yields ``(U, U)`` (the same object twice). Sources:

* :class:`~overparam.factor.LowRank`, :class:`~overparam.factor.LowRankLinear` (also inside
  :func:`~overparam.factor.lowrank_` wrappers): ``(left, right)``;
* :class:`~overparam.factor.SparseLowRank`: the low-rank part ``(left, right)``;
* :class:`~overparam.factor.LoRALayer`: ``(lora_up, lora_down)`` (``ΔW = s · up @ downᵀ``);
* :func:`~overparam.factor.parametrize_` with ``kind="lowrank"``: ``(original0, original1)``.

Deep products ``W_N ⋯ W_1`` (:class:`~overparam.factor.DeepLinear` of depth ``N >= 2``) are
yielded as a :class:`Chain` only with ``deep=True`` (the ScaledGD-type optimizers take pairs;
:class:`~overparam.optim.Preconditioned` takes chains too). Hadamard and Kronecker factors are
not yielded.

Example:
    >>> import torch, overparam as op
    >>> net = torch.nn.Sequential(op.factor.LowRankLinear(4, 4, rank=2, symmetric=True, generator=0))
    >>> [(L.shape, L is R) for L, R in op.factor.pairs(net)]
    [(torch.Size([4, 2]), True)]
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from torch import Tensor, nn
from torch.nn.utils.parametrize import ParametrizationList

from ._checks import check_module
from .deep import DeepLinear
from .parametrize import LowRankParametrization

__all__ = ["pairs", "Chain"]


class Chain:
    """A deep factor product ``W = W_N ⋯ W_2 W_1`` (``N >= 2``), factors in application order.

    ``factors = (W_1 (d_1, d_0), W_2 (d_2, d_1), ..., W_N (d_N, d_{N-1}))``, as
    :class:`~overparam.factor.DeepLinear` holds them and :func:`~overparam.factor.product`
    multiplies them. A marker type, so that a chain of two factors is not mistaken for a pair
    ``(L, R)`` (which means ``L Rᵀ``). Iterating yields the factors; ``len`` is ``N``.

    Example:
        >>> import torch
        >>> c = Chain([torch.zeros(3, 4), torch.zeros(2, 3)])
        >>> len(c), tuple(c.factors[-1].shape)
        (2, (2, 3))
    """

    __slots__ = ("factors",)

    def __init__(self, factors: Sequence[Tensor]) -> None:
        try:
            fs = None if isinstance(factors, Tensor) else tuple(factors)
        except TypeError:
            fs = None
        if fs is None or len(fs) < 2 or not all(isinstance(t, Tensor) for t in fs):
            raise TypeError(f"factors must be a sequence of >= 2 tensors [W_1, ..., W_N], got {factors!r:.80}")
        for j, W in enumerate(fs):
            if W.ndim != 2:
                raise ValueError(f"factors[{j}] must be 2-D, got shape {tuple(W.shape)}")
            if not W.is_floating_point():
                raise TypeError(f"factors[{j}] must be floating point, got {W.dtype}")
            if W.dtype != fs[0].dtype or W.device != fs[0].device:
                raise ValueError(f"factors[{j}] is {W.dtype}/{W.device} but factors[0] is {fs[0].dtype}/{fs[0].device}")
            if j and W.shape[1] != fs[j - 1].shape[0]:
                raise ValueError(f"factors[{j}] {tuple(W.shape)} has {W.shape[1]} columns but factors[{j - 1}] "
                                 f"{tuple(fs[j - 1].shape)} has {fs[j - 1].shape[0]} rows")
            if any(W is V for V in fs[:j]):
                raise ValueError(f"factors[{j}] appears twice in the chain")
        self.factors: tuple[Tensor, ...] = fs

    def __len__(self) -> int:
        return len(self.factors)

    def __iter__(self) -> Iterator[Tensor]:
        return iter(self.factors)

    def __repr__(self) -> str:
        return f"Chain({' -> '.join(str(tuple(W.shape)) for W in self.factors)})"


def pairs(model: nn.Module, *, deep: bool = False) -> Iterator[tuple[nn.Parameter, nn.Parameter] | Chain]:
    """Yield every ``(L, R)`` factor pair in ``model`` once, in module order.

    With ``deep=True`` every :class:`~overparam.factor.DeepLinear` of depth ``>= 2`` is yielded
    too, as a :class:`Chain` of its factors (for :class:`~overparam.optim.Preconditioned`).

    Example:
        >>> from overparam.factor import LowRankLinear
        >>> [tuple(p.shape) for p in next(pairs(LowRankLinear(5, 3, rank=2, generator=0)))]
        [(3, 2), (5, 2)]
    """
    if not isinstance(deep, bool):
        raise TypeError(f"deep must be a bool, got {type(deep).__name__}")
    return _pairs(check_module(model), deep)    # checked now, not on the first next()


def _pairs(model: nn.Module, deep: bool) -> Iterator[tuple[nn.Parameter, nn.Parameter] | Chain]:
    seen: set[tuple[int, int]] = set()
    for m in model.modules():
        if isinstance(m, DeepLinear):
            if deep and m.depth >= 2:
                yield Chain(list(m.factors))
            continue
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
