"""To prune or not to prune: at equal non-zeros, a large network pruned gradually beats a small dense one.

Zhu & Gupta (2017) train a large model while pruning it along the cubic schedule
``s_t = s_f + (s_i − s_f)(1 − (t − t₀)/(nΔt))³`` and compare it with small dense models of the
same number of non-zero parameters: large-sparse wins at every budget. On an easy task
(scikit-learn's digits) a small dense MLP loses nothing, so here the task is built to make
capacity matter: a **sparse teacher** ``y = Σ_{i<H} a_i relu(w_i·x_{S_i} + b_i)`` with ``H``
hidden units, each reading only ``k`` of the ``d`` Gaussian inputs (``a_i = ±1``, the bias is
the weight of a constant input feature, so every parameter is a weight that can be pruned).
Students are bias-free two-layer ReLU MLPs ``(d+1) → h → 1``; at a budget of ``B`` non-zeros
the small dense student has ``h = B/(d+2)`` hidden units, fewer than the teacher's ``H``, while
the large student (``h = width``) is pruned gradually to ``B`` non-zeros and can keep many
narrow units.

Pruning uses :class:`~overparam.prune.GradualPruner` with the cubic schedule (global scope).
The score is the rescaling-invariant *path magnitude* ``|θ ⊙ ∂R/∂θ|`` of
:func:`~overparam.prune.synflow_scores` (``|w_ij|·|a_i|`` for a hidden weight, ``|a_i|·‖w_i‖₁``
for an output weight): plain global magnitude is not invariant to ReLU's ``(w, a) → (cw, a/c)``
and empties the small output layer (set ``scorer="magnitude"`` to see it lose). Both students
train the same number of Adam steps on the same minibatches; the metric is the test MSE of
the unit-variance target.

The claim holds when, at every budget, the large-sparse test MSE (mean over seeds) is at most
``(1 − margin)`` times the small-dense one.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ..backend.random import construction_generator
from ..prune import GradualPruner, cubic, magnitude_scores, synflow_scores
from . import Context, Experiment
from .harness import batches, mlp, train


def _teacher(p, seed: int, device):
    """Data ``(X, y), (Xt, yt)`` from a sparse random ReLU teacher; ``y`` scaled to unit variance."""
    g = construction_generator(seed)
    d, H, k = p["inputs"], p["teacher_units"], p["teacher_fan_in"]
    W = torch.zeros(H, d + 1)
    for i in range(H):
        W[i, torch.randperm(d, generator=g)[:k]] = torch.randn(k, generator=g) / k**0.5
    W[:, d] = p["teacher_bias"] * torch.randn(H, generator=g)
    a = torch.randint(0, 2, (H,), generator=g).float() * 2 - 1

    def sample(n):
        x = torch.cat([torch.randn(n, d, generator=g), torch.ones(n, 1)], 1)
        return x, F.relu(x @ W.T) @ a

    (X, y), (Xt, yt) = sample(p["train"]), sample(p["test"])
    sd = y.std()
    return (X.to(device), (y / sd).to(device)), (Xt.to(device), (yt / sd).to(device))


def nnz(model: nn.Module) -> int:
    """Non-zero parameters of ``model``."""
    return sum(int(p.count_nonzero()) for p in model.parameters())


def _train(model, data, test, p, seed: int, sparsity: float | None) -> float:
    X, y = data
    T = p["steps"]
    opt = torch.optim.Adam(model.parameters(), lr=p["lr"])
    decay = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: 1.0 if t < p["decay_at"] * T else 0.1)
    gp = None
    if sparsity is not None:
        d_in = model[0].in_features
        scorer = {"path": lambda m: synflow_scores(m, (d_in,)), "magnitude": magnitude_scores}[p["scorer"]]
        sched = functools.partial(cubic, final=sparsity, begin=int(p["prune_begin"] * T), end=int(p["prune_end"] * T),
                                  every=max(1, int(p["prune_every"] * T)))
        gp = GradualPruner(model, opt, sched, scorer=scorer, scope="global")
    idx = batches(len(y), p["batch"], generator=seed, device=X.device)

    def loss(t):
        i = next(idx)
        return F.mse_loss(model(X[i]).squeeze(1), y[i])

    def after_step(t):
        decay.step()
        if gp is not None:
            gp.step(t)

    train(opt, loss, T, after_step=after_step)
    if gp is not None:
        gp.remove()
    with torch.no_grad():
        return float(F.mse_loss(model(test[0]).squeeze(1), test[1]))


def run(ctx: Context) -> dict:
    p = ctx.params
    if p["scorer"] not in ("path", "magnitude"):
        raise ValueError(f"scorer must be 'path' or 'magnitude', got {p['scorer']!r}")
    dev = ctx.device
    d_in = p["inputs"] + 1
    big = p["width"]
    big_weights = big * d_in + big
    if any(not 1 <= h < big for h in p["small_widths"]):
        raise ValueError(f"small_widths must lie in [1, width={big}), got {p['small_widths']}")
    budgets = [h * d_in + h for h in p["small_widths"]]
    sparse, dense, counts = [], [], []
    dense_big = []
    for s in ctx.progress(range(p["seeds"]), total=p["seeds"], desc="seeds"):
        seed = ctx.seed * 1000 + s
        data, test = _teacher(p, seed, dev)
        row_s, row_d, row_n = [], [], []
        for h, B in zip(p["small_widths"], budgets):
            large = mlp([d_in, big, 1], bias=False, generator=seed + 1, device=dev)
            row_s.append(_train(large, data, test, p, seed + 2, 1.0 - B / big_weights))
            small = mlp([d_in, h, 1], bias=False, generator=seed + 3, device=dev)
            row_d.append(_train(small, data, test, p, seed + 2, None))
            row_n.append((nnz(large), nnz(small)))
        if p["dense_reference"]:
            large = mlp([d_in, big, 1], bias=False, generator=seed + 1, device=dev)
            dense_big.append(_train(large, data, test, p, seed + 2, None))
        sparse.append(row_s), dense.append(row_d), counts.append(row_n)
    ms, md = np.mean(sparse, 0), np.mean(dense, 0)
    ratio = ms / md
    exact = all(a == b == B for row in counts for (a, b), B in zip(row, budgets))
    holds = bool(exact and np.all(ratio <= 1.0 - p["margin"]))
    summary = [
        f"sparse teacher: {p['teacher_units']} ReLU units x {p['teacher_fan_in']} of {p['inputs']} inputs; "
        f"students (d+1)->h->1 bias-free, Adam lr {p['lr']}, {p['steps']} steps, {p['seeds']} seed(s); "
        f"large h={big} pruned with the cubic schedule ({p['scorer']} scores)",
        "non-zeros         " + "  ".join(f"{B:7d}" for B in budgets),
        "small-dense width " + "  ".join(f"{h:7d}" for h in p["small_widths"]),
        "large-sparse MSE  " + "  ".join(f"{v:7.4f}" for v in ms),
        "small-dense MSE   " + "  ".join(f"{v:7.4f}" for v in md),
        "ratio             " + "  ".join(f"{v:7.3f}" for v in ratio) + f"   (claim: <= {1 - p['margin']:.2f} everywhere)",
    ]
    if dense_big:
        summary.append(f"large dense ({big_weights} non-zeros): test MSE {np.mean(dense_big):.4f}")
    if not exact:
        summary.append(f"non-zero counts differ from the budgets: {counts}")
    plt = ctx.pyplot()
    if plt is not None:
        fig, ax = plt.subplots(figsize=(6, 4))
        ax.loglog(budgets, ms, "o-", label=f"large ({big} units) pruned gradually")
        ax.loglog(budgets, md, "s--", label="small dense, same non-zeros")
        if dense_big:
            ax.axhline(float(np.mean(dense_big)), color="k", lw=0.8, label=f"large dense ({big_weights} non-zeros)")
        ctx.finish_axes(fig, ax, "test_mse_vs_nnz.png", xlabel="non-zero parameters",
                        ylabel="test MSE (unit-variance target)", title="To prune or not to prune (sparse teacher)")
    return {
        "claim_holds": holds,
        "summary": summary,
        "budgets": budgets,
        "small_widths": list(p["small_widths"]),
        "large_sparse_mse": [float(v) for v in ms],
        "small_dense_mse": [float(v) for v in md],
        "ratio": [float(v) for v in ratio],
        "per_seed": {"large_sparse": [[float(v) for v in r] for r in sparse],
                     "small_dense": [[float(v) for v in r] for r in dense]},
        "large_dense_mse": float(np.mean(dense_big)) if dense_big else None,
        "nnz_exact": exact,
    }


EXPERIMENT = Experiment(
    name="prune-or-not",
    paper="Zhu & Gupta 2017, To prune, or not to prune: exploring the efficacy of pruning for model compression",
    claim="at equal numbers of non-zero parameters, a large network pruned gradually (cubic schedule) reaches "
          "a lower test loss than a small dense network",
    run=run,
    params={"inputs": 32, "teacher_units": 128, "teacher_fan_in": 4, "teacher_bias": 0.5, "train": 4096,
            "test": 4096, "width": 256, "small_widths": [8, 16, 32], "steps": 3000, "batch": 256, "lr": 3e-3,
            "decay_at": 0.7, "prune_begin": 0.1, "prune_end": 0.6, "prune_every": 0.025, "scorer": "path",
            "seeds": 3, "margin": 0.2, "dense_reference": True},
    quick={"steps": 1500, "seeds": 1},
)
