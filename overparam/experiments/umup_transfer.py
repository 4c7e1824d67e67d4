"""u-μP transfer in low precision: the best learning rate stays put across width in bf16.

Blake, Eichenberg, Dean, Balles, Prince, Deniz, Orr, Luschi (2024), "u-μP: The Unit-Scaled
Maximal Update Parametrization" (Fig. 1 and Sec. 4): u-μP keeps μP's width transfer of the
optimal learning rate while every parameter, activation and gradient starts at unit scale, so the
model trains in low precision with the same hyperparameters as in full precision.

Set-up: GELU MLPs ``d → w → w → classes`` of several widths learn the synthetic classification
task of :mod:`~overparam.experiments.mu_transfer` (labels from a random tanh teacher, 30% flipped)
online: Adam on a fresh minibatch at every step (nothing is seen twice, so no width can memorize),
for a fixed number of steps, over a grid of learning rates (powers of 2), under three
parameterizations and two precisions:

* ``sp``/``mup``: ``op.scaling.plan(model, "sp"/"mup")`` relative to the narrowest width (the two
  coincide there), ``F.cross_entropy``;
* ``umup``: the model after ``op.scaling.unit_scale_`` (unit-scaled linear, GELU and read-out),
  ``op.scaling.umup_plan`` (unit init, u-μP learning-rate rule), ``unit_ops.cross_entropy``;
* ``float32`` (the control) and ``bfloat16``: the parameters, the data, the activations and
  Adam's state all in bf16 (no fp32 master weights: the harshest form of bf16 training).

Each parameterization has its own learning-rate grid (``log2_lr_lo`` + ``0 … lrs-1``): u-μP's
learning rates are absolute (no base model), so its optimum sits elsewhere. The optimum is the grid
point with the lowest final loss on ``n_eval`` held-out examples (mean over seeds, evaluated in
fp32 from the trained weights); a diverged run counts as ``inf``.

The claim holds when, under u-μP, (1) in both precisions the optimum moves by at most one grid
step (×2) from the narrowest to the widest model, (2) at every width the bf16 optimum is within one
step of the fp32 one, and (3) bf16 costs at most ``bf16_tolerance`` (relative) of the best fp32
loss at every width; and, as the control that the grid can see a drift, the SP optimum in fp32 falls
by at least two steps (×4). The summary also reports where SP and μP move or degrade in bf16.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .. import scaling
from ..scaling import unit_ops
from . import Context, Experiment
from .harness import mlp, train
from .mu_transfer import _task
from .sweep import heatmap, sweep

F = nn.functional
PARAMS = ("sp", "mup", "umup")
PRECISIONS = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def final_loss(param: str, precision: str, width: int, log2_lr: int, X, y, p: dict, seed: int) -> float:
    """Train one model (``param`` in :data:`PARAMS`, ``precision`` a key of :data:`PRECISIONS`)
    for ``p["steps"]`` Adam steps at learning rate ``2**log2_lr``, step ``t`` on rows
    ``[t·batch, (t+1)·batch)`` of ``X, y``, and return its loss in fp32 on the last ``n_eval``
    rows (inf if a loss was not finite)."""
    dtype = PRECISIONS[precision]
    sizes = [p["d"], width, width, p["classes"]]
    model = mlp(sizes, activation=nn.GELU, generator=seed, dtype=dtype, device=X.device)
    if param == "umup":
        scaling.unit_scale_(model)
        plan, loss_fn = scaling.umup_plan(model), unit_ops.cross_entropy
    else:
        base, delta = (mlp([p["d"], w, w, p["classes"]], activation=nn.GELU, generator=0, device="meta") for w in p["widths"][:2])
        plan, loss_fn = scaling.plan(model, param, base=base, delta=delta), F.cross_entropy
    plan.init_(model, generator=seed)
    with torch.no_grad():
        for name, q in model.named_parameters():
            if name.endswith("bias"):
                q.zero_()
    opt = torch.optim.Adam(plan.param_groups(model, lr=2.0 ** log2_lr))
    Xd, b = X.to(dtype), p["batch"]
    if train(opt, lambda t: loss_fn(model(Xd[t * b:(t + 1) * b]), y[t * b:(t + 1) * b]), p["steps"]).diverged:
        return math.inf
    with torch.no_grad():
        loss = float(F.cross_entropy(model(Xd[-p["n_eval"]:]).float(), y[-p["n_eval"]:]))
    return loss if math.isfinite(loss) else math.inf


def verdict(best: dict, best_loss: dict, *, tolerance: float) -> dict:
    """The claim's checks from ``best[(param, precision)]`` (best log2 lr per width, narrowest
    first) and ``best_loss[(param, precision)]`` (the loss there)."""
    shift = {k: v[-1] - v[0] for k, v in best.items()}
    u32, u16 = best[("umup", "float32")], best[("umup", "bfloat16")]
    stable = abs(shift[("umup", "float32")]) <= 1 and abs(shift[("umup", "bfloat16")]) <= 1
    same = all(abs(a - b) <= 1 for a, b in zip(u32, u16))
    cost = [b / a - 1 for a, b in zip(best_loss[("umup", "float32")], best_loss[("umup", "bfloat16")])]
    cheap = all(c <= tolerance for c in cost)
    control = shift[("sp", "float32")] <= -2
    return {"shift": shift, "umup_stable": stable, "umup_bf16_same_optimum": same, "umup_bf16_cost": cost,
            "umup_bf16_cheap": cheap, "sp_drifts": control, "claim_holds": stable and same and cheap and control}


def run(ctx: Context) -> dict:
    p = ctx.params
    X, y = _task({**p, "n": p["steps"] * p["batch"] + p["n_eval"]}, ctx.seed, ctx.device)
    widths, lrs = p["widths"], range(p["lrs"])
    axes = {"param": list(PARAMS), "precision": list(PRECISIONS), "width": widths, "step": list(lrs)}
    points = [(a, b, c, d) for a in PARAMS for b in PRECISIONS for c in widths for d in lrs]
    bar = ctx.progress(points, total=len(points), desc="param x precision x width x lr")

    def point(param, precision, width, step, seed):
        next(bar, None)
        log2_lr = p["log2_lr_lo"][param] + step
        return {"log2_lr": log2_lr, "loss": final_loss(param, precision, width, log2_lr, X, y, p, ctx.seed + 10 + seed)}

    table = sweep(point, axes, seeds=list(range(p["seeds"])))
    best, best_loss, loss = {}, {}, {}
    for param in PARAMS:
        for prec in PRECISIONS:
            ws, exps, grid = table.where(param=param, precision=prec).pivot("width", "log2_lr", "loss")
            loss[f"{param}/{prec}"] = grid.tolist()
            j = [int(torch.argmin(torch.nan_to_num(row, nan=math.inf))) for row in grid]
            best[(param, prec)] = [exps[k] for k in j]
            best_loss[(param, prec)] = [float(grid[i, k]) for i, k in enumerate(j)]
    v = verdict(best, best_loss, tolerance=p["bf16_tolerance"])
    summary = [f"widths {widths}, GELU MLP, Adam, {p['steps']} online steps of batch {p['batch']}, {p['lrs']} learning rates per "
               f"parameterization, {p['seeds']} seed(s); bf16 = parameters, activations and Adam state in bf16"]
    for param in PARAMS:
        for prec in PRECISIONS:
            k = (param, prec)
            summary.append(f"{param:4s} {prec:8s}: best log2(lr) per width {best[k]} (shift {v['shift'][k]:+d}); "
                           f"best loss {[round(x, 4) for x in best_loss[k]]}")
    summary.append(f"u-muP: optimum {'stable' if v['umup_stable'] else 'NOT stable'} across width; bf16 optimum "
                   f"{'within' if v['umup_bf16_same_optimum'] else 'NOT within'} one step of fp32's; bf16 loss cost "
                   f"{[f'{c:+.1%}' for c in v['umup_bf16_cost']]} (tolerance {p['bf16_tolerance']:.0%}); SP fp32 "
                   f"{'drifts' if v['sp_drifts'] else 'does NOT drift'} (the control)")
    plt = ctx.pyplot()
    if plt is not None:
        fig, axs = plt.subplots(len(PRECISIONS), len(PARAMS), figsize=(5 * len(PARAMS), 4 * len(PRECISIONS)),
                                layout="constrained")
        finite = [x for x in table.column("loss") if math.isfinite(x)]
        lo = min(finite) if finite else 0.0
        hi = min(max(finite), 1.5 * lo) if finite else 1.0
        for i, prec in enumerate(PRECISIONS):
            for j, param in enumerate(PARAMS):
                heatmap(table.where(param=param, precision=prec), "width", "log2_lr", "loss", ax=axs[i][j],
                        title=f"{param} {prec} (best log2 lr {best[(param, prec)]})", vmin=lo, vmax=hi)
        ctx.savefig(fig, "umup_transfer.png")
    table.to_csv(ctx.out / "sweep.csv")
    key = lambda d: {f"{a}/{b}": x for (a, b), x in d.items()}  # noqa: E731
    return {"claim_holds": v["claim_holds"], "summary": summary, "widths": widths, "loss": loss,
            "best_log2_lr": key(best), "best_loss": key(best_loss), "shift": key(v["shift"]),
            **{k: v[k] for k in ("umup_stable", "umup_bf16_same_optimum", "umup_bf16_cost", "umup_bf16_cheap",
                                 "sp_drifts")}}


EXPERIMENT = Experiment(
    name="umup-transfer",
    paper="Blake et al. 2024, u-μP: The Unit-Scaled Maximal Update Parametrization",
    claim="under u-muP the learning rate that minimizes the training loss is stable from width 64 to 1024 when the "
          "model is trained in bf16, the same as in fp32, while under SP it shrinks with width",
    run=run,
    params={"d": 32, "classes": 10, "batch": 64, "n_eval": 1024, "label_noise": 0.3,
            "widths": [64, 128, 256, 512, 1024], "log2_lr_lo": {"sp": -12, "mup": -10, "umup": -5}, "lrs": 9,
            "steps": 60, "seeds": 2, "bf16_tolerance": 0.1},
    quick={"n_eval": 512, "widths": [64, 256, 1024], "log2_lr_lo": {"sp": -10, "mup": -9, "umup": -4}, "lrs": 7,
           "steps": 30, "seeds": 1},
)
