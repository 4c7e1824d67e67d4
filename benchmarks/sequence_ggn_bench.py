"""Benchmark the sequence GGN-vector product (issue 14) against an eager flatten-then-GGN.

A small GPT-2 (transformers; 2 layers, width 64, vocabulary V = 8192, context 128, float32,
eval mode) on a batch of 8 random token sequences whose labels hold 10% of ``-100``:

* **overparam**: ``op.hessian.ggn(model, "cross_entropy", (ids, labels))`` on the ``(B, T, V)``
  logits (one kept forward graph; each product a double-vjp ``Jv`` with ``u`` one expanded zero,
  the softmax Hessian ``backend.softmax_ce.softmax_ce_hvp`` (its ``"auto"`` choice: the reference
  on CPU) over row chunks in place, one vjp);
* **eager**: what one writes by hand with ``torch.func``: the logits flattened to ``(B·T, V)``,
  ignored rows removed, then per product ``jvp`` (forward-mode ``Jv``), the softmax Hessian and
  ``vjp`` (``Jᵀw``), i.e. two forward passes per product and no kept graph.

Each variant runs in its own process (``--variant``), so its peak resident memory is its own:
the peak (``VmHWM`` after resetting it through ``/proc/self/clear_refs``) minus the resident
memory before the operator is built, over construction plus ``--products`` products. Time:
median seconds of one product (``--repeats``), and construction + 10 products.

Run from the repository root with transformers installed:
    PYTHONPATH=. python benchmarks/sequence_ggn_bench.py
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

import torch
import torch.nn.functional as F
from _rows import Rows

import overparam.hessian as oh
from overparam.backend.random import construction_generator, gaussian


def _mem_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def _case(vocab: int, width: int, context: int, batch: int):
    import transformers

    torch.manual_seed(0)
    cfg = transformers.GPT2Config(vocab_size=vocab, n_positions=context, n_embd=width, n_layer=2, n_head=2,
                                  resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    model = transformers.GPT2LMHeadModel(cfg).eval()
    g = construction_generator(0)
    ids = torch.randint(0, vocab, (batch, context), generator=g)
    labels = ids.clone()
    labels[torch.rand(ids.shape, generator=g) < 0.1] = -100
    return model, ids, labels


def _eager(model, ids, labels):
    """``v -> Jᵀ ∇²ℓ J v`` by jvp and vjp per product, on the flattened kept rows (token mean)."""
    names = [k for k, _ in model.named_parameters()]
    theta = tuple(p.detach() for _, p in model.named_parameters())
    keep = labels.reshape(-1) != -100
    count = int(keep.sum())

    def logits(*th):
        from torch.nn.attention import SDPBackend, sdpa_kernel
        with sdpa_kernel(SDPBackend.MATH):
            out = torch.func.functional_call(model, dict(zip(names, th)), (ids,)).logits
        return out.reshape(-1, out.shape[-1])[keep]

    def mv(v):
        f, jv = torch.func.jvp(logits, theta, tuple(v))
        p = torch.softmax(f.detach(), -1)
        w = (p * jv - p * (p * jv).sum(-1, keepdim=True)) / count
        _, vjp_fn = torch.func.vjp(logits, *theta)
        return vjp_fn(w)

    return theta, mv


def run_variant(args) -> dict:
    torch.set_num_threads(args.threads)
    model, ids, labels = _case(args.vocab, args.width, args.context, args.batch)
    like = [p for p in model.parameters()]
    v = tuple(gaussian(p.shape, generator=i) for i, p in enumerate(like))
    base = _mem_kb("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")                                   # reset the peak (VmHWM) to the current RSS
    t0 = time.perf_counter()
    if args.variant == "ours":
        G = oh.ggn(model, "cross_entropy", (ids, labels), check=False)
        mv = G.matvec
    else:
        _, mv = _eager(model, ids, labels)
    build = time.perf_counter() - t0
    times, out = [], None
    for _ in range(args.products):
        t0 = time.perf_counter()
        out = mv(v)
        times.append(time.perf_counter() - t0)
    peak = _mem_kb("VmHWM") - base
    norm = float(torch.sqrt(sum((t.double() ** 2).sum() for t in out)))
    return {"build_s": build, "mv_s": statistics.median(times), "peak_mb": peak / 1024, "norm": norm}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--variant", choices=("ours", "eager"))
    ap.add_argument("--vocab", type=int, default=8192)
    ap.add_argument("--width", type=int, default=64)
    ap.add_argument("--context", type=int, default=128)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--products", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=3, help="processes per variant, alternating (median)")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    if args.variant:
        print(json.dumps(run_variant(args)))
        return
    rec = Rows(anchors=("transformers",))
    res: dict[str, list[dict]] = {"ours": [], "eager": []}
    for _ in range(args.repeats):
        for variant in res:
            cmd = [sys.executable, __file__, "--variant", variant] + [
                f"--{k}={getattr(args, k)}" for k in ("vocab", "width", "context", "batch", "products", "threads")]
            line = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]
            res[variant].append(json.loads(line))
    med = {k: {m: statistics.median(r[m] for r in rs) for m in rs[0]} for k, rs in res.items()}
    o, e = med["ours"], med["eager"]
    print(f"GPT-2 2 layers width {args.width}, V={args.vocab}, batch {args.batch}x{args.context}, "
          f"torch {torch.__version__}, {args.threads} thread(s); medians of {args.repeats} processes each\n")
    print("| measurement | overparam | eager flatten-then-GGN | ratio |")
    print("| --- | --- | --- | --- |")
    print(f"| one product (s) | {o['mv_s']:.3f} | {e['mv_s']:.3f} | {o['mv_s'] / e['mv_s']:.2f}× |")
    c_o, c_e = o["build_s"] + 10 * o["mv_s"], e["build_s"] + 10 * e["mv_s"]
    print(f"| construction + 10 products (s) | {c_o:.3f} | {c_e:.3f} | {c_o / c_e:.2f}× |")
    print(f"| peak memory over construction + {args.products} products (MB) | {o['peak_mb']:.0f} | "
          f"{e['peak_mb']:.0f} | {o['peak_mb'] / e['peak_mb']:.2f}× |")
    print(f"\n‖Gv‖: overparam {o['norm']:.6e}, eager {e['norm']:.6e} (same operator, float32)")
    case = f"sequence GGN-vector product, GPT-2 V = {args.vocab}, {args.batch} × {args.context} tokens"
    anchor = "eager flatten-then-GGN (`torch.func` jvp + vjp)"
    agree = f"‖Gv‖ {o['norm']:.6e} vs {e['norm']:.6e}; medians of {args.repeats} processes"
    rec.add("hessian", f"{case}: one product", anchor, ours=o["mv_s"], theirs=e["mv_s"], target=1.0, notes=agree)
    rec.add("hessian", f"{case}: construction + 10 products", anchor, ours=c_o, theirs=c_e)
    rec.add("hessian", f"{case}: peak memory over construction + {args.products} products", anchor, ours=o["peak_mb"],
            theirs=e["peak_mb"], unit="MB", target=0.6)
    rec.write()


if __name__ == "__main__":
    main()
