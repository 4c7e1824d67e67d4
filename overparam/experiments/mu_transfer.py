"""μTransfer: under μP the optimal learning rate stays put as the width grows; under SP it drifts.

Yang, Hu, Babuschkin, Sidor, Liu, Farhi, Ryder, Pachocki, Chen & Gao (2022), "Tensor Programs V:
Tuning Large Neural Networks via Zero-Shot Hyperparameter Transfer" (Fig. 1): with the standard
parameterization the learning rate that minimizes the training loss shrinks as the network
widens, so hyperparameters tuned on a small model do not carry over; with μP the optimum is
stable across width and wider is better at every learning rate near it.

Set-up: ReLU MLPs ``d → w → w → classes`` of several widths on a synthetic classification task
(labels from a random tanh teacher network), trained with full-batch Adam for a fixed number of
steps over a grid of learning rates (powers of 2), each under ``op.scaling.plan(model, "sp")``
and ``plan(model, "mup")`` relative to the narrowest width (where the two coincide). The optimum
is the grid point with the lowest final training loss (mean over seeds).

The claim holds when, from the narrowest to the widest model, the μP optimum moves by at most
one grid step (×2) while the SP optimum falls by at least two (×4), and under μP wider is better
(the loss at the optimum never rises by more than 10% from one width to the next and falls at
least 2× from the narrowest to the widest).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .. import scaling
from ..backend.random import gaussian
from . import Context, Experiment
from .harness import mlp, train
from .sweep import Table, sweep

F = nn.functional


def _task(p: dict, seed: int, device):
    d, c, n = p["d"], p["classes"], p["n"]
    X = gaussian((n, d), generator=seed, device=device)
    W1 = gaussian((d, 64), generator=seed + 1, device=device) / math.sqrt(d)
    W2 = gaussian((64, c), generator=seed + 2, device=device) / 8
    y = (torch.tanh(2 * X @ W1) @ W2).argmax(dim=1)
    g = torch.Generator().manual_seed(seed + 3)
    flip = torch.rand(n, generator=g) < p["label_noise"]  # noisy labels: the training loss cannot reach 0 quickly
    return X, torch.where(flip.to(y.device), torch.randint(0, c, (n,), generator=g).to(y.device), y)


def _final_loss(param: str, width: int, lr: float, X, y, p: dict, seed: int, base: nn.Module, delta: nn.Module) -> float:
    model = mlp([p["d"], width, width, p["classes"]], generator=seed, device=X.device)  # re-initialised by the plan
    plan = scaling.plan(model, param, base=base, delta=delta, optimizer=p["optimizer"])
    return planned_final_loss(model, plan, lr, X, y, p, seed)


def planned_final_loss(model: nn.Module, plan, lr: float, X, y, p: dict, seed: int) -> float:
    """Initialize ``model`` by ``plan`` (biases zeroed), train it for ``p["steps"]`` full-batch
    ``p["optimizer"]`` steps on cross-entropy, and return the final training loss (inf if it diverged)."""
    plan.init_(model, generator=seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Linear):
                m.bias.zero_()
    groups = plan.param_groups(model, lr=lr)
    opt = torch.optim.Adam(groups) if p["optimizer"] == "adam" else torch.optim.SGD(groups)
    if train(opt, lambda t: F.cross_entropy(model(X), y), p["steps"]).diverged:
        return math.inf
    with torch.no_grad():
        loss = float(F.cross_entropy(model(X), y))
    return loss if math.isfinite(loss) else math.inf


def loss_grid(table: Table, axis: str, values: list, exps: list[int]) -> list[list[float]]:
    """The mean final loss over seeds (:meth:`Table.pivot`) as rows in the order of ``values`` (of
    column ``axis``) by columns in the order of ``exps`` (column ``log2_lr``)."""
    xs, ys, grid = table.pivot(axis, "log2_lr", "loss")
    return [[float(grid[xs.index(v), ys.index(e)]) for e in exps] for v in values]


def run(ctx: Context) -> dict:
    p = ctx.params
    X, y = _task(p, ctx.seed, ctx.device)
    widths, exps = p["widths"], list(range(p["log2_lr"][0], p["log2_lr"][1] + 1))
    base, delta = (mlp([p["d"], w, w, p["classes"]], generator=0, device="meta") for w in widths[:2])  # shapes only

    def losses(points: list[dict]) -> list[dict]:
        return [{"loss": _final_loss(q["param"], q["width"], 2.0 ** q["log2_lr"], X, y, p, ctx.seed + 10 + q["seed"],
                                     base, delta)} for q in ctx.progress(points, total=len(points), desc="width x lr grid")]

    table = sweep(losses, {"param": ["sp", "mup"], "width": widths, "log2_lr": exps}, seeds=range(p["seeds"]), batch=True)
    table.to_csv(ctx.out / "sweep.csv")
    loss = {param: loss_grid(table.where(param=param), "width", widths, exps) for param in ("sp", "mup")}
    best = {param: [exps[min(range(len(exps)), key=lambda j: loss[param][i][j])] for i in range(len(widths))]
            for param in loss}
    best_loss = {param: [min(row) for row in loss[param]] for param in loss}
    mup_shift, sp_shift = best["mup"][-1] - best["mup"][0], best["sp"][-1] - best["sp"][0]
    # wider is better: no width worse than the previous one by more than 10% (the loss floor is
    # reached at the widest ones), and the widest at least 2x better than the narrowest
    bl = best_loss["mup"]
    wider_better = all(b <= 1.1 * a for a, b in zip(bl, bl[1:])) and bl[-1] <= 0.5 * bl[0]
    holds = abs(mup_shift) <= 1 and sp_shift <= -2 and wider_better
    summary = [f"widths {widths}, Adam, {p['steps']} full-batch steps, lr grid 2^{exps[0]}..2^{exps[-1]}, "
               f"{p['seeds']} seed(s), base = width {widths[0]}",
               f"SP : best log2(lr) per width {best['sp']} (shift {sp_shift:+d}); best loss "
               f"{[round(v, 4) for v in best_loss['sp']]}",
               f"muP: best log2(lr) per width {best['mup']} (shift {mup_shift:+d}); best loss "
               f"{[round(v, 4) for v in best_loss['mup']]} ({'wider is better' if wider_better else 'wider is NOT better'})"]
    plt = ctx.pyplot()
    if plt is not None:
        fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), sharey=True)
        for ax, param in zip(axes, ("sp", "mup")):
            for i, w in enumerate(widths):
                ax.plot(exps, [min(v, 10.0) for v in loss[param][i]], marker="o", label=f"width {w}")
            ax.set(title={"sp": "standard parameterization", "mup": "μP"}[param], xlabel="log2 learning rate",
                   yscale="log")
        axes[0].set_ylabel("training loss")
        axes[1].legend(fontsize="small")
        ctx.savefig(fig, "mu_transfer.png")
    return {"claim_holds": holds, "summary": summary, "widths": widths, "log2_lr": exps, "loss": loss,
            "best_log2_lr": best, "best_loss": best_loss, "mup_shift": mup_shift, "sp_shift": sp_shift,
            "mup_wider_is_better": wider_better}


EXPERIMENT = Experiment(
    name="mu-transfer",
    paper="Yang et al. 2022, Tensor Programs V: Tuning Large Neural Networks via Zero-Shot Hyperparameter Transfer",
    claim="the learning rate that minimizes the training loss is stable across width under muP (and wider is better), "
          "while under the standard parameterization it shrinks as the width grows",
    run=run,
    params={"optimizer": "adam", "d": 32, "classes": 10, "n": 1024, "label_noise": 0.3,
            "widths": [32, 64, 128, 256, 512, 1024], "log2_lr": [-12, 0], "steps": 40, "seeds": 2},
    quick={"widths": [32, 64, 128, 256, 512], "log2_lr": [-8, -2], "seeds": 1},
)
