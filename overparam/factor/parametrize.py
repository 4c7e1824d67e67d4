"""The ``torch.nn.utils.parametrize`` route: factor a raw parameter of any module in place.

:func:`parametrize_` registers ``W = original0 @ original1ᵀ`` (:class:`LowRankParametrization`),
``u ⊙ v`` or ``u⊙u − v⊙v`` on ``module.<name>``; the keys become
``parametrizations.<name>.original0`` / ``original1``.

Example:
    >>> import torch
    >>> lin = torch.nn.Linear(4, 3).double()
    >>> x = torch.randn(2, 4, dtype=torch.float64)
    >>> y = lin(x)
    >>> _ = parametrize_(lin, "weight", kind="lowrank", rank=3)
    >>> bool(torch.allclose(lin(x), y))
    True
"""

from __future__ import annotations

from torch import Tensor, nn
from torch.nn.utils import parametrize as _P

from ..backend.random import GeneratorLike, construction_generator
from .functional import _check_scale, check_init, check_rank, init_factors
from .hadamard import Hadamard, HadamardDifference

__all__ = ["LowRankParametrization", "parametrize_"]


class LowRankParametrization(nn.Module):
    """``W = (original0 @ original1ᵀ).reshape(shape)`` for ``torch.nn.utils.parametrize``.

    ``right_inverse(W)`` returns the initial ``(L, R)`` with ``L (rows, rank)``, ``R (cols, rank)``
    for ``W`` seen as ``(rows, cols)``: the top-``rank`` SVD of ``W`` by default, or a random
    pair for ``init="small"`` etc. (then assigning ``module.weight = W`` later does not factor
    ``W`` but draws a new random pair).

    ``generator=None`` draws from torch's default generator (the construction rule, docs/index.md).

    Example:
        >>> import torch
        >>> lin = torch.nn.Linear(4, 3)
        >>> P = LowRankParametrization(2)
        >>> _P.register_parametrization(lin, "weight", P, unsafe=True) is lin
        True
        >>> lin.parametrizations.weight.original0.shape
        torch.Size([3, 2])
    """

    def __init__(self, rank: int, *, init="svd", scale: float = 1e-3, generator: GeneratorLike = None,
                 **svd_kwargs) -> None:
        super().__init__()
        check_init(init)
        self.rank, self.init, self.scale, self.svd_kwargs = check_rank(rank), init, _check_scale(scale), svd_kwargs
        self._generator = None if generator is None else construction_generator(generator)  # None: the default
        self.shape: tuple[int, ...] | None = None

    def forward(self, left: Tensor, right: Tensor) -> Tensor:
        """``(left @ rightᵀ)`` reshaped to the weight's shape: ``left (rows, rank)``, ``right (cols, rank)``.

        Example:
            >>> import torch
            >>> P = LowRankParametrization(1)
            >>> L, R = P.right_inverse(torch.ones(2, 3, dtype=torch.float64))  # sets P.shape = (2, 3)
            >>> L.shape, R.shape, torch.allclose(P(L, R), torch.ones(2, 3, dtype=torch.float64))
            (torch.Size([2, 1]), torch.Size([3, 1]), True)
        """
        return (left @ right.mT).reshape(self.shape)

    def right_inverse(self, W: Tensor) -> tuple[Tensor, Tensor]:
        """The initial ``(L (rows, rank), R (cols, rank))`` for ``W`` of any shape seen as
        ``(rows = W.shape[0], cols = rest)``: the top-``rank`` SVD factors (``init="svd"``), or a random pair.

        Example:
            >>> import torch
            >>> W = torch.randn(4, 2, 3, dtype=torch.float64)  # e.g. a Conv1d weight
            >>> P = LowRankParametrization(4)
            >>> L, R = P.right_inverse(W)
            >>> L.shape, R.shape, torch.allclose(P(L, R), W)  # rank 4 = min(4, 6): exact
            (torch.Size([4, 4]), torch.Size([6, 4]), True)
        """
        self.shape = tuple(W.shape)
        M = W.detach().reshape(W.shape[0], -1)
        f = init_factors(self.init, tuple(M.shape), self.rank, weight=M, scale=self.scale, generator=self._generator,
                         dtype=M.dtype, device=M.device, **self.svd_kwargs)
        return f.left, f.right


class _HadamardParametrization(nn.Module):
    def __init__(self, kind: str, scale: float) -> None:
        super().__init__()
        self.kind, self.scale = kind, scale

    def forward(self, u: Tensor, v: Tensor) -> Tensor:
        return u * v if self.kind == "product" else u * u - v * v

    def right_inverse(self, w: Tensor) -> tuple[Tensor, Tensor]:
        mod = Hadamard(w.shape, weight=w) if self.kind == "product" else HadamardDifference(w.shape, weight=w,
                                                                                            scale=self.scale)
        a, b = (mod.factors[0], mod.factors[1]) if self.kind == "product" else (mod.u, mod.v)
        return a.detach(), b.detach()


def parametrize_(module: nn.Module, name: str = "weight", *, kind: str = "lowrank", rank: int | None = None,
                 **kwargs) -> nn.Module:
    """Factor the raw parameter ``module.<name>`` with ``torch.nn.utils.parametrize``.

    ``kind="lowrank"`` (``W = original0 @ original1ᵀ``, ``rank`` required, inits as in
    :func:`lowrank_`), ``"product"`` (``u ⊙ v``) or ``"difference"`` (``u⊙u − v⊙v``). Keys:
    ``parametrizations.<name>.original0`` / ``original1``. Returns the parametrization module.

    Example:
        >>> import torch
        >>> lin = torch.nn.Linear(4, 3)
        >>> _ = parametrize_(lin, "weight", kind="lowrank", rank=3)
        >>> sorted(k for k in lin.state_dict() if "original" in k)
        ['parametrizations.weight.original0', 'parametrizations.weight.original1']
    """
    if not isinstance(getattr(module, name, None), Tensor):
        raise ValueError(f"name: module has no tensor attribute {name!r}")
    if _P.is_parametrized(module, name):
        raise ValueError(f"name: {name!r} is already parametrized; remove it before factoring again")
    if kind == "lowrank":
        if rank is None:
            raise ValueError("kind='lowrank' needs rank=")
        P = LowRankParametrization(rank, **kwargs)
    elif kind in ("product", "difference"):
        if rank is not None or set(kwargs) - {"scale"}:
            extra = sorted(set(kwargs) - {"scale"}) + (["rank"] if rank is not None else [])
            raise TypeError(f"kind={kind!r} takes only scale=, got {extra}")
        P = _HadamardParametrization(kind, kwargs.get("scale", 1e-2))
    else:
        raise ValueError(f"kind must be 'lowrank', 'product' or 'difference', got {kind!r}")
    _P.register_parametrization(module, name, P, unsafe=True)
    return P
