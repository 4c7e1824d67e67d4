"""Does a block of HVPs in one call cost less per vector than sequential products on this CPU?

Sequential ``autograd.grad(g, θ, v_i, retain_graph=True)`` on the kept double-backward graph
against one ``autograd.grad(g, θ, V, is_grads_batched=True)`` (vmap over the backward) for a
block of ``b`` vectors, alternated in one process (medians of 4 rounds), and the jvp backend's
``vmap``-ed forward-over-reverse ``matmat`` with ``--jvp``. Run from the repository root:

    overparam bench hessian_batched_hvp -- --model cnn --batch 64 --block 16 --threads 1
"""

from __future__ import annotations

import argparse
import statistics

import torch
from _timing import interleaved
from hessian_bench import cnn
from torch import nn

import overparam.hessian as oh
from overparam.backend import vec
from overparam.backend.random import construction_generator, gaussian
from overparam.experiments import harness

F = torch.nn.functional


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", choices=("cnn", "mlp"), default="cnn")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--block", type=int, default=16)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--jvp", action="store_true", help="also time the jvp backend's vmapped matmat")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    g = construction_generator(0)
    if args.model == "cnn":
        model, x = cnn(), gaussian((args.batch, 3, 32, 32), generator=g)
    else:
        model = harness.mlp([784, 300, 100, 10], activation=nn.Tanh, generator=1, dtype=torch.float64).float()
        x = gaussian((args.batch, 784), generator=g)
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
    interleaved(fns, repeats=1)  # warm-up
    times = {k: t for k, (t, _) in interleaved(fns, repeats=args.rounds).items()}
    base = statistics.median(times["sequential"]) / b
    print(f"{args.model} n={H.n} batch={args.batch} threads={args.threads} block={b}")
    for k, ts in times.items():
        per = statistics.median(ts) / b
        print(f"  {k:17s} {per * 1e3:8.2f} ms per vector  ({per / base:.2f}x sequential)")


if __name__ == "__main__":
    main()
