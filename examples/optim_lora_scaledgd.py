"""Preconditioned LoRA: fine-tune a small MLP's LoRA adapters with ScaledGD(λ) vs SGD and AdamW.

A LoRA layer adds ``ΔW = B Aᵀ`` (``A (in, r)``, ``B (out, r)``) to a frozen linear layer; the
pair ``(B, A)`` is exactly an overparam factor pair (``L @ R.T`` with ``L = B``, ``R = A``), so
ScaledGD(λ) preconditions each factor with the other's damped Gram matrix — the
"Riemannian preconditioned LoRA" idea. ``B`` starts at zero, so ``BᵀB`` is singular at step 0:
the damping ``λ > 0`` is what makes the first step well defined.

Synthetic task: a frozen random "pretrained" MLP; the target is the same MLP with a rank-2
change to each hidden weight (an ill-conditioned one: singular values 1 and 0.05). Each
optimizer gets a small learning-rate sweep; we print the final training loss of each run.
ScaledGD(λ) is plain (momentum-free) preconditioned GD: compare it first with plain GD on the
same adapters (the comparison of the Riemannian-preconditioned-LoRA paper); AdamW, which also
rescales every coordinate and keeps momentum, is shown as the practical baseline.

Writes ``loss_curves.png`` (the training loss of each optimizer at its best learning rate) and
``lora.json`` into ``--out``.

Run: ``python examples/optim_lora_scaledgd.py --out lora`` (a few minutes on one CPU core), or
``--quick`` for a seconds-long smoke run (fewer steps and learning rates).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from torch import nn

import overparam as op


class LoRALinear(nn.Module):
    """``y = x Wᵀ + b + x (B Aᵀ)ᵀ · scale`` with ``W (out, in)`` frozen, ``A (in, r)``, ``B (out, r)``."""

    def __init__(self, base: nn.Linear, r: int, *, generator: torch.Generator):
        super().__init__()
        self.base = base
        for p in base.parameters():
            p.requires_grad_(False)
        self.A = nn.Parameter(torch.randn(base.in_features, r, generator=generator) / base.in_features**0.5)
        self.B = nn.Parameter(torch.zeros(base.out_features, r))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + x @ self.A @ self.B.T

    def pair(self) -> tuple[nn.Parameter, nn.Parameter]:
        return (self.B, self.A)  # ΔW = B Aᵀ


def _linear(i: int, o: int, g: torch.Generator) -> nn.Linear:
    lin = torch.nn.utils.skip_init(nn.Linear, i, o)
    with torch.no_grad():
        lin.weight.copy_(torch.randn(o, i, generator=g) / i**0.5)
        lin.bias.zero_()
    return lin


def make_task(d: int = 32, h: int = 64, n: int = 2048, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    layers = [_linear(d, h, g), _linear(h, h, g), _linear(h, 1, g)]
    X = torch.randn(n, d, generator=g)
    with torch.no_grad():
        target = [l.weight.clone() for l in layers]
        for W in target[:2]:
            U, _ = torch.linalg.qr(torch.randn(W.shape[0], 2, generator=g))
            V, _ = torch.linalg.qr(torch.randn(W.shape[1], 2, generator=g))
            W += (U * torch.tensor([1.0, 0.05])) @ V.T * 2

        def f(ws, x):
            return torch.tanh(torch.tanh(x @ ws[0].T) @ ws[1].T) @ ws[2].T

        y = f(target, X)
    return layers, X, y


def train(opt_name: str, lr: float, steps: int = 400, r: int = 4, seed: int = 0, n: int = 2048) -> list[float]:
    """The training loss before each of ``steps`` updates and after the last one."""
    layers, X, y = make_task(n=n, seed=seed)
    g = torch.Generator().manual_seed(seed + 1)
    lora = [LoRALinear(layers[0], r, generator=g), LoRALinear(layers[1], r, generator=g)]
    model = nn.Sequential(lora[0], nn.Tanh(), lora[1], nn.Tanh(), layers[2])
    for p in layers[2].parameters():
        p.requires_grad_(False)
    if opt_name == "scaledgd":
        opt = op.optim.ScaledGD([m.pair() for m in lora], lr=lr, damping=1e-2)
    elif opt_name == "sgd":
        opt = torch.optim.SGD([p for m in lora for p in (m.A, m.B)], lr=lr)
    else:
        opt = torch.optim.AdamW([p for m in lora for p in (m.A, m.B)], lr=lr, weight_decay=0.0)
    curve = []
    for _ in range(steps):
        opt.zero_grad()
        loss = (model(X) - y).square().mean()
        curve.append(float(loss.detach()))
        loss.backward()
        opt.step()
    with torch.no_grad():
        return curve + [float((model(X) - y).square().mean())]


LRS = {"scaledgd": [0.5, 1.0, 2.0], "sgd": [0.3, 1.0, 3.0], "adamw": [1e-3, 3e-3, 1e-2]}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--rank", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path("lora_scaledgd"))
    ap.add_argument("--quick", action="store_true", help="a seconds-long smoke run")
    args = ap.parse_args(argv)
    lrs, n = ({k: v[1:2] for k, v in LRS.items()}, 512) if args.quick else (LRS, 2048)
    steps = 60 if args.quick else args.steps
    args.out.mkdir(parents=True, exist_ok=True)
    results, curves = {}, {}
    for name, grid in lrs.items():
        runs = {lr: train(name, lr, steps, args.rank, args.seed, n) for lr in grid}
        best = min(runs, key=lambda lr: runs[lr][-1])
        results[name] = {"best_lr": best, "final": {str(lr): c[-1] for lr, c in runs.items()}}
        curves[name] = runs[best]
        print(f"{name:>9}: final MSE by lr {', '.join(f'{lr:g}: {c[-1]:.2e}' for lr, c in runs.items())}")
    print("best: " + "; ".join(f"{k} (lr={v['best_lr']:g}) {v['final'][str(v['best_lr'])]:.2e}" for k, v in results.items()))

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.2))
    labels = {"scaledgd": "ScaledGD(λ) on (B, A)", "sgd": "GD on (B, A)", "adamw": "AdamW on (B, A)"}
    for name, c in curves.items():
        ax.semilogy(c, label=f"{labels[name]}, lr {results[name]['best_lr']:g}")
    ax.set(xlabel="step", ylabel="training MSE", title="LoRA adapters, best lr each")
    ax.legend(fontsize=8)
    fig.savefig(args.out / "loss_curves.png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    (args.out / "lora.json").write_text(json.dumps(results, indent=1))
    print(f"wrote loss_curves.png and lora.json to {args.out}")
    return results


if __name__ == "__main__":
    torch.set_num_threads(1)
    main()
