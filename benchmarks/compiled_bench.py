"""Benchmark: the ``torch.compile`` variants of the backend routines against their eager references.

* ``packed_adamw_step`` / ``packed_sgd_step`` (momentum 0.9, weight decay): one step of a
  ``(2048, 4096)`` fp32 weight (8.4M) with 20% of the entries kept (the routine alone);
* the whole training step of ``op.prune.PackedAdamW`` on the 8.4M-weight MLP of ``packed_bench.py``
  at 80% sparsity, with ``OVERPARAM_IMPL=packed_adamw_step=compiled`` against the default (eager);
* ``nm_compress_24``: 2:4 selection and compression of a 4096 × 4096 fp32 weight;
* ``nm_mask`` at 2:4 and 4:16 of a 4096 × 4096 fp32 score matrix, against ``"batched"`` (the eager
  default on CPU; pairwise ranks for M <= 8, top-k beyond).

Every pair runs in interleaved rounds (median of ``--repeats``); the first call of each compiled
variant (the compilation) is timed separately. Run from the repository root:
``OMP_NUM_THREADS=1 overparam bench compiled``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch
from _rows import Rows
from _timing import interleaved
from packed_bench import _mlp

import overparam as op
from overparam.backend.packed_step import packed_adamw_step, packed_sgd_step
from overparam.backend.nm import nm_mask
from overparam.backend.sparse24 import nm_compress_24


def _first_call(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def _pair(fns, repeats, inner=1):
    res = interleaved(fns, repeats=repeats)
    return {k: statistics.median(v[0]) / inner for k, v in res.items()}


def _row(name, med, compile_s, rec: Rows):
    ref, comp = med["reference"], med["compiled"]
    anchor = 'eager "batched"' if name.startswith("nm_mask") else "eager reference"
    rec.add("backend", f'`impl="compiled"` {name}', anchor, ours=comp, theirs=ref,
            notes=f"first call (compiles) {compile_s:.1f} s")
    return f"| {name} | {ref * 1e3:.1f} ms | {comp * 1e3:.1f} ms | **{comp / ref:.2f}×** | {compile_s:.1f} s |"


def _optimizer_rows(a, rec):
    g = torch.Generator().manual_seed(0)
    p = {k: torch.randn(2048, 4096, generator=g) for k in ("reference", "compiled")}
    grad = torch.randn(2048, 4096, generator=g)
    idx = (torch.rand(p["reference"].numel(), generator=g) < a.kept).nonzero().squeeze(1)
    k = idx.numel()
    st = {n: [torch.zeros(k) for _ in range(3)] for n in p}
    step = {n: 0 for n in p}

    def adamw(n):
        def run():
            for _ in range(a.inner):
                step[n] += 1
                packed_adamw_step(p[n], grad, idx, st[n][0], st[n][1], lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8,
                                  weight_decay=1e-2, step=step[n], impl=n)
        return run

    def sgd(n):
        def run():
            for _ in range(a.inner):
                packed_sgd_step(p[n], grad, idx, st[n][2], lr=1e-3, momentum=0.9, weight_decay=1e-2,
                                first=False, impl=n)
        return run

    rows = []
    for name, make in (("packed_adamw_step", adamw), ("packed_sgd_step", sgd)):
        compile_s = _first_call(make("compiled"))
        make("reference")()
        rows.append(_row(f"{name}, (2048, 4096) fp32, {a.kept:.0%} kept (K = {k / 1e6:.2f}M)",
                         _pair({n: make(n) for n in ("reference", "compiled")}, a.repeats, a.inner), compile_s, rec))
    return rows


def _training_row(a, rec):
    base = _mlp([1024, 2048, 2048, 1024])
    masks = op.prune.magnitude(base, 0.8)
    x, y = torch.randn(64, 1024), torch.randn(64, 1024)
    nets = {n: _mlp([1024, 2048, 2048, 1024]) for n in ("reference", "compiled")}
    opts = {n: op.prune.PackedAdamW(nets[n].named_parameters(), masks, lr=1e-3, weight_decay=1e-2) for n in nets}

    def train(n):
        def run():
            old = os.environ.get("OVERPARAM_IMPL")
            os.environ["OVERPARAM_IMPL"] = f"packed_adamw_step={n}"
            try:
                for _ in range(a.inner):
                    opts[n].zero_grad()
                    ((nets[n](x) - y) ** 2).mean().backward()
                    opts[n].step()
            finally:
                os.environ.pop("OVERPARAM_IMPL") if old is None else os.environ.__setitem__("OVERPARAM_IMPL", old)
        return run

    compile_s = _first_call(train("compiled"))
    train("reference")()
    return _row("whole `PackedAdamW` training step, 8.4M-weight MLP, 80% sparsity, batch 64",
                _pair({n: train(n) for n in nets}, a.repeats, a.inner), compile_s, rec)


def _nm24_row(a, rec):
    w = torch.randn(a.nm_size, a.nm_size, generator=torch.Generator().manual_seed(0))
    compile_s = _first_call(lambda: nm_compress_24(w, impl="compiled"))
    ref, comp = nm_compress_24(w, impl="reference"), nm_compress_24(w, impl="compiled")
    assert all(torch.equal(r, c) for r, c in zip(ref, comp))
    med = _pair({n: (lambda n=n: nm_compress_24(w, impl=n)) for n in ("reference", "compiled")}, a.repeats)
    return _row(f"nm_compress_24, {a.nm_size} × {a.nm_size} fp32 (outputs equal bit for bit)", med, compile_s, rec)


def _nm_rows(a, rec):
    s = torch.randn(a.nm_size, a.nm_size, generator=torch.Generator().manual_seed(0)).abs()
    rows = []
    for n, m in ((2, 4), (4, 16)):
        compile_s = _first_call(lambda: nm_mask(s, n, m, impl="compiled"))
        assert torch.equal(nm_mask(s, n, m, impl="compiled"), nm_mask(s, n, m, impl="reference"))
        med = _pair({k: (lambda i=i: nm_mask(s, n, m, impl=i)) for k, i in (("reference", "batched"), ("compiled", "compiled"))},
                    a.repeats)
        rows.append(_row(f'nm_mask {n}:{m}, {a.nm_size} × {a.nm_size} fp32 (eager: "batched"; masks equal)', med, compile_s, rec))
    return rows


def main(argv=None) -> str:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--kept", type=float, default=0.2)
    ap.add_argument("--nm-size", type=int, default=4096)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--inner", type=int, default=5)
    ap.add_argument("--only-nm", action="store_true", help="the nm_mask rows only")
    a = ap.parse_args(argv)
    rec = Rows()
    lines = [f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), median of {a.repeats} interleaved rounds "
             f"({a.inner} calls per round for the optimizer rows):",
             "| routine | eager reference | compiled | compiled / eager | first call (compiles) |",
             "| --- | --- | --- | --- | --- |"]
    if not a.only_nm:
        lines += _optimizer_rows(a, rec)
        lines.append(_training_row(a, rec))
        lines.append(_nm24_row(a, rec))
    lines += _nm_rows(a, rec)
    text = "\n".join(lines)
    print(text)
    rec.gpu("backend", '`impl="compiled"` / `"triton"` packed optimizer steps and N:M kernels', "eager reference")
    rec.write()
    return text


if __name__ == "__main__":
    main()
