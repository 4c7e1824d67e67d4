"""Benchmark: the softmax cross-entropy Hessian-vector product in the logits, fused vs eager.

``(N, V)`` logits with N = B·T = 2048 token rows (a quarter of them ignore_index), V ∈ {1k, 32k},
fp32, on this CPU: time (median of 3) and peak memory allocated by the call (each variant in a fresh
subprocess; the torch profiler's allocation records, the output included) of

* ``eager``: ``impl="reference"`` (materialises p and p ⊙ u);
* ``compiled``: ``impl="compiled"`` (torch.compile/inductor fuses the reductions; compile excluded);
* ``triton``: ``impl="triton"`` — only on CUDA (on this CPU it runs only interpreted, for tests).

Run from the repository root: ``OMP_NUM_THREADS=1 overparam bench softmax_ce``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

from _rows import Rows

_CHILD = r"""
import json, statistics, sys, time, torch
from overparam.backend.softmax_ce import softmax_ce_hvp
impl, N, V = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
g = torch.Generator().manual_seed(0)
z = 3 * torch.randn(N, V, generator=g); u = torch.randn(N, V, generator=g)
y = torch.randint(0, V, (N,), generator=g); y[::4] = -100
if impl == "compiled":
    softmax_ce_hvp(z[:8], u[:8], y[:8], impl=impl)          # compile outside the measurement
softmax_ce_hvp(z[:8], u[:8], y[:8], impl=impl)
with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True) as prof:
    out = softmax_ce_hvp(z, u, y, impl=impl)
cur = peak = 0
for e in sorted(prof.events(), key=lambda e: e.time_range.start):
    cur += e.cpu_memory_usage if e.name == "[memory]" else e.self_cpu_memory_usage
    peak = max(peak, cur)
ts = []
for _ in range(3):
    t0 = time.perf_counter(); softmax_ce_hvp(z, u, y, impl=impl); ts.append(time.perf_counter() - t0)
ref = softmax_ce_hvp(z.double(), u.double(), y, impl="reference")
err = float((out.double() - ref).abs().max() / ref.abs().max())
print(json.dumps({"t": statistics.median(ts), "peak": peak, "err": err}))
"""


def _run(impl: str, n: int, v: int) -> dict:
    r = subprocess.run([sys.executable, "-c", _CHILD, impl, str(n), str(v)], capture_output=True, text=True, check=True)
    return json.loads(r.stdout.strip().splitlines()[-1])


def main(argv=None) -> str:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rows", type=int, default=2048)
    ap.add_argument("--vocab", type=int, nargs="+", default=[1024, 32768])
    a = ap.parse_args(argv)
    rows = Rows()
    lines = [f"softmax-CE Hessian-vector product, {a.rows} rows (1/4 ignored), fp32, CPU:",
             "| V | eager | compiled | compiled / eager | peak allocated: eager | compiled | ratio | max rel. error (compiled vs fp64) |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for v in a.vocab:
        e, c = _run("reference", a.rows, v), _run("compiled", a.rows, v)
        buf = a.rows * v * 4
        lines.append(f"| {v} | {e['t'] * 1e3:.1f} ms | {c['t'] * 1e3:.1f} ms | {c['t'] / e['t']:.2f}x | "
                     f"{e['peak'] / buf:.1f} x (N,V) | {c['peak'] / buf:.1f} x (N,V) | "
                     f"{c['peak'] / max(e['peak'], 1):.2f}x | {c['err']:.1e} |")
        case = f"softmax-CE Hessian-vector product, {a.rows} rows (¼ ignored), V = {v}, fp32, `impl=\"compiled\"`"
        rows.add("backend", f"{case}: time", 'eager `impl="reference"`', ours=c["t"], theirs=e["t"],
                 notes=f"max rel. error vs fp64 {c['err']:.1e}")
        rows.add("backend", f"{case}: peak allocated", 'eager `impl="reference"`', ours=c["peak"] / 2**20,
                 theirs=e["peak"] / 2**20, unit="MiB")
    rows.gpu("backend", f'softmax-CE Hessian-vector product, `impl="triton"`, {a.rows} rows', 'eager `impl="reference"`')
    lines.append("triton: not measured (no GPU)")
    text = "\n".join(lines)
    print(text)
    rows.write()
    return text


if __name__ == "__main__":
    main()
