"""Sweeps: a grid of settings × seeds → a tidy table, and a heat map of it.

Phase diagrams are the over-parameterization literature's figures: an outcome (recovery,
error, steps) against two settings, averaged over seeds. :func:`sweep` evaluates a function
over the Cartesian product of named axes and a list of seeds — one call per point, or one call
for a whole batch of points (``batch=True``: the function receives the list of points and can
run them as one batched tensor program, e.g. with :func:`overparam.optim.run_batched`) — and
returns a :class:`Table` with one row per point (and per checkpoint when the function returns
several rows). :meth:`Table.pivot` averages a value over everything but two axes and
:func:`heatmap` draws it.

Example:
    >>> t = sweep(lambda a, b, seed: {"y": a * b + seed}, {"a": [1, 2], "b": [10, 20]}, seeds=[0, 1])
    >>> len(t), t.columns
    (8, ['a', 'b', 'seed', 'y'])
    >>> xs, ys, grid = t.pivot("a", "b", "y")
    >>> xs, ys, grid.tolist()
    ([1, 2], [10, 20], [[10.5, 20.5], [20.5, 40.5]])
"""

from __future__ import annotations

import csv
import itertools
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

__all__ = ["Table", "sweep", "grid_points", "heatmap"]


@dataclass
class Table:
    """Rows of equal keys (a tidy table). ``columns`` keeps the first row's key order.

    Example:
        >>> t = Table([{"k": 1, "err": 0.5}, {"k": 2, "err": 0.25}])
        >>> len(t), t.columns, t.column("err")
        (2, ['k', 'err'], [0.5, 0.25])
    """

    rows: list[dict[str, Any]] = field(default_factory=list)

    @property
    def columns(self) -> list[str]:
        """The column names, in the first row's key order (empty for an empty table).

        Example:
            >>> t = Table([{"method": "gd", "k": 1, "err": 0.5}, {"method": "sgd", "k": 1, "err": 0.25},
            ...            {"method": "gd", "k": 2, "err": 0.75}])
            >>> t.columns, Table().columns
            (['method', 'k', 'err'], [])
        """
        return list(self.rows[0]) if self.rows else []

    def __len__(self) -> int:
        return len(self.rows)

    def column(self, name: str) -> list[Any]:
        """The values of column ``name`` (KeyError naming the columns if absent).

        Example:
            >>> t = Table([{"method": "gd", "k": 1, "err": 0.5}, {"method": "sgd", "k": 1, "err": 0.25},
            ...            {"method": "gd", "k": 2, "err": 0.75}])
            >>> t.column("k")
            [1, 1, 2]
        """
        if self.rows and name not in self.rows[0]:
            raise KeyError(f"no column {name!r}; the columns are {self.columns}")
        return [r[name] for r in self.rows]

    def where(self, **equal: Any) -> Table:
        """The rows whose columns equal the given values, as a new :class:`Table`.

        Example:
            >>> t = Table([{"method": "gd", "k": 1, "err": 0.5}, {"method": "sgd", "k": 1, "err": 0.25},
            ...            {"method": "gd", "k": 2, "err": 0.75}])
            >>> t.where(method="gd").column("err"), len(t.where(method="gd", k=2))
            ([0.5, 0.75], 1)
        """
        for k in equal:
            self.column(k)
        return Table([r for r in self.rows if all(r[k] == v for k, v in equal.items())])

    def pivot(self, x: str, y: str, value: str, *, agg: Callable[[list[float]], float] | None = None
              ) -> tuple[list[Any], list[Any], torch.Tensor]:
        """``(x values, y values, grid (len(x), len(y)))``: ``agg`` (default: the mean) of ``value``
        over the rows at each ``(x, y)``; NaN where no row has that pair. Values sorted when sortable.

        Example:
            >>> t = Table([{"method": "gd", "k": 1, "err": 0.5}, {"method": "sgd", "k": 1, "err": 0.25},
            ...            {"method": "gd", "k": 2, "err": 0.75}])
            >>> xs, ys, grid = t.pivot("method", "k", "err")
            >>> xs, ys, grid.tolist()
            (['gd', 'sgd'], [1, 2], [[0.5, 0.75], [0.25, nan]])
        """
        agg = agg or (lambda v: sum(v) / len(v))
        xs, ys = _levels(self.column(x)), _levels(self.column(y))
        cells: dict[tuple, list[float]] = {}
        for r in self.rows:
            cells.setdefault((r[x], r[y]), []).append(float(r[value]))
        out = torch.full((len(xs), len(ys)), math.nan, dtype=torch.float64)
        for i, a in enumerate(xs):
            for j, b in enumerate(ys):
                if (a, b) in cells:
                    out[i, j] = agg(cells[(a, b)])
        return xs, ys, out

    def to_csv(self, path: str | Path) -> Path:
        """Write the table as CSV (header = :attr:`columns`); returns the path.

        Example:
            >>> import tempfile, pathlib
            >>> t = Table([{"method": "gd", "k": 1, "err": 0.5}, {"method": "sgd", "k": 1, "err": 0.25},
            ...            {"method": "gd", "k": 2, "err": 0.75}])
            >>> path = t.to_csv(pathlib.Path(tempfile.mkdtemp()) / "t.csv")
            >>> path.read_text().splitlines()[:2]
            ['method,k,err', 'gd,1,0.5']
        """
        path = Path(path)
        with path.open("w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=self.columns)
            w.writeheader()
            w.writerows(self.rows)
        return path

    def to_pandas(self):
        """A ``pandas.DataFrame`` (ImportError naming pandas when it is not installed).

        Example:
            >>> t = Table([{"method": "gd", "k": 1, "err": 0.5}, {"method": "sgd", "k": 1, "err": 0.25},
            ...            {"method": "gd", "k": 2, "err": 0.75}])
            >>> try:
            ...     shape = t.to_pandas().shape
            ... except ImportError:
            ...     shape = (len(t), len(t.columns))  # pandas is optional
            >>> shape
            (3, 3)
        """
        try:
            import pandas as pd
        except ImportError as e:  # pragma: no cover - depends on the environment
            raise ImportError("Table.to_pandas needs pandas (pip install pandas); Table.rows is a plain list") from e
        return pd.DataFrame(self.rows)


def _levels(values: list[Any]) -> list[Any]:
    seen = list(dict.fromkeys(values))
    try:
        return sorted(seen)
    except TypeError:
        return seen


def grid_points(axes: Mapping[str, Sequence[Any]], seeds: Sequence[int]) -> list[dict[str, Any]]:
    """The Cartesian product of ``axes`` × ``seeds`` as dicts (seed last, varying fastest).

    Example:
        >>> grid_points({"k": [1, 2]}, [0, 1])
        [{'k': 1, 'seed': 0}, {'k': 1, 'seed': 1}, {'k': 2, 'seed': 0}, {'k': 2, 'seed': 1}]
    """
    if not isinstance(axes, Mapping) or not axes:
        raise ValueError("axes must be a non-empty mapping {name: values}")
    for k, v in axes.items():
        if not isinstance(k, str) or k == "seed":
            raise ValueError(f"axis names must be strings other than 'seed', got {k!r}")
        if isinstance(v, (str, bytes)) or not isinstance(v, Sequence) or len(v) == 0:
            raise ValueError(f"axis {k!r} must be a non-empty sequence of values, got {v!r}")
    seeds = list(seeds)
    if not seeds or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds):
        raise ValueError(f"seeds must be a non-empty sequence of ints, got {seeds!r}")
    names = list(axes)
    return [dict(zip(names, combo), seed=s) for combo in itertools.product(*axes.values()) for s in seeds]


def sweep(fn: Callable[..., Any], axes: Mapping[str, Sequence[Any]], *, seeds: Sequence[int],
          batch: bool = False) -> Table:
    """Evaluate ``fn`` over ``axes`` × ``seeds`` and collect a tidy :class:`Table`.

    Args:
        fn: with ``batch=False`` called as ``fn(**point)`` (``point`` = one value per axis plus
            ``seed``); with ``batch=True`` called once as ``fn(points)`` with the list of all points,
            returning one result per point, in order. A result is a dict of measured values or a list
            of dicts (e.g. one per checkpoint); each becomes a row prefixed by the point's settings.
        axes: ``{name: values}``; the grid is their Cartesian product.
        seeds: the seeds each grid point is run with.
        batch: see ``fn``.

    Returns:
        a :class:`Table` with columns ``*axes, seed, *measured``.

    Example (``batch=True``: one call for the whole grid, e.g. a batched solver):
        >>> def run(points):
        ...     return [{"err": p["k"] / (1 + p["seed"])} for p in points]
        >>> t = sweep(run, {"k": [1, 2]}, seeds=[0, 1], batch=True)
        >>> t.columns, t.column("err")
        (['k', 'seed', 'err'], [1.0, 0.5, 2.0, 1.0])
    """
    if not callable(fn):
        raise TypeError(f"fn must be callable, got {type(fn).__name__}")
    points = grid_points(axes, seeds)
    results = fn(points) if batch else [fn(**p) for p in points]
    results = list(results)
    if len(results) != len(points):
        raise ValueError(f"fn returned {len(results)} results for {len(points)} points (batch=True needs one per point)")
    rows: list[dict[str, Any]] = []
    for p, res in zip(points, results):
        items = [res] if isinstance(res, Mapping) else (list(res) if isinstance(res, (list, tuple)) else [res])
        for r in items:
            if not isinstance(r, Mapping):
                raise TypeError(f"fn must return a dict or a list of dicts per point, got {type(r).__name__}")
            clash = set(r) & set(p)
            if clash:
                raise ValueError(f"fn's result keys {sorted(clash)} collide with the sweep's axes/seed")
            rows.append({**p, **r})
    keys = list(rows[0]) if rows else []
    for r in rows:
        if list(r) != keys:
            raise ValueError(f"every row must have the same keys; got {list(r)} and {keys}")
    return Table(rows)


def heatmap(table: Table, x: str, y: str, value: str, *, ax=None, agg: Callable[[list[float]], float] | None = None,
            title: str | None = None, vmin: float | None = None, vmax: float | None = None, fmt: str = ".2f"):
    """Draw :meth:`Table.pivot` ``(x, y, value)`` as an annotated heat map on ``ax`` (a new figure
    when None); returns the axes, or None when matplotlib is not installed.

    Example:
        >>> t = sweep(lambda a, b, seed: {"y": a * b}, {"a": [1, 2], "b": [1, 3]}, seeds=[0])
        >>> ax = heatmap(t, "a", "b", "y")
        >>> ax is None or ax.get_xlabel() == "a"
        True
    """
    from .harness import pyplot

    plt = pyplot()
    if plt is None:
        return None
    xs, ys, grid = table.pivot(x, y, value, agg=agg)
    if ax is None:
        _, ax = plt.subplots(figsize=(1.0 + 0.9 * len(xs), 1.0 + 0.7 * len(ys)))
    im = ax.imshow(grid.T.numpy(), origin="lower", aspect="auto", vmin=vmin, vmax=vmax, cmap="viridis")
    ax.set_xticks(range(len(xs)), [str(v) for v in xs])
    ax.set_yticks(range(len(ys)), [str(v) for v in ys])
    ax.set_xlabel(x)
    ax.set_ylabel(y)
    for i in range(len(xs)):
        for j in range(len(ys)):
            v = float(grid[i, j])
            if not math.isnan(v):
                ax.text(i, j, format(v, fmt), ha="center", va="center", fontsize=8,
                        color="k" if (v - float(im.norm.vmin)) > 0.6 * (float(im.norm.vmax) - float(im.norm.vmin)) else "w")
    ax.figure.colorbar(im, ax=ax, label=value)
    ax.set_title(title or value)
    return ax
