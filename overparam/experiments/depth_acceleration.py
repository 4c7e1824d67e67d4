"""Implicit acceleration by depth on ℓ4 linear regression.

Arora, Cohen & Hazan (2018), "On the Optimization of Deep Networks: Implicit Acceleration by
Overparameterization": replacing ``w`` by a depth-``N`` linear network ``W_N ⋯ W_1`` (balanced
init) turns GD into a preconditioned method on the end-to-end matrix; on ``ℓ_p`` regression
with ``p > 2`` this speeds up optimization, although the model class is unchanged.

All depths start at the same end-to-end vector (balanced factors of it from
:func:`overparam.factor.init_balanced_deep`) and run full-batch GD at the same learning rate
on ``L(w) = 1/(4m) Σ (x_iᵀw − y_i)⁴``. We count the steps to reach ``loss <= threshold``. The
claim holds when every depth ``>= 2`` gets there in at most ``margin`` times the steps of
depth 1 (a depth-1 run that never gets there counts as ``steps + 1``).
"""

from __future__ import annotations

from functools import partial

import numpy as np
import torch

from ..backend.random import construction_generator, gaussian
from ..factor import DeepLinear, init_balanced_deep, product
from . import Context, Experiment
from .harness import train


def run(ctx: Context) -> dict:
    p = ctx.params
    d, m = p["d"], p["m"]
    g = construction_generator(ctx.seed)
    dt = torch.float64
    X = gaussian((m, d), generator=g, dtype=dt, device=ctx.device)
    w_star = p["w_scale"] * gaussian((d,), generator=g, dtype=dt, device=ctx.device)
    y = X @ w_star + p["noise"] * gaussian((m,), generator=g, dtype=dt, device=ctx.device)

    def loss(W):
        return 0.25 * (X @ W.reshape(-1) - y).pow(4).mean()

    start = product(init_balanced_deep([d, p["width"], 1], scale=p["init_scale"], generator=ctx.seed + 1, dtype=dt,
                                       device=ctx.device))
    curves, reach = {}, {}
    for N in p["depths"]:
        net = DeepLinear([d] + [p["width"]] * (N - 1) + [1], end_to_end=start)
        tr = train(torch.optim.SGD(net.parameters(), lr=p["lr"]), lambda t: loss(net.weight), p["steps"],
                   progress=partial(ctx.progress, desc=f"depth {N}"))
        losses = np.array(tr.losses if not tr.diverged else tr.losses + [np.inf])  # a diverged run is not finite
        curves[N] = losses
        hit = np.flatnonzero(losses <= p["threshold"])
        reach[N] = int(hit[0]) if hit.size else None
    base = reach[1] if reach[1] is not None else p["steps"] + 1
    deep = [N for N in p["depths"] if N > 1]
    holds = bool(all(np.isfinite(curves[N]).all() for N in p["depths"])
                 and all(reach[N] is not None and reach[N] <= p["margin"] * base for N in deep))
    summary = [
        f"l4 regression, d={d}, m={m}, |w*| ~ {p['w_scale']}, noise {p['noise']}; GD lr={p['lr']} for every depth, "
        f"{p['steps']} steps, same end-to-end start",
        *[f"depth {N}: loss <= {p['threshold']} after {reach[N] if reach[N] is not None else 'never'} steps, "
          f"final loss {curves[N][-1]:.4f}" for N in p["depths"]],
        f"claim: every depth >= 2 needs <= {p['margin']} x the steps of depth 1",
    ]
    plt = ctx.pyplot()
    if plt is not None:
        fig, ax = plt.subplots(figsize=(6.5, 3.8))
        for N in p["depths"]:
            ax.semilogy(curves[N], label=f"depth {N}")
        ax.axhline(p["threshold"], color="k", lw=0.6, ls="--")
        ax.set(xlabel="GD step", ylabel="l4 loss", title="implicit acceleration by depth")
        ax.legend()
        ctx.savefig(fig, "loss.png")
    every = max(1, p["steps"] // 300)
    return {
        "claim_holds": holds,
        "summary": summary,
        "steps_to_threshold": {str(N): reach[N] for N in p["depths"]},
        "final_loss": {str(N): float(curves[N][-1]) for N in p["depths"]},
        "curves_every": every,
        "curves": {str(N): curves[N][::every].tolist() for N in p["depths"]},
    }


EXPERIMENT = Experiment(
    name="depth-acceleration",
    paper="Arora, Cohen & Hazan 2018, On the Optimization of Deep Networks: Implicit Acceleration by "
          "Overparameterization",
    claim="on l4 regression, linear networks of depth 2 and 3 reach a loss threshold in fewer GD steps than "
          "depth 1 at the same learning rate",
    run=run,
    params={"d": 10, "m": 200, "w_scale": 2.0, "noise": 0.5, "width": 10, "init_scale": 1.0, "depths": [1, 2, 3],
            "lr": 2e-4, "steps": 3000, "threshold": 0.5, "margin": 0.8},
    quick={"steps": 1500},
)
