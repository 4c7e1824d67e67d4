"""The timing helper every benchmark script imports (``from _timing import ...``; the scripts run
as ``overparam bench NAME`` or ``python benchmarks/NAME.py`` from the repository root).

* :func:`median_time` — median wall time of repeated runs of one function, per call;
* :func:`timed` — median wall time and the last result;
* :func:`interleaved` — several functions run in alternating rounds, so that a change of machine
  load hits all variants alike (ratios from one run);
* :func:`table` — a markdown table of (case, ours, anchor) with the ratio.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable


def median_time(fn: Callable[..., object], *, repeats: int = 3, warmup: int = 1, inner: int = 1,
                setup: Callable[[], object] | None = None) -> float:
    """Median over ``repeats`` of the wall time (seconds) of ``inner`` calls of ``fn``, per call.

    With ``setup``, every run (and warm-up) first calls ``setup()`` outside the timed region and
    ``fn`` gets its result as its one argument (a fresh model to prune, say).
    """
    def prepared() -> Callable[[], object]:
        if setup is None:
            return fn
        arg = setup()
        return lambda: fn(arg)

    for _ in range(warmup):
        prepared()()
    times = []
    for _ in range(repeats):
        call = prepared()
        t0 = time.perf_counter()
        for _ in range(inner):
            call()
        times.append((time.perf_counter() - t0) / inner)
    return statistics.median(times)


def timed(fn: Callable[[], object], *, repeats: int = 3) -> tuple[float, object]:
    """(median seconds over ``repeats`` runs of ``fn``, the last run's result)."""
    times, results = interleaved({"fn": fn}, repeats=repeats)["fn"]
    return statistics.median(times), results[-1]


def table(rows: list[tuple[str, float, float]], *, ours: str = "overparam", anchor: str = "anchor") -> str:
    """Markdown table of (case, our seconds, anchor seconds) with the ratio ours / anchor."""
    out = [f"| case | {ours} | {anchor} | ratio |", "| --- | --- | --- | --- |"]
    for case, a, b in rows:
        out.append(f"| {case} | {a * 1e3:.3f} ms | {b * 1e3:.3f} ms | {a / b:.2f}× |")
    return "\n".join(out)


def interleaved(fns: dict[str, Callable[[], object]], *, repeats: int = 3) -> dict[str, tuple[list[float], list]]:
    """Run every function once per round, ``repeats`` rounds, so that a change of machine load
    hits all variants alike. Returns ``{name: (seconds per round, results per round)}``."""
    out: dict[str, tuple[list[float], list]] = {k: ([], []) for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            res = fn()
            out[k][0].append(time.perf_counter() - t0)
            out[k][1].append(res)
    return out
