"""The Hessian of a trained classifier is a bulk near zero plus about as many outliers as classes.

Sagun, Bottou & LeCun (2016) and Sagun, Evci, Güney, Dauphin & Bottou (2017), "Eigenvalues of
the Hessian in deep learning: singularity and beyond" / "Empirical analysis of the Hessian of
over-parametrized neural networks": the spectrum splits into a bulk concentrated at zero,
which only grows when parameters are added, and a few outliers whose number is set by the
data (the number of classes). Papyan (2019) traces the outliers to the class means of the
gradients: ``C`` of them for MSE and ``C − 1`` for cross-entropy (softmax is invariant to a
shift of all logits, which removes one class direction).

We train a one-hidden-layer MLP on scikit-learn's bundled digits data (1,797 8×8 images,
C = 10 classes) with full-batch GD, at width ``h`` and ``2h``, and for each loss compute the
top Hessian eigenvalues with Lanczos over the whole training set. The outlier count is the
position of the largest ratio ``λ_i / λ_{i+1}`` among the top ``k``. The claim holds when, at
both widths, the count is exactly the one predicted for the loss (``C = 10`` for MSE,
``C − 1 = 9`` for cross-entropy: an MSE run with 9 outliers, or a cross-entropy run with 10,
fails), the gap ``λ_count / λ_{count+1}`` is at least 2, and more than 90% of the SLQ spectral
mass of the wider model lies within ``0.05·λ_max`` of zero (the bulk).
"""

from __future__ import annotations

from functools import partial

import numpy as np
import torch
from torch import nn

from .. import hessian as oh
from . import Context, Experiment
from .harness import digits, mlp, train

F = nn.functional
LOSSES = {"cross_entropy": F.cross_entropy, "mse": F.mse_loss}
C = 10                                             # digits classes
EXPECTED = {"cross_entropy": C - 1, "mse": C}      # Papyan (2019): the outlier count per loss


def _train(net: nn.Module, loss: str, X, target, lr: float, steps: int, ctx: Context, desc: str) -> float:
    train(torch.optim.SGD(net.parameters(), lr=lr), lambda t: LOSSES[loss](net(X), target), steps,
          progress=partial(ctx.progress, desc=desc))
    with torch.no_grad():
        return float(LOSSES[loss](net(X), target))


def _count_outliers(values: np.ndarray) -> tuple[int, float]:
    pos = values[values > 0]
    ratios = pos[:-1] / pos[1:]
    i = int(np.argmax(ratios))
    return i + 1, float(ratios[i])


def _verdict(runs: dict[str, dict], bulk_mass: float) -> bool:
    """Every run (``runs[loss][width]``) has exactly the loss's predicted count, with a gap >= 2, and the bulk holds."""
    return all(r["outliers"] == EXPECTED[loss] and r["gap_ratio"] >= 2.0
               for loss, by_width in runs.items() for r in by_width.values()) and bulk_mass > 0.9


def run(ctx: Context) -> dict:
    p = ctx.params
    try:
        X, y = digits(dtype=torch.float64, device=ctx.device)
    except ImportError as e:
        raise RuntimeError(f"the hessian-outliers experiment needs scikit-learn's bundled digits data: {e}") from e
    widths = [p["width"], 2 * p["width"]]
    res: dict[str, dict] = {}
    dens = None
    for loss in p["losses"]:
        target = y if loss == "cross_entropy" else F.one_hot(y, 10).to(X.dtype)
        res[loss] = {}
        for w in widths:
            net = mlp([64, w, 10], generator=ctx.seed, dtype=torch.float64, device=ctx.device)
            final = _train(net, loss, X, target, p["lr"][loss], p["steps"], ctx, f"{loss} width {w}")
            H = oh.hessian(net, LOSSES[loss], (X, target))
            eig = oh.lanczos(H, k=p["k"], tol=1e-6, generator=ctx.seed)
            vals = eig.values.cpu().numpy()
            count, gap = _count_outliers(vals)
            res[loss][w] = {"params": H.n, "loss": final, "top": vals.tolist(), "outliers": count, "gap_ratio": gap,
                            "lanczos_matvecs": eig.n_matvecs}
            if loss == p["losses"][0] and w == widths[-1]:
                dens = oh.density(H, probes=p["slq_probes"], steps=p["slq_steps"], generator=ctx.seed)
                lam_max = float(vals[0])
                bulk_mass = float((dens.weights * (dens.nodes.abs() < 0.05 * lam_max)).sum(1).mean())
    holds = _verdict(res, bulk_mass)
    summary = [f"digits (N = {len(y)}, C = {C} classes), one-hidden-layer ReLU MLP, full-batch GD for {p['steps']} steps"]
    for loss in res:
        for w in widths:
            r = res[loss][w]
            summary.append(f"{loss:>13}, width {w:>3} ({r['params']:>5} params, loss {r['loss']:.3f}): "
                           f"{r['outliers']} outliers (expected {EXPECTED[loss]}; gap lambda_i/lambda_i+1 = {r['gap_ratio']:.1f}), "
                           f"top eigenvalues {', '.join(f'{v:.3g}' for v in r['top'][:3])}, ..., {r['top'][-1]:.3g}")
    summary.append(f"SLQ density (width {widths[-1]}, {p['losses'][0]}): {bulk_mass:.1%} of the spectral mass within "
                   f"0.05 lambda_max of zero (the bulk); expected outliers: C = {C} (MSE), C - 1 = {C - 1} (cross-entropy)")
    plt = ctx.pyplot()
    if plt is not None:
        fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
        oh.plot_density(dens, ax=axes[0])
        axes[0].set_title(f"SLQ density, width {widths[-1]} ({p['losses'][0]})")
        for loss in res:
            for w in widths:
                axes[1].semilogy(range(1, p["k"] + 1), res[loss][w]["top"], "o-", ms=3, label=f"{loss}, width {w}")
        axes[1].axvline(C - 0.5, color="k", lw=0.6, ls="--")
        axes[1].set(xlabel="index i", ylabel=r"$\lambda_i$", title="top Hessian eigenvalues (Lanczos)")
        axes[1].legend(fontsize=7)
        ctx.savefig(fig, "hessian_spectrum.png")
    return {"claim_holds": bool(holds), "summary": summary, "bulk_mass_near_zero": bulk_mass,
            "runs": {loss: {str(w): r for w, r in d.items()} for loss, d in res.items()},
            "density": {"grid": dens.grid[::10].tolist(), "values": dens.values[::10].tolist()}}


EXPERIMENT = Experiment(
    name="hessian-outliers",
    paper="Sagun et al. 2016/2017, Eigenvalues of the Hessian in deep learning: singularity and beyond; "
          "Empirical analysis of the Hessian of over-parametrized neural networks",
    claim="the Hessian spectrum is a bulk near zero plus about as many outliers as classes "
          "(C for MSE, C - 1 for cross-entropy), and doubling the width leaves the outlier count unchanged",
    run=run,
    params={"width": 64, "losses": ["cross_entropy", "mse"], "steps": 300, "lr": {"cross_entropy": 0.1, "mse": 0.5},
            "k": 20, "slq_probes": 8, "slq_steps": 80},
    quick={"width": 32, "steps": 100, "k": 16, "slq_probes": 3, "slq_steps": 40},
)
