"""SubGM on the ℓ1 loss recovers a low-rank matrix from grossly corrupted measurements.

Ma & Fattahi (2023), "Global Convergence of Sub-gradient Method for Robust Matrix Recovery:
Small Initialization, Noisy Measurements, and Over-parameterization": on symmetric Gaussian
sensing where a fraction ``p`` of the measurements is replaced by large arbitrary outliers,
the subgradient method on ``f(U) = (1/m) Σ |<A_i, UUᵀ> − y_i|`` with a *small* random init
``U₀`` of an *over-estimated* rank ``k > r`` and geometric steps ``η_t = η₀ρᵗ`` recovers
``M*`` (to a precision set by the init scale), whereas gradient descent on the ℓ2 loss
from the same init fits the outliers and stalls far from ``M*``.

For each ``p`` (and each noise model) we run :class:`overparam.optim.SubGM` on the ℓ1 loss
and GD (:class:`torch.optim.SGD`) on the ℓ2 loss from the same init and report the final
relative errors ``‖UUᵀ − M*‖_F/‖M*‖_F``.

The claim holds when, in every case, SubGM ends at relative error <= ``tol`` and GD *stalls at
an error bounded away from zero*, as the paper says: GD's relative error is >= ``gd_floor``
(0.1, i.e. 10% of ``‖M*‖_F``) at every iteration of the second half of the run, and has stopped
moving there (it changes by at most ``gd_stall`` = 1%, relative, over the second half), i.e.
GD has converged to the ℓ2 fit of the outliers, not slowly towards ``M*``.
"""

from __future__ import annotations

from functools import partial

import numpy as np
import torch

from ..optim import SubGM, geometric
from ..problems import sensing
from . import Context, Experiment
from .harness import train


def _run(P, U0, opt_name: str, p: dict, ctx: Context, desc: str) -> np.ndarray:
    U = U0.clone().requires_grad_()
    if opt_name == "subgm":
        opt = SubGM([U], step=geometric(p["lr0"], p["decay"]))
    else:
        opt = torch.optim.SGD([U], lr=p["l2_lr"])
    tr = train(opt, lambda t: P.loss(U), p["steps"], measure=lambda t: float(P.relative_error(U).detach()),
               progress=partial(ctx.progress, desc=desc))
    return np.array(tr.measures + [np.inf] * (p["steps"] + 1 - len(tr.measures)))  # a diverged run ends at inf


def _verdict(final: dict[str, dict[str, float]], p: dict) -> bool:
    """SubGM recovered (<= ``tol``) and GD stalled (>= ``gd_floor``, moving <= ``gd_stall``) in every case."""
    return bool(final) and all(v["subgm_l1"] <= p["tol"] and v["gd_l2_min_second_half"] >= p["gd_floor"]
                               and v["gd_l2_change_second_half"] <= p["gd_stall"] for v in final.values())


def run(ctx: Context) -> dict:
    p = ctx.params
    final: dict[str, dict[str, float]] = {}
    curves: dict[str, list[float]] = {}
    for noise in p["noise_models"]:
        for frac in p["outlier_fractions"]:
            key = f"{noise} p={frac}"
            P1 = sensing(n=p["n"], r=p["r"], m=p["m"], loss="l1", outliers=frac, noise=noise, generator=ctx.seed,
                         dtype=torch.float64, device=ctx.device)
            P2 = sensing(n=p["n"], r=p["r"], m=p["m"], loss="l2", outliers=frac, noise=noise, generator=ctx.seed,
                         dtype=torch.float64, device=ctx.device)
            U0 = P1.init("small", rank=p["k"], scale=p["init_scale"], generator=ctx.seed + 1)
            e1 = _run(P1, U0, "subgm", p, ctx, f"SubGM l1 {key}")
            e2 = _run(P2, U0, "gd", p, ctx, f"GD l2 {key}")
            half = e2[len(e2) // 2:]
            final[key] = {"subgm_l1": float(e1[-1]), "gd_l2": float(e2[-1]), "outliers": int(P1.outlier_mask.sum()),
                          "gd_l2_min_second_half": float(half.min()),
                          "gd_l2_change_second_half": float(abs(half[-1] - half[0]) / half[0])}
            step = max(1, p["steps"] // 400)
            curves[f"SubGM l1, {key}"] = [float(x) for x in e1[::step]]
            curves[f"GD l2, {key}"] = [float(x) for x in e2[::step]]
    tol = p["tol"]
    holds = _verdict(final, p)
    summary = [f"symmetric sensing n={p['n']}, r={p['r']}, m={p['m']}, search rank k={p['k']}, "
               f"init scale {p['init_scale']:.0e}, {p['steps']} steps; SubGM eta_t = {p['lr0']}*{p['decay']}^t, "
               f"GD lr {p['l2_lr']}"]
    summary += [f"{k:>16} ({v['outliers']} outliers): SubGM on l1 -> {v['subgm_l1']:.2e}, "
                f"GD on l2 -> {v['gd_l2']:.2e} (moved {v['gd_l2_change_second_half']:.1e} over the second half)"
                for k, v in final.items()]
    summary.append(f"claim: SubGM <= {tol:.0e}, and GD stalls (>= {p['gd_floor']:g} and moving <= "
                   f"{p['gd_stall']:.0%} over the second half) in every case")
    plt = ctx.pyplot()
    if plt is not None:
        fig, ax = plt.subplots(figsize=(6.5, 4))
        every = max(1, p["steps"] // 400)
        for lab, c in curves.items():
            ax.semilogy(np.arange(len(c)) * every, c, "-" if lab.startswith("SubGM") else "--", label=lab)
        ax.set(xlabel="iteration", ylabel=r"$\|UU^\top - M^*\|_F/\|M^*\|_F$", title="robust recovery with outliers")
        ax.legend(fontsize=7)
        ctx.savefig(fig, "robust_recovery.png")
    return {"claim_holds": holds, "summary": summary, "final_relative_error": final, "curves_every": max(1, p["steps"] // 400),
            "curves": curves}


EXPERIMENT = Experiment(
    name="robust-recovery",
    paper="Ma & Fattahi 2023, Global Convergence of Sub-gradient Method for Robust Matrix Recovery",
    claim="SubGM on the l1 loss with small init and over-estimated rank recovers M* to 1e-6 with 20% and 40% "
          "outliers, while GD on the l2 loss from the same init stalls at an error bounded away from zero (>= 10%)",
    run=run,
    params={"n": 20, "r": 2, "k": 5, "m": 2000, "outlier_fractions": [0.2, 0.4], "noise_models": ["sparse", "gaussian"],
            "init_scale": 1e-7, "lr0": 0.5, "decay": 0.99, "l2_lr": 0.1, "steps": 2500, "tol": 1e-6, "gd_floor": 0.1, "gd_stall": 0.01},
    quick={"n": 10, "m": 800, "noise_models": ["sparse"], "init_scale": 1e-6, "lr0": 0.3, "steps": 1500},
)
