"""ScaledSM: the ScaledGD preconditioner applied to subgradients, with Polyak or geometric steps.

Tong, Ma & Chi (2021), "Low-Rank Matrix Recovery with Scaled Subgradient Methods: Fast and
Robust Convergence Without the Condition Number". For a nonsmooth loss (e.g. the ℓ1 sensing
loss with outliers)::

    L ← L − η_t g_L (RᵀR + λI)⁻¹,   R ← R − η_t g_R (LᵀL + λI)⁻¹

with ``g`` a subgradient (whatever autograd returns). The Polyak step uses the norm of the
scaled metric, ``η_t = (f − f*) / (‖g_L (RᵀR)^{-1/2}‖² + ‖g_R (LᵀL)^{-1/2}‖²)``, summed over
all pairs of all groups; the geometric step is ``η_t = η₀ ρᵗ``. The Polyak step is invariant
to rescaling the loss, so the sum and the mean of the absolute residuals give the same
iterates. The authors' MATLAB code (``matrix_l1/MS_l1_outlier.m`` in Titan-Tong/ScaledGD)
uses exactly this step with ``f*`` = the loss at the ground truth (the outliers' ℓ1 norm),
an oracle value; without it use ``polyak(None)`` (estimated optimum) or a geometric step.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from ._pairs import PairOptimizer
from .steps import StepInfo, StepRule, as_rule, loss_value, polyak

__all__ = ["ScaledSM"]


class ScaledSM(PairOptimizer):
    """Scaled subgradient method over factor pairs.

    Args:
        params: factor pairs / symmetric factors / param-group dicts (see :class:`ScaledGD`).
        step: a step rule (:func:`~overparam.optim.polyak`, :func:`~overparam.optim.geometric`,
            :func:`~overparam.optim.constant`) or a number; per group.
        damping: ``λ >= 0`` in the preconditioner.
        check_finite: raise :class:`~overparam.optim.NonFiniteGradientError` naming the factor
            whose (sub)gradient holds NaN/inf, before any update (see :class:`ScaledGD`; off by default).

    ``step(closure)`` or ``step(loss=value)`` supplies ``f(x_t)`` (needed by Polyak).

    Reference: T. Tong, C. Ma & Y. Chi, "Low-Rank Matrix Recovery with Scaled Subgradient Methods: Fast and Robust
        Convergence Without the Condition Number" (IEEE TSP 2021).

    Example:
        >>> import torch, overparam as op
        >>> P = op.problems.sensing(n=10, r=2, m=300, symmetric=False, loss="l1", generator=0)
        >>> L, R = (t.requires_grad_() for t in P.init("spectral", rank=2))
        >>> opt = op.optim.ScaledSM([(L, R)], step=op.optim.polyak(0.0))
        >>> for _ in range(40):
        ...     opt.zero_grad(); f = P.loss((L, R)); f.backward(); opt.step(loss=f)
        >>> float(P.relative_error((L.detach(), R.detach()))) < 1e-6
        True
    """

    _nonnegative = ("damping",)

    def __init__(self, params: Any, step: StepRule | float = polyak(0.0), damping: float = 0.0, *,
                 check_finite: bool = False) -> None:
        super().__init__(params, dict(step=as_rule(step), damping=damping), check_finite=check_finite)

    def _check_group(self, group: dict[str, Any]) -> None:
        group["step"] = as_rule(group["step"])

    @torch.no_grad()
    def step(self, closure: Callable[[], Tensor] | None = None, *, loss: float | Tensor | None = None):
        """One scaled subgradient step ``L ← L − η_t g_L (RᵀR + λI)⁻¹``, ``R ← R − η_t g_R (LᵀL + λI)⁻¹``
        (``L (n1, k)``, ``R (n2, k)``), ``η_t`` from the group's step rule.

        Args:
            closure: re-evaluates and returns the loss; or
            loss: the current loss (needed by the Polyak rule); not both.

        Returns:
            the closure's loss, or None.

        Example:
            >>> X = torch.tensor([[2.0]], requires_grad=True)
            >>> opt = ScaledSM([X], step=polyak(0.0))
            >>> f = (X @ X.T - 1.0).abs().sum()  # f = 3, g = 2·sign·X = 4, scaled ‖g‖² = g²/XᵀX = 4
            >>> f.backward()
            >>> opt.step(loss=f)  # η = 3/4: X ← 2 − 0.75 · 4/4
            >>> X.item()
            1.25
        """
        needs = any(g["step"].needs_loss for g in self.param_groups)
        ret, f = loss_value(closure, loss, needed=needs, who="ScaledSM")
        self._check_finite()
        steps = [self._pair_steps(g, g["damping"]) for g in self.param_groups]
        sq = 0.0
        if any(g["step"].needs_grad_norm for g in self.param_groups):
            sq = float(sum((ps.scaled_sq_norm() for s in steps for ps in s), torch.zeros(())))
        for group, s in zip(self.param_groups, steps):
            st = self.state[group["params"][0]]
            t = st.get("step", 0)
            best = st.get("best_loss")
            lr = group["step"](StepInfo(step=t, loss=f, grad_sq_norm=sq, best_loss=best))
            for ps in s:
                ps.apply_(lr)
            st["step"] = t + 1
            if f is not None:
                st["best_loss"] = f if best is None else min(best, f)
        return ret
