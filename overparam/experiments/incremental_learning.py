"""Incremental learning of gradient descent with small initialization in matrix sensing.

Jin, Li, Lyu, Du & Lee (2023), "Understanding Incremental Learning of Gradient Descent: A
Fine-grained Analysis of Matrix Sensing": on symmetric sensing ``f(U) = 1/(4m)‖𝒜(UUᵀ) − y‖²``
with an over-parameterized ``U (n, k)``, ``k > r``, GD from a small random init learns the
ground truth's eigen-components one at a time, largest first (greedy low-rank learning).

We train :class:`overparam.factor.LowRank` (``U Uᵀ``, ``init="small"``) with plain SGD on full
batches, record the top eigenvalues ``σ_i(t)`` of ``UUᵀ`` every step, and measure ``t_i``, the
first step at which ``σ_i`` crosses half its target ``σ_i*``. The claim holds when (with margins)
``t_{i+1} >= ratio · t_i``, each later component is still below ``lag`` times its target
when the previous one crosses half of its own, the run ends at a small relative error, and
the surplus directions (``i > r``) stay below ``1e-2``.
"""

from __future__ import annotations

from functools import partial

import numpy as np
import torch

from ..factor import LowRank
from ..problems import sensing
from . import Context, Experiment
from .harness import train


def run(ctx: Context) -> dict:
    p = ctx.params
    n, r, k = p["n"], p["r"], p["k"]
    P = sensing(n=n, r=r, m=p["m"], kappa=p["kappa"], generator=ctx.seed, dtype=torch.float64, device=ctx.device)
    model = LowRank((n, n), k, symmetric=True, init="small", scale=p["init_scale"], generator=ctx.seed + 1,
                    dtype=torch.float64, device=ctx.device)
    target = torch.linalg.eigvalsh(P.M_star).flip(0)[:r].cpu().numpy()
    shown = min(k, r + 2)
    sig = np.full((p["steps"] + 1, shown), np.nan)

    def eigenvalues(t: int) -> bool:
        """Record the top eigenvalues of UUᵀ; False (stop) once U is not finite: diverged, the claim cannot hold."""
        if not bool(torch.isfinite(model.left).all()):
            return False
        with torch.no_grad():
            sig[t] = torch.linalg.eigvalsh(model()).flip(0)[:shown].cpu().numpy()
        return True

    train(torch.optim.SGD(model.parameters(), lr=p["lr"]), lambda t: P.loss(model.left), p["steps"],
          measure=eigenvalues, until=lambda ok: not ok, progress=partial(ctx.progress, desc="GD"))
    with torch.no_grad():
        rel_err = float(P.relative_error(model.left))
    rel_err = rel_err if np.isfinite(rel_err) else float("inf")
    cross = []
    for i in range(r):
        hit = np.flatnonzero(sig[:, i] >= target[i] / 2)
        cross.append(int(hit[0]) if hit.size else None)
    learned = all(c is not None for c in cross)
    ratios = [cross[i + 1] / max(cross[i], 1) for i in range(r - 1)] if learned else []
    lags = [float(sig[cross[i], i + 1] / target[i + 1]) for i in range(r - 1)] if learned else []
    surplus = float(np.nanmax(sig[:, r:])) if shown > r else 0.0
    holds = (np.isfinite(sig).all() and learned and all(q >= p["ratio"] for q in ratios) and all(q <= p["lag"] for q in lags)
             and rel_err <= 1e-2 and surplus <= 1e-2)
    summary = [
        f"symmetric matrix sensing n={n}, r={r}, m={p['m']}, kappa={p['kappa']}; U is {n}x{k} (k > r), "
        f"init scale {p['init_scale']}, GD lr={p['lr']}, {p['steps']} steps",
        "targets sigma_i* = " + ", ".join(f"{s:.3f}" for s in target),
        "step at which sigma_i(UU^T) crosses sigma_i*/2: " + ", ".join(str(c) for c in cross),
        "ratios t_(i+1)/t_i: " + ", ".join(f"{q:.2f}" for q in ratios) + f" (need >= {p['ratio']})",
        "sigma_(i+1)/sigma_(i+1)* when sigma_i crosses half: " + ", ".join(f"{q:.3f}" for q in lags)
        + f" (need <= {p['lag']})",
        f"final relative error {rel_err:.2e}; largest surplus eigenvalue (i > r) over the run {surplus:.2e}",
    ]
    plt = ctx.pyplot()
    if plt is not None:
        fig, ax = plt.subplots(figsize=(6.5, 3.8))
        for i in range(shown):
            ax.plot(sig[:, i], label=f"$\\sigma_{i + 1}$" + ("" if i < r else " (surplus)"))
        for i in range(r):
            ax.axhline(target[i], color="k", lw=0.5, ls="--")
            if cross[i] is not None:
                ax.axvline(cross[i], color="grey", lw=0.5, ls=":")
        ax.set(xlabel="GD step", ylabel="eigenvalues of $UU^\\top$", title="incremental learning from small init")
        ax.legend(fontsize=8, loc="center right")
        ctx.savefig(fig, "singular_values.png")
    every = max(1, p["steps"] // 300)
    return {
        "claim_holds": bool(holds),
        "summary": summary,
        "targets": [float(s) for s in target],
        "half_crossing_steps": cross,
        "crossing_ratios": ratios,
        "lag_at_crossing": lags,
        "final_relative_error": rel_err,
        "max_surplus_eigenvalue": surplus,
        "sigma_every": every,
        "sigma": sig[::every].tolist(),
    }


EXPERIMENT = Experiment(
    name="incremental-learning",
    paper="Jin, Li, Lyu, Du & Lee 2023, Understanding Incremental Learning of Gradient Descent: "
          "A Fine-grained Analysis of Matrix Sensing",
    claim="GD from small init on over-parameterized symmetric matrix sensing learns the eigenvalues of "
          "M* one at a time, largest first",
    run=run,
    params={"n": 20, "r": 3, "k": 20, "m": 500, "kappa": 4.0, "init_scale": 1e-4, "lr": 0.25, "steps": 400,
            "ratio": 1.15, "lag": 0.2},
    quick={"n": 16, "m": 400, "k": 16, "init_scale": 1e-5, "steps": 250},
)
