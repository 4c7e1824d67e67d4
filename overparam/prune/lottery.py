"""Lottery tickets: iterative magnitude pruning (IMP) with weight rewinding, LR rewinding or
fine-tuning, around any user training function ``train_fn(model, optimizer, steps)``.

One run (Frankle & Carbin 2019; Frankle et al. 2020; Renda et al. 2020):

1. save ``θ₀``; train ``k = rewind_to`` steps and save ``θ_k`` and the optimizer state;
2. train the remaining ``steps − k`` steps (round 0, dense);
3. each round prune ``rate`` of the surviving weights by magnitude (masks only shrink), then

   * ``mode="rewind"``: reset the survivors to ``θ_k`` and the optimizer to its step-k state
     (``k = 0``: the original lottery ticket, a fresh optimizer) and train ``steps − k`` steps;
   * ``mode="lr"``: keep the trained weights, rewind only the optimizer (its learning rate
     and state) to step k, train ``steps − k`` steps;
   * ``mode="finetune"``: keep the trained weights and the optimizer, train ``finetune_steps``.

Training runs inside :func:`~overparam.prune.apply.masked`, so pruned weights, gradients and
optimizer state stay exactly zero. ``train_fn`` may return anything (e.g. a test accuracy);
it is kept in each :class:`Round`.

Example:
    >>> import torch
    >>> net = torch.nn.Linear(10, 1)
    >>> def train(model, opt, steps):
    ...     for _ in range(steps):
    ...         opt.zero_grad(); model(torch.ones(4, 10)).square().mean().backward(); opt.step()
    >>> t = lottery(net, train, optimizer_fn=lambda p: torch.optim.SGD(p, lr=0.01), steps=5, rounds=2, rate=0.5)
    >>> [r.density for r in t.rounds]
    [1.0, 0.5, 0.2]
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from .apply import masked
from .masks import check_sparsity, magnitude
from .schedules import iterative
from ..backend.select import Spec
from .targets import Masks, check_callable, kept_fraction, resolve_overrides
from .targets import targets as _targets

__all__ = ["Round", "Ticket", "lottery"]


@dataclass
class Round:
    """One IMP round: its masks (before training), their density, the trained checkpoint and
    ``train_fn``'s return value.

    Reference: J. Frankle & M. Carbin, "The Lottery Ticket Hypothesis: Finding Sparse, Trainable Neural Networks"
        (ICLR 2019)

    Example:
        >>> net = torch.nn.Linear(10, 1)
        >>> def train(model, opt, steps):
        ...     for _ in range(steps):
        ...         opt.zero_grad(); model(torch.ones(4, 10)).square().mean().backward(); opt.step()
        >>> r = lottery(net, train, optimizer_fn=lambda p: torch.optim.SGD(p, lr=0.01), steps=3, rounds=1).rounds[1]
        >>> r.index, r.density, int(r.masks["weight"].sum()), sorted(r.checkpoint)
        (1, 0.8, 8, ['bias', 'weight'])
    """

    index: int
    density: float
    masks: Masks
    checkpoint: dict[str, Tensor] | None
    result: Any = None


@dataclass
class Ticket:
    """The outcome of :func:`lottery`: ``rounds[0]`` is the dense run; ``init`` = ``θ₀`` and
    ``rewind`` = ``θ_k`` (state_dicts), ``rewind_step`` = k.

    Reference: J. Frankle & M. Carbin, "The Lottery Ticket Hypothesis: Finding Sparse, Trainable Neural Networks"
        (ICLR 2019)

    Example (the survivors of the last round were rewound to ``θ₀`` and retrained):
        >>> net = torch.nn.Linear(10, 1)
        >>> def train(model, opt, steps):
        ...     for _ in range(steps):
        ...         opt.zero_grad(); model(torch.ones(4, 10)).square().mean().backward(); opt.step()
        >>> t = lottery(net, train, optimizer_fn=lambda p: torch.optim.SGD(p, lr=0.01), steps=3, rounds=2, rate=0.5)
        >>> len(t.rounds), t.rewind_step, t.mode, torch.equal(t.init["weight"], t.rewind["weight"])
        (3, 0, 'rewind', True)
    """

    rounds: list[Round]
    init: dict[str, Tensor]
    rewind: dict[str, Tensor]
    rewind_step: int
    mode: str
    optimizer_rewind: dict = field(default_factory=dict, repr=False)

    @property
    def masks(self) -> Masks:
        """The last round's masks.

        Example:
            >>> net = torch.nn.Linear(10, 1)
            >>> def train(model, opt, steps):
            ...     for _ in range(steps):
            ...         opt.zero_grad(); model(torch.ones(4, 10)).square().mean().backward(); opt.step()
            >>> t = lottery(net, train, optimizer_fn=lambda p: torch.optim.SGD(p, lr=0.01), steps=3, rounds=2, rate=0.5)
            >>> int(t.masks["weight"].sum()), int((net.weight == 0).sum())
            (2, 8)
        """
        return self.rounds[-1].masks


def _clone(sd: dict[str, Tensor]) -> dict[str, Tensor]:
    return {k: v.detach().clone() for k, v in sd.items()}


def lottery(
    model: nn.Module,
    train_fn: Callable[[nn.Module, torch.optim.Optimizer, int], Any],
    *,
    optimizer_fn: Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer],
    steps: int,
    rounds: int,
    rate: float = 0.2,
    rewind_to: int = 0,
    mode: str = "rewind",
    finetune_steps: int | None = None,
    targets: Spec = None,
    exclude: Spec = None,
    scope: str = "global",
    overrides: dict | None = None,
    keep_checkpoints: bool = True,
) -> Ticket:
    """Iterative magnitude pruning; the model ends holding the last round's trained, masked weights.

    Args:
        model: trained in place.
        train_fn: ``train_fn(model, optimizer, steps)`` runs ``steps`` optimizer steps.
        optimizer_fn: ``params → optimizer`` (called on ``model.parameters()``).
        steps: training steps per round (including the ``rewind_to`` first ones).
        rounds: pruning rounds after the dense run; density after round t is ``(1 − rate)^t``.
        rate: fraction of the survivors pruned per round, in [0, 1).
        rewind_to: k, the step whose weights (and optimizer state) are rewound to; ``0 <= k < steps``.
        mode: ``"rewind"`` | ``"lr"`` | ``"finetune"``.
        finetune_steps: steps per round for ``"finetune"`` (default ``steps − k``).
        targets, exclude, scope, overrides: as in :func:`~overparam.prune.masks.magnitude`.
        keep_checkpoints: keep a state_dict copy of each round's trained model.

    Returns:
        a :class:`Ticket`: ``rounds[t].masks`` are the masks of round ``t`` (density ``(1 − rate)^t``).

    Reference: Frankle and Carbin, "The lottery ticket hypothesis", ICLR 2019; Frankle, Dziugaite,
    Roy and Carbin, "Linear mode connectivity and the lottery ticket hypothesis", ICML 2020
    (rewinding); Renda, Frankle and Carbin, "Comparing rewinding and fine-tuning in neural network
    pruning", ICLR 2020 (LR rewinding).

    Example (weight rewinding to step 2, then two rounds at 50%):
        >>> net = torch.nn.Linear(10, 1)
        >>> def train(model, opt, steps):
        ...     for _ in range(steps):
        ...         opt.zero_grad(); model(torch.ones(4, 10)).square().mean().backward(); opt.step()
        >>> t = lottery(net, train, optimizer_fn=lambda p: torch.optim.SGD(p, lr=0.01), steps=5, rounds=2,
        ...             rate=0.5, rewind_to=2)
        >>> [round(r.density, 2) for r in t.rounds], t.rewind_step
        ([1.0, 0.5, 0.2], 2)
    """
    if mode not in ("rewind", "lr", "finetune"):
        raise ValueError(f"mode must be 'rewind', 'lr' or 'finetune', got {mode!r}")
    check_callable(train_fn, "train_fn")
    check_callable(optimizer_fn, "optimizer_fn")
    check_sparsity(rate, "rate")
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive int, got {steps!r}")
    if not isinstance(rewind_to, int) or not 0 <= rewind_to < steps:
        raise ValueError(f"rewind_to must be an int in [0, steps), got {rewind_to!r}")
    sparsities = iterative(rate, rounds)
    tr = _targets(model, targets, exclude=exclude)
    resolve_overrides(overrides, tr, model=model)  # a bad key fails before any training
    init = _clone(model.state_dict())
    opt = optimizer_fn(model.parameters())
    if rewind_to > 0:
        train_fn(model, opt, rewind_to)
    rewind = _clone(model.state_dict())
    opt_k = copy.deepcopy(opt.state_dict())
    res = train_fn(model, opt, steps - rewind_to)
    full = {k: torch.ones_like(p, dtype=torch.bool) for k, p in tr.items()}
    out = [Round(0, 1.0, full, _clone(model.state_dict()) if keep_checkpoints else None, res)]
    masks: Masks | None = None
    for t, s in enumerate(sparsities, start=1):
        masks = magnitude(model, s, targets=targets, exclude=exclude, scope=scope, overrides=overrides, previous=masks)
        n_steps = steps - rewind_to
        if mode == "rewind":
            model.load_state_dict(rewind)
        if mode in ("rewind", "lr"):
            opt = optimizer_fn(model.parameters())
            opt.load_state_dict(copy.deepcopy(opt_k))
        elif finetune_steps is not None:
            n_steps = finetune_steps
        with masked(model, masks, optimizer=opt):
            res = train_fn(model, opt, n_steps)
        out.append(Round(t, kept_fraction(masks), masks, _clone(model.state_dict()) if keep_checkpoints else None, res))
    return Ticket(out, init, rewind, rewind_to, mode, opt_k)
