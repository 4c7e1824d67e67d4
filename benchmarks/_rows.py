"""The one row format every benchmark script emits (``from _rows import Rows``), and the
environment every run records.

A script makes one :class:`Rows` at its start (the load average is taken then), adds one row per
measurement, and calls :meth:`Rows.write` at its end, which writes
``benchmarks/results/<name>.json``::

    {"name": "prune", "script": "prune_bench.py", "argv": [...], "date": "2026-11-29 21:04 UTC",
     "environment": {"machine": "... (2 cores), no GPU; Linux x86_64, Python 3.11.2",
                     "cpu": ..., "cores": 2, "gpu": "no GPU", "threads": 2,
                     "versions": {"torch": "2.13.0+cpu", "curvlinops": "2.0.1", ...}},
     "load": {"start": [1.2, 1.0, 0.9], "end": [1.9, 1.2, 1.0]},
     "rows": [{"package": "prune", "measurement": "global 80% magnitude mask, 8.4M weights",
               "anchor": "torch.nn.utils.prune.global_unstructured", "ours": 0.012, "theirs": 0.13,
               "unit": "s", "ratio": 0.092, "target": 0.25, "compare": "<=", "judged": "ratio",
               "notes": ""}, ...]}

A row is judged by one figure (``judged``: the ``ratio`` ours / anchor, or ``ours`` itself for an
absolute target) against ``target`` with ``compare`` (``"<="`` or ``">="``); :func:`status` says
``met`` / ``missed`` from those numbers alone, so no status is ever typed by hand. A row that could
not be measured carries its ``reason`` (``"no GPU"``) and no figure. benchmarks/regenerate.py
turns every JSON file into ``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import datetime
import importlib.metadata
import json
import math
import operator
import os
import platform
import sys
from collections.abc import Sequence
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
COMPARE = {"<=": operator.le, ">=": operator.ge}
JUDGED = ("ratio", "ours")
# import name -> distribution name, for the versions every run records
DISTRIBUTIONS = {"torch": "torch", "pyhessian": "PyHessian", "curvlinops": "curvlinops-for-pytorch", "scipy": "scipy",
                 "mup": "mup", "peft": "peft", "transformers": "transformers", "unit_scaling": "unit-scaling",
                 "triton": "triton", "llmcompressor": "llmcompressor"}


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def load_average() -> list[float] | None:
    """The 1, 5 and 15 minute load averages, or None where the system has none."""
    return [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None


def version(module: str) -> str:
    try:
        return importlib.metadata.version(DISTRIBUTIONS.get(module, module))
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def environment(anchors: Sequence[str] = ()) -> dict:
    """The machine (CPU model and cores, GPU or none, system, Python), torch's threads, and the
    versions of torch and of ``anchors`` (import names; every known anchor when ``anchors`` is None)."""
    import torch

    cpu = platform.processor() or platform.machine()
    if os.path.exists("/proc/cpuinfo"):
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    gpu = ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())) or "no GPU"
    cores = os.cpu_count()
    names = DISTRIBUTIONS if anchors is None else ("torch", *[a for a in anchors if a != "torch"])
    return {"machine": f"{cpu} ({cores} cores), {gpu}; {platform.system()} {platform.machine()}, "
                       f"Python {platform.python_version()}",
            "cpu": cpu, "cores": cores, "gpu": gpu, "threads": torch.get_num_threads(),
            "versions": {m: version(m) for m in names}}


def status(row: dict) -> str:
    """``met`` / ``missed`` from the row's judged figure and target; ``no target`` where it has none;
    ``not measured (reason)`` where it has no figure."""
    if row.get("reason"):
        return f"not measured ({row['reason']})"
    if row.get("target") is None:
        return "no target"
    figure = row.get(row.get("judged", "ratio"))
    if figure is None or (isinstance(figure, float) and math.isnan(figure)):
        return "not measured"
    return "met" if COMPARE[row.get("compare", "<=")](figure, row["target"]) else "missed"


class Rows:
    """The rows of one benchmark run; ``name`` is the JSON file's stem (default: the script's
    name without ``_bench``), ``anchors`` the import names whose versions the run records."""

    def __init__(self, name: str | None = None, *, anchors: Sequence[str] = ()) -> None:
        script = Path(sys.argv[0]).name
        self.name = name or Path(script).stem.removesuffix("_bench")
        self.script, self.argv, self.anchors = script, sys.argv[1:], tuple(anchors)
        self.load_start = load_average()
        self.rows: list[dict] = []

    def add(self, package: str, measurement: str, anchor: str, *, ours: float | None = None,
            theirs: float | None = None, unit: str = "s", ratio: float | None = None, target: float | None = None,
            compare: str = "<=", judged: str = "ratio", notes: str = "") -> dict:
        """One measurement: ``ours`` and ``theirs`` in ``unit`` (seconds unless said), ``ratio``
        (default ours / theirs), judged by ``judged`` ``compare`` ``target`` (no target: None)."""
        if compare not in COMPARE:
            raise ValueError(f"compare must be one of {sorted(COMPARE)}, got {compare!r}")
        if judged not in JUDGED:
            raise ValueError(f"judged must be one of {JUDGED}, got {judged!r}")
        if ratio is None and ours is not None and theirs:
            ratio = ours / theirs
        row = {"package": package, "measurement": measurement, "anchor": anchor, "ours": _num(ours),
               "theirs": _num(theirs), "unit": unit, "ratio": _num(ratio), "target": target, "compare": compare,
               "judged": judged, "notes": notes}
        self.rows.append(row)
        return row

    def not_measured(self, package: str, measurement: str, anchor: str, *, reason: str, target: float | None = None,
                     compare: str = "<=", notes: str = "") -> dict:
        """A row that names a measurement this run could not take, and why (no figure)."""
        row = self.add(package, measurement, anchor, target=target, compare=compare, notes=notes)
        row["reason"] = reason
        return row

    def gpu(self, package: str, measurement: str, anchor: str, *, target: float | None = None, compare: str = "<=",
            notes: str = "") -> dict:
        """A GPU measurement: "not measured (no GPU)" without CUDA; with CUDA, this script has no GPU
        path yet, and the row says that instead (never a CPU figure in a GPU row)."""
        import torch

        reason = "no GPU" if not torch.cuda.is_available() else "the script has no GPU path yet"
        return self.not_measured(package, measurement, anchor, reason=reason, target=target, compare=compare,
                                 notes=notes)

    def record(self) -> dict:
        return {"name": self.name, "script": self.script, "argv": self.argv, "date": now(),
                "environment": environment(self.anchors), "load": {"start": self.load_start, "end": load_average()},
                "rows": self.rows}

    def write(self, folder: Path | None = None) -> Path:
        """Write ``<folder>/<name>.json`` (default: ``$OVERPARAM_BENCH_RESULTS``, else benchmarks/results); its path."""
        folder = Path(folder or os.environ.get("OVERPARAM_BENCH_RESULTS") or RESULTS)
        folder.mkdir(parents=True, exist_ok=True)
        out = folder / f"{self.name}.json"
        out.write_text(json.dumps(self.record(), indent=1, ensure_ascii=False) + "\n")
        print(f"rows: wrote {out}", file=sys.stderr)
        return out


def _num(x: float | None) -> float | None:
    if x is None:
        return None
    x = float(x)
    return None if math.isnan(x) else x
