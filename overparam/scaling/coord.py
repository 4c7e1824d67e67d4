"""Coordinate checks: do activations and their updates stay Θ(1) as the width grows?

The standard test of a width parameterization (Yang et al., Tensor Programs V, Fig. 5): train
models of several widths for a few steps from the plan's init, and record, for every layer,
the RMS of its output (``rms``) and of the output's change since step 0 (``delta``). Under μP
both are flat in width at every step (log-log slope ≈ 0); under SP with a width-independent
learning rate the change of the hidden and read-out outputs grows with width (slope ≈ 1 for
Adam), the signature of a parameterization that blows up or must shrink its learning rate.

Example:
    >>> import torch
    >>> mlp = lambda w: torch.nn.Sequential(torch.nn.Linear(8, w), torch.nn.ReLU(), torch.nn.Linear(w, w),
    ...                                     torch.nn.ReLU(), torch.nn.Linear(w, 4))
    >>> x, y = torch.randn(64, 8, generator=torch.Generator().manual_seed(0)), torch.arange(64) % 4
    >>> cc = coord_check(mlp, torch.nn.functional.cross_entropy, (x, y), widths=[64, 128, 256], lr=1e-2, steps=3,
    ...                  generator=0)
    >>> abs(cc.slopes()["4"]) < 0.4  # μP: the read-out's change is about flat in width
    True
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..backend.random import GeneratorLike, measurement_generator
from ..backend.select import Spec, select
from .plan import plan

__all__ = ["CoordCheck", "coord_check", "plot_coord_check"]


@dataclass
class CoordCheck:
    """Result of :func:`coord_check` (Yang et al. 2022, Tensor Programs V, Fig. 5).

    Reference: G. Yang, E. J. Hu et al., "Tensor Programs V: Tuning Large Neural Networks via
    Zero-Shot Hyperparameter Transfer", 2022.

    Attributes:
        widths: ``W`` sizes along ``axis``, ascending (the widths; the depths of
            :func:`~overparam.scaling.coord_check_depth`, also as ``depths``).
        modules: ``M`` module names that were recorded.
        rms: ``(W, T + 1, M)`` RMS of each module's output (or input, ``record="input"``) before
            step ``t`` (``t = T``: after the last).
        delta: ``(W, T + 1, M)`` RMS of the change of that output since step 0.
        losses: ``(W, T + 1)`` training loss at each recorded point.
        parameterization: the plan used.
        axis: ``"width"`` or ``"depth"``.

    Example:
        >>> cc = CoordCheck([8, 16], ["fc"], rms=torch.ones(2, 2, 1), delta=torch.tensor([[[0.0], [0.1]], [[0.0], [0.2]]]),
        ...                 losses=torch.zeros(2, 2), parameterization="sp")
        >>> cc.delta.shape, round(cc.slopes()["fc"], 6)  # (W, T + 1, M); the change doubles with the width
        (torch.Size([2, 2, 1]), 1.0)
    """

    widths: list[int]
    modules: list[str]
    rms: Tensor
    delta: Tensor
    losses: Tensor
    parameterization: str
    axis: str = "width"

    @property
    def depths(self) -> list[int]:
        """The depths of a depth check (``axis == "depth"``): ``widths`` under its name.

        Example:
            >>> cc = CoordCheck([2, 8], ["out"], torch.ones(2, 1, 1), torch.ones(2, 1, 1), torch.zeros(2, 1), "depth-mup",
            ...                 axis="depth")
            >>> cc.depths
            [2, 8]
            >>> CoordCheck([8, 16], ["out"], torch.ones(2, 1, 1), torch.ones(2, 1, 1), torch.zeros(2, 1), "mup").depths
            Traceback (most recent call last):
            ...
            AttributeError: a width coordinate check has no depths: use .widths
        """
        if self.axis != "depth":
            raise AttributeError("a width coordinate check has no depths: use .widths")
        return self.widths

    def slopes(self, which: str = "delta", step: int = -1) -> dict[str, float]:
        """Least-squares slope of ``log(value)`` against ``log(width)`` (or ``log(depth)``) per
        module at ``step`` (0 is flat; 1 grows like the width or depth).

        Args:
            which: ``"delta"`` (the change since step 0, default) or ``"rms"``.
            step: index into the ``T + 1`` recorded points (default the last).

        Returns:
            ``{module name: slope}``.

        Example:
            >>> rms = torch.tensor([[[1.0, 1.0]], [[1.0, 4.0]]])  # (W=2, T+1=1, M=2)
            >>> cc = CoordCheck([10, 100], ["a", "b"], rms, rms, torch.zeros(2, 1), "sp")
            >>> {k: round(v, 6) for k, v in cc.slopes("rms").items()}  # b grows like width^log10(4)
            {'a': 0.0, 'b': 0.60206}
        """
        if which not in ("rms", "delta"):
            raise ValueError(f"which must be 'rms' or 'delta', got {which!r}")
        v = getattr(self, which)[:, step, :].double()
        lw = torch.log(torch.tensor(self.widths, dtype=torch.float64))
        lw = lw - lw.mean()
        lv = torch.log(v.clamp(min=1e-300))
        s = (lw[:, None] * (lv - lv.mean(dim=0))).sum(dim=0) / (lw * lw).sum()
        return dict(zip(self.modules, s.tolist()))

    def __str__(self) -> str:
        head = f"{'module':<20}" + "".join(f"{w:>10}" for w in self.widths) + f"{'slope':>8}"
        out = [f"coord check in {self.axis} ({self.parameterization}): RMS change of each module's output after "
               f"{self.rms.shape[1] - 1} steps", head]
        sl = self.slopes()
        for j, m in enumerate(self.modules):
            out.append(f"{m:<20}" + "".join(f"{float(self.delta[i, -1, j]):>10.3g}" for i in range(len(self.widths)))
                       + f"{sl[m]:>8.2f}")
        return "\n".join(out)


def _first(out):  # modules returning tuples (e.g. attention): record the first tensor
    return out[0] if isinstance(out, (tuple, list)) else out


def _measure(model: nn.Module, groups: list[dict], loss_fn: Callable, x, y, names: list[str], *, steps: int,
             optimizer: str, record: str = "output") -> tuple[Tensor, Tensor, Tensor]:
    """Train ``model`` for ``steps`` full-batch steps, recording each named module's output (or
    first input) through removable hooks: ``(rms (T+1, M), delta (T+1, M), losses (T+1,))``."""
    opt = torch.optim.Adam(groups) if optimizer == "adam" else torch.optim.SGD(groups)
    seen: dict[str, Tensor] = {}
    mods = dict(model.named_modules())
    if record == "output":
        hooks = [mods[k].register_forward_hook(lambda m, a, o, k=k: seen.__setitem__(k, _first(o).detach()))
                 for k in names]
    else:
        hooks = [mods[k].register_forward_pre_hook(lambda m, a, k=k: seen.__setitem__(k, _first(a).detach()))
                 for k in names]
    try:
        first, r_w, d_w, l_w = None, [], [], []
        for t in range(steps + 1):
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(x), y)
            outs = [seen[k].double() for k in names]
            first = outs if first is None else first
            r_w.append(torch.stack([o.pow(2).mean().sqrt() for o in outs]))
            d_w.append(torch.stack([(o - f).pow(2).mean().sqrt() for o, f in zip(outs, first)]))
            l_w.append(float(loss.detach()))
            if t < steps:
                loss.backward()
                opt.step()
    finally:
        for h in hooks:
            h.remove()
    return torch.stack(r_w), torch.stack(d_w), torch.tensor(l_w, dtype=torch.float64)


def _recorded(model: nn.Module, modules: Spec) -> list[str]:
    """The modules that own parameters (not the root) among those ``modules`` selects."""
    chosen = select(model, modules, kind="modules", argname="modules")
    names = [k for k, m in chosen.items() if k and next(m.parameters(recurse=False), None) is not None]
    if not names:
        raise ValueError(f"modules: {modules!r} selects no module that owns parameters")
    return names



def _check_args(make_model, loss_fn, data, sizes, name: str, base, base_name: str, steps, optimizer) -> list[int]:
    """Validate a coordinate check's arguments; ``sizes`` (widths or depths) sorted."""
    if not callable(make_model):
        raise TypeError(f"make_model must be a callable {name[:-1]} -> nn.Module, got {type(make_model).__name__}")
    if not callable(loss_fn):
        raise TypeError(f"loss_fn must be callable, got {type(loss_fn).__name__}")
    if isinstance(sizes, (str, bytes)) or not hasattr(sizes, "__iter__"):
        raise TypeError(f"{name} must be a list of ints, got {type(sizes).__name__}")
    sizes = list(sizes)
    if (len(sizes) < 2 or len(set(sizes)) != len(sizes)
            or not all(isinstance(w, int) and not isinstance(w, bool) and w > 0 for w in sizes)):
        raise ValueError(f"{name} must hold at least two distinct positive ints (no duplicates), got {sizes!r}")
    if base is not None and not (isinstance(base, int) and not isinstance(base, bool) and base > 0):
        raise ValueError(f"{base_name} must be a positive int, got {base!r}")
    if not (isinstance(data, (tuple, list)) and len(data) == 2):
        raise ValueError(f"data must be one batch (inputs, targets), got {type(data).__name__}")
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive int, got {steps!r}")
    if optimizer not in ("adam", "sgd"):
        raise ValueError(f"optimizer must be 'adam' or 'sgd', got {optimizer!r}")
    return sorted(sizes)

def coord_check(make_model: Callable[[int], nn.Module], loss_fn: Callable, data, *, widths,
                parameterization: str = "mup", base_width: int | None = None, lr: float = 1e-3, steps: int = 5,
                optimizer: str = "adam", modules: Spec = None, plan_kwargs: dict | None = None,
                generator: GeneratorLike = None) -> CoordCheck:
    """Train ``make_model(w)`` for each width under a plan and record per-layer output scales.

    ``generator=None`` never advances the global RNG (the measurement rule, docs/index.md).

    Args:
        make_model: ``width -> nn.Module`` (called inside a forked RNG, so the global RNG is untouched).
        loss_fn: ``loss_fn(model(inputs), targets) -> scalar``.
        data: one batch ``(inputs, targets)``, ``inputs (batch, ...)``; full-batch steps on it (the
            change of each output is measured on these same inputs, so one fixed batch).
        widths: at least two distinct positive ints (any order; the result is sorted).
        parameterization: ``"sp"`` | ``"mup"`` | ``"depth-mup"`` | ``"completep"`` (see
            :func:`~overparam.scaling.plan`).
        base_width: width of the base model (default the smallest width).
        lr: the base learning rate.
        steps: optimizer steps ``T``.
        optimizer: ``"adam"`` (``torch.optim.Adam``) or ``"sgd"`` (``torch.optim.SGD``).
        modules: a selection spec (:mod:`overparam.backend.select`: names, globs, module types,
            predicates, lists) of the modules to record; of those it selects (a module and
            everything inside it), the ones that own parameters are recorded (default: every
            module owning parameters).
        plan_kwargs: extra arguments for :func:`~overparam.scaling.plan` (e.g. ``roles=``).
        generator: seeds the models' construction and the plan's init of every width (the same
            seed for each width); ``None`` draws a seed as :func:`~overparam.backend.random.measurement_generator`
            does.

    Returns:
        :class:`CoordCheck` (print it for a table; :func:`plot_coord_check` draws it).

    Raises:
        ValueError: fewer than two widths, duplicate or non-positive widths, a bad
            ``base_width``, ``steps``, ``optimizer`` or ``data``, a ``modules`` item that
            matches no module (or selects none that owns parameters).
        TypeError: ``make_model``/``loss_fn`` not callable, ``widths`` not a list, a ``modules``
            item of the wrong type.

    Reference: G. Yang, E. J. Hu et al., "Tensor Programs V" (2022), Fig. 5 (the coordinate check).

    Example:
        >>> mlp = lambda w: nn.Sequential(nn.Linear(4, w), nn.ReLU(), nn.Linear(w, 2))
        >>> x, y = torch.randn(8, 4, generator=torch.Generator().manual_seed(0)), torch.arange(8) % 2
        >>> cc = coord_check(mlp, nn.functional.cross_entropy, (x, y), widths=[16, 8], steps=1, generator=0)
        >>> cc.widths, cc.modules, tuple(cc.delta.shape)  # (W, T + 1, M)
        ([8, 16], ['0', '2'], (2, 2, 2))
        >>> bool((cc.delta[:, 0] == 0).all())  # no change before the first step
        True
    """
    widths = _check_args(make_model, loss_fn, data, widths, "widths", base_width, "base_width", steps, optimizer)
    base_width = widths[0] if base_width is None else base_width
    other = next(w for w in widths if w != base_width)
    seed = int(measurement_generator(generator).initial_seed())
    x, y = data
    rms, delta, losses, names = [], [], [], None

    def build(w):
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            return make_model(w)

    base, delta_model = build(base_width), build(other)
    for w in widths:
        model = build(w)
        names = _recorded(model, modules) if names is None else names
        p = plan(model, parameterization, base=base, delta=delta_model, optimizer=optimizer, **(plan_kwargs or {}))
        p.init_(model, generator=seed)
        r_w, d_w, l_w = _measure(model, p.param_groups(model, lr=lr), loss_fn, x, y, names, steps=steps,
                                 optimizer=optimizer)
        rms.append(r_w)
        delta.append(d_w)
        losses.append(l_w)
    return CoordCheck(widths, names, torch.stack(rms), torch.stack(delta), torch.stack(losses), parameterization)


def plot_coord_check(cc: CoordCheck, axes=None, *, which: str = "delta"):
    """One panel per recorded step: ``which`` ("delta" or "rms") against width (or depth) per module, log-log.
    matplotlib is imported only here; returns the axes (one per step ``0..T``).

    ``axes``: a sequence of at least ``T + 1`` matplotlib ``Axes`` (or anything with their
    ``loglog``/``set_title``/``set_xlabel``/``set_ylabel``/``legend`` methods), or None for a new figure.

    Reference: G. Yang et al., "Tensor Programs V: Tuning Large Neural Networks via Zero-Shot Hyperparameter
        Transfer" (2022), the coordinate check

    Example:
        >>> import matplotlib; matplotlib.use("Agg")
        >>> cc = CoordCheck([8, 16], ["fc"], torch.ones(2, 2, 1), torch.tensor([[[0.5], [1.0]], [[0.5], [2.0]]]),
        ...                 torch.zeros(2, 2), "mup")
        >>> axes = plot_coord_check(cc)   # a new figure, one panel per step 0..T
        >>> line = axes[1].get_lines()[0]
        >>> len(axes), axes[1].get_title(), axes[1].get_xlabel(), line.get_label(), line.get_ydata().tolist()
        (2, 'step 1', 'width', 'fc', [1.0, 2.0])
    """
    if which not in ("rms", "delta"):
        raise ValueError(f"which must be 'rms' or 'delta', got {which!r}")
    v = getattr(cc, which)
    steps = v.shape[1]
    if axes is None:
        try:
            import matplotlib.pyplot as plt
        except ImportError as e:  # pragma: no cover - depends on the environment
            raise ImportError("plot_coord_check needs matplotlib: pip install 'overparam[plot]'") from e
        _, axes = plt.subplots(1, steps, figsize=(3 * steps, 3), sharey=True, squeeze=False)
        axes = axes[0]
    for t, ax in enumerate(axes[:steps]):
        for j, m in enumerate(cc.modules):
            ax.loglog(cc.widths, v[:, t, j].clamp(min=1e-300).tolist(), marker="o", label=m)
        ax.set_title(f"step {t}")
        ax.set_xlabel(cc.axis)
    axes[0].set_ylabel(f"{which} RMS ({cc.parameterization})")
    axes[0].legend(fontsize="small")
    return axes
