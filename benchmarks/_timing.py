"""Timing helper shared by the benchmark scripts: median of repeated runs, ratios in one run."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable


def median_time(fn: Callable[[], object], *, repeats: int = 3, warmup: int = 1, inner: int = 1) -> float:
    """Median over ``repeats`` of the wall time (seconds) of ``inner`` calls of ``fn``, per call."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(inner):
            fn()
        times.append((time.perf_counter() - t0) / inner)
    return statistics.median(times)


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
