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
    """What a running experiment gets: where to write, the seed, device, parameters, progress."""

    out: Path
    seed: int
    device: torch.device
    quick: bool
    params: dict[str, Any]
    show_progress: bool = False
    figures: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def progress(self, iterable: Iterable, *, total: int | None = None, desc: str | None = None) -> Iterator:
        """Wrap ``iterable`` in a tqdm bar when progress is on, tqdm is installed and stderr is a terminal."""
        if self.show_progress:
            try:
                from tqdm.auto import tqdm
            except ImportError:
                return iter(iterable)
            return iter(tqdm(iterable, total=total, desc=desc, leave=False, disable=None, mininterval=0.5))
        return iter(iterable)

    def pyplot(self):
        """``matplotlib.pyplot`` on the Agg backend, or None (with a note) without the plot extra."""
        from .harness import pyplot

        plt = pyplot()
        if plt is None and not any("matplotlib" in n for n in self.notes):
            self.notes.append("matplotlib is not installed: no plots (pip install 'overparam[plot]')")
        return plt

    def finish_axes(self, fig, ax, name: str, *, legend: int | None = 8, **labels) -> None:
        """Label ``ax`` (``ax.set(**labels)``: ``xlabel=``, ``ylabel=``, ``title=``), add a legend
        with font size ``legend`` (``None``: no legend) and save the figure (:meth:`savefig`)."""
        ax.set(**labels)
        if legend is not None:
            ax.legend(fontsize=legend)
        self.savefig(fig, name)

    def savefig(self, fig, name: str) -> None:
        """Save a figure as ``out/name`` (PNG) and record it for the report."""
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
    module docstring); the report shows it with the parameters actually used."""

    name: str
    paper: str
    claim: str
    run: Callable[[Context], dict[str, Any]]
    params: dict[str, Any] = field(default_factory=dict)
    quick: dict[str, Any] = field(default_factory=dict)
    setting: str = ""

    def params_for(self, quick: bool) -> dict[str, Any]:
        unknown = set(self.quick) - set(self.params)
        if unknown:
            raise ValueError(f"experiment {self.name!r}: quick overrides unknown parameters {sorted(unknown)}")
        return {**self.params, **(self.quick if quick else {})}


def registry() -> dict[str, Experiment]:
    """All experiments shipped in this package, by CLI name (modules are imported on call)."""
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
    """The experiment called ``name``; a ValueError lists the valid names otherwise."""
    reg = registry()
    if name not in reg:
        raise ValueError(f"unknown experiment {name!r}; available: {', '.join(reg)}")
    return reg[name]
