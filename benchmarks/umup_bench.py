"""Benchmark u-μP's unit-scaled ops (issue 13): forward + backward of a 12-layer width-1024 MLP on CPU.

Three variants of the same network (Linear + GELU layers, a read-out, cross-entropy), timed in
interleaved rounds of one run (median of 3 rounds, each ``--inner`` forward+backward passes):

* ``plain``: ``nn.Linear`` + ``nn.GELU`` + ``F.cross_entropy`` (targets: u-μP ≤ 1.15× this);
* ``overparam``: the same model after ``op.scaling.unit_scale_`` + ``unit_ops.cross_entropy``;
* ``unit-scaling``: Graphcore's ``uu.Linear`` / ``uu.GELU`` / ``uu.LinearReadout`` +
  ``unit_scaling.functional.cross_entropy`` (target: ours ≤ 1.0× this), when it is installed
  (``pip install unit-scaling`` after ``torch==2.13.0``).

Run from the repository root: ``overparam bench umup`` or ``python benchmarks/umup_bench.py``.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import platform
import statistics

import torch
from _rows import Rows
from _timing import interleaved
from torch import nn

import overparam as op
from overparam.scaling import unit_ops as U

F = nn.functional


def mlp(width: int, depth: int, classes: int, lin=nn.Linear, act=nn.GELU, readout=nn.Linear, bias=True) -> nn.Module:
    layers = []
    for _ in range(depth - 1):
        layers += [lin(width, width, bias=bias), act()]
    return nn.Sequential(*layers, readout(width, classes, bias=bias))


def variants(width: int, depth: int, batch: int, classes: int) -> dict[str, tuple[nn.Module, callable]]:
    torch.manual_seed(0)
    plain = mlp(width, depth, classes)
    ours = mlp(width, depth, classes)
    op.scaling.unit_scale_(ours)
    op.scaling.umup_plan(ours).init_(ours, generator=0)
    out = {"plain": (plain, F.cross_entropy), "overparam": (ours, U.cross_entropy)}
    if importlib.util.find_spec("unit_scaling") is not None:
        import unit_scaling as uu
        import unit_scaling.functional as UF
        theirs = mlp(width, depth, classes, lin=uu.Linear, act=uu.GELU, readout=uu.LinearReadout)
        theirs.load_state_dict(ours.state_dict())
        out["unit-scaling"] = (theirs, UF.cross_entropy)
    return out


def step(model: nn.Module, loss_fn, x, y, inner: int):
    def run():
        for _ in range(inner):
            model.zero_grad(set_to_none=True)
            loss_fn(model(x), y).backward()
    return run


def main(argv=None) -> str:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--width", type=int, default=1024)
    ap.add_argument("--depth", type=int, default=12)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--inner", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)
    rows = Rows(anchors=("unit_scaling",))
    g = torch.Generator().manual_seed(1)
    x = torch.randn(args.batch, args.width, generator=g)
    y = torch.randint(0, 10, (args.batch,), generator=g)
    vs = variants(args.width, args.depth, args.batch, 10)
    fns = {k: step(m, lf, x, y, args.inner) for k, (m, lf) in vs.items()}
    for f in fns.values():
        f()                                   # warm-up
    res = interleaved(fns, repeats=args.repeats)
    med = {k: statistics.median(t) / args.inner for k, (t, _) in res.items()}
    lines = [f"u-μP fwd+bwd, {args.depth}-layer width-{args.width} MLP, batch {args.batch}, fp32, "
             f"torch {torch.__version__}, {platform.machine()}, {torch.get_num_threads()} threads, "
             f"load {os.getloadavg()[0]:.1f}; median of {args.repeats} interleaved rounds of {args.inner}",
             "| variant | ms / step | ratio ours / it |", "| --- | --- | --- |"]
    for k, t in med.items():
        ratio = "—" if k == "overparam" else f"{med['overparam'] / t:.3f}×"
        lines.append(f"| {k} | {t * 1e3:.1f} | {ratio} |")
    if "unit-scaling" not in med:
        lines.append("| unit-scaling | not installed | — |")
    text = "\n".join(lines)
    print(text)
    case = f"u-μP fwd+bwd, {args.depth}-layer width-{args.width} MLP, batch {args.batch}, fp32"
    rows.add("scaling", case, "plain `nn.Linear` + `nn.GELU` + `F.cross_entropy`", ours=med["overparam"],
             theirs=med["plain"], target=1.15)
    if "unit-scaling" in med:
        rows.add("scaling", case, "Graphcore unit-scaling (`uu.Linear`, `uu.GELU`, `uu.LinearReadout`)",
                 ours=med["overparam"], theirs=med["unit-scaling"], target=1.0)
    else:
        rows.not_measured("scaling", case, "Graphcore unit-scaling", reason="unit-scaling not installed", target=1.0)
    rows.write()
    return text


if __name__ == "__main__":
    main()
