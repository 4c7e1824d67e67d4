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

Run: ``python examples/optim_lora_scaledgd.py`` (a few minutes on one CPU core).
"""

from __future__ import annotations

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


def train(opt_name: str, lr: float, steps: int = 400, r: int = 4, seed: int = 0) -> float:
    layers, X, y = make_task(seed=seed)
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
    for _ in range(steps):
        opt.zero_grad()
        loss = (model(X) - y).square().mean()
        loss.backward()
        opt.step()
    with torch.no_grad():
        return float((model(X) - y).square().mean())


def main() -> None:
    torch.set_num_threads(1)
    results = {}
    for name, lrs in (("scaledgd", [0.5, 1.0, 2.0]), ("sgd", [0.3, 1.0, 3.0]), ("adamw", [1e-3, 3e-3, 1e-2])):
        losses = {lr: train(name, lr) for lr in lrs}
        best = min(losses, key=losses.get)
        results[name] = (best, losses[best])
        print(f"{name:>9}: final MSE by lr {', '.join(f'{lr:g}: {v:.2e}' for lr, v in losses.items())}")
    print("best: " + "; ".join(f"{k} (lr={lr:g}) {v:.2e}" for k, (lr, v) in results.items()))


if __name__ == "__main__":
    main()
