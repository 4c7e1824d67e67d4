"""Pruning benchmarks: overparam.prune against torch's own pruning utilities (same run).

1. global 80% magnitude mask (+ applying it) on an MLP with 8.4M weights vs
   ``torch.nn.utils.prune.global_unstructured(L1Unstructured)``;
2. 2:4 masks (+ applying them) on 8.4M Linear weights vs ``torch.ao.pruning.WeightNormSparsifier``
   ``prepare`` + ``step`` + ``squash_mask``;
3. one training step (forward, backward, optimizer step) with ``masked(...)`` vs without, SGD
   with momentum, AdamW (default foreach path) and AdamW(fused=True) (steps of the two models
   interleaved; median over 3 × 6 steps each).

Each timing is the median of ``--repeats`` runs; the ratio is ours / anchor.
Run from the repository root: ``overparam bench prune [-- --repeats 3 --threads N]``.
"""

from __future__ import annotations

import argparse
import statistics

import torch
from _rows import Rows
from _timing import interleaved, median_time
from torch import nn
from torch.nn.utils import prune as tprune

import overparam as op
from overparam.experiments import harness


def mlp(width: int = 2048, seed: int = 0) -> nn.Sequential:
    """Two ``Linear(width, width)`` layers (no activation), weights and biases ``N(0, 1/width)``."""
    return harness.mlp([width] * 3, activation=None, bias_std=width**-0.5, generator=seed)


def bench_global(repeats: int) -> tuple[float, float]:
    def ours(net):
        op.prune.apply_masks_(net, op.prune.magnitude(net, 0.8, scope="global"))

    def anchor(net):
        params = [(m, "weight") for m in net if isinstance(m, nn.Linear)]
        tprune.global_unstructured(params, pruning_method=tprune.L1Unstructured, amount=0.8)

    return (median_time(ours, setup=mlp, repeats=repeats, warmup=0),
            median_time(anchor, setup=mlp, repeats=repeats, warmup=0))


def bench_24(repeats: int) -> tuple[float, float]:
    from torch.ao.pruning import WeightNormSparsifier

    def ours(net):
        op.prune.apply_masks_(net, op.prune.nm_masks(net, 2, 4))

    def anchor(net):
        sp = WeightNormSparsifier(sparsity_level=1.0, sparse_block_shape=(1, 4), zeros_per_block=2)
        sp.prepare(net, [{"tensor_fqn": f"{i}.weight"} for i in range(len(net))])
        sp.step()
        sp.squash_mask()

    return (median_time(ours, setup=mlp, repeats=repeats, warmup=0),
            median_time(anchor, setup=mlp, repeats=repeats, warmup=0))


def bench_step(opt_name: str, repeats: int, steps: int = 6) -> tuple[float, float]:
    """Median step time of a masked and an unmasked model, their steps interleaved so that
    the load of a shared machine falls on both alike."""
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(64, 2048, generator=g), torch.randn(64, 2048, generator=g)
    make = {"sgd": lambda ps: torch.optim.SGD(ps, lr=1e-3, momentum=0.9, weight_decay=1e-4),
            "adamw": lambda ps: torch.optim.AdamW(ps, lr=1e-4, weight_decay=1e-2),
            "adamw-fused": lambda ps: torch.optim.AdamW(ps, lr=1e-4, weight_decay=1e-2, fused=True)}[opt_name]
    nets = {flag: mlp() for flag in (True, False)}
    opts = {flag: make(net.parameters()) for flag, net in nets.items()}
    handle = op.prune.masked(nets[True], op.prune.magnitude(nets[True], 0.8), optimizer=opts[True])

    def step(flag: bool) -> None:
        opts[flag].zero_grad()
        nn.functional.mse_loss(nets[flag](x), y).backward()
        opts[flag].step()

    for _ in range(2):
        step(True), step(False)  # warm-up: optimizer state allocated
    times = {True: [], False: []}
    for i in range(repeats * steps):
        order = (True, False) if i % 2 else (False, True)
        for flag, (t, _) in interleaved({f: (lambda f=f: step(f)) for f in order}, repeats=1).items():
            times[flag] += t
    handle.remove()
    return statistics.median(times[True]), statistics.median(times[False])


def sqrt_probe(n: int = 8_400_000, pruned: float = 0.8) -> None:
    """Why a masked foreach-AdamW step is slower: elementwise kernels on a tensor whose pruned
    entries are exactly 0 (as a masked ``exp_avg_sq`` is) vs tiny non-zeros vs none."""
    g = torch.Generator().manual_seed(0)
    base = torch.rand(n, generator=g) * 1e-3 + 1e-6
    where = torch.rand(n, generator=g) < pruned
    ops = {"sqrt": torch.sqrt, "rsqrt": torch.rsqrt, "_foreach_sqrt": lambda t: torch._foreach_sqrt([t]),
           "div": lambda t: t / 0.3, "addcdiv": lambda t: torch.addcdiv(t, t, t + 1e-8)}
    fills = {"none": None, "0.0": 0.0, "-0.0": -0.0, "1e-30": 1e-30, "1e-20": 1e-20, "1e-40 (denormal)": 1e-40}
    print(f"| op ({n / 1e6:.1f}M floats, {pruned:.0%} filled, {torch.get_num_threads()} threads) | "
          + " | ".join(fills) + " |")
    print("|---" * (len(fills) + 1) + "|")
    for name, fn in ops.items():
        row = []
        for v in fills.values():
            t = base.clone()
            if v is not None:
                t[where] = v
            row.append(median_time(lambda t=t: fn(t), repeats=7, warmup=0) * 1e3)
        print(f"| {name} | " + " | ".join(f"{x:.1f} ms" for x in row) + " |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--sqrt-probe", action="store_true", help="only the sqrt-on-zeros microbenchmark")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.sqrt_probe:
        sqrt_probe()
        return
    rec = Rows()
    n = sum(p.numel() for m in mlp() for p in [m.weight])
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {n / 1e6:.2f}M weights, median of {args.repeats}")
    rows = []
    o, a = bench_global(args.repeats)
    rows.append(("global 80% magnitude mask + apply", "torch.nn.utils.prune.global_unstructured", o, a, 0.25))
    o, a = bench_24(args.repeats)
    rows.append(("2:4 masks + apply", "torch.ao WeightNormSparsifier prepare+step+squash", o, a, 0.5))
    for name in ("sgd", "adamw", "adamw-fused"):
        o, a = bench_step(name, args.repeats)
        rows.append((f"training step, {name}, masked", f"same step unmasked ({name})", o, a, 1.15))
    print("| task | anchor | ours (s) | anchor (s) | ratio | target |")
    print("|---|---|---|---|---|---|")
    for task, anchor, o, a, target in rows:
        print(f"| {task} | {anchor} | {o:.4f} | {a:.4f} | {o / a:.3f} | <= {target} {'ok' if o / a <= target else 'MISSED'} |")
        rec.add("prune", f"{task}, {n / 1e6:.1f}M weights", anchor, ours=o, theirs=a, target=target,
                notes=f"{torch.get_num_threads()} thread(s)")
    rec.write()


if __name__ == "__main__":
    main()
