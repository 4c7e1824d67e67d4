"""Data-parallel curvature on 2 gloo ranks vs one process (issue 19).

An MLP (float32, MSE) on N samples. One process with one thread on all N samples is the anchor;
then 2 spawned gloo ranks with one thread each, N/2 samples each, run the same products through
:func:`overparam.hessian.distributed_hessian`. Timed: one Hessian-vector product (operator built,
kept double-backward graph) and a top-5 Lanczos (``which="LA"``, ``tol=1e-6``, seed 0). The
communication share is the time of the per-product overhead (the probe fingerprint and the one
all-reduce of the n-vector that also carries the probe check), timed alone on the ranks, times the number of products, over
the measured total. Every timing is the median of 3 runs.

Run from the repository root:
    python benchmarks/distributed_bench.py [--width 256] [--samples 4096] [--repeats 3]
It prints a markdown table (also written to benchmarks/results/distributed.md unless --no-write).
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import socket
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's overparam, in the spawned ranks too

import torch  # noqa: E402
import torch.distributed as tdist
import torch.multiprocessing as mp
from _timing import interleaved, median_time, timed

import overparam.hessian as oh
from overparam import prune
from overparam.backend.random import fan_in_normal_

mse = torch.nn.functional.mse_loss


def problem(width: int, samples: int):
    net = torch.nn.Sequential(torch.nn.Linear(32, width), torch.nn.Tanh(), torch.nn.Linear(width, width),
                              torch.nn.Tanh(), torch.nn.Linear(width, 10))
    fan_in_normal_(net, generator=0)
    g = torch.Generator().manual_seed(1)
    return net, torch.randn(samples, 32, generator=g), torch.randn(samples, 10, generator=g)


def measure(H, repeats: int) -> dict:
    v = torch.randn(H.n, generator=torch.Generator().manual_seed(2))
    hvp = median_time(lambda: H @ v, repeats=repeats)
    lz, eig = timed(lambda: oh.lanczos(H, k=5, which="LA", tol=1e-6, generator=0), repeats=repeats)
    return {"hvp": hvp, "lanczos": lz, "matvecs": eig.n_matvecs, "values": eig.values.tolist(), "n": H.n}


def fsdp_steps(args, half, steps: int = 5, sparsity: float = 0.8) -> dict:
    """Seconds per FSDP2 training step (forward, backward, AdamW) on this rank's half: unmasked,
    masked (``prune.masked``, dense state) and packed (``prune.PackedAdamW``), interleaved rounds."""
    from torch.distributed.fsdp import fully_shard

    def build():
        net, x, y = problem(args.width, args.samples)
        for m in net:
            if isinstance(m, torch.nn.Linear):
                fully_shard(m)
        return fully_shard(net), x[half], y[half]

    runs = {}
    for kind in ("unmasked", "masked", "packed"):
        net, x, y = build()
        masks = prune.global_magnitude(net, sparsity)
        if kind == "packed":
            opt = prune.PackedAdamW(net.named_parameters(), masks, lr=1e-3)
        else:
            opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
        if kind == "masked":
            prune.masked(net, masks, optimizer=opt).__enter__()  # stays on for the benchmark's lifetime

        def run(net=net, x=x, y=y, opt=opt):
            for _ in range(steps):
                opt.zero_grad()
                mse(net(x), y).backward()
                opt.step()

        run()  # warm-up (lazy state)
        runs[kind] = run
    times = interleaved(runs, repeats=args.repeats)
    return {k: sorted(t)[len(t) // 2] / steps for k, (t, _) in times.items()}


def _rank(rank: int, port: int, args, q) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    tdist.init_process_group("gloo", rank=rank, world_size=2, timeout=datetime.timedelta(seconds=120))
    net, x, y = problem(args.width, args.samples)
    half = slice(0, args.samples // 2) if rank == 0 else slice(args.samples // 2, None)
    H = oh.distributed_hessian(net, mse, (x[half], y[half]))
    out = measure(H, args.repeats)
    flat = torch.randn(H.n, generator=torch.Generator().manual_seed(3))

    def comm():  # the distributed product with an identity local product: fingerprint, all-reduce, check, copy
        H._product((flat,), lambda V: (V[0].clone(),))

    out["comm"] = median_time(comm, repeats=args.repeats, inner=20)
    out["fsdp"] = fsdp_steps(args, half)
    q.put((rank, out))
    tdist.destroy_process_group()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--width", type=int, default=256)
    ap.add_argument("--samples", type=int, default=4096)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    procs = [ctx.Process(target=_rank, args=(r, port, args, q)) for r in range(2)]
    for p in procs:
        p.start()
    ranks = {}
    while len(ranks) < 2:
        try:
            rank, out = q.get(timeout=5)
            ranks[rank] = out
        except Exception:  # noqa: BLE001 - queue.Empty: stop if a rank died instead of waiting forever
            if any(p.exitcode not in (None, 0) for p in procs):
                for p in procs:
                    p.kill()
                sys.exit("a rank failed (see its traceback above)")
    for p in procs:
        p.join()
    torch.set_num_threads(1)
    net, x, y = problem(args.width, args.samples)
    one = measure(oh.hessian(net, mse, (x, y)), args.repeats)
    two = ranks[0]
    gap = max(abs(a - b) / abs(b) for a, b in zip(two["values"], one["values"]))
    lines = [f"n = {one['n']} parameters, N = {args.samples} samples, float32, torch {torch.__version__}, "
             f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, load average "
             f"{os.getloadavg()[0]:.1f}; top-5 relative gap 2 ranks vs 1: {gap:.1e}", "",
             "| case | 1 process, N samples (s) | 2 ranks, N/2 each (s) | ratio | communication share |",
             "| --- | ---: | ---: | ---: | ---: |"]
    for key, label, products in (("hvp", "one HVP", 1), ("lanczos", "top-5 Lanczos", two["matvecs"])):
        share = two["comm"] * products / two[key]
        lines.append(f"| {label} ({products} products) | {one[key]:.4f} | {two[key]:.4f} | "
                     f"{two[key] / one[key]:.2f}x | {100 * share:.1f}% |")
    f = two["fsdp"]
    lines += ["", "FSDP2 training step (forward, backward, AdamW) on 2 ranks, N/2 each, 80% global magnitude masks:", "",
              "| step | seconds | vs unmasked |", "| --- | ---: | ---: |"]
    for k in ("unmasked", "masked", "packed"):
        lines.append(f"| {k} | {f[k]:.4f} | {f[k] / f['unmasked']:.2f}x |")
    text = "\n".join(lines)
    print(text)
    if not args.no_write:
        out = Path(__file__).parent / "results" / "distributed.md"
        out.write_text(text + "\n")
        print(f"written to {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
