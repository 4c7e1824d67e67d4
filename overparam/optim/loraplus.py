"""LoRA+ learning-rate groups and the LoRA-FA optimizer, over factor pairs ``(B, A)`` (``ΔW = s·B Aᵀ``).

* :func:`loraplus_groups` (Hayou, Ghosh & Yu 2024, "LoRA+: Efficient Low Rank Adaptation of
  Large Models"): param groups for any torch optimizer in which the ``B`` factor (the left
  factor ``L`` of each pair, LoRA's ``lora_up``) gets the learning rate ``ratio·lr`` and ``A``
  gets ``lr``. The grouping is the reference implementation's (and peft's
  ``create_loraplus_optimizer``): 1-D parameters (biases, norms, DoRA magnitudes) go with ``B``;
  biases and LayerNorm parameters get no weight decay; the factors of an adapter on an
  ``nn.Embedding`` get their own ``embedding_lr``.
* :class:`LoRAFA` (Zhang et al. 2023, "LoRA-FA: Memory-efficient Low-rank Adaptation"): ``A``
  frozen, the gradient of ``B`` replaced by ``s⁻² ∇_B f (AᵀA + δI)⁻¹`` (the update of
  ``W = s·B Aᵀ`` closest to the full fine-tuning one) before the wrapped optimizer's step.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import nn
from torch.optim import Optimizer

from ..backend.checks import check_real
from ._pairs import as_pair
from .precondition import Preconditioned, _solve_grads_

__all__ = ["loraplus_groups", "LoRAFA"]


def _embedding_adapter_params(model: nn.Module) -> set[int]:
    """Ids of the parameters of adapter modules that wrap an ``nn.Embedding`` (``module.base``)."""
    out: set[int] = set()
    for m in model.modules():
        if isinstance(getattr(m, "base", None), nn.Embedding):
            out |= {id(p) for n, p in m.named_parameters() if not n.startswith("base.")}
    return out


def loraplus_groups(model: nn.Module, pairs: Iterable[Any], *, lr: float, ratio: float, weight_decay: float = 0.0,
                    embedding_lr: float = 1e-6) -> list[dict[str, Any]]:
    """LoRA+ param groups ``[A, embedding, B, B without decay]`` for any torch optimizer.

    Over the trainable parameters of ``model`` (``requires_grad``), in ``named_parameters`` order:

    * ``B`` (``lr = ratio·lr``, ``weight_decay``): the left factor ``L`` of every pair, and every
      other 1-D parameter that is neither a bias nor inside an ``nn.LayerNorm``;
    * ``B without decay`` (``lr = ratio·lr``, ``weight_decay = 0``): the same, for the biases
      (a name containing ``"bias"``) and LayerNorm parameters;
    * ``embedding`` (``embedding_lr``, ``weight_decay``): the adapter parameters of a wrapper whose
      ``base`` is an ``nn.Embedding``;
    * ``A`` (``lr``, ``weight_decay``): everything else (right factors, other matrices).

    A symmetric factor ``X`` (``X Xᵀ``) has no ``B``: it goes to ``A``. Empty groups are kept, so
    group ``i`` always means the same thing.

    Args:
        model: the ``nn.Module`` whose trainable parameters are grouped (not changed).
        pairs: factor pairs ``(L, R)`` of ``model`` (e.g. ``op.factor.pairs(model)``).
        lr: ``η_A > 0``. ratio: ``η_B/η_A > 0`` (the paper uses 2 to 2⁴ and more).
        weight_decay: ``>= 0``. embedding_lr: ``> 0``.

    Returns:
        a list of 4 dicts ``{"params": [...], "lr": ..., "weight_decay": ...}``.

    Reference: S. Hayou, N. Ghosh & B. Yu, "LoRA+: Efficient Low Rank Adaptation of Large Models" (ICML 2024).

    Example:
        >>> import torch, overparam as op
        >>> net = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.LayerNorm(4))
        >>> _ = op.factor.lora_(net, ["0"], rank=2, generator=0)
        >>> groups = op.optim.loraplus_groups(net, op.factor.pairs(net), lr=1e-3, ratio=16)
        >>> [(len(g["params"]), g["lr"]) for g in groups]
        [(1, 0.001), (0, 1e-06), (1, 0.016), (2, 0.016)]
        >>> opt = torch.optim.AdamW(groups)
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    for name, v in (("lr", lr), ("ratio", ratio), ("embedding_lr", embedding_lr)):
        check_real(v, name, above=0.0)
    check_real(weight_decay, "weight_decay", at_least=0.0)
    if isinstance(pairs, tuple) and len(pairs) == 2 and all(isinstance(t, torch.Tensor) for t in pairs):
        raise TypeError("pairs is a bare 2-tuple of tensors, which is ambiguous: pass [(L, R)]")
    found = [as_pair(p, where=f"pairs[{n}]") for n, p in enumerate(pairs)]
    owned = {id(p) for p in model.parameters()}
    for n, (L, R) in enumerate(found):
        if id(L) not in owned or id(R) not in owned:
            raise ValueError(f"pairs[{n}] (shapes {tuple(L.shape)}, {tuple(R.shape)}) is not a pair of model's parameters")
    left = {id(L) for L, R in found if L is not R}
    embed = _embedding_adapter_params(model)
    no_decay = {id(p) for m in model.modules() if isinstance(m, nn.LayerNorm) for p in m.parameters()}
    A, E, B, B0 = [], [], [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if id(p) in embed:
            E.append(p)
        elif id(p) in left or p.ndim == 1:
            (B0 if "bias" in name or id(p) in no_decay else B).append(p)
        else:
            A.append(p)
    return [{"params": A, "lr": lr, "weight_decay": weight_decay},
            {"params": E, "lr": embedding_lr, "weight_decay": weight_decay},
            {"params": B, "lr": lr * ratio, "weight_decay": weight_decay},
            {"params": B0, "lr": lr * ratio, "weight_decay": 0.0}]


class LoRAFA(Preconditioned):
    """LoRA-FA: ``A`` frozen, ``∇_B f ← s⁻² ∇_B f (AᵀA + δI)⁻¹``, then any torch optimizer's step.

    With ``A`` fixed, ``W = W₀ + s·B Aᵀ`` can only move in ``{ΔB Aᵀ}``; the gradient above is the
    update of that form closest in Frobenius norm to the full fine-tuning gradient step
    (``s·ΔB Aᵀ ≈ ∇_W f``, with ``∇_B f = s ∇_W f A``). peft's ``LoraFAOptimizer`` uses AdamW (the
    Hugging Face variant) as the optimizer and a pseudo-inverse with ``δ = 1e-8``; here the solve
    is a Cholesky solve in at least fp32, the optimizer any.

    Args:
        optimizer: the wrapped optimizer over ``B`` (and any other trainable parameters).
        pairs: ``(B (rows, r), A (cols, r))`` pairs (``op.factor.pairs(model)``) whose ``A`` is frozen
            (``requires_grad=False``: ``for B, A in pairs: A.requires_grad_(False)`` before
            building the optimizer).
        scaling: ``s > 0``, one number or one per pair (``LoRALayer.scaling``: ``α/r``).
        damping: ``δ >= 0`` added to ``AᵀA``.
        check_finite: as :class:`Preconditioned`.

    Reference: L. Zhang et al., "LoRA-FA: Memory-efficient Low-rank Adaptation for Large Language Models
        Fine-tuning" (2023).

    Example:
        >>> import torch, overparam as op
        >>> net = torch.nn.Sequential(torch.nn.Linear(6, 6))
        >>> _ = op.factor.lora_(net, rank=2, alpha=4, generator=0)
        >>> pairs = list(op.factor.pairs(net))
        >>> for B, A in pairs:
        ...     _ = A.requires_grad_(False)
        >>> inner = torch.optim.AdamW([p for p in net.parameters() if p.requires_grad], lr=1e-2)
        >>> opt = op.optim.LoRAFA(inner, pairs, scaling=net[0].scaling)
        >>> opt.zero_grad(); net(torch.ones(3, 6)).sum().backward(); opt.step()
        >>> bool(net[0].lora_up.abs().sum() > 0)
        True
    """

    def __init__(self, optimizer: Optimizer, pairs: Iterable[Any], *, scaling: float | Sequence[float] = 1.0,
                 damping: float = 1e-8, check_finite: bool = False) -> None:
        super().__init__(optimizer, pairs, damping=damping, check_finite=check_finite)
        for n, item in enumerate(self.pairs):
            if not isinstance(item, tuple):
                raise TypeError(f"pairs[{n}]: LoRA-FA needs (B, A) pairs, got {item!r}")
            L, R = item
            if L is R:
                raise ValueError(f"pairs[{n}]: LoRA-FA needs (B, A) pairs, got a symmetric factor X (X Xᵀ)")
            if R.requires_grad:
                raise ValueError(f"pairs[{n}]: LoRA-FA trains B only; freeze A (shape {tuple(R.shape)}) with "
                                 "A.requires_grad_(False) first")
        scalings = [scaling] * len(self.pairs) if isinstance(scaling, (int, float)) else list(scaling)
        if len(scalings) != len(self.pairs):
            raise ValueError(f"scaling: got {len(scalings)} values for {len(self.pairs)} pairs")
        for s in scalings:
            check_real(s, "scaling", above=0.0)
        self.scalings = [float(s) for s in scalings]

    def _precondition(self, damping: float) -> None:
        _solve_grads_([(B.grad, A, 1.0 / (s * s), f"LoRAFA: pair {n}") for n, ((B, A), s)
                       in enumerate(zip(self.pairs, self.scalings)) if B.grad is not None], damping, False)

    def __repr__(self) -> str:
        return f"LoRAFA({len(self.pairs)} pairs, damping={self.damping}) over {self.optimizer!r}"

