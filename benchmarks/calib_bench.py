"""Calibration pruning benchmarks (issue 18), ratios from one run, median of ``--repeats``.

1. SparseGPT on one ``Linear(d, d)`` (default d = 4096) with ``tokens`` calibration rows (2048):
   ``sparsegpt_matrix(impl="blocked")`` (lazy batch updates, blocksize 128) against the
   straightforward unblocked OBS loop (``impl="reference"``: every column updates all later
   columns), both float32, 50% unstructured and 2:4; time and relative output error
   ``‖X(W − Ŵ)ᵀ‖ / ‖XWᵀ‖`` on the calibration rows. (llmcompressor is not installed here: it
   pins its own torch.)
2. Wanda's mask (``wanda_mask``: ``|W|·‖X‖`` + per-row selection) against one pass of
   ``abs()*norm`` + ``torch.topk`` over the same weights (the bare cost of the method).

Run from the repository root: ``overparam bench calib_bench [-- --size 4096 --tokens 2048 --repeats 3]``;
``-- --once blocked reference`` runs SparseGPT alone, one run per case and impl, each row printed when done.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from _rows import Rows
from _timing import interleaved

from overparam.prune import sparsegpt_matrix, wanda_mask


def problem(d: int, tokens: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    mix = torch.randn(d, d, generator=g) / d**0.5
    X = torch.randn(tokens, d, generator=g) @ mix * torch.exp(torch.randn(d, generator=g))  # correlated, uneven inputs
    W = torch.randn(d, d, generator=g) / d**0.5
    return W, X


def bench_sparsegpt(d: int, tokens: int, repeats: int, rec: Rows) -> list[str]:
    W, X = problem(d, tokens)
    H = X.T @ X
    ref = (X @ W.T).norm()
    rows = []
    for label, kw in (("50%", {"sparsity": 0.5}), ("2:4", {"n": 2, "m": 4})):
        res = interleaved({impl: (lambda impl=impl: sparsegpt_matrix(W, H, impl=impl, **kw))
                           for impl in ("blocked", "reference")}, repeats=repeats)
        t = {k: statistics.median(v[0]) for k, v in res.items()}
        e = {k: float((X @ (W - v[1][-1].weight).T).norm() / ref) for k, v in res.items()}
        rows.append(f"| SparseGPT {label}, {d}x{d}, {tokens} tokens, fp32 | {t['blocked']:.2f} s | "
                    f"{t['reference']:.2f} s | {t['blocked'] / t['reference']:.2f}x | {e['blocked']:.4f} | "
                    f"{e['reference']:.4f} |")
        rec.add("prune", f"SparseGPT {label}, {d}×{d}, {tokens} tokens, fp32 (`impl=\"blocked\"`)",
                "the unblocked OBS loop (`impl=\"reference\"`)", ours=t["blocked"], theirs=t["reference"],
                target=1.0, notes=f"output error {e['blocked']:.4f} vs the loop's {e['reference']:.4f} "
                                  "(the target holds at ≤ its error)")
    return rows


def bench_sparsegpt_once(d: int, tokens: int, impls: list[str]) -> None:
    """One run per (case, impl), printed as soon as it finishes (the 4096² anchor takes minutes
    per run: this is how the issue-size row was measured, one run each, not a median)."""
    W, X = problem(d, tokens)
    H = X.T @ X
    ref = (X @ W.T).norm()
    for label, kw in (("50%", {"sparsity": 0.5}), ("2:4", {"n": 2, "m": 4})):
        for impl in impls:
            t0 = time.perf_counter()
            res = sparsegpt_matrix(W, H, impl=impl, **kw)
            t = time.perf_counter() - t0
            err = float((X @ (W - res.weight).T).norm() / ref)
            print(f"| SparseGPT {label}, {d}x{d}, {tokens} tokens, fp32, impl={impl}, one run | {t:.2f} s | "
                  f"error {err:.4f} |", flush=True)


def bench_wanda(d: int, tokens: int, repeats: int, rec: Rows) -> list[str]:
    W, X = problem(d, tokens)
    norms = X.norm(dim=0)
    k = d // 2

    def anchor():
        s = W.abs() * norms
        idx = torch.topk(s, k, dim=1, largest=False).indices
        return torch.ones_like(W, dtype=torch.bool).scatter_(1, idx, False)

    res = interleaved({"ours": lambda: wanda_mask(W, norms, 0.5), "anchor": anchor}, repeats=repeats)
    t = {k: statistics.median(v[0]) for k, v in res.items()}
    same = torch.equal(res["ours"][1][-1].sum(1), res["anchor"][1][-1].sum(1))
    rec.add("prune", f"Wanda 50% mask (`wanda_mask`), {d}×{d}", "`abs()*norm` + `torch.topk`", ours=t["ours"],
            theirs=t["anchor"], target=1.1, notes=f"same per-row counts: {same}")
    return [f"| Wanda 50% mask, {d}x{d} | {t['ours'] * 1e3:.1f} ms | {t['anchor'] * 1e3:.1f} ms | "
            f"{t['ours'] / t['anchor']:.2f}x | same counts: {same} | |"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=4096)
    ap.add_argument("--tokens", type=int, default=2048)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--once", nargs="+", default=None, metavar="IMPL",
                    help="SparseGPT only, one run per case and impl (e.g. --once blocked reference)")
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s)")
    if a.once:
        bench_sparsegpt_once(a.size, a.tokens, a.once)
        return
    rec = Rows()
    print("| case | overparam | anchor | ratio | error (ours) | error (anchor) |")
    print("| --- | --- | --- | --- | --- | --- |")
    for line in bench_wanda(a.size, a.tokens, a.repeats, rec) + bench_sparsegpt(a.size, a.tokens, a.repeats, rec):
        print(line, flush=True)
    rec.write()


if __name__ == "__main__":
    main()
