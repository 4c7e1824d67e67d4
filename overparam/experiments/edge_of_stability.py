"""Progressive sharpening to the edge of stability under full-batch gradient descent.

Cohen, Kaur, Li, Kolter & Talwalkar (2021), "Gradient Descent on Neural Networks Typically
Occurs at the Edge of Stability", and Agarwala, Pedregosa & Pennington (2022), "Second-order
regression models exhibit progressive sharpening to the edge of stability": under GD with step
``η`` the top Hessian eigenvalue ``λ_max`` first rises (progressive sharpening) and then stops
rising and hovers near ``2/η``, the threshold beyond which GD is unstable on a quadratic,
while the loss keeps (non-monotonically) decreasing.

Two models, both trained with full-batch GD on the MSE loss and ``λ_max`` tracked every few
steps by Lanczos warm-started from the previous eigenvector (a handful of Hessian-vector
products per estimate):

* a quadratic-in-parameters model: the two-layer linear network ``f(x) = aᵀWx`` (outputs are
  quadratic in θ = (W, a)) regressing a linear teacher from a small initialization;
* a tanh MLP (64-64-64-10) on 500 images of scikit-learn's digits with one-hot targets
  (without scikit-learn this part is skipped and reported as such).

The claim holds for a model when ``λ_max·η/2`` starts below 0.75, reaches at least 0.95, and
over the last 40% of training has median in [0.9, 1.2] and maximum below 1.4, and the loss
keeps decreasing at the edge of stability, in the paper's sense (over long time scales, not
step by step): the losses from the first step with ``λ_max·η/2 >= 0.95`` to the end, cut into
4 consecutive blocks of equal length, have strictly decreasing block medians and block minima
(every block reaches a new low: a loss that stalls fails), and the last block's median is
below the loss at that first step. Single steps may (and do) raise the loss:
the number of such steps is reported, not limited.
"""

from __future__ import annotations

from functools import partial

import numpy as np
import torch
from torch import nn

from .. import hessian as oh
from ..backend.random import gaussian
from . import Context, Experiment
from .harness import digits, mlp, train

F = nn.functional


def _keeps_decreasing(losses: np.ndarray, start: int, blocks: int = 4) -> tuple[bool, list[float]]:
    """Whether ``losses[start:]`` decreases over long time scales: the medians and the minima of
    ``blocks`` consecutive equal blocks fall strictly, and the last median is below ``losses[start]``.
    Returns the verdict and the block medians (a run too short for the blocks fails)."""
    seg = np.asarray(losses, dtype=float)[start:]
    if len(seg) < 2 * blocks or not np.isfinite(seg).all():
        return False, []
    parts = np.array_split(seg, blocks)
    med, low = [float(np.median(b)) for b in parts], [float(b.min()) for b in parts]
    falls = all(b < a for a, b in zip(med, med[1:])) and all(b < a for a, b in zip(low, low[1:]))
    return bool(falls and med[-1] < seg[0]), med


def _track(net: nn.Module, X, Y, lr: float, steps: int, every: int, ctx: Context, desc: str, seed: int) -> dict:
    prev, ts, lams, mvs = None, [], [], []

    def sharpness(t: int) -> None:
        nonlocal prev
        if t % every == 0:
            prev = oh.lambda_max(oh.hessian(net, F.mse_loss, (X, Y)), lr=lr, v0=prev, tol=1e-3, generator=seed)
            ts.append(t)
            lams.append(prev.lambda_max)
            mvs.append(prev.eigen.n_matvecs)

    tr = train(torch.optim.SGD(net.parameters(), lr=lr), lambda t: F.mse_loss(net(X), Y), steps, measure=sharpness,
               progress=partial(ctx.progress, desc=desc))
    with torch.no_grad():
        losses = tr.losses + [float(F.mse_loss(net(X), Y))]
    ratio = np.array(lams) * lr / 2
    late = ratio[int(0.6 * len(ratio)):]  # the last 40% of the run
    edge = ts[int(np.argmax(ratio >= 0.95))] if ratio.max() >= 0.95 else len(losses) - 1
    decreasing, medians = _keeps_decreasing(np.array(losses), edge)
    holds = bool(not tr.diverged and ratio[0] < 0.75 and ratio.max() >= 0.95 and 0.9 <= np.median(late) <= 1.2
                 and late.max() < 1.4 and decreasing)
    return {"edge_step": edge, "loss_block_medians": medians, "loss_keeps_decreasing": decreasing,
            "loss_increases_after_edge": int((np.diff(losses[edge:]) > 0).sum()),
            "lr": lr, "threshold": 2 / lr, "steps": ts, "lambda_max": lams, "ratio": ratio.tolist(), "loss": losses,
            "matvecs": mvs, "initial_ratio": float(ratio[0]), "peak_ratio": float(ratio.max()),
            "late_median_ratio": float(np.median(late)), "late_max_ratio": float(late.max()), "holds": holds}


def run(ctx: Context) -> dict:
    p = ctx.params
    runs, summary = {}, []
    q = p["quadratic"]
    X = gaussian((q["n"], q["d"]), generator=ctx.seed + 1, dtype=torch.float64, device=ctx.device)
    Y = X @ gaussian((q["d"], 1), generator=ctx.seed + 2, dtype=torch.float64, device=ctx.device) * q["target_scale"]
    net = mlp([q["d"], q["h"], 1], activation=None, bias=False, std=q["init_std"], generator=ctx.seed,
              dtype=torch.float64, device=ctx.device)
    runs["quadratic"] = _track(net, X, Y, q["lr"], q["steps"], p["every"], ctx, "GD, f = a^T W x", ctx.seed)
    m = p["mlp"]
    try:
        Xd, yd = digits(dtype=torch.float64, device=ctx.device)
    except ImportError:
        ctx.notes.append("scikit-learn is not installed: the MLP-on-digits part was skipped (pip install 'overparam[digits]')")
        summary.append("MLP on digits: SKIPPED, scikit-learn is not installed (pip install 'overparam[digits]')")
    else:
        net = mlp([64, 64, 64, 10], activation=nn.Tanh, generator=ctx.seed, dtype=torch.float64, device=ctx.device)
        with torch.no_grad():  # a small read-out: the run starts well below the edge of stability
            net[-1].weight.mul_(m["out_scale"])
            net[-1].bias.zero_()
        data = Xd[:m["n"]], F.one_hot(yd[:m["n"]], 10).to(torch.float64)
        runs["mlp"] = _track(net, *data, m["lr"], m["steps"], p["every"], ctx, "GD, tanh MLP on digits", ctx.seed)
    names = {"quadratic": "two-layer linear a^T W x (quadratic in params)", "mlp": f"tanh MLP on {m['n']} digits"}
    for k, r in runs.items():
        warm = np.mean(r["matvecs"][1:]) if len(r["matvecs"]) > 1 else float("nan")
        summary.append(f"{names[k]}: eta = {r['lr']}, 2/eta = {r['threshold']:.3g}; lambda_max*eta/2 starts at "
                       f"{r['initial_ratio']:.2f}, peaks at {r['peak_ratio']:.2f}, last-40% median "
                       f"{r['late_median_ratio']:.2f} (max {r['late_max_ratio']:.2f}); loss {r['loss'][0]:.3g} -> "
                       f"{r['loss'][-1]:.3g}, from the edge (step {r['edge_step']}) block medians "
                       f"{', '.join(f'{v:.3g}' for v in r['loss_block_medians'])} "
                       f"({'decreasing' if r['loss_keeps_decreasing'] else 'NOT decreasing'}; "
                       f"{r['loss_increases_after_edge']} single-step rises); {warm:.1f} HVPs per warm-started estimate (cold: {r['matvecs'][0]})")
    holds = bool(runs) and all(r["holds"] for r in runs.values()) and "mlp" in runs
    plt = ctx.pyplot()
    if plt is not None:
        fig, axes = plt.subplots(2, len(runs), figsize=(5 * len(runs), 6), squeeze=False)
        for j, (k, r) in enumerate(runs.items()):
            axes[0, j].plot(r["steps"], r["lambda_max"], label=r"$\lambda_{max}$")
            axes[0, j].axhline(r["threshold"], color="k", ls="--", lw=0.8, label=r"$2/\eta$")
            axes[0, j].set(title=names[k], ylabel="sharpness")
            axes[0, j].legend()
            axes[1, j].semilogy(r["loss"])
            axes[1, j].set(xlabel="GD step", ylabel="train loss")
        ctx.savefig(fig, "sharpness.png")
    return {"claim_holds": holds, "summary": summary, "runs": runs}


EXPERIMENT = Experiment(
    name="edge-of-stability",
    paper="Cohen et al. 2021, Gradient Descent on Neural Networks Typically Occurs at the Edge of Stability; "
          "Agarwala et al. 2022, Second-order regression models exhibit progressive sharpening to the edge of stability",
    claim="under full-batch GD the top Hessian eigenvalue rises (progressive sharpening) and then hovers near 2/eta "
          "while the loss keeps decreasing non-monotonically, on a quadratic-in-parameters model and on an MLP",
    run=run,
    params={"every": 5,
            "quadratic": {"n": 40, "d": 10, "h": 20, "init_std": 0.1, "target_scale": 5.0, "lr": 0.05, "steps": 400},
            "mlp": {"n": 500, "out_scale": 0.01, "lr": 1.0, "steps": 600}},
    quick={"quadratic": {"n": 40, "d": 10, "h": 20, "init_std": 0.1, "target_scale": 5.0, "lr": 0.05, "steps": 200},
           "mlp": {"n": 500, "out_scale": 0.01, "lr": 1.0, "steps": 300}},
)
