"""Over-parameterization slows gradient descent down in symmetric matrix sensing.

Xiong, Ding & Du (2023), "How Over-Parameterization Slows Down Gradient Descent in Matrix
Sensing: The Curses of Symmetry and Initialization": for ``f(X) = 1/(4m)‖𝒜(XXᵀ) − y‖²`` with
``X ∈ R^{n×k}`` and true rank ``r``, randomly initialized GD converges linearly when ``k = r``
but, when ``k > r``, no faster than ``‖XXᵀ − M*‖_F² = Ω(1/T²)``.

We run GD from the same random init for ``k = r`` and for each ``k > r`` and measure (a) the
per-iteration contraction factor of the exact-rank run and (b) the exponent ``p`` in
``‖X_TX_Tᵀ − M*‖_F² ∝ T^{-p}`` over the tail of the over-parameterized runs (the paper
predicts ``p ≈ 2``: the excess directions decay like a scalar ``x ← x − ηx³``).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ..problems import sensing
from . import Context, Experiment


def _gd(P, X: torch.Tensor, eta: float, steps: int, ctx: Context, desc: str) -> np.ndarray:
    grad = torch.func.grad(P.loss)
    errs = np.empty(steps + 1)
    errs[0] = float(P.relative_error(X))
    for t in ctx.progress(range(1, steps + 1), total=steps, desc=desc):
        X = X - eta * grad(X)
        errs[t] = float(P.relative_error(X))
    return errs


def _linear_rate(errs: np.ndarray, lo: float = 1e-12, hi: float = 1e-3) -> float:
    """Per-iteration contraction factor fitted where the error is in [lo, hi]."""
    t = np.flatnonzero((errs > lo) & (errs < hi))
    if t.size < 5:
        return float("nan")
    return float(np.exp(np.polyfit(t, np.log(errs[t]), 1)[0]))


def _power_exponent(errs: np.ndarray, start_frac: float = 1 / 3) -> float:
    """Exponent p of the squared error ``err² ∝ T^{-p}`` fitted on the tail ``T >= start_frac·steps``."""
    t = np.arange(len(errs))[int(start_frac * (len(errs) - 1)) :]
    t = t[t > 0]
    return float(-2 * np.polyfit(np.log(t), np.log(errs[t]), 1)[0])


def run(ctx: Context) -> dict:
    p = ctx.params
    P = sensing(n=p["n"], r=p["r"], m=p["m"], generator=ctx.seed, dtype=torch.float64, device=ctx.device)
    ranks = [p["r"], *p["over_ranks"]]
    curves = {}
    for k in ranks:
        X0 = P.init("small", rank=k, scale=p["init_scale"], generator=ctx.seed + 1)
        assert isinstance(X0, torch.Tensor)  # symmetric problem: one factor
        curves[k] = _gd(P, X0, p["lr"], p["steps"], ctx, desc=f"GD k={k}")
    exact = curves[p["r"]]
    rate = _linear_rate(exact)
    hit = np.flatnonzero(exact <= 1e-10)
    iters_exact = int(hit[0]) if hit.size else None
    exps = {k: _power_exponent(curves[k]) for k in p["over_ranks"]}
    final = {k: float(curves[k][-1]) for k in ranks}
    holds = (
        iters_exact is not None
        and rate < 1
        and all(1.4 <= e <= 2.6 for e in exps.values())
        and all(final[k] > 1e3 * max(final[p["r"]], 1e-15) for k in p["over_ranks"])
    )
    summary = [
        f"matrix sensing n={p['n']}, r={p['r']}, m={p['m']}, GD lr={p['lr']}, {p['steps']} steps, init scale {p['init_scale']}",
        f"k = r = {p['r']}: linear rate, error x{rate:.4f} per step, relative error <= 1e-10 after "
        f"{iters_exact if iters_exact is not None else 'never'} steps (final {final[p['r']]:.2e})",
    ]
    summary += [f"k = {k} > r: sublinear, ||XX^T - M*||_F^2 ~ T^-{exps[k]:.2f} (paper: Omega(1/T^2)), "
                f"final relative error {final[k]:.2e}" for k in p["over_ranks"]]
    plt = ctx.pyplot()
    if plt is not None:
        fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
        for k in ranks:
            lab = f"k = {k}" + (" (exact rank)" if k == p["r"] else " (over-parameterized)")
            axes[0].semilogy(curves[k], label=lab)
            axes[1].loglog(np.arange(1, len(curves[k])), curves[k][1:], label=lab)
        T = np.arange(len(exact) // 3, len(exact))
        for k in p["over_ranks"]:
            ref = curves[k][T[0]] * (T / T[0]) ** -1.0
            axes[1].loglog(T, ref, "k--", lw=0.8)
        axes[1].text(T[0], curves[p["over_ranks"][0]][T[0]] * 2, "slope -1 (err$^2$ ~ 1/T$^2$)", fontsize=8)
        axes[0].set(xlabel="iteration", ylabel=r"$\|XX^\top - M^*\|_F / \|M^*\|_F$", title="GD on symmetric matrix sensing")
        axes[1].set(xlabel="iteration", title="same, log-log")
        axes[0].legend()
        ctx.savefig(fig, "error_vs_iteration.png")
    step = max(1, p["steps"] // 500)
    return {
        "claim_holds": holds,
        "summary": summary,
        "linear_rate_exact_rank": rate,
        "iters_to_1e-10_exact_rank": iters_exact,
        "squared_error_exponent": {str(k): v for k, v in exps.items()},
        "final_relative_error": {str(k): v for k, v in final.items()},
        "curves_every": step,
        "curves": {str(k): [float(x) for x in curves[k][::step]] for k in ranks},
    }


EXPERIMENT = Experiment(
    name="slows-gd",
    paper="Xiong, Ding & Du 2023, How Over-Parameterization Slows Down Gradient Descent in Matrix Sensing",
    claim="GD on symmetric matrix sensing converges linearly with exact rank k = r but only as "
          "||XX^T - M*||_F^2 ~ 1/T^2 with k > r",
    run=run,
    params={"n": 40, "r": 3, "m": 2400, "over_ranks": [4, 6], "lr": 0.2, "steps": 8000, "init_scale": 0.5},
    quick={"n": 20, "r": 2, "m": 600, "over_ranks": [4], "steps": 3000},
)
