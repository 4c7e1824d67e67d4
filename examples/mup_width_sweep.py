"""μP width sweep: the best learning rate moves with width under SP and stays put under μP.

One MLP architecture at several widths, each trained with Adam over a grid of learning rates, once
under the standard parameterization and once under μP (``op.scaling.plan(model, "mup", base=...)``
relative to the narrowest width: a ``Plan`` that initializes the ordinary ``nn.Module``
(``plan.init_``) and gives an ordinary ``torch.optim.Adam`` its per-tensor learning rates
(``plan.param_groups``); no module is replaced). Under μP the learning rate tuned at the base
width is (near) optimal at every width — "μTransfer" (Yang et al. 2022) — while under SP the
optimum drifts to smaller learning rates as the model widens.

Writes ``lr_sweep.png`` (training loss against log2 lr, one curve per width, SP and μP side by
side) and ``sweep.json`` into ``--out``.

Run: ``python examples/mup_width_sweep.py --out mup`` (under a minute on one CPU core), or
``--quick`` for a seconds-long smoke run. ``overparam run mu-transfer`` checks the claim.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import torch
import torch.nn.functional as F

import overparam as op


def make(width: int, d: int = 32, classes: int = 10) -> torch.nn.Module:
    return torch.nn.Sequential(torch.nn.Linear(d, width), torch.nn.ReLU(), torch.nn.Linear(width, width),
                               torch.nn.ReLU(), torch.nn.Linear(width, classes))


def task(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A fixed random teacher's labels on Gaussian inputs ``X (n, 32)``, 20% of them flipped."""
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, 32, generator=g)
    y = (torch.tanh(2 * X @ torch.randn(32, 64, generator=g) / 32**0.5) @ torch.randn(64, 10, generator=g)).argmax(1)
    flip = torch.rand(n, generator=g) < 0.2
    return X, torch.where(flip, torch.randint(0, 10, (n,), generator=g), y)


def final_loss(parameterization: str, width: int, base_width: int, lr: float, X, y, steps: int, seed: int) -> float:
    model = make(width)
    with torch.device("meta"):               # the base and delta models only lend their shapes
        base, delta = make(base_width), make(2 * base_width)
    plan = op.scaling.plan(model, parameterization, base=base, delta=delta, optimizer="adam")
    plan.init_(model, generator=seed)
    opt = torch.optim.Adam(plan.param_groups(model, lr=lr))
    for _ in range(steps):
        opt.zero_grad()
        loss = F.cross_entropy(model(X), y)
        if not math.isfinite(float(loss.detach())):
            return math.inf
        loss.backward()
        opt.step()
    with torch.no_grad():
        loss = float(F.cross_entropy(model(X), y))
    return loss if math.isfinite(loss) else math.inf


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--widths", type=int, nargs="+", default=[32, 64, 128, 256, 512])
    ap.add_argument("--log2-lr", type=int, nargs=2, default=[-10, -2], metavar=("LO", "HI"))
    ap.add_argument("--steps", type=int, default=40, help="full-batch Adam steps")
    ap.add_argument("--n", type=int, default=1024, help="training examples")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path("mup_sweep"))
    ap.add_argument("--quick", action="store_true", help="a seconds-long smoke run")
    args = ap.parse_args(argv)
    if args.quick:
        args.widths, args.log2_lr, args.steps, args.n = [32, 64, 128], [-8, -3], 15, 256
    args.out.mkdir(parents=True, exist_ok=True)
    X, y = task(args.n, args.seed)
    exps = list(range(args.log2_lr[0], args.log2_lr[1] + 1))
    loss = {p: {w: [final_loss(p, w, args.widths[0], 2.0**e, X, y, args.steps, args.seed) for e in exps]
                for w in args.widths} for p in ("sp", "mup")}
    best = {p: {w: exps[min(range(len(exps)), key=row.__getitem__)] for w, row in loss[p].items()} for p in loss}
    for p in loss:
        print(f"{p:>3}: best log2(lr) by width " + ", ".join(f"{w}: {e}" for w, e in best[p].items()))

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4), sharey=True)
    for ax, p in zip(axes, ("sp", "mup")):
        for w, row in loss[p].items():
            ax.plot(exps, [min(v, 10.0) for v in row], "o-", ms=3, label=f"width {w}")
        ax.set(title={"sp": "standard parameterization", "mup": "μP"}[p], xlabel="log2 learning rate", yscale="log")
    axes[0].set_ylabel("training loss")
    axes[1].legend(fontsize=8)
    fig.savefig(args.out / "lr_sweep.png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    result = {"log2_lr": exps, "loss": {p: {str(w): r for w, r in v.items()} for p, v in loss.items()},
              "best_log2_lr": {p: {str(w): e for w, e in v.items()} for p, v in best.items()}}
    (args.out / "sweep.json").write_text(json.dumps(result, indent=1))
    print(f"wrote lr_sweep.png and sweep.json to {args.out}")
    return result


if __name__ == "__main__":
    torch.set_num_threads(1)
    main()
