"""Lifting turns the spurious local minima of matrix sensing into strict saddles.

Ma, Molybog, Lavaei & Sojoudi (ICML 2023), "Over-parametrization via Lifting for Low-rank
Matrix Sensing: Conversion of Spurious Solutions to Strict Saddle Points": the spurious
solutions of Burer-Monteiro matrix sensing stay stationary points at every level of the lifted
hierarchy, but become strict saddles (negative curvature, escapable by local search) once the
problem is lifted far enough.

We collect spurious second-order critical points of small symmetric sensing instances
(``n = 3``, rank 1, few Gaussian measurements, where they are common): gradient descent from
many random starts, Newton polishing, then keep points with ``‖∇f‖ ≈ 0``, ``∇²f ≻ 0`` and
``f > 0`` away from ``M*``. At each one we lift to order ``l`` (and lifted search rank ``s``)
with :class:`overparam.problems.LiftedSensing` and compute, in float64 and exactly (dense
``torch.func`` derivatives), the lifted gradient norm and the smallest eigenvalue of the lifted
Hessian at ``lift(X)``.
"""

from __future__ import annotations

import numpy as np
import torch

from ..problems import LiftedSensing, sensing
from . import Context, Experiment


def _derivatives(S: torch.Tensor, y: torch.Tensor, x: torch.Tensor, *, hessian: bool = True):
    """Closed-form f, ∇f and (unless ``hessian=False``: None) ∇²f of
    f(x) = 1/(4m) Σ (xᵀS_i x − y_i)² for a batch ``x (K, n)``."""
    Sx = torch.einsum("mij,kj->kmi", S, x)                      # (K, m, n)
    r = torch.einsum("kmi,ki->km", Sx, x) - y                    # (K, m)
    m = S.shape[0]
    f = 0.25 * r.square().mean(-1)
    g = torch.einsum("km,kmi->ki", r, Sx) / m
    if not hessian:
        return f, g, None
    H = (torch.einsum("km,mij->kij", r, S) + 2 * torch.einsum("kmi,kmj->kij", Sx, Sx)) / m
    return f, g, H


def _spurious_points(P, p: dict, seed: int) -> list[torch.Tensor]:
    S = (P.A + P.A.mT) / 2
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(p["starts"], P.shape[0], generator=gen, dtype=S.dtype)
    for _ in range(p["gd_steps"]):
        x = x - p["lr"] * _derivatives(S, P.y, x, hessian=False)[1]
    x = x[torch.isfinite(x).all(dim=1)]  # a start far out may diverge at this step size: dropped
    for _ in range(p["newton_steps"]):
        _, g, H = _derivatives(S, P.y, x)
        x = x - torch.linalg.lstsq(H, g.unsqueeze(-1)).solution.squeeze(-1)
        x = x[torch.isfinite(x).all(dim=1)]
    f, g, H = _derivatives(S, P.y, x)
    lam = torch.linalg.eigvalsh(H)[:, 0]
    out: list[torch.Tensor] = []
    for k in range(len(x)):
        X = x[k:k + 1].T
        if (float(g[k].norm()) < 1e-11 and float(lam[k]) > 1e-6 and float(f[k]) > 1e-6
                and float(P.relative_error(X)) > 0.1
                and all(float(torch.linalg.matrix_norm(X @ X.T - Y @ Y.T)) > 1e-6 for Y in out)):
            out.append(X)
    return out


def _lifted_check(P, X: torch.Tensor, order: int, search_rank: int) -> tuple[float, float]:
    lifted = LiftedSensing(P, rank=1, order=order, search_rank=search_rank)

    def h(t):
        return lifted.loss(t.reshape(lifted.shape))
    t = lifted.lift(X).reshape(-1)
    grad = float(torch.func.grad(h)(t).norm())
    lam_min = float(torch.linalg.eigvalsh(torch.func.hessian(h)(t))[0])
    return grad, lam_min


def run(ctx: Context) -> dict:
    p = ctx.params
    points = []
    for inst in ctx.progress(range(p["instances"]), total=p["instances"], desc="spurious minima"):
        P = sensing(n=p["n"], r=1, m=p["m"], generator=ctx.seed + inst, dtype=torch.float64)
        points += [(P, X) for X in _spurious_points(P, p, ctx.seed + 10_000 + inst)]
    if not points:
        return {"claim_holds": False, "summary": ["no spurious local minimum found: raise instances or starts"]}
    levels = [(l, s) for s in p["search_ranks"] for l in p["orders"]]
    lam = np.empty((len(points), len(levels)))
    grad = np.empty_like(lam)
    for i, (P, X) in enumerate(ctx.progress(points, total=len(points), desc="lifted Hessians")):
        for j, (l, s) in enumerate(levels):
            grad[i, j], lam[i, j] = _lifted_check(P, X, l, s)
    thr = p["saddle_threshold"]
    frac = {f"l={l}, s={s}": float((lam[:, j] < -thr).mean()) for j, (l, s) in enumerate(levels)}
    rank1 = [frac[f"l={l}, s=1"] for l in p["orders"]]
    stationary = float(grad.max()) <= p["stationary_tol"]
    holds = (stationary and rank1[0] == 0.0 and all(b >= a for a, b in zip(rank1, rank1[1:]))
             and rank1[-1] >= p["min_fraction"])
    summary = [f"{len(points)} spurious local minima of symmetric sensing (n={p['n']}, rank 1, m={p['m']}) from "
               f"{p['instances']} instances x {p['starts']} random starts",
               f"max lifted gradient norm at lift(X), over all points and levels: {grad.max():.1e} (stationary)"]
    summary += [f"order l={l}, lifted search rank s={s}: strict saddle (lambda_min < -{thr:g}) at "
                f"{frac[f'l={l}, s={s}']:.0%} of them, median lambda_min {np.median(lam[:, j]):+.2e}"
                for j, (l, s) in enumerate(levels)]
    summary.append(f"claim: all stay stationary (<= {p['stationary_tol']:g}); with s=1 none is a saddle at l=1, the "
                   f"fraction grows with l and reaches >= {p['min_fraction']:.0%} at l={p['orders'][-1]}")
    plt = ctx.pyplot()
    if plt is not None:
        fig, axes = plt.subplots(1, 2, figsize=(10, 4))
        ls = [j for j, (_, s) in enumerate(levels) if s == 1]
        for i in range(len(points)):
            axes[0].plot(p["orders"], lam[i, ls], "o-", alpha=0.6, lw=1)
        axes[0].axhline(0, color="k", lw=0.8)
        axes[0].set_yscale("symlog", linthresh=1e-4)
        axes[0].set(xlabel="lifting order l (search rank 1)", ylabel=r"$\lambda_{\min}$ of the lifted Hessian",
                    title="each spurious minimum, lifted", xticks=p["orders"])
        for s in p["search_ranks"]:
            axes[1].plot(p["orders"], [frac[f"l={l}, s={s}"] for l in p["orders"]], "o-", label=f"search rank s={s}")
        axes[1].set(xlabel="lifting order l", ylabel="fraction that are strict saddles", ylim=(-0.05, 1.05),
                    xticks=p["orders"], title="conversion to strict saddles")
        axes[1].legend()
        fig.tight_layout()
        ctx.savefig(fig, "lifting_saddles.png")
    return {"claim_holds": bool(holds), "summary": summary, "n_points": len(points), "levels": [list(v) for v in levels],
            "strict_saddle_fraction": frac, "lambda_min": lam.tolist(), "lifted_grad_norm": grad.tolist()}


EXPERIMENT = Experiment(
    name="lifting-saddles",
    paper="Ma, Molybog, Lavaei & Sojoudi 2023, Over-parametrization via Lifting for Low-rank Matrix Sensing",
    claim="spurious local minima of symmetric sensing stay stationary points of every lifted problem, and lifting "
          "turns them into strict saddles: the fraction with negative lifted curvature grows with the order l",
    run=run,
    params={"n": 3, "m": 5, "instances": 40, "starts": 32, "gd_steps": 1000, "lr": 0.1, "newton_steps": 30,
            "orders": [1, 2, 3, 4], "search_ranks": [1, 2], "saddle_threshold": 1e-6, "stationary_tol": 1e-9,
            "min_fraction": 0.8},
    quick={"instances": 12, "starts": 16, "orders": [1, 2, 3, 4], "search_ranks": [1]},
)
