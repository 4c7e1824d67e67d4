"""Benchmark overparam's empirical / Monte-Carlo Fisher (and GGN) products against curvlinops.

The ~282k-parameter CNN of ``hessian_bench.py`` (CIFAR-shaped input 3x32x32, fixed random batch
of 256, float32, cross-entropy) on the CPU. For each operator, in one process and interleaved
rounds (median of ``--repeats``): the construction, one product with a flat vector, and
construction + 10 products (a small Lanczos or Hutchinson run). curvlinops recomputes the
forward pass in every product (and its MC Fisher redraws its samples per product); overparam
keeps one forward graph per batch, built at construction.

Run from the repository root, in an environment with torch installed first, then
curvlinops-for-pytorch:
    PYTHONPATH=. python benchmarks/fisher_bench.py [--repeats 3]
It prints a markdown table.
"""

from __future__ import annotations

import argparse
import os
import statistics

import torch
from _rows import Rows
from _timing import interleaved
from hessian_bench import cnn
from torch import nn

import overparam.hessian as oh
from overparam.backend.random import construction_generator, gaussian


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--mc-samples", type=int, default=1)
    args = ap.parse_args()
    import curvlinops as cl

    rec = Rows(anchors=("curvlinops",))
    load0 = os.getloadavg()[0]
    g = construction_generator(0)
    model = cnn()
    x = gaussian((args.batch, 3, 32, 32), generator=g)
    y = torch.randint(0, 10, (args.batch,), generator=g)
    params = [p for p in model.parameters()]
    n = sum(p.numel() for p in params)
    v = gaussian((n,), generator=g)
    loss, data, S = nn.CrossEntropyLoss(), [(x, y)], args.mc_samples
    print(f"CNN with {n} parameters, batch {args.batch}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, mc_samples={S}", flush=True)

    cases = {
        "empirical Fisher": (lambda: oh.empirical_fisher(model, loss, data, check=False),
                             lambda: cl.EFLinearOperator(model, loss, params, data, check_deterministic=False)),
        "MC Fisher": (lambda: oh.mc_fisher(model, loss, data, mc_samples=S, generator=0, check=False),
                      lambda: cl.FisherMCLinearOperator(model, loss, params, data, mc_samples=S,
                                                        check_deterministic=False)),
        "GGN": (lambda: oh.ggn(model, loss, data, check=False),
                lambda: cl.GGNLinearOperator(model, loss, params, data, check_deterministic=False)),
    }
    rows = []
    for name, (ours, theirs) in cases.items():
        A, B = ours(), theirs()
        err = float((A @ v - B @ v).norm() / (B @ v).norm()) if name != "MC Fisher" else float("nan")
        fns = {"ours build": ours, "theirs build": theirs, "ours mv": lambda: A @ v, "theirs mv": lambda: B @ v}
        t = {k: statistics.median(ts) for k, (ts, _) in interleaved(fns, repeats=args.repeats).items()}
        for what, a, b in (("one product", t["ours mv"], t["theirs mv"]),
                           ("construction + 10 products", t["ours build"] + 10 * t["ours mv"],
                            t["theirs build"] + 10 * t["theirs mv"])):
            rows.append((f"{name}: {what}", a, b, err))
        print(rows[-2], rows[-1], flush=True)
    print(f"\nload average {load0:.1f} -> {os.getloadavg()[0]:.1f}\n")
    print("| case | overparam (s) | curvlinops (s) | ratio | rel. diff of A v |")
    print("| --- | --- | --- | --- | --- |")
    for case, a, b, err in rows:
        diff = "n/a (different samples)" if err != err else f"{err:.1e}"
        print(f"| {case} | {a:.3f} | {b:.3f} | {a / b:.2f}× | {diff} |")
        name = case.split(":")[0]
        anchor = {"empirical Fisher": "EFLinearOperator", "MC Fisher": "FisherMCLinearOperator",
                  "GGN": "GGNLinearOperator"}[name]
        rec.add("hessian", f"{case}, {n / 1e3:.0f}k-parameter CNN, batch {args.batch}, fp32", f"curvlinops `{anchor}`",
                ours=a, theirs=b, target=1.0 if name != "GGN" and case.endswith("one product") else None,
                notes=f"rel. diff of A v: {diff}")
    rec.write()


if __name__ == "__main__":
    main()
