"""ScaledGD and ScaledGD(λ): gradient descent on factor pairs with the Gram preconditioner.

Tong, Ma & Chi (2021), "Accelerating Ill-Conditioned Low-Rank Matrix Estimation via Scaled
Gradient Descent"; Xu, Shen, Ma, Chi & Mai (2023), "The Power of Preconditioning in
Overparameterized Low-Rank Matrix Sensing" (ScaledGD(λ)). For a pair ``(L, R)``::

    L ← L − η ∇_L f (RᵀR + λI)⁻¹,    R ← R − η ∇_R f (LᵀL + λI)⁻¹    (both from the old L, R)

and for a symmetric factor ``X`` (``X Xᵀ``): ``X ← X − η ∇f (XᵀX + λI)⁻¹``. ``damping=0`` is
ScaledGD; ``damping=λ > 0`` is ScaledGD(λ), meant for over-parameterized rank with a small
random init. Each r×r solve forms the Gram matrix ``RᵀR`` (all-reduced over ranks when the factor
is sharded by FSDP2) and solves with :func:`overparam.backend.linalg.spd_solve` (Cholesky, the kernel
of :func:`~overparam.backend.linalg.gram_solve`); with
``λ = 0`` and a rank-deficient factor a :class:`~overparam.backend.linalg.NotPositiveDefiniteError`
(a ValueError) names the pair: use ``damping > 0``. There is no silent fallback.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from ._pairs import PairOptimizer
from .steps import closure_loss

__all__ = ["ScaledGD"]


class ScaledGD(PairOptimizer):
    """ScaledGD / ScaledGD(λ) over factor pairs.

    Args:
        params: an iterable of factor pairs ``(L (n1, k), R (n2, k))`` or symmetric factors
            ``X (n, k)`` / ``(X, X)``, or of param-group dicts with a ``"pairs"`` entry.
        lr: step size ``η >= 0`` (0.5 is the usual choice; the method is scale-free).
        damping: ``λ >= 0``; 0 gives ScaledGD, > 0 ScaledGD(λ).
        check_finite: check every gradient before each step and raise
            :class:`~overparam.optim.NonFiniteGradientError` naming the pair and factor whose
            gradient holds NaN or inf (nothing is updated). Off by default: like torch's
            optimizers, a non-finite gradient then propagates into the factors (the r×r solve
            spreads it over the whole factor).

    Reference: T. Tong, C. Ma & Y. Chi, "Accelerating Ill-Conditioned Low-Rank Matrix Estimation via Scaled
        Gradient Descent" (JMLR 2021); X. Xu, Y. Shen, Y. Chi & C. Ma, "The Power of Preconditioning in
        Overparameterized Low-Rank Matrix Sensing" (ICML 2023) for ScaledGD(λ).

    Example:
        >>> import torch, overparam as op
        >>> P = op.problems.sensing(n=8, r=2, m=200, generator=0)
        >>> X = P.init("spectral", rank=2).requires_grad_()
        >>> opt = op.optim.ScaledGD([X], lr=0.5)
        >>> for _ in range(30):
        ...     opt.zero_grad(); P.loss(X).backward(); opt.step()
        >>> float(P.relative_error(X.detach())) < 1e-6
        True
    """

    def __init__(self, params: Any, lr: float = 0.5, damping: float = 0.0, *, check_finite: bool = False) -> None:
        super().__init__(params, dict(lr=lr, damping=damping), check_finite=check_finite)

    @torch.no_grad()
    def step(self, closure: Callable[[], Tensor] | None = None) -> Tensor | None:
        """One ScaledGD(λ) step on every pair: ``L ← L − η ∇_L f (RᵀR + λI)⁻¹`` and
        ``R ← R − η ∇_R f (LᵀL + λI)⁻¹`` (``L (n1, k)``, ``R (n2, k)``, both from the old factors).

        Args:
            closure: optional; re-evaluates the loss (with grad enabled) and returns it.

        Returns:
            the closure's loss, or None.

        Example:
            >>> _ = torch.manual_seed(0)
            >>> L, R, M = torch.randn(4, 2, requires_grad=True), torch.randn(3, 2, requires_grad=True), torch.randn(4, 3)
            >>> opt = ScaledGD([(L, R)], lr=0.5, damping=0.1)
            >>> (0.5 * (L @ R.T - M).square().sum()).backward()
            >>> L0, R0 = L.detach().clone(), R.detach().clone()
            >>> expect_L = L0 - 0.5 * L.grad @ torch.linalg.inv(R0.T @ R0 + 0.1 * torch.eye(2))
            >>> expect_R = R0 - 0.5 * R.grad @ torch.linalg.inv(L0.T @ L0 + 0.1 * torch.eye(2))
            >>> opt.step()
            >>> torch.allclose(L.detach(), expect_L, atol=1e-5), torch.allclose(R.detach(), expect_R, atol=1e-5)
            (True, True)
        """
        loss = closure_loss(closure)
        self._check_finite()
        for group in self.param_groups:
            for ps in self._pair_steps(group, group["damping"]):
                ps.apply_(group["lr"])
        return loss
