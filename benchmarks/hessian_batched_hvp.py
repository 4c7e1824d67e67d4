"""Does a block of HVPs in one call cost less per vector than sequential products on this CPU?

Sequential ``autograd.grad(g, θ, v_i, retain_graph=True)`` on the kept double-backward graph
against one ``autograd.grad(g, θ, V, is_grads_batched=True)`` (vmap over the backward) for a
block of ``b`` vectors, alternated in one process (medians of 4 rounds), and the jvp backend's
``vmap``-ed forward-over-reverse ``matmat`` with ``--jvp``.

    PYTHONPATH=. /work/venv/bin/python benchmarks/hessian_batched_hvp.py --model cnn --batch 64 --block 16 --threads 1
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import overparam.hessian as oh
from overparam.backend import vec
from overparam.backend.random import gaussian, make_generator
from overparam.testing import tanh_mlp

F = torch.nn.functional


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", choices=("cnn", "mlp"), default="cnn")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--block", type=int, default=16)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--jvp", action="store_true", help="also time the jvp backend's vmapped matmat")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    g = make_generator(0)
    if args.model == "cnn":
        from benchmarks.hessian_bench import cnn
        model, x = cnn(), gaussian((args.batch, 3, 32, 32), generator=g)
    else:
        model, x = tanh_mlp([784, 300, 100, 10], generator=1).float(), gaussian((args.batch, 784), generator=g)
    y = torch.randint(0, 10, (args.batch,), generator=g)
    H = oh.hessian(model, F.cross_entropy, (x, y), check=False)
    leaves, gr = H._graph
    b = args.block
    V = vec.unflatten(gaussian((b, H.n), generator=1), H.like)
    fns = {
        "sequential": lambda: [torch.autograd.grad(gr, leaves, tuple(t[i] for t in V), retain_graph=True) for i in range(b)],
        "is_grads_batched": lambda: torch.autograd.grad(gr, leaves, V, retain_graph=True, is_grads_batched=True),
    }
    if args.jvp:
        Hj = oh.hessian(model, F.cross_entropy, (x, y), backend="jvp", block=b, check=False)
        fns["jvp vmap"] = lambda: Hj._mm(V)
    times = {k: [] for k in fns}
    for f in fns.values():  # warm-up
        f()
    for _ in range(args.rounds):
        for k, f in fns.items():
            t = time.perf_counter()
            f()
            times[k].append(time.perf_counter() - t)
    base = statistics.median(times["sequential"]) / b
    print(f"{args.model} n={H.n} batch={args.batch} threads={args.threads} block={b}")
    for k, ts in times.items():
        per = statistics.median(ts) / b
        print(f"  {k:17s} {per * 1e3:8.2f} ms per vector  ({per / base:.2f}x sequential)")


if __name__ == "__main__":
    main()
