"""Diagnostics of factorized weights: spectra, effective rank, balancedness, distance to a target.

* :func:`singular_values`: of the represented matrix (a pair, a factor list or a module);
* :func:`effective_rank`: ``exp(H(p))`` with ``p = σ / Σσ`` (Roy & Vetterli's entropy rank);
* :func:`balancedness`: ``‖LᵀL − RᵀR‖_F`` for a pair, ``max_j ‖W_{j+1}ᵀW_{j+1} − W_jW_jᵀ‖_F``
  for a deep product;
* :func:`relative_distance`: ``‖W − W*‖_F / ‖W*‖_F``;
* :class:`FactorMonitor`: records all of these for every pair of a model during training.

Example:
    >>> import torch
    >>> L = torch.eye(3, 2, dtype=torch.float64)
    >>> float(effective_rank(singular_values((L, L))))
    2.0
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from ..backend.checks import check_float, check_fraction
from ._checks import check_finite, check_module
from .functional import product
from .pairs import pairs

__all__ = ["singular_values", "effective_rank", "balancedness", "relative_distance", "FactorStats", "describe",
           "FactorMonitor"]


def _matrix(x, name: str = "x") -> Tensor:
    if isinstance(x, Tensor):
        return x
    if isinstance(x, tuple) and len(x) == 2:
        return x[0] @ x[1].mT
    if isinstance(x, (list, nn.ParameterList)):
        return product(list(x))
    for attr in ("matrix", "weight"):
        if hasattr(x, attr):
            v = getattr(x, attr)
            return v() if callable(v) else v
    raise TypeError(f"{name} must be a matrix, an (L, R) pair, a factor list or a factorized module, "
                    f"got {type(x).__name__}")


@torch.no_grad()
def singular_values(x) -> Tensor:
    """Descending singular values of the represented matrix.

    Args:
        x: a matrix ``(m, n)``; a pair ``(L, R)`` (``L Rᵀ``); a list ``[W_1, ..., W_N]``
            (``W_N ⋯ W_1``); or a module with ``matrix()`` or ``weight``.

    Example:
        >>> singular_values(torch.diag(torch.tensor([1., 3.])))
        tensor([3., 1.])
    """
    return torch.linalg.svdvals(check_finite(_matrix(x).detach(), "x"))


def effective_rank(s: Tensor, *, eps: float = 0.0) -> Tensor:
    """Entropy effective rank ``exp(−Σ p_i log p_i)``, ``p = s / Σ s``, of singular values ``s (k,)``.

    ``s`` must be a non-empty, finite, non-negative floating-point vector with a positive entry
    (singular values, e.g. from :func:`singular_values`); entries ``p_i <= eps`` are dropped.

    Reference: O. Roy & M. Vetterli, "The Effective Rank: A Measure of Effective Dimensionality" (EUSIPCO 2007)

    Example:
        >>> float(effective_rank(torch.tensor([1.0, 1.0, 0.0])))
        2.0
    """
    if not isinstance(s, Tensor) or s.ndim != 1 or not s.is_floating_point():
        raise ValueError(f"s must be a floating-point vector of singular values (k,), got "
                         f"{tuple(s.shape) if isinstance(s, Tensor) else type(s).__name__}")
    if s.numel() == 0:
        raise ValueError("s is empty: the effective rank of no singular values is undefined")
    if not bool(torch.isfinite(s).all()) or bool((s < 0).any()):
        raise ValueError("s must hold singular values: finite and >= 0")
    if not bool((s > 0).any()):
        raise ValueError("s is all zeros: the effective rank of a zero matrix is undefined")
    eps = check_fraction(eps, "eps", high_open=True)
    p = s / s.sum()
    p = p[p > eps]
    return torch.exp(-(p * p.log()).sum())


@torch.no_grad()
def balancedness(x) -> Tensor:
    """``‖LᵀL − RᵀR‖_F`` for a pair ``(L, R)``; for a factor list ``[W_1, ..., W_N]``,
    ``max_j ‖W_{j+1}ᵀ W_{j+1} − W_j W_jᵀ‖_F``.

    Reference: S. S. Du, W. Hu & J. D. Lee, "Algorithmic Regularization in Learning Deep Homogeneous Models: Layers
        are Automatically Balanced" (NeurIPS 2018)

    Example:
        >>> round(float(balancedness((torch.eye(2), 2 * torch.eye(2)))), 4)
        4.2426
    """
    if isinstance(x, tuple) and len(x) == 2:
        L, R = x
        return torch.linalg.matrix_norm(L.mT @ L - R.mT @ R)
    fs = list(x)
    if len(fs) < 2:
        raise ValueError("balancedness needs a pair or at least two factors")
    return torch.stack([torch.linalg.matrix_norm(b.mT @ b - a @ a.mT) for a, b in zip(fs[:-1], fs[1:])]).max()


@torch.no_grad()
def relative_distance(x, target: Tensor) -> Tensor:
    """``‖W − W*‖_F / ‖W*‖_F`` (``W`` as in :func:`singular_values`; ``target`` of its shape).

    Example:
        >>> float(relative_distance((torch.eye(2), torch.eye(2)), 2 * torch.eye(2)))
        0.5
    """
    check_float(target, "target")
    W = _matrix(x)
    if W.shape != target.shape:
        raise ValueError(f"target has shape {tuple(target.shape)}, the matrix x {tuple(W.shape)}")
    return torch.linalg.matrix_norm(W - target) / torch.linalg.matrix_norm(target)


@dataclass
class FactorStats:
    """Diagnostics of one factorized matrix (see :func:`describe`): descending singular values
    (the ``top`` largest), entropy effective rank (``0.0`` for a zero matrix, e.g. a LoRA update
    at init), balancedness (None for a matrix or module),
    relative distance to a target (None without one).

    Example:
        >>> L = torch.tensor([[2.0, 0.0], [0.0, 1.0], [0.0, 0.0]])
        >>> st = describe((L, L), target=torch.diag(torch.tensor([4.0, 1.0, 1.0])))
        >>> st.singular_values, st.balancedness, round(st.distance, 4)  # ‖LLᵀ − T‖/‖T‖ = 1/√18
        ([4.0, 1.0, 0.0], 0.0, 0.2357)
    """

    singular_values: list[float]
    effective_rank: float
    balancedness: float | None
    distance: float | None = None


def describe(x, *, target: Tensor | None = None, top: int | None = None) -> FactorStats:
    """All diagnostics of ``x`` (a pair, factor list, matrix or module) as :class:`FactorStats`.

    Example:
        >>> describe((torch.eye(2), torch.eye(2))).effective_rank
        2.0
    """
    s = singular_values(x)
    bal = float(balancedness(x)) if isinstance(x, (tuple, list, nn.ParameterList)) else None
    dist = float(relative_distance(x, target)) if target is not None else None
    erank = float(effective_rank(s)) if bool((s > 0).any()) else 0.0
    return FactorStats([float(v) for v in s[:top]], erank, bal, dist)


@dataclass
class FactorMonitor:
    """Record :func:`describe` for every pair of ``op.factor.pairs(model)`` every ``every`` steps.

    Call :meth:`step` after each optimizer step, or attach it:
    ``opt.register_step_post_hook(monitor.hook)``. ``history`` holds ``(step, [FactorStats, ...])``;
    ``callback(step, stats)`` (e.g. a logger) is called on each record. ``references``: one
    matrix (or None) per pair, the ground truth ``M*`` that :func:`describe` measures the
    relative distance to.

    Example:
        >>> from overparam.factor import LowRankLinear
        >>> mon = FactorMonitor(LowRankLinear(3, 3, rank=2, generator=0), every=1)
        >>> mon.step(); len(mon.history)
        1
    """

    model: nn.Module
    every: int = 1
    references: Sequence[Tensor | None] | None = None
    top: int | None = None
    callback: Callable[[int, list[FactorStats]], None] | None = None
    history: list[tuple[int, list[FactorStats]]] = field(default_factory=list)
    count: int = 0

    def __post_init__(self) -> None:
        check_module(self.model)
        if self.references is not None:
            n = sum(1 for _ in pairs(self.model))
            if isinstance(self.references, (str, bytes)) or not isinstance(self.references, Sequence) or any(
                    t is not None and not isinstance(t, Tensor) for t in self.references):
                raise TypeError(f"references must be a sequence of reference matrices (or None), one per factor pair, "
                                f"got {type(self.references).__name__}")
            if len(self.references) != n:
                raise ValueError(f"references holds {len(self.references)} matrices but the model has {n} factor pairs")
        if isinstance(self.every, bool) or not isinstance(self.every, int) or self.every < 1:
            raise ValueError(f"every must be an int >= 1, got {self.every!r}")

    def step(self) -> None:
        """Count one optimizer step; record every ``every``-th (counting from 0) into ``history``.

        Example:
            >>> from overparam.factor import LowRankLinear
            >>> mon = FactorMonitor(LowRankLinear(3, 3, rank=2, generator=0), every=2, top=1)
            >>> for _ in range(5):
            ...     mon.step()
            >>> [s for s, _ in mon.history], len(mon.history[0][1][0].singular_values)
            ([0, 2, 4], 1)
        """
        if self.count % self.every == 0:
            ps = list(pairs(self.model))
            tg = list(self.references) if self.references is not None else [None] * len(ps)
            stats = [describe((L, R), target=t, top=self.top) for (L, R), t in zip(ps, tg)]
            self.history.append((self.count, stats))
            if self.callback is not None:
                self.callback(self.count, stats)
        self.count += 1

    def hook(self, optimizer, args, kwargs) -> None:
        """Signature of ``torch.optim.Optimizer.register_step_post_hook``: calls :meth:`step`.

        Example:
            >>> from overparam.factor import LowRankLinear
            >>> model = LowRankLinear(3, 3, rank=2, generator=0)
            >>> opt = torch.optim.SGD(model.parameters(), lr=0.1)
            >>> mon = FactorMonitor(model)
            >>> _ = opt.register_step_post_hook(mon.hook)
            >>> for _ in range(3):
            ...     opt.zero_grad(); model(torch.ones(1, 3)).sum().backward(); opt.step()
            >>> [s for s, _ in mon.history]
            [0, 1, 2]
        """
        self.step()
