"""Sparsity schedules: one-shot, iterative rounds, exponential, and gradual cubic (Zhu & Gupta).

* :func:`one_shot` ``[s]``; :func:`iterative` ``1 − (1 − p)^t`` for ``t = 1..T`` (prune a
  fraction ``p`` of the survivors each round); :func:`exponential` the same with the final
  sparsity reached in ``T`` equal ratios (SynFlow's schedule ``1 − d^{k/T}``);
* :func:`cubic` ``s_t = s_f + (s_i − s_f)(1 − (t − t₀)/(nΔt))³`` held constant between
  pruning steps ``t₀, t₀+Δt, …, t₀+nΔt``;
* :class:`GradualPruner` prunes a model along any schedule during training, masks monotone,
  through a :class:`~overparam.prune.apply.Masked` handle on the optimizer.

Example:
    >>> [round(s, 3) for s in iterative(0.5, 3)]
    [0.5, 0.75, 0.875]
    >>> cubic(0, final=0.9, begin=0, end=100), cubic(100, final=0.9, begin=0, end=100)
    (0.0, 0.9)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from .apply import Masked
from ..backend.select import Spec
from .masks import _unstructured, check_scope, check_sparsity
from .targets import Masks, check_callable
from .targets import targets as _targets

__all__ = ["one_shot", "iterative", "exponential", "cubic", "GradualPruner"]


def one_shot(sparsity: float) -> list[float]:
    """``[sparsity]``: a schedule of one round.

    Example:
        >>> one_shot(0.9)
        [0.9]
    """
    return [check_sparsity(sparsity)]


def _rounds(rounds: int) -> int:
    if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 1:
        raise ValueError(f"rounds must be a positive int, got {rounds!r}")
    return rounds


def iterative(rate: float, rounds: int) -> list[float]:
    """Sparsity after each of ``rounds`` rounds pruning ``rate`` of the survivors: ``1 − (1 − rate)^t``.

    Reference: J. Frankle & M. Carbin, "The Lottery Ticket Hypothesis: Finding Sparse, Trainable Neural Networks"
        (ICLR 2019)

    Example:
        >>> [round(s, 3) for s in iterative(0.2, 3)]
        [0.2, 0.36, 0.488]
    """
    check_sparsity(rate, "rate")
    return [1.0 - (1.0 - rate) ** t for t in range(1, _rounds(rounds) + 1)]


def exponential(final: float, rounds: int) -> list[float]:
    """``1 − (1 − final)^{t/T}``, ``t = 1..T``: equal density ratios ending at ``final``.

    Example:
        >>> [round(s, 2) for s in exponential(0.99, 2)]
        [0.9, 0.99]
    """
    check_sparsity(final, "final")
    T = _rounds(rounds)
    return [1.0 - (1.0 - final) ** (t / T) for t in range(1, T + 1)]


def cubic(step: int, *, final: float, begin: int, end: int, initial: float = 0.0, every: int = 1) -> float:
    """Zhu & Gupta's gradual sparsity at training step ``step``.

    Args:
        final, initial: ``s_f`` and ``s_i`` in [0, 1).
        begin, end: ``t₀`` and ``t₀ + nΔt``; before ``begin`` the sparsity is ``initial``, after ``end`` ``final``.
        every: ``Δt``; the sparsity changes only at ``begin + kΔt``.

    Reference: Zhu and Gupta, "To prune, or not to prune: exploring the efficacy of pruning for
    model compression", ICLR workshop 2018.

    Example (held constant between pruning steps; the cubic reaches half of ``s_f`` early):
        >>> [round(cubic(t, final=0.8, begin=0, end=100, every=25), 4) for t in (0, 10, 25, 50, 99, 100)]
        [0.0, 0.0, 0.4625, 0.7, 0.7875, 0.8]
    """
    check_sparsity(final, "final")
    check_sparsity(initial, "initial")
    if not (isinstance(every, int) and every >= 1 and isinstance(begin, int) and isinstance(end, int) and 0 <= begin < end):
        raise ValueError(f"need ints begin >= 0, end > begin and every >= 1, got begin={begin}, end={end}, every={every}")
    if step < begin:
        return initial
    t = min(begin + ((step - begin) // every) * every, end)
    if t == begin or t == end:  # the end points exactly
        return initial if t == begin else final
    return final + (initial - final) * (1.0 - (t - begin) / (end - begin)) ** 3


@dataclass
class GradualPruner:
    """Prune ``model`` to ``schedule(step)`` during training; masks only ever shrink.

    Args:
        model, optimizer: the model and the optimizer that trains it.
        schedule: step → sparsity (e.g. ``functools.partial(cubic, final=0.9, begin=0, end=1000, every=100)``).
        scorer: model → scores (default: ``|θ|`` of the targets); its scores must include
            every selected target (other entries are ignored).
        targets, exclude: which weights (:func:`~overparam.prune.targets.targets`; default the
            weight of every Linear/Conv), checked at construction.
        scope: ``"global"`` or ``"layerwise"``.

    Call :meth:`step` once per training step (after ``optimizer.step()``); it re-prunes when
    the scheduled sparsity grew. ``masks`` holds the current masks, ``history`` ``(step, sparsity)``.

    Reference: M. Zhu & S. Gupta, "To prune, or not to prune: exploring the efficacy of pruning for model
        compression" (2017)

    Example:
        >>> net = torch.nn.Linear(10, 10)
        >>> opt = torch.optim.SGD(net.parameters(), lr=0.1)
        >>> gp = GradualPruner(net, opt, lambda t: cubic(t, final=0.5, begin=0, end=4, every=2))
        >>> for t in range(6): _ = gp.step(t)
        >>> int((net.weight == 0).sum())
        50
    """

    model: nn.Module
    optimizer: torch.optim.Optimizer | None
    schedule: Callable[[int], float]
    scorer: Callable[[nn.Module], dict[str, Tensor]] | None = None
    targets: Spec = None
    exclude: Spec = None
    scope: str = "global"
    masks: Masks | None = None
    history: list[tuple[int, float]] = field(default_factory=list)
    _handle: Masked | None = None

    def __post_init__(self) -> None:
        check_callable(self.schedule, "schedule")
        if self.scorer is not None:
            check_callable(self.scorer, "scorer")
        check_scope(self.scope)
        _targets(self.model, self.targets, exclude=self.exclude)  # a bad spec fails here, not mid-training

    def step(self, step: int) -> Masks | None:
        """Re-prune to ``schedule(step)`` if it grew (call after ``optimizer.step()``); returns the
        current masks (None before the first pruning).

        Example:
            >>> net = torch.nn.Linear(10, 10)
            >>> opt = torch.optim.SGD(net.parameters(), lr=0.1)
            >>> gp = GradualPruner(net, opt, lambda t: cubic(t, final=0.5, begin=0, end=4, every=2))
            >>> gp.step(0) is None, int(gp.step(2)["weight"].sum()), gp.history
            (True, 56, [(2, 0.4375)])
        """
        s = check_sparsity(self.schedule(step), "schedule(step)")
        if self.history and s <= self.history[-1][1]:
            return self.masks
        if not self.history and s == 0.0:
            return self.masks
        params = _targets(self.model, self.targets, exclude=self.exclude)
        if self.scorer is None:
            scores = {k: p.detach().abs() for k, p in params.items()}
        else:
            got = self.scorer(self.model)
            missing = [k for k in params if k not in got]
            if missing:
                raise ValueError(f"scorer returned no scores for the targets {missing}")
            scores = {k: got[k] for k in params}
        self.masks = _unstructured(scores, s, self.scope, {}, self.masks, None)
        if self._handle is not None:
            self._handle.remove()
        self._handle = Masked(self.model, self.masks, self.optimizer)
        self.history.append((step, s))
        return self.masks

    def remove(self) -> None:
        """Detach the optimizer hooks (the weights keep their zeros; later steps no longer mask).

        Example:
            >>> net = torch.nn.Linear(10, 10)
            >>> opt = torch.optim.SGD(net.parameters(), lr=0.1)
            >>> gp = GradualPruner(net, opt, lambda t: cubic(t, final=0.5, begin=0, end=4, every=2))
            >>> _ = gp.step(4)
            >>> gp.remove()
            >>> gp._handle is None, int((net.weight == 0).sum())
            (True, 50)
        """
        if self._handle is not None:
            self._handle.remove()
            self._handle = None
