"""Benchmark overparam.scaling against Microsoft's mup (MuReadout + set_base_shapes + MuAdam/MuSGD).

1. Agreement: the same MLP trained under mup's pipeline and under ``op.scaling.plan`` (float64,
   matched initial functions: mup's read-out weight is ``m`` times ours because its forward divides
   by ``m``) must give the same outputs at every step; reported as the max relative difference.
   Adam, SGD and AdamW with weight decay (mup scales the decay like our ``decay="independent"``).
2. Set-up time: ``plan(model, "mup", base=meta) + param_groups + Adam`` against
   ``set_base_shapes(model, meta base) + MuAdam`` on a deep wide MLP (median of 3 interleaved rounds).
3. One Adam step with each side's parameter groups (median of 3 interleaved rounds of 10 steps).
4. A 34M-parameter MLP (issue 13: plan + init + param groups ≤ 0.1 s): ``plan`` (base on meta) +
   ``param_groups`` against ``set_base_shapes`` + ``MuAdam``; ``plan.init_`` (float32 draws from one
   generator) and the whole plan + init + groups against torch's own ``reset_parameters`` of every
   layer (the init the model pays anyway). ``--big`` runs only this part.

Run from the repository root (in an environment with torch==2.13.0 installed first, then
``pip install mup``, re-pinning torch with --no-deps):
    overparam bench scaling
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
from pathlib import Path

import torch
from _rows import Rows
from _timing import interleaved
from torch import nn

import overparam as op

F = nn.functional


def mlp(d, w, c, depth=2, readout=nn.Linear):
    layers = [nn.Linear(d, w), nn.ReLU()]
    for _ in range(depth - 1):
        layers += [nn.Linear(w, w), nn.ReLU()]
    return nn.Sequential(*layers, readout(w, c))


def agreement(kind: str, steps: int = 20) -> float:
    from mup import MuAdam, MuAdamW, MuReadout, MuSGD, set_base_shapes

    torch.manual_seed(0)
    d, c, w, bw = 16, 5, 480, 64  # m = 7.5: not a power of 2, so the two forms round differently
    ours = mlp(d, w, c).double()
    p = op.scaling.plan(ours, "mup", base=mlp(d, bw, c), optimizer="sgd" if kind == "sgd" else "adam")
    p.init_(ours, generator=0)
    theirs = mlp(d, w, c, readout=MuReadout).double()
    set_base_shapes(theirs, mlp(d, bw, c, readout=MuReadout), delta=mlp(d, 2 * bw, c, readout=MuReadout),
                    rescale_params=False)
    theirs.load_state_dict(ours.state_dict())
    with torch.no_grad():
        theirs[-1].weight.mul_(w / bw)  # its forward computes W (x / m)
    lr, wd = {"adam": (1e-2, 0.0), "sgd": (0.1, 0.0), "adamw": (1e-2, 0.1)}[kind]
    if kind == "sgd":
        opt_o, opt_t = torch.optim.SGD(p.param_groups(ours, lr=lr)), MuSGD(theirs.parameters(), lr=lr)
    elif kind == "adam":
        opt_o = torch.optim.Adam(p.param_groups(ours, lr=lr), eps=1e-30)
        opt_t = MuAdam(theirs.parameters(), lr=lr, eps=1e-30)
    else:
        opt_o = torch.optim.AdamW(p.param_groups(ours, lr=lr, weight_decay=wd, decay="independent"), eps=1e-30)
        opt_t = MuAdamW(theirs.parameters(), lr=lr, weight_decay=wd, eps=1e-30)
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(64, d, generator=g, dtype=torch.float64), torch.randint(0, c, (64,), generator=g)
    worst = 0.0
    for _ in range(steps):
        for net, opt in ((ours, opt_o), (theirs, opt_t)):
            opt.zero_grad()
            F.cross_entropy(net(x), y).backward()
            opt.step()
        with torch.no_grad():
            a, b = ours(x), theirs(x)
            worst = max(worst, float((a - b).abs().max() / a.abs().max()))
    return worst


def big_model_rows(rec: Rows) -> list[tuple[str, str]]:
    from mup import MuAdam, MuReadout, set_base_shapes

    d, c, w, depth = 256, 10, 2048, 9
    with torch.device("meta"):
        base_o, base_t = mlp(d, 256, c, depth), mlp(d, 256, c, depth, readout=MuReadout)
        delta_t = mlp(d, 512, c, depth, readout=MuReadout)
    ours, theirs = mlp(d, w, c, depth), mlp(d, w, c, depth, readout=MuReadout)
    n = sum(q.numel() for q in ours.parameters()) / 1e6
    plans = []

    def plan_groups():
        plans.append(op.scaling.plan(ours, "mup", base=base_o))
        return torch.optim.Adam(plans[-1].param_groups(ours, lr=1e-3))

    def mup_setup():
        set_base_shapes(theirs, base_t, delta=delta_t, rescale_params=False)
        return MuAdam(theirs.parameters(), lr=1e-3)

    t = interleaved({"ours": plan_groups, "mup": mup_setup}, repeats=3)
    a, b = (statistics.median(t[k][0]) for k in ("ours", "mup"))
    rows = [(f"{n:.1f}M-parameter MLP ({depth} layers, width {w}): plan + param_groups + Adam vs set_base_shapes + "
             "MuAdam", f"{a * 1e3:.1f} ms vs {b * 1e3:.1f} ms: **{a / b:.2f}×** (target ≤ 0.1 s: "
             f"{'met' if a <= 0.1 else 'NOT met'})")]
    big = f"{n:.1f}M-parameter MLP ({depth} layers, width {w})"
    rec.add("scaling", f"{big}: plan + param_groups + Adam", "`set_base_shapes` + `MuAdam`", ours=a, theirs=b)
    print(rows[-1], flush=True)

    def reset():
        for m in ours.modules():
            if isinstance(m, nn.Linear):
                m.reset_parameters()

    t = interleaved({"init_": lambda: plans[-1].init_(ours, generator=0), "reset": reset}, repeats=3)
    a, b = (statistics.median(t[k][0]) for k in ("init_", "reset"))
    rows.append((f"{n:.1f}M-parameter MLP: plan.init_ (float32 N(0,1) draws from one CPU generator, in place) vs "
                 "torch's reset_parameters", f"{a:.2f} s vs {b:.2f} s: **{a / b:.2f}×**"))
    rec.add("scaling", f"{big}: plan.init_ (float32 N(0,1) draws from one CPU generator, in place)",
            "torch's `reset_parameters` of every layer", ours=a, theirs=b)
    print(rows[-1], flush=True)

    def total():
        p = op.scaling.plan(ours, "mup", base=base_o)
        p.init_(ours, generator=0)
        return torch.optim.Adam(p.param_groups(ours, lr=1e-3))

    t = interleaved({"ours": total, "reset": reset}, repeats=3)
    a, b = (statistics.median(t[k][0]) for k in ("ours", "reset"))
    rows.append((f"{n:.1f}M-parameter MLP: plan + init_ + param_groups + Adam vs torch's reset_parameters",
                 f"{a:.2f} s vs {b:.2f} s: **{a / b:.2f}×** (target ≤ 0.1 s: {'met' if a <= 0.1 else 'NOT met'}; "
                 f"{a / (n * 1e6) * 1e9:.0f} ns per parameter)"))
    rec.add("scaling", f"{big}: plan + init_ + param_groups + Adam (target on our seconds)",
            "torch's `reset_parameters` of every layer", ours=a, theirs=b, judged="ours", target=0.1,
            notes=f"{a / (n * 1e6) * 1e9:.0f} ns per parameter")
    rec.gpu("scaling", f"{big} on the GPU: plan + init_ + param_groups + Adam", "torch's `reset_parameters`",
            notes="target ≤ 0.1 s")
    print(rows[-1], flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--big", action="store_true", help="only the 34M-parameter rows (issue 13)")
    args = ap.parse_args()
    from mup import MuAdam, MuReadout, set_base_shapes

    rec = Rows(anchors=("mup",))
    if args.big:
        for a, b in big_model_rows(rec):
            print(f"| {a} | {b} |")
        rec.write()
        return

    load0 = os.getloadavg()[0]
    rows = []
    for kind in ("adam", "sgd", "adamw"):
        worst = agreement(kind)
        rows.append((f"agreement, 20 steps of {kind} (width 480, base 64, float64)",
                     f"max relative output difference {worst:.1e}"))
        rec.add("scaling", f"μP training agreement: 20 steps of {kind}, MLP width 480 vs base 64, float64",
                "Microsoft mup (`MuReadout` + `set_base_shapes` + its optimizer)", ours=worst,
                unit="max rel. output difference", judged="ours", target=1e-12)
        print(rows[-1], flush=True)

    d, c, w, depth = 256, 10, 2048, 8
    with torch.device("meta"):
        base_o, base_t = mlp(d, 256, c, depth), mlp(d, 256, c, depth, readout=MuReadout)
        delta_t = mlp(d, 512, c, depth, readout=MuReadout)
    ours, theirs = mlp(d, w, c, depth), mlp(d, w, c, depth, readout=MuReadout)

    def setup_ours():
        p = op.scaling.plan(ours, "mup", base=base_o)
        return torch.optim.Adam(p.param_groups(ours, lr=1e-3))

    def setup_theirs():
        set_base_shapes(theirs, base_t, delta=delta_t, rescale_params=False)
        return MuAdam(theirs.parameters(), lr=1e-3)

    setup = interleaved({"ours": setup_ours, "mup": setup_theirs}, repeats=3)
    t_o, t_t = (statistics.median(setup[k][0]) for k in ("ours", "mup"))
    rows.append((f"set-up: plan + param_groups + Adam vs set_base_shapes + MuAdam ({depth}-layer MLP, width {w})",
                 f"{t_o * 1e3:.1f} ms vs {t_t * 1e3:.1f} ms: **{t_o / t_t:.2f}×**"))
    rec.add("scaling", f"set-up: plan + param_groups + Adam, {depth}-layer MLP, width {w}", "`set_base_shapes` + `MuAdam`",
            ours=t_o, theirs=t_t)
    print(rows[-1], flush=True)
    opt_o, opt_t = setup["ours"][1][-1], setup["mup"][1][-1]
    x = torch.randn(128, d)
    y = torch.randint(0, c, (128,))
    for net in (ours, theirs):
        F.cross_entropy(net(x), y).backward()  # fixed gradients: only the optimizer step is timed

    def steps(opt):
        return lambda: [opt.step() for _ in range(10)]

    steps(opt_o)(), steps(opt_t)()  # warm-up: state allocation
    st = interleaved({"ours": steps(opt_o), "mup": steps(opt_t)}, repeats=3)
    s_o, s_t = (statistics.median(st[k][0]) / 10 for k in ("ours", "mup"))
    rows.append((f"one Adam step, {len(opt_o.param_groups)} vs {len(opt_t.param_groups)} param groups "
                 f"({sum(q.numel() for q in ours.parameters()) / 1e6:.1f}M parameters)",
                 f"{s_o * 1e3:.1f} ms vs {s_t * 1e3:.1f} ms: **{s_o / s_t:.2f}×**"))
    rec.add("scaling", f"one Adam step with each side's param groups, {depth}-layer MLP, width {w}", "`MuAdam` step",
            ours=s_o, theirs=s_t)
    print(rows[-1], flush=True)
    rows += big_model_rows(rec)
    import mup

    text = "\n".join([
        "# overparam.scaling benchmark (against Microsoft's mup)", "",
        f"CPU, {torch.get_num_threads()} torch threads, torch {torch.__version__}, mup "
        f"{getattr(mup, '__version__', '1.0.0')}, Python {platform.python_version()}; timings are medians of 3 "
        f"interleaved rounds, ratios overparam / mup from the same process. Load average (1 min) at start / end: "
        f"{load0:.2f} / {os.getloadavg()[0]:.2f} (2-core VM shared with other jobs).", "",
        "| measurement | result |", "| --- | --- |", *[f"| {a} | {b} |" for a, b in rows], "",
        "Command: `overparam bench scaling`", ""])
    print(text)
    out = Path(__file__).parent / "results" / "scaling.md"
    out.write_text(text)
    print(f"wrote {out}", file=sys.stderr)
    rec.write()


if __name__ == "__main__":
    main()
