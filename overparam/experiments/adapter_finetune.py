"""Fine-tuning a "pretrained" layer stack with adapters: does ScaledGD(λ) preconditioning help AdamW?

Zhang & Pilanci (2024), "Riemannian Preconditioned LoRA for Fine-Tuning Foundation Models":
AdamW on the LoRA factors, with the gradients first multiplied by the r×r ScaledGD(λ)
preconditioners ``(BᵀB + λI)⁻¹`` / ``(AᵀA + λI)⁻¹`` (:class:`~overparam.optim.Preconditioned`),
trains faster than plain LoRA + AdamW, most of all when the factors are ill-conditioned.

Synthetic task: a random GELU MLP is the "pretrained" model; the fine-tuning target is the same
MLP with every weight shifted by a rank-``r`` matrix whose singular values span ``1 … 1/κ``
(``κ = 1000``: an ill-conditioned shift, so the adapter factors that fit it are ill-conditioned).
Each method trains for the same number of full-batch steps (constant learning rate; ``decay``
> 0 decays it linearly through an LR scheduler), at the best learning rate of a small grid (best
final loss), from the same start (LoRA: ``B = 0``, ``A`` Kaiming-uniform, rank ``r``):

* ``lora_adamw``: LoRA (rank ``r``) + AdamW; ``lora_precond``: the same with ScaledGD(λ)
  preconditioning (``damping`` λ) in front of AdamW; ``loraplus``: LoRA+ groups (``ratio``) with AdamW;
* ``galore``: GaLore (rank ``r``) on the full weights; ``full``: AdamW on every weight.

Each method's optimizer state is measured in bytes (:func:`~overparam.optim.optimizer_state_bytes`).
The claim holds when the median over seeds (``ctx.seed`` and ``ctx.seed + extra_seeds``; the
other methods run at ``ctx.seed`` only) of preconditioned / plain LoRA + AdamW final loss is below
``margin`` (0.5); all per-seed ratios are printed. The ratio spreads widely over seeds and
depends on the damping: with ``λ = 1e-3`` the quick run gave 0.38, 0.055, 2.5 for seeds 0, 1, 2
(plain LoRA + AdamW won at seed 2); ``λ = 1e-2`` (the default, chosen on seeds 0–2: 0.042, 0.0078,
0.32) gave 0.16, 0.19, 0.12 on the fresh seeds 3, 4, 5. A likely reason: with ``B = 0`` at init
the A-gradient is first multiplied by up to ``1/λ``, and AdamW's second moment (β₂ = 0.999)
remembers that scale long after ``BᵀB`` has grown, shrinking ``A``'s effective step. At the
reduced size of the test (``[16, 32, 32, 8]``, rank 2, 150 steps) plain LoRA + AdamW still wins
at seed 0 (ratio 19), so the claim is a quick-run (or full-run) result, not a small-size one. Digits (scikit-learn): an MLP pretrained on the digits, fine-tuned on the mirrored
images (reported, not part of the verdict).
"""

from __future__ import annotations

import copy
import statistics
from collections.abc import Callable
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from ..backend.random import construction_generator, gaussian, orthonormal
from ..factor import lora_, pairs
from ..optim import GaLore, Preconditioned, loraplus_groups, optimizer_state_bytes
from . import Context, Experiment
from .harness import digits, mlp, train

METHODS = ("lora_adamw", "lora_precond", "loraplus", "galore", "full")


def _shifted_target(net: nn.Sequential, rank: int, kappa: float, size: float, g: torch.Generator) -> nn.Sequential:
    """``net`` with each Linear weight ``W (m, n)`` shifted by ``size·‖W‖₂ · U diag(1 … 1/κ) Vᵀ``."""
    target = copy.deepcopy(net)
    with torch.no_grad():
        for lay in target:
            if isinstance(lay, nn.Linear):
                m, n = lay.weight.shape
                k = min(rank, m, n)
                U = orthonormal(m, k, generator=g, dtype=lay.weight.dtype)
                V = orthonormal(n, k, generator=g, dtype=lay.weight.dtype)
                s = torch.logspace(0, -torch.log10(torch.tensor(float(kappa))).item(), k, dtype=lay.weight.dtype)
                lay.weight.add_(size * torch.linalg.matrix_norm(lay.weight, 2) * (U * s) @ V.T)
    return target


def _optimizer(name: str, net: nn.Module, lr: float, p: dict) -> torch.optim.Optimizer:
    if name == "full":
        return torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=0.0)
    if name == "galore":
        return GaLore(net.parameters(), lr=lr, weight_decay=0.0, rank=p["rank"], update_every=p["galore_every"],
                      scale=p["galore_scale"], generator=0)
    lora_(net, [nn.Linear], rank=p["rank"], init="kaiming", generator=construction_generator(0))
    trainable = [q for q in net.parameters() if q.requires_grad]
    if name == "loraplus":
        return torch.optim.AdamW(loraplus_groups(net, pairs(net), lr=lr, ratio=p["loraplus_ratio"]))
    inner = torch.optim.AdamW(trainable, lr=lr, weight_decay=0.0)
    if name == "lora_precond":
        return Preconditioned(inner, pairs(net), damping=p["damping"])
    return inner


def _run(name: str, base: nn.Module, loss: Callable[[nn.Module], torch.Tensor], p: dict, ctx: Context,
         desc: str) -> dict:
    """The best (lowest final loss) run of ``name`` over its lr grid: curve, lr, state bytes."""
    best = None
    for lr in p["lrs"][name]:
        net = copy.deepcopy(base)
        opt = _optimizer(name, net, lr, p)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: 1 - p["decay"] * t / p["steps"])   # linear decay
        tr = train(opt, lambda t: loss(net), p["steps"], after_step=lambda t: sched.step(),
                   progress=partial(ctx.progress, desc=f"{desc} {name} lr={lr}"))
        with torch.no_grad():
            final = float(loss(net))
        curve = tr.losses + [final] * (p["steps"] + 1 - len(tr.losses))
        if tr.diverged:
            final = float("inf")
        if best is None or final < best["final"]:
            conds = [float(torch.linalg.cond(B.detach())) for B, _ in pairs(net)] if name.startswith("lora") else []
            best = {"final": final, "lr": lr, "curve": curve, "state_bytes": optimizer_state_bytes(opt),
                    "max_factor_cond": max(conds) if conds else None}
    return best


def _synthetic(p: dict, ctx: Context, seed: int, methods=METHODS) -> dict:
    g = torch.Generator().manual_seed(seed)
    base = mlp(p["sizes"], activation=nn.GELU, generator=g, dtype=torch.float64, device=ctx.device)
    target = _shifted_target(base, p["shift_rank"], p["kappa"], p["shift"], g)
    X = gaussian((p["n"], p["sizes"][0]), generator=g, dtype=torch.float64).to(ctx.device)
    with torch.no_grad():
        Y = target(X)
        scale = float(((Y - base(X)) ** 2).mean())

    def loss(net: nn.Module) -> torch.Tensor:
        return F.mse_loss(net(X), Y) / scale           # 1 at the start

    return {name: _run(name, base, loss, p, ctx, f"synthetic seed {seed}") for name in methods}


def _digits(p: dict, ctx: Context) -> dict | None:
    try:
        X, y = digits(dtype=torch.float64, device=ctx.device)
        X, y = X[: p["digits_n"]], y[: p["digits_n"]]
    except ImportError:
        ctx.notes.append("scikit-learn is not installed: the digits part was skipped (pip install 'overparam[digits]')")
        return None
    g = torch.Generator().manual_seed(ctx.seed)
    base = mlp([64, p["digits_hidden"], p["digits_hidden"], 10], activation=nn.GELU, generator=g,
               dtype=torch.float64, device=ctx.device)
    pre = torch.optim.AdamW(base.parameters(), lr=3e-3)
    train(pre, lambda t: F.cross_entropy(base(X), y), p["digits_pretrain"])
    Xm = X.reshape(-1, 8, 8).flip(-1).reshape(-1, 64)                 # the shifted task: mirrored images

    def loss(net: nn.Module) -> torch.Tensor:
        return F.cross_entropy(net(Xm), y)

    q = dict(p, steps=p["digits_steps"])
    return {name: _run(name, base, loss, q, ctx, "digits") for name in METHODS}


def run(ctx: Context) -> dict:
    p = ctx.params
    syn = _synthetic(p, ctx, ctx.seed)
    ratios = {ctx.seed: syn["lora_precond"]["final"] / syn["lora_adamw"]["final"]}
    for s in p["extra_seeds"]:
        other = _synthetic(p, ctx, ctx.seed + s, methods=("lora_adamw", "lora_precond"))
        ratios[ctx.seed + s] = other["lora_precond"]["final"] / other["lora_adamw"]["final"]
    dig = _digits(p, ctx) if p["digits"] else None
    ratio = statistics.median(ratios.values())
    holds = ratio < p["margin"]
    adam = syn["full"]["state_bytes"]
    summary = [f"synthetic: GELU MLP {p['sizes']}, rank-{p['rank']} shift with kappa {p['kappa']:g}, {p['steps']} "
               f"full-batch steps, loss relative to the start, best lr of a grid per method"]
    summary += [f"  {k:13s} final loss {v['final']:.3e} (lr {v['lr']:g}), state {v['state_bytes']} bytes "
                f"({v['state_bytes'] / adam:.3f} of full AdamW)"
                + (f", max cond(B) {v['max_factor_cond']:.3g}" if v["max_factor_cond"] else "") for k, v in syn.items()]
    summary.append("preconditioned / plain LoRA+AdamW final loss by seed: "
                   + ", ".join(f"{k}: {v:.3g}" for k, v in ratios.items())
                   + f"; median {ratio:.3g} (claim: median < {p['margin']})")
    if dig is not None:
        summary.append(f"digits, mirrored images, {p['digits_steps']} steps (cross-entropy, not in the verdict): "
                       + ", ".join(f"{k} {v['final']:.3g}" for k, v in dig.items()))
    plt = ctx.pyplot()
    if plt is not None:
        parts = [("synthetic", syn)] + ([("digits", dig)] if dig is not None else [])
        fig, axes = plt.subplots(1, len(parts), figsize=(5.5 * len(parts), 3.8), squeeze=False)
        for ax, (title, res) in zip(axes[0], parts):
            for k, v in res.items():
                ax.semilogy(v["curve"], label=f"{k} (lr {v['lr']:g})")
            ax.set(xlabel="step", ylabel="training loss", title=f"{title}: fine-tuning at equal steps")
            ax.legend(fontsize=7)
        ctx.savefig(fig, "loss_curves.png")
    every = max(1, p["steps"] // 200)
    strip = lambda res: {k: {**v, "curve": v["curve"][::every]} for k, v in res.items()}  # noqa: E731
    return {"claim_holds": holds, "summary": summary, "precond_over_plain": ratio,
            "precond_over_plain_by_seed": {str(k): v for k, v in ratios.items()}, "synthetic": strip(syn),
            "digits": strip(dig) if dig is not None else None, "curves_every": every}


EXPERIMENT = Experiment(
    name="adapter-finetune",
    paper="Zhang & Pilanci 2024, Riemannian Preconditioned LoRA for Fine-Tuning Foundation Models",
    claim="with an ill-conditioned low-rank shift, AdamW with ScaledGD(lambda)-preconditioned LoRA factors reaches "
          "a lower loss than plain LoRA + AdamW at equal steps (LoRA+, GaLore and full fine-tuning for reference)",
    run=run,
    params={"sizes": [32, 64, 64, 16], "rank": 4, "shift_rank": 4, "kappa": 1000.0, "shift": 0.5, "n": 512,
            "steps": 600, "damping": 1e-2, "decay": 0.0,
            "loraplus_ratio": 16.0, "galore_every": 100, "galore_scale": 1.0, "margin": 0.5, "extra_seeds": [1, 2],
            "lrs": {"lora_adamw": [1e-2, 3e-2, 1e-1], "lora_precond": [1e-2, 3e-2, 1e-1],
                    "loraplus": [1e-3, 3e-3, 1e-2], "galore": [1e-2, 3e-2, 1e-1], "full": [1e-3, 3e-3, 1e-2]},
            "digits": True, "digits_n": 1797, "digits_hidden": 64, "digits_pretrain": 300, "digits_steps": 300},
    quick={"steps": 300, "digits_n": 600, "digits_pretrain": 150, "digits_steps": 100},
)
