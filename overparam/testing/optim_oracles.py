"""Dense closed-form oracles for the factor-pair optimizers (explicit inverses, fp64).

Example:
    >>> import torch
    >>> L, R = torch.eye(3, 2, dtype=torch.float64), 2 * torch.eye(4, 2, dtype=torch.float64)
    >>> g = torch.ones(3, 2, dtype=torch.float64)
    >>> damped_precondition(g, R, 0.0)[0]
    tensor([0.2500, 0.2500], dtype=torch.float64)
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..backend.checks import check_floats, check_real

__all__ = ["damped_precondition", "scaledgd_step"]


def damped_precondition(g: Tensor, R: Tensor, damping: float) -> Tensor:
    """``g (RᵀR + λI)⁻¹`` by an explicit inverse: ``g (n, k)``, ``R (m, k)``."""
    check_floats({"g": g, "R": R})
    check_real(damping, "damping", at_least=0.0)
    G = R.mT @ R + damping * torch.eye(R.shape[-1], dtype=R.dtype, device=R.device)
    return g @ torch.linalg.inv(G)


def scaledgd_step(L: Tensor, R: Tensor | None, gL: Tensor, gR: Tensor | None, lr: float,
                  damping: float = 0.0) -> tuple[Tensor, Tensor | None]:
    """One ScaledGD(λ) step from the formula; ``R = None`` for the symmetric ``X Xᵀ``."""
    check_floats({k: v for k, v in (("L", L), ("R", R), ("gL", gL), ("gR", gR)) if v is not None})
    check_real(lr, "lr", at_least=0.0)
    check_real(damping, "damping", at_least=0.0)
    if R is None:
        return L - lr * damped_precondition(gL, L, damping), None
    return L - lr * damped_precondition(gL, R, damping), R - lr * damped_precondition(gR, L, damping)
