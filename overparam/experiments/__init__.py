"""Reproductions of published claims, one file each, found by the ``overparam`` CLI.

An experiment module (any ``overparam/experiments/<name>.py`` not starting with ``_``)
defines ``EXPERIMENT = Experiment(...)``: its CLI name, the claim and the paper it
reproduces, its parameters (full size and ``--quick`` overrides) and a ``run(ctx)``
function that returns a dict of measured figures including ``claim_holds`` and
``summary`` (lines printed for the user). The runner writes ``result.json``, the plots and
``report.md`` into the output folder.

Example:
    >>> from overparam.experiments import registry
    >>> "slows-gd" in registry()
    True
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from . import harness
from .sweep import Table, grid_points, heatmap, sweep

__all__ = ["Experiment", "Context", "registry", "get", "harness", "sweep", "Table", "grid_points", "heatmap"]


@dataclass
class Context:
    """What a running experiment gets: where to write, the seed, device, parameters, progress.

    Example:
        >>> import tempfile; from pathlib import Path
        >>> ctx = Context(out=Path(tempfile.mkdtemp()), seed=0, device=torch.device("cpu"), quick=True,
        ...               params={"steps": 10})
        >>> ctx.params["steps"], ctx.figures, ctx.out.is_dir()
        (10, [], True)
    """

    out: Path
    seed: int
    device: torch.device
    quick: bool
    params: dict[str, Any]
    show_progress: bool = False
    figures: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def progress(self, iterable: Iterable, *, total: int | None = None, desc: str | None = None) -> Iterator:
        """Wrap ``iterable`` in a tqdm bar when progress is on, tqdm is installed and stderr is a terminal.

        Example:
            >>> import tempfile; from pathlib import Path
            >>> ctx = Context(out=Path(tempfile.mkdtemp()), seed=0, device=torch.device("cpu"), quick=True, params={})
            >>> list(ctx.progress(range(3), desc="steps"))   # show_progress=False: the items, no bar
            [0, 1, 2]
        """
        if self.show_progress:
            try:
                from tqdm.auto import tqdm
            except ImportError:
                return iter(iterable)
            return iter(tqdm(iterable, total=total, desc=desc, leave=False, disable=None, mininterval=0.5))
        return iter(iterable)

    def pyplot(self):
        """``matplotlib.pyplot`` on the Agg backend, or None (with a note) without the plot extra.

        Example:
            >>> import tempfile; from pathlib import Path
            >>> ctx = Context(out=Path(tempfile.mkdtemp()), seed=0, device=torch.device("cpu"), quick=True, params={})
            >>> plt = ctx.pyplot()
            >>> plt is None or plt.get_backend().lower() == "agg"
            True
        """
        from .harness import pyplot

        plt = pyplot()
        if plt is None and not any("matplotlib" in n for n in self.notes):
            self.notes.append("matplotlib is not installed: no plots (pip install 'overparam[plot]')")
        return plt

    def finish_axes(self, fig, ax, name: str, *, legend: int | None = 8, **labels) -> None:
        """Label ``ax`` (``ax.set(**labels)``: ``xlabel=``, ``ylabel=``, ``title=``), add a legend
        with font size ``legend`` (``None``: no legend) and save the figure (:meth:`savefig`).

        Example:
            >>> import tempfile; from pathlib import Path
            >>> ctx = Context(out=Path(tempfile.mkdtemp()), seed=0, device=torch.device("cpu"), quick=True, params={})
            >>> plt = ctx.pyplot(); fig, ax = plt.subplots(); _ = ax.plot([0, 1], label="loss")
            >>> ctx.finish_axes(fig, ax, "loss.png", xlabel="step", ylabel="loss")
            >>> ctx.figures, (ctx.out / "loss.png").is_file()
            (['loss.png'], True)
        """
        ax.set(**labels)
        if legend is not None:
            ax.legend(fontsize=legend)
        self.savefig(fig, name)

    def savefig(self, fig, name: str) -> None:
        """Save a figure as ``out/name`` (PNG) and record it for the report.

        Example:
            >>> import tempfile; from pathlib import Path
            >>> ctx = Context(out=Path(tempfile.mkdtemp()), seed=0, device=torch.device("cpu"), quick=True, params={})
            >>> plt = ctx.pyplot(); fig, ax = plt.subplots()
            >>> ctx.savefig(fig, "empty.png"); ctx.figures, (ctx.out / "empty.png").stat().st_size > 0
            (['empty.png'], True)
        """
        path = self.out / name
        fig.savefig(path, dpi=120, bbox_inches="tight")
        fig.clf()
        import matplotlib.pyplot as plt

        plt.close(fig)
        self.figures.append(name)


@dataclass(frozen=True)
class Experiment:
    """A registered reproduction. ``run(ctx) -> dict`` with at least ``claim_holds`` (the verdict
    against ``claim``, computed from the measurements with a margin) and ``summary`` (lines of
    measured figures). ``setting`` says in words what is run (default: the first paragraph of the
    module docstring); the report shows it with the parameters actually used.

    Example:
        >>> exp = Experiment("toy", paper="(none)", claim="1 + 1 = 2",
        ...                  run=lambda ctx: {"claim_holds": 1 + 1 == 2, "summary": ["1 + 1 = 2"]})
        >>> exp.run(None)["claim_holds"], exp.params, exp.setting
        (True, {}, '')
    """

    name: str
    paper: str
    claim: str
    run: Callable[[Context], dict[str, Any]]
    params: dict[str, Any] = field(default_factory=dict)
    quick: dict[str, Any] = field(default_factory=dict)
    setting: str = ""

    def params_for(self, quick: bool) -> dict[str, Any]:
        """The parameters of a run: ``params``, overridden by ``quick`` when ``quick`` is true.

        Example:
            >>> exp = Experiment("toy", "(none)", "-", run=print, params={"n": 100, "seeds": 3}, quick={"n": 10})
            >>> exp.params_for(False), exp.params_for(True)
            ({'n': 100, 'seeds': 3}, {'n': 10, 'seeds': 3})
        """
        unknown = set(self.quick) - set(self.params)
        if unknown:
            raise ValueError(f"experiment {self.name!r}: quick overrides unknown parameters {sorted(unknown)}")
        return {**self.params, **(self.quick if quick else {})}


def registry() -> dict[str, Experiment]:
    """All experiments shipped in this package, by CLI name (modules are imported on call).

    Example:
        >>> reg = registry()
        >>> reg["slows-gd"].name, list(reg) == sorted(reg)
        ('slows-gd', True)
    """
    found: dict[str, Experiment] = {}
    for info in pkgutil.iter_modules(__path__):
        if info.name.startswith("_"):
            continue
        mod = importlib.import_module(f"{__name__}.{info.name}")
        exp = getattr(mod, "EXPERIMENT", None)
        if not isinstance(exp, Experiment):
            continue
        if exp.name in found:
            raise RuntimeError(f"two experiments are named {exp.name!r}")
        found[exp.name] = exp
    return dict(sorted(found.items()))


def get(name: str) -> Experiment:
    """The experiment called ``name``; a ValueError lists the valid names otherwise.

    Example:
        >>> get("slows-gd").name, set(get("slows-gd").quick) <= set(get("slows-gd").params)
        ('slows-gd', True)
    """
    reg = registry()
    if name not in reg:
        raise ValueError(f"unknown experiment {name!r}; available: {', '.join(reg)}")
    return reg[name]
