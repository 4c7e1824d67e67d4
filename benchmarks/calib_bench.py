"""Calibration pruning benchmarks (issue 18), ratios from one run, median of ``--repeats``.

1. SparseGPT on one ``Linear(d, d)`` (default d = 4096) with ``tokens`` calibration rows (2048):
   ``sparsegpt_matrix(impl="blocked")`` (lazy batch updates, blocksize 128) against the anchor,
   both float32, same ``W``, same ``H = XᵀX``, damping 1% of mean diag H, 50% unstructured and 2:4;
   time and relative output error ``‖X(W − Ŵ)ᵀ‖ / ‖XWᵀ‖`` on the calibration rows. The anchor
   (``--anchor``, default ``auto``): the authors' algorithm as llmcompressor implements it
   (``llmcompressor.modifiers.pruning.sparsegpt.sgpt_sparsify.sparsify_weight``, called on an
   ``nn.Linear`` holding ``W``) when llmcompressor imports, else the straightforward unblocked OBS
   loop (``impl="reference"``: every column updates all later columns). Each row names its anchor.
   llmcompressor's unstructured mask prunes ``int(s·n) + 1`` entries per block of n (``tmp <=``
   the sorted score at ``int(s·n)``): one more per block of 128 columns than ours (``--agree``).
2. Wanda's mask (``wanda_mask``: ``|W|·‖X‖`` + per-row selection) against one pass of
   ``abs()*norm`` + ``torch.topk`` over the same weights (the bare cost of the method).
3. Only with ``--reconstruct`` (minutes at 4096²): ``reconstruct_matrix`` (ADMM at its defaults) on SparseGPT's
   50% mask against ``sparsegpt_matrix`` itself (no target: what the optimal weights of a mask cost).

Run from the repository root: ``overparam bench calib_bench [-- --size 4096 --tokens 2048 --repeats 3]``;
``-- --once blocked llmcompressor reference`` runs SparseGPT alone, one run per case and impl, each row
printed when done; ``-- --agree --size 256 --tokens 512`` compares masks and weights with llmcompressor's
in float64.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from _rows import Rows
from _timing import interleaved

from overparam.prune import reconstruct_matrix, sparsegpt_matrix, wanda_mask


def problem(d: int, tokens: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    mix = torch.randn(d, d, generator=g) / d**0.5
    X = torch.randn(tokens, d, generator=g) @ mix * torch.exp(torch.randn(d, generator=g))  # correlated, uneven inputs
    W = torch.randn(d, d, generator=g) / d**0.5
    return W, X


def layer(d: int, tokens: int, dtype=torch.float32):
    """``(W, X, H = XᵀX, ‖XWᵀ‖)`` of :func:`problem` in ``dtype``: what the SparseGPT cases share."""
    W, X = (t.to(dtype) for t in problem(d, tokens))
    return W, X, X.T @ X, (X @ W.T).norm()


def llmcompressor_sparsegpt():
    """llmcompressor's per-layer SparseGPT module (``sgpt_sparsify``), or None where it does not import."""
    try:
        from llmcompressor.modifiers.pruning.sparsegpt import sgpt_sparsify
    except ImportError:
        return None
    return sgpt_sparsify


def pick_anchor(anchor: str) -> str:
    if anchor == "auto":
        return "llmcompressor" if llmcompressor_sparsegpt() is not None else "reference"
    if anchor == "llmcompressor" and llmcompressor_sparsegpt() is None:
        raise SystemExit("calib_bench: --anchor llmcompressor, but llmcompressor does not import")
    return anchor


ANCHOR_NAMES = {"llmcompressor": "llmcompressor's SparseGPT (`sparsify_weight`, blocksize 128)",
                "reference": "the unblocked OBS loop (`impl=\"reference\"`)"}


def sparsegpt_call(impl: str, W: torch.Tensor, H: torch.Tensor, kw: dict):
    """A zero-argument callable returning the pruned weight: ours (``impl`` of ``sparsegpt_matrix``) or
    llmcompressor's ``sparsify_weight`` on an ``nn.Linear`` holding ``W`` (built here, outside the timing;
    its Hessian is a fresh copy of ``H`` per call, which it damps and inverts in place)."""
    if impl != "llmcompressor":
        return lambda: sparsegpt_matrix(W, H, impl=impl, **kw).weight
    sgpt = llmcompressor_sparsegpt()
    lin = torch.nn.Linear(W.shape[1], W.shape[0], bias=False, dtype=W.dtype).requires_grad_(False)
    lin.weight.copy_(W)
    # its N:M is "prune N of every M" (torch.topk of the N smallest scores); unstructured is prune_n = 0
    prune_n, prune_m = (kw["m"] - kw["n"], kw["m"]) if "n" in kw else (0, 0)

    def call():
        with torch.no_grad():
            return sgpt.sparsify_weight(lin, {lin: H.clone()}, kw.get("sparsity", 0.0), prune_n, prune_m, 128, 0.01,
                                        False)[1]
    return call


CASES = (("50%", {"sparsity": 0.5}), ("2:4", {"n": 2, "m": 4}))


def bench_sparsegpt(d: int, tokens: int, repeats: int, rec: Rows, anchor: str) -> list[str]:
    W, X, H, ref = layer(d, tokens)
    rows = []
    for label, kw in CASES:
        res = interleaved({impl: sparsegpt_call(impl, W, H, kw) for impl in ("blocked", anchor)}, repeats=repeats)
        t = {k: statistics.median(v[0]) for k, v in res.items()}
        e = {k: float((X @ (W - v[1][-1]).T).norm() / ref) for k, v in res.items()}
        pruned = {k: int((v[1][-1] == 0).sum()) for k, v in res.items()}
        rows.append(f"| SparseGPT {label}, {d}x{d}, {tokens} tokens, fp32, anchor {anchor} | {t['blocked']:.2f} s | "
                    f"{t[anchor]:.2f} s | {t['blocked'] / t[anchor]:.2f}x | {e['blocked']:.4f} | {e[anchor]:.4f} |")
        rec.add("prune", f"SparseGPT {label}, {d}×{d}, {tokens} tokens, fp32 (`impl=\"blocked\"`)",
                ANCHOR_NAMES[anchor], ours=t["blocked"], theirs=t[anchor], target=1.0,
                notes=f"output error {e['blocked']:.4f} vs the anchor's {e[anchor]:.4f} (the target holds at ≤ its "
                      f"error); zeros {pruned['blocked']} vs {pruned[anchor]}")
    return rows


def bench_sparsegpt_once(d: int, tokens: int, impls: list[str]) -> None:
    """One run per (case, impl), printed as soon as it finishes (the 4096² unblocked loop takes minutes
    per run: this is how the issue-size row was first measured, one run each, not a median)."""
    W, X, H, ref = layer(d, tokens)
    if "llmcompressor" in impls:
        pick_anchor("llmcompressor")  # a clear exit where it does not import
    for label, kw in CASES:
        for impl in impls:
            call = sparsegpt_call(impl, W, H, kw)
            t0 = time.perf_counter()
            Wp = call()
            t = time.perf_counter() - t0
            err = float((X @ (W - Wp).T).norm() / ref)
            print(f"| SparseGPT {label}, {d}x{d}, {tokens} tokens, fp32, impl={impl}, one run | {t:.2f} s | "
                  f"error {err:.4f} |", flush=True)


def agreement(d: int, tokens: int) -> None:
    """Ours (blocked) against llmcompressor's routine in float64 (its module precision raised for the
    call): pruned counts, mask entries that differ, the largest weight difference where both keep."""
    sgpt = llmcompressor_sparsegpt()
    if sgpt is None:
        raise SystemExit("calib_bench: --agree needs llmcompressor")
    W, X, H, ref = layer(d, tokens, torch.float64)
    precision, sgpt.SGPT_PRECISION = sgpt.SGPT_PRECISION, torch.float64
    try:
        for label, kw in CASES:
            ours, theirs = sparsegpt_call("blocked", W, H, kw)(), sparsegpt_call("llmcompressor", W, H, kw)()
            both = (ours != 0) & (theirs != 0)
            print(f"{label}, {d}x{d}, {tokens} tokens, float64: zeros {int((ours == 0).sum())} (ours) vs "
                  f"{int((theirs == 0).sum())}; mask entries differing {int(((ours == 0) != (theirs == 0)).sum())}; "
                  f"max |ΔW| where both keep {float((ours - theirs)[both].abs().max()):.2e}; errors "
                  f"{float((X @ (W - ours).T).norm() / ref):.6f} vs {float((X @ (W - theirs).T).norm() / ref):.6f}")
    finally:
        sgpt.SGPT_PRECISION = precision


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


def bench_reconstruct(d: int, tokens: int, repeats: int, rec: Rows) -> list[str]:
    W, X, H, ref = layer(d, tokens)
    mask = sparsegpt_matrix(W, H, 0.5).mask
    res = interleaved({"admm": lambda: reconstruct_matrix(W, H, mask).weight,
                       "sparsegpt": lambda: sparsegpt_matrix(W, H, 0.5).weight}, repeats=repeats)
    t = {k: statistics.median(v[0]) for k, v in res.items()}
    e = {k: float((X @ (W - v[1][-1]).T).norm() / ref) for k, v in res.items()}
    rec.add("prune", f"reconstruct_matrix (ADMM) on SparseGPT's 50% mask, {d}×{d}, {tokens} tokens, fp32",
            "`sparsegpt_matrix` (blocked) on the same layer", ours=t["admm"], theirs=t["sparsegpt"],
            notes=f"output error {e['admm']:.4f} vs SparseGPT's {e['sparsegpt']:.4f}; no target (a cost, not a claim)")
    return [f"| reconstruct (ADMM) on SparseGPT's 50% mask, {d}x{d} | {t['admm']:.2f} s | {t['sparsegpt']:.2f} s | "
            f"{t['admm'] / t['sparsegpt']:.2f}x | {e['admm']:.4f} | {e['sparsegpt']:.4f} |"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=4096)
    ap.add_argument("--tokens", type=int, default=2048)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--anchor", choices=("auto", "llmcompressor", "reference"), default="auto",
                    help="SparseGPT anchor: llmcompressor's routine, our unblocked loop, or auto (llmcompressor "
                         "when it imports)")
    ap.add_argument("--once", nargs="+", default=None, metavar="IMPL",
                    choices=("blocked", "reference", "llmcompressor"),
                    help="SparseGPT only, one run per case and impl (e.g. --once blocked llmcompressor reference)")
    ap.add_argument("--reconstruct", action="store_true",
                    help="also time reconstruct_matrix (ADMM) against sparsegpt_matrix (minutes at 4096)")
    ap.add_argument("--agree", action="store_true", help="only compare masks and weights with llmcompressor's (fp64)")
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s)")
    if a.agree:
        agreement(a.size, a.tokens)
        return
    if a.once:
        bench_sparsegpt_once(a.size, a.tokens, a.once)
        return
    anchor = pick_anchor(a.anchor)
    rec = Rows(anchors=("llmcompressor",) if anchor == "llmcompressor" else ())
    print("| case | overparam | anchor | ratio | error (ours) | error (anchor) |")
    print("| --- | --- | --- | --- | --- | --- |")
    for line in bench_wanda(a.size, a.tokens, a.repeats, rec) + bench_sparsegpt(a.size, a.tokens, a.repeats, rec,
                                                                                  anchor):
        print(line, flush=True)
    if a.reconstruct:
        for line in bench_reconstruct(a.size, a.tokens, a.repeats, rec):
            print(line, flush=True)
    rec.write()


if __name__ == "__main__":
    main()
