"""PrecGD: ScaledGD with damping tied to the current loss, ``λ_t = c·√f(X_t)``.

Zhang, Fattahi & Zhang (2021), "Preconditioned Gradient Descent for Over-Parameterized
Nonconvex Matrix Factorization": ``X ← X − η ∇f(X)(XᵀX + λ_t I)⁻¹`` with ``λ_t ∝ √f(X_t)``
(for the sensing loss ``√f ∝ ‖XXᵀ − M*‖_F``), which restores a linear rate when the search
rank exceeds the true rank, where plain GD and undamped ScaledGD slow down or break. The
asymmetric form preconditions each factor by the other's damped Gram matrix.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from ._pairs import PairOptimizer
from .steps import loss_value

__all__ = ["PrecGD"]


class PrecGD(PairOptimizer):
    """Preconditioned GD with loss-driven damping ``λ_t = max(c·√f(X_t), min_damping)``.

    Args:
        params: factor pairs / symmetric factors / param-group dicts (see :class:`ScaledGD`).
        lr: step size ``η >= 0``.
        c: damping coefficient ``c >= 0`` (per group).
        min_damping: floor on ``λ_t``. With an over-parameterized rank the excess directions of
            ``XᵀX`` decay to 0 together with ``f``, so once ``f`` reaches round-off the damped Gram
            matrix stops being numerically PD and the step raises
            :class:`~overparam.backend.linalg.NotPositiveDefiniteError`; a floor such as ``1e-14``
            (fp64) or ``1e-6`` (fp32, relative to ``‖XᵀX‖ ≈ 1``) lets it run past convergence.
        check_finite: raise :class:`~overparam.optim.NonFiniteGradientError` naming the factor
            whose gradient holds NaN/inf, before any update (see :class:`ScaledGD`; off by default).

    ``step(closure)`` evaluates the loss through the closure; ``step(loss=value)`` takes a
    loss the caller computed (a float or 0-dim tensor) for the current iterate. The damping
    used at the last step is ``opt.last_damping`` (a list, one per group).

    Reference: G. Zhang, S. Fattahi & R. Y. Zhang, "Preconditioned Gradient Descent for Over-Parameterized
        Nonconvex Matrix Factorization" (NeurIPS 2021).

    Example:
        >>> import torch, overparam as op
        >>> P = op.problems.sensing(n=8, r=2, m=200, generator=0)
        >>> X = P.init("small", rank=4, scale=1e-2, generator=1).requires_grad_()
        >>> opt = op.optim.PrecGD([X], lr=0.5, c=1.0, min_damping=1e-14)
        >>> for _ in range(60):
        ...     opt.zero_grad(); f = P.loss(X); f.backward(); opt.step(loss=f)
        >>> float(P.relative_error(X.detach())) < 1e-6
        True
    """

    _nonnegative = ("lr", "c", "min_damping")

    def __init__(self, params: Any, lr: float = 0.5, c: float = 1.0, min_damping: float = 0.0, *,
                 check_finite: bool = False) -> None:
        super().__init__(params, dict(lr=lr, c=c, min_damping=min_damping), check_finite=check_finite)
        self.last_damping: list[float] = []

    @torch.no_grad()
    def step(self, closure: Callable[[], Tensor] | None = None, *, loss: float | Tensor | None = None):
        """One step ``X ← X − η ∇f(X)(XᵀX + λ_t I)⁻¹`` with ``λ_t = max(c·√f, min_damping)``
        (pairs ``(L (n1, k), R (n2, k))``: each factor by the other's damped Gram).

        Args:
            closure: re-evaluates and returns the loss ``f(X_t)``; or
            loss: ``f(X_t)`` computed by the caller (a float or 0-dim tensor); exactly one of the two.

        Returns:
            the closure's loss, or None. ``opt.last_damping`` holds ``λ_t`` per group.

        Raises:
            ValueError: neither or both of ``closure``/``loss``, or a negative or non-finite loss.

        Example:
            >>> X = torch.tensor([[1.0], [0.0]], requires_grad=True)
            >>> opt = PrecGD([X], lr=1.0, c=1.0)
            >>> f = (X @ X.T - torch.eye(2)).square().sum() / 4  # f = 1/4, λ = c·√f = 1/2
            >>> f.backward()
            >>> opt.step(loss=f)
            >>> opt.last_damping, X.detach().flatten().tolist()  # ∇f = 0 here: X is a critical point
            ([0.5], [1.0, 0.0])
        """
        ret, f = loss_value(closure, loss, needed=True, who="PrecGD")
        self._check_finite()
        if not math.isfinite(f) or f < 0:
            raise ValueError(f"PrecGD needs a finite non-negative loss, got {f}")
        self.last_damping = []
        for group in self.param_groups:
            lam = max(group["c"] * math.sqrt(f), group["min_damping"])
            self.last_damping.append(lam)
            for ps in self._pair_steps(group, lam):
                ps.apply_(group["lr"])
        return ret
