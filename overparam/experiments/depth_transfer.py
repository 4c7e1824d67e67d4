"""Depth transfer: under depth-μP and CompleteP the optimal learning rate stays put as blocks are added.

Yang, Yu, Zhu & Hayou (2023), "Tensor Programs VI: Feature Learning in Infinite-Depth Neural
Networks"; Bordelon, Noci, Li, Hanin & Pehlevan (2023), "Depthwise Hyperparameter Transfer in
Residual Networks"; Dey et al. (2025), "Don't be lazy: CompleteP enables compute-efficient deep
transformers": with a residual branch multiplier ``L^{-α}`` (α = 1/2 depth-μP, α = 1 CompleteP)
and its learning-rate rule, the learning rate tuned on a shallow network transfers to deep ones;
with μP in width only (no depth rule) the blocks' updates add up, so the optimum falls with depth.

Set-up: residual MLPs ``d → w → L × (w → w → w, added) → classes`` of depths ``L`` (base depth the
shallowest, base width half the width: μP in width throughout) on the synthetic classification
task of the ``mu-transfer`` experiment, trained with full-batch Adam over a grid of learning rates
(powers of 2) under ``op.scaling.plan(model, "mup" | "depth-mup" | "completep")``. The optimum is
the grid point with the lowest final training loss (mean over seeds).

The claim holds when, from the shallowest to the deepest model, the optimum moves by at most one
grid step (×2) under depth-μP and under CompleteP, and by at least two (×4) without a depth rule.
"""

from __future__ import annotations

import torch
from torch import nn

from .. import scaling
from . import Context, Experiment
from .mu_transfer import _task, loss_grid, planned_final_loss
from .sweep import sweep

PARAMS = ("mup", "depth-mup", "completep")
KW = dict(branches="blocks", branch_outputs="blocks.*.2")


class ResMLP(nn.Module):
    """``x ↦ out(h_L)``, ``h_0 = inp(x)``, ``h_{l+1} = h_l + fc2(relu(fc1(h_l)))``."""

    def __init__(self, d: int, w: int, c: int, depth: int):
        super().__init__()
        self.inp, self.out = nn.Linear(d, w), nn.Linear(w, c)
        self.blocks = nn.ModuleList(nn.Sequential(nn.Linear(w, w), nn.ReLU(), nn.Linear(w, w)) for _ in range(depth))

    def forward(self, x):
        h = self.inp(x)
        for b in self.blocks:
            h = h + b(h)
        return self.out(h)


def _final_loss(param: str, depth: int, lr: float, X, y, p: dict, seed: int) -> float:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = ResMLP(p["d"], p["width"], p["classes"], depth).to(X.device)
    with torch.device("meta"):
        base = ResMLP(p["d"], p["width"] // 2, p["classes"], depth)
    kw = dict(depth=(depth, p["depths"][0]), **KW) if param != "mup" else {}
    plan = scaling.plan(model, param, base=base, **kw)
    return planned_final_loss(model, plan, lr, X, y, p, seed)


def run(ctx: Context) -> dict:
    p = ctx.params
    X, y = _task(p, ctx.seed, ctx.device)
    depths, exps = p["depths"], list(range(p["log2_lr"][0], p["log2_lr"][1] + 1))

    def losses(points: list[dict]) -> list[dict]:
        return [{"loss": _final_loss(q["param"], q["depth"], 2.0 ** q["log2_lr"], X, y, p, ctx.seed + 10 + q["seed"])}
                for q in ctx.progress(points, total=len(points), desc="depth x lr grid")]

    table = sweep(losses, {"param": list(PARAMS), "depth": depths, "log2_lr": exps}, seeds=range(p["seeds"]), batch=True)
    table.to_csv(ctx.out / "sweep.csv")
    loss = {param: loss_grid(table.where(param=param), "depth", depths, exps) for param in PARAMS}
    best = {param: [exps[min(range(len(exps)), key=lambda j: loss[param][i][j])] for i in range(len(depths))]
            for param in PARAMS}
    shift = {param: max(best[param]) - min(best[param]) for param in PARAMS}
    drift = {param: best[param][-1] - best[param][0] for param in PARAMS}
    holds = shift["depth-mup"] <= 1 and shift["completep"] <= 1 and drift["mup"] <= -2
    names = {"mup": "muP, no depth rule", "depth-mup": "depth-muP (1/sqrt L)", "completep": "CompleteP (1/L)"}
    summary = [f"depths {depths}, width {p['width']} (base width {p['width'] // 2}), Adam, {p['steps']} full-batch "
               f"steps, lr grid 2^{exps[0]}..2^{exps[-1]}, {p['seeds']} seed(s), base depth {depths[0]}"]
    summary += [f"{names[param]:<22}: best log2(lr) per depth {best[param]} (range {shift[param]}, "
                f"shallowest->deepest {drift[param]:+d}); best loss {[round(min(r), 4) for r in loss[param]]}"
                for param in PARAMS]
    plt = ctx.pyplot()
    if plt is not None:
        fig, axes = plt.subplots(1, 3, figsize=(14, 3.8), sharey=True)
        for ax, param in zip(axes, PARAMS):
            for i, L in enumerate(depths):
                ax.plot(exps, [min(v, 10.0) for v in loss[param][i]], marker="o", label=f"L = {L}")
            ax.set(title=names[param], xlabel="log2 learning rate", yscale="log")
        axes[0].set_ylabel("training loss")
        axes[-1].legend(fontsize="small")
        ctx.savefig(fig, "depth_transfer.png")
    return {"claim_holds": holds, "summary": summary, "depths": depths, "log2_lr": exps, "loss": loss,
            "best_log2_lr": best, "shift": shift, "drift": drift}


EXPERIMENT = Experiment(
    name="depth-transfer",
    paper="Yang, Yu, Zhu & Hayou 2023 (Tensor Programs VI); Bordelon et al. 2023; Dey et al. 2025 (CompleteP)",
    claim="the learning rate that minimizes the training loss is stable across depth under depth-muP and CompleteP, "
          "while with muP in width only it falls as residual blocks are added",
    run=run,
    params={"optimizer": "adam", "d": 32, "classes": 10, "n": 1024, "label_noise": 0.3, "width": 64, "depths": [2, 4, 8, 16, 32],
            "log2_lr": [-14, -2], "steps": 40, "seeds": 2},
    quick={"n": 256, "depths": [2, 4, 8, 16], "log2_lr": [-12, -3], "steps": 20, "seeds": 1},
)
