"""Adam-atan2: Adam without ε, the update ``m̂/(√v̂ + ε)`` replaced by ``a·atan2(m̂, b·√v̂)``.

Everett, Xiao, Wortsman, Alemi, Novak, Liu, Gur, Sohl-Dickstein, Kaelbling, Lee & Pennington
(2024), "Scaling Exponents Across Parameterizations and Optimizers": Adam's ε must shrink with
the gradient scale of each layer (which changes with width and depth) or it swamps the update;
``atan2`` is scale-invariant (``atan2(c·y, c·x) = atan2(y, x)`` for ``c > 0``), bounded by
``a·π/2`` and defined at ``m̂ = v̂ = 0``, so there is no ε to tune. For ``|m̂| ≪ b·√v̂`` it is
Adam (``a/b · m̂/√v̂``); ``a = 4/π`` makes a constant gradient (``|m̂| = √v̂``) move each entry by
``lr``, as Adam does. Weight decay is decoupled, as in AdamW.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor
from torch.optim import Optimizer

from ..backend.checks import check_real
from ._finite import check_finite_flag, check_finite_grads
from .steps import closure_loss

__all__ = ["AdamAtan2"]


class AdamAtan2(Optimizer):
    """Adam-atan2 (ε-free Adam) with decoupled weight decay, for any parameters.

    Per tensor, at step ``t``: ``m ← β₁m + (1−β₁)g``, ``v ← β₂v + (1−β₂)g²``,
    ``m̂ = m/(1−β₁ᵗ)``, ``v̂ = v/(1−β₂ᵗ)``, ``θ ← θ(1 − lr·weight_decay) − lr·a·atan2(m̂, b·√v̂)``.

    Args:
        params: parameters or param-group dicts (e.g. ``op.scaling.plan(...).param_groups(model, lr=)``).
        lr: learning rate (> 0).
        betas: ``(β₁, β₂)`` in ``[0, 1)``.
        weight_decay: decoupled decay (≥ 0).
        a, b: the update ``a·atan2(m̂, b·√v̂)`` (> 0); default ``a = 4/π``, ``b = 1``.
        check_finite: raise :class:`~overparam.optim.NonFiniteGradientError` naming a parameter
            whose gradient holds NaN or inf, before anything changes.

    Reference: K. Everett et al., "Scaling Exponents Across Parameterizations and Optimizers" (ICML 2024).

    Example:
        >>> import torch, overparam as op
        >>> w = torch.zeros(3, requires_grad=True)
        >>> opt = op.optim.AdamAtan2([w], lr=0.1)
        >>> for _ in range(50):
        ...     opt.zero_grad(); ((w - 1) ** 2).sum().backward(); opt.step()
        >>> bool((w - 1).abs().max() < 0.1)
        True
    """

    def __init__(self, params: Iterable[Any], lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 weight_decay: float = 0.0, *, a: float = 4 / math.pi, b: float = 1.0,
                 check_finite: bool = False) -> None:
        defaults = dict(lr=lr, betas=betas, weight_decay=weight_decay, a=a, b=b, check_finite=check_finite)
        _check_hyper(defaults)
        super().__init__(params, defaults)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a group (``torch.optim.Optimizer.add_param_group``), its hyperparameters checked first.

        Example:
            >>> a, b = torch.zeros(2, requires_grad=True), torch.zeros(2, requires_grad=True)
            >>> opt = AdamAtan2([a], lr=0.1)
            >>> opt.add_param_group({"params": [b], "lr": 0.01, "b": 2.0})
            >>> [(g["lr"], g["b"]) for g in opt.param_groups]
            [(0.1, 1.0), (0.01, 2.0)]
            >>> opt.add_param_group({"params": [torch.zeros(1, requires_grad=True)], "betas": (0.9, 1.0)})
            Traceback (most recent call last):
            ...
            ValueError: betas[1] must be in [0, 1), got 1.0
        """
        _check_hyper(param_group)
        super().add_param_group(param_group)

    @torch.no_grad()
    def step(self, closure: Callable[[], Tensor] | None = None):
        """One step; ``closure`` (re-evaluating the loss, run with grad enabled) is optional.

        Per tensor ``θ`` of any shape: ``θ ← θ(1 − lr·wd) − lr·a·atan2(m̂, b·√v̂)``; returns the closure's loss or None.

        Reference: K. Everett et al., "Scaling Exponents Across Parameterizations and Optimizers" (2024).

        Example:
            >>> w = torch.zeros(3, requires_grad=True)
            >>> opt = AdamAtan2([w], lr=0.1)
            >>> w.grad = torch.tensor([1e-12, -5.0, 0.0])
            >>> opt.step()  # first step: m̂ = g, √v̂ = |g|, so a·atan2 = (4/π)(π/4)·sign(g)
            >>> [round(v, 6) for v in w.tolist()]
            [-0.1, 0.1, 0.0]
        """
        loss = closure_loss(closure)
        check_finite_grads(self)
        for group in self.param_groups:
            b1, b2 = group["betas"]
            lr, wd, a, b = group["lr"], group["weight_decay"], group["a"], group["b"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad
                if g.is_sparse:
                    raise TypeError("AdamAtan2 does not support sparse gradients")
                st = self.state[p]
                if not st:
                    st["step"] = torch.zeros((), dtype=torch.float64)
                    st["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    st["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                st["step"] += 1
                t = float(st["step"])
                m, v = st["exp_avg"], st["exp_avg_sq"]
                m.lerp_(g, 1 - b1)
                v.mul_(b2).addcmul_(g, g, value=1 - b2)
                if wd:
                    p.mul_(1 - lr * wd)
                den = v.div(1 - b2 ** t).sqrt_().mul_(b)
                p.add_(torch.atan2(m / (1 - b1 ** t), den), alpha=-lr * a)
        return loss


def _check_hyper(group: dict[str, Any]) -> None:
    if "lr" in group:
        check_real(group["lr"], "lr", above=0.0, finite=True)
    if "weight_decay" in group:
        check_real(group["weight_decay"], "weight_decay", at_least=0.0, finite=True)
    for k in ("a", "b"):
        if k in group:
            check_real(group[k], k, above=0.0, finite=True)
    if "betas" in group:
        betas = group["betas"]
        if not (isinstance(betas, (tuple, list)) and len(betas) == 2):
            raise ValueError(f"betas must be a pair (beta1, beta2), got {betas!r}")
        for i, x in enumerate(betas):
            check_real(x, f"betas[{i}]", at_least=0.0, finite=True)
            if x >= 1:
                raise ValueError(f"betas[{i}] must be in [0, 1), got {x}")
    if "check_finite" in group:
        check_finite_flag(group["check_finite"])
