"""Coordinate checks in depth: do the residual stream and its updates stay Θ(1) as blocks are added?

The depth analogue of :func:`~overparam.scaling.coord_check` (Yang, Yu, Zhu & Hayou 2023, Tensor
Programs VI; Bordelon et al. 2023): train residual networks of several depths ``L`` at one width for
a few steps from the plan's init and record, per layer present at every depth, the RMS of its
output (or input) and of that value's change since step 0. Under depth-μP and CompleteP the change
of the residual stream (e.g. the read-out's input) is flat in ``L`` (log-log slope ≈ 0); without a
depth rule (``"mup"``, ``"sp"``) the ``L`` blocks' updates add up and it grows like ``L``.

Every depth is built at one width, so the width multipliers are 1 and ``"sp"`` and ``"mup"``
coincide (both are plans without a depth rule); the base and ``delta`` of the width rules are the
model itself (every tensor then has the base rules: σ₀ = ``1/√fan_in``, learning rate ×1).

Example:
    >>> import torch
    >>> class Res(torch.nn.Module):
    ...     def __init__(self, L, w=32):
    ...         super().__init__()
    ...         self.inp, self.out = torch.nn.Linear(8, w), torch.nn.Linear(w, 4)
    ...         self.blocks = torch.nn.ModuleList(torch.nn.Sequential(torch.nn.Linear(w, w), torch.nn.ReLU(),
    ...                                                               torch.nn.Linear(w, w)) for _ in range(L))
    ...     def forward(self, x):
    ...         h = self.inp(x)
    ...         for b in self.blocks:
    ...             h = h + b(h)
    ...         return self.out(h)
    >>> x, y = torch.randn(32, 8, generator=torch.Generator().manual_seed(0)), torch.arange(32) % 4
    >>> cc = coord_check_depth(Res, torch.nn.functional.cross_entropy, (x, y), depths=[2, 8], lr=1e-2, steps=2,
    ...                        modules="out", record="input", generator=0,
    ...                        plan_kwargs=dict(branches="blocks", branch_outputs="blocks.*.2"))
    >>> cc.axis, cc.depths, cc.modules
    ('depth', [2, 8], ['out'])
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from ..backend.random import GeneratorLike, measurement_generator
from ..backend.select import Spec
from .coord import CoordCheck, _check_args, _measure, _recorded
from .depth import ALPHA
from .plan import plan

__all__ = ["coord_check_depth"]


def coord_check_depth(make_model: Callable[[int], nn.Module], loss_fn: Callable, data, *, depths,
                      parameterization: str = "depth-mup", base_depth: int | None = None, lr: float = 1e-3,
                      steps: int = 5, optimizer: str = "adam", modules: Spec = None, record: str = "output",
                      plan_kwargs: dict | None = None, generator: GeneratorLike = None) -> CoordCheck:
    """Train ``make_model(L)`` for each depth under a plan and record per-layer scales against ``L``.

    ``generator=None`` never advances the global RNG (the measurement rule, docs/index.md).

    Args:
        make_model: ``depth -> nn.Module`` (one width; called inside a forked RNG).
        loss_fn, data, lr, steps, optimizer: as in :func:`~overparam.scaling.coord_check`.
        depths: at least two distinct positive ints (the number of residual blocks ``L``).
        parameterization: ``"depth-mup"``, ``"completep"``, or ``"mup"``/``"sp"`` (no depth rule).
        base_depth: ``L_base`` of the depth rules (default the smallest depth).
        modules: a selection spec of the modules to record; those owning parameters that exist
            (by name) at every depth are recorded, e.g. ``"out"`` or ``["inp", "blocks.0", "out"]``
            (default: every such module).
        record: ``"output"`` (default) or ``"input"`` (the first positional input: the read-out's
            input is the last residual stream).
        plan_kwargs: extra arguments of :func:`~overparam.scaling.plan`: ``branches=`` and
            ``branch_outputs=`` for the depth rules (``depth=`` is filled in per model; the two
            specs are not passed to ``"mup"``/``"sp"``, so one dict serves every parameterization).
        generator: seeds every model's construction and init (one seed for all depths).

    Returns:
        :class:`~overparam.scaling.CoordCheck` with ``axis="depth"`` (``cc.depths``, ``cc.slopes()``
        against ``log L``; :func:`~overparam.scaling.plot_coord_check` draws it).

    Raises:
        ValueError: fewer than two or non-positive depths, a bad ``base_depth``, ``record``,
            ``steps``, ``optimizer`` or ``data``, ``depth=``/``base=`` in ``plan_kwargs``, a depth
            rule without ``branches=``/``branch_outputs=``, ``modules`` selecting no module
            present at every depth.
        TypeError: ``make_model``/``loss_fn`` not callable, ``depths`` not a list.

    Reference: G. Yang, D. Yu, C. Zhu, S. Hayou, "Tensor Programs VI: Feature Learning in Infinite-Depth
    Neural Networks" (2023); B. Bordelon et al., "Depthwise Hyperparameter Transfer in Residual Networks" (2023).

    Example:
        >>> class Res(nn.Module):
        ...     def __init__(self, L):
        ...         super().__init__()
        ...         self.inp, self.out = nn.Linear(4, 8), nn.Linear(8, 2)
        ...         self.blocks = nn.ModuleList(nn.Linear(8, 8) for _ in range(L))
        ...     def forward(self, x):
        ...         h = self.inp(x)
        ...         for b in self.blocks:
        ...             h = h + b(h)
        ...         return self.out(h)
        >>> x, y = torch.randn(8, 4, generator=torch.Generator().manual_seed(0)), torch.arange(8) % 2
        >>> cc = coord_check_depth(Res, nn.functional.cross_entropy, (x, y), depths=[1, 4], steps=1, modules="out",
        ...                        record="input", generator=0, plan_kwargs=dict(branches="blocks", branch_outputs="blocks.*"))
        >>> cc.depths, cc.modules, tuple(cc.rms.shape)  # (L, T + 1, M)
        ([1, 4], ['out'], (2, 2, 1))
    """
    depths = _check_args(make_model, loss_fn, data, depths, "depths", base_depth, "base_depth", steps, optimizer)
    if record not in ("output", "input"):
        raise ValueError(f"record must be 'output' or 'input', got {record!r}")
    kw = dict(plan_kwargs or {})
    taken = sorted(set(kw) & {"depth", "base", "delta", "optimizer"})
    if taken:
        raise ValueError(f"plan_kwargs must not hold {taken}: coord_check_depth sets them per model")
    base_depth = depths[0] if base_depth is None else base_depth
    seed = int(measurement_generator(generator).initial_seed())
    x, y = data

    def build(L):
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            return make_model(L)

    models = {L: build(L) for L in depths}
    per = [set(_recorded(m, modules)) for m in models.values()]
    names = [k for k in _recorded(models[depths[0]], modules) if all(k in s for s in per)]
    if not names:
        raise ValueError(f"modules: {modules!r} selects no module present at every depth {depths}")
    rms, delta, losses = [], [], []
    for L, model in models.items():
        if parameterization in ALPHA:
            extra = {"depth": (L, base_depth), **kw}
        else:  # the same plan_kwargs serve every parameterization: the branch specs only the depth rules
            extra = {k: v for k, v in kw.items() if k not in ("branches", "branch_outputs")}
        p = plan(model, parameterization, base=model, delta=model, optimizer=optimizer, **extra)
        p.init_(model, generator=seed)
        r, d, lo = _measure(model, p.param_groups(model, lr=lr), loss_fn, x, y, names, steps=steps,
                            optimizer=optimizer, record=record)
        rms.append(r)
        delta.append(d)
        losses.append(lo)
    return CoordCheck(depths, names, torch.stack(rms), torch.stack(delta), torch.stack(losses), parameterization,
                      axis="depth")

