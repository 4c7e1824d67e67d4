"""Reconstruction report: how well each pruned layer reproduces its dense output on held-out data.

For every target layer with dense weights ``W`` and pruned weights ``Ŵ`` (matrix layout of
:mod:`~overparam.prune.calibrate`, biases left out), on the input rows ``X̂`` that the layer sees
in the *pruned* model and ``X`` in the dense one:

* ``error = ‖X̂Ŵᵀ − X̂Wᵀ‖ / ‖X̂Wᵀ‖``: the layer's own relative output error (what SparseGPT and
  Wanda minimise, layer by layer);
* ``total_error = ‖X̂Ŵᵀ − XWᵀ‖ / ‖XWᵀ‖``: the error accumulated up to this layer's output
  (earlier layers' errors included; what sequential calibration reduces).

Norms are Frobenius norms over all held-out rows, accumulated batch by batch in float64.

Example:
    >>> import copy, torch
    >>> dense = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.ReLU(), torch.nn.Linear(8, 4))
    >>> pruned = copy.deepcopy(dense)
    >>> with torch.no_grad():
    ...     _ = pruned[2].weight.mul_(0.5)
    >>> rep = reconstruction(dense, pruned, (torch.randn(16, 8), None))
    >>> [round(r.error, 6) for r in rep.layers]
    [0.0, 0.5]
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..backend.select import Spec
from .calibrate import _check_deterministic, _layers, _run, calibration_batches, input_rows, module_name, weight_matrix

__all__ = ["LayerError", "Reconstruction", "reconstruction", "plot_reconstruction"]


@dataclass
class LayerError:
    """One row of the report: a layer, its kept fraction and its relative output errors.

    Example:
        >>> LayerError("fc", kept=0.5, error=0.25, total_error=0.5)
        LayerError(name='fc', kept=0.5, error=0.25, total_error=0.5)
    """

    name: str
    kept: float
    error: float
    total_error: float


@dataclass
class Reconstruction:
    """Per-layer relative output errors (model order) with their means and a printable table.

    Example:
        >>> Reconstruction([LayerError("a", 1.0, 0.0, 0.0), LayerError("b", 0.5, 0.5, 0.25)]).layers[1].error
        0.5
    """

    layers: list[LayerError]

    @property
    def mean_error(self) -> float:
        """Mean over layers of the layer's own relative error.

        Example:
            >>> rep = Reconstruction([LayerError("a", 1.0, 0.0, 0.0), LayerError("b", 0.5, 0.5, 0.25)])
            >>> rep.mean_error
            0.25
        """
        return sum(r.error for r in self.layers) / len(self.layers)

    @property
    def mean_total_error(self) -> float:
        """Mean over layers of the accumulated relative error.

        Example:
            >>> rep = Reconstruction([LayerError("a", 1.0, 0.0, 0.0), LayerError("b", 0.5, 0.5, 0.25)])
            >>> rep.mean_total_error
            0.125
        """
        return sum(r.total_error for r in self.layers) / len(self.layers)

    def table(self) -> str:
        """A markdown table, one row per layer, then the means.

        Example:
            >>> rep = Reconstruction([LayerError("a", 1.0, 0.0, 0.0), LayerError("b", 0.5, 0.5, 0.25)])
            >>> print(rep.table())
            | layer | kept | error | total error |
            | --- | --- | --- | --- |
            | a | 1.000 | 0.0000 | 0.0000 |
            | b | 0.500 | 0.5000 | 0.2500 |
            | mean | | 0.2500 | 0.1250 |
        """
        out = ["| layer | kept | error | total error |", "| --- | --- | --- | --- |"]
        out += [f"| {r.name} | {r.kept:.3f} | {r.error:.4f} | {r.total_error:.4f} |" for r in self.layers]
        out.append(f"| mean | | {self.mean_error:.4f} | {self.mean_total_error:.4f} |")
        return "\n".join(out)


def reconstruction(dense: nn.Module, pruned: nn.Module, data, *, targets: Spec = None,
                   exclude: Spec = None) -> Reconstruction:
    """The reconstruction report of ``pruned`` against ``dense`` on held-out ``data``.

    Args:
        dense, pruned: two models of the same architecture (deterministic: eval mode).
        data: an ``(inputs, targets)`` batch or an iterable of them (targets ignored).
        targets, exclude: which layers (:func:`overparam.prune.targets`, resolved on ``dense``).

    Returns:
        :class:`Reconstruction`.

    Reference: the layer-wise reconstruction objective of E. Frantar & D. Alistarh, "SparseGPT: Massive Language
        Models Can Be Accurately Pruned in One-Shot" (ICML 2023)

    Example:
        >>> import copy; lin = lambda i, o: torch.nn.Linear(i, o, bias=False)
        >>> dense = torch.nn.Sequential(lin(4, 6), torch.nn.ReLU(), lin(6, 3)); pruned = copy.deepcopy(dense)
        >>> with torch.no_grad(): _ = pruned[0].weight.mul_(0.5)   # ReLU is homogeneous: layer 2's input halves
        >>> rep = reconstruction(dense, pruned, (torch.randn(16, 4), None))
        >>> [(r.name, round(r.error, 6), round(r.total_error, 6)) for r in rep.layers]
        [('0', 0.5, 0.5), ('2', 0.0, 0.5)]
    """
    for name, mdl in (("dense", dense), ("pruned", pruned)):
        if not isinstance(mdl, nn.Module):
            raise TypeError(f"{name} must be an nn.Module, got {type(mdl).__name__}")
    batches = calibration_batches(data)
    for mdl in (dense, pruned):
        _check_deterministic(mdl)
    layers = _layers(dense, targets, exclude)
    mods = dict(pruned.named_modules())
    pmods = {n: mods.get(module_name(n)) for n in layers}
    missing = [module_name(n) for n in layers if getattr(pmods[n], "weight", None) is None
               or pmods[n].weight.shape != layers[n].weight.shape]
    if missing:
        raise ValueError(f"pruned: layers {missing} are missing or shaped unlike dense's")
    W = {n: weight_matrix(m).double() for n, m in layers.items()}
    What = {n: weight_matrix(pmods[n]).double() for n in layers}
    sums = {n: torch.zeros(4, dtype=torch.float64) for n in layers}
    for b in batches:
        rows: dict[str, Tensor] = {}
        _run(dense, [b], {m: _grab(n, m, rows) for n, m in layers.items()}, None)
        seen: dict[str, Tensor] = {}
        _run(pruned, [b], {pmods[n]: _grab(n, pmods[n], seen) for n in layers}, None)
        for n in layers:
            if n not in rows or n not in seen:
                raise ValueError(f"targets: layer {n!r} never ran in model(inputs)")
            ref, loc, out = rows[n] @ W[n].T, seen[n] @ W[n].T, seen[n] @ What[n].T
            sums[n] += torch.stack([(out - loc).square().sum(), loc.square().sum(), (out - ref).square().sum(),
                                    ref.square().sum()])
    return Reconstruction([LayerError(module_name(n), float((What[n] != 0).double().mean()), _ratio(s[0], s[1]), _ratio(s[2], s[3]))
                           for n, s in sums.items()])


def _ratio(num: Tensor, den: Tensor) -> float:
    return float((num / den).sqrt()) if float(den) > 0 else (0.0 if float(num) == 0 else float("inf"))


def _grab(name: str, mod: nn.Module, into: dict):
    def hook(_m, args):
        into[name] = input_rows(mod, args[0]).detach().double()
    return hook


def plot_reconstruction(reports: dict[str, Reconstruction], ax=None, *, total: bool = False):
    """Bar chart of the per-layer errors of several reports (``{label: Reconstruction}``); returns the axes.

    Needs matplotlib. ``total=True`` plots ``total_error`` instead of ``error``.

    Example:
        >>> import matplotlib; matplotlib.use("Agg")
        >>> rep = Reconstruction([LayerError("a", 1.0, 0.0, 0.0), LayerError("b", 0.5, 0.5, 0.25)])
        >>> ax = plot_reconstruction({"magnitude": rep, "wanda": rep}, total=True)
        >>> len(ax.patches), [float(p.get_height()) for p in ax.patches[:2]], ax.get_ylabel()
        (4, [0.0, 0.25], 'relative output error (accumulated)')
    """
    import matplotlib.pyplot as plt

    if not isinstance(reports, dict) or not reports or not all(isinstance(r, Reconstruction) for r in reports.values()):
        raise TypeError("reports must be a non-empty dict label -> Reconstruction")
    if ax is None:
        ax = plt.subplots(figsize=(7, 3.5))[1]
    names = [r.name for r in next(iter(reports.values())).layers]
    width = 0.8 / len(reports)
    for i, (label, rep) in enumerate(reports.items()):
        vals = [r.total_error if total else r.error for r in rep.layers]
        ax.bar([j + i * width for j in range(len(vals))], vals, width, label=label)
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(names))], names, rotation=45, ha="right", fontsize=7)
    ax.set_ylabel("relative output error" + (" (accumulated)" if total else ""))
    ax.legend(fontsize=8)
    return ax
