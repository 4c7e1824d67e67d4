"""SubGM: the subgradient method with geometric, Polyak or constant steps, for any parameters.

Ma & Fattahi (2023), "Global Convergence of Sub-gradient Method for Robust Matrix Recovery:
Small Initialization, Noisy Measurements, and Over-parameterization": minimize the ℓ1 loss
``(1/m) Σ |<A_i, UUᵀ> − y_i|`` from a small init ``U₀ = α·N(0, I)`` with an over-estimated
rank, ``U ← U − η_t g`` with ``g ∈ ∂f(U)`` (whatever autograd returns) and ``η_t = η₀ ρᵗ``.
With ``normalize=True`` the step is ``η_t g / ‖g‖`` (the norm over all parameters).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor
from torch.optim import Optimizer

from ..backend import vec
from ._finite import check_finite_flag, check_finite_grads
from .steps import StepInfo, StepRule, as_rule, loss_value

__all__ = ["SubGM"]


class SubGM(Optimizer):
    """Subgradient method ``x ← x − η_t g`` over ordinary parameters.

    Args:
        params: parameters or param-group dicts, as for any torch optimizer.
        step: step rule (:func:`~overparam.optim.geometric`, :func:`~overparam.optim.polyak`,
            :func:`~overparam.optim.constant`) or a number (constant); per group.
        normalize: divide the step by the global subgradient norm ``‖g‖``.
        check_finite: check every gradient first and raise
            :class:`~overparam.optim.NonFiniteGradientError` naming the parameter whose gradient
            holds NaN or inf (nothing is updated); per group. Off by default: as in torch's
            optimizers a non-finite subgradient then propagates into its parameter, and through
            ``‖g‖`` (``normalize``, Polyak) into the step of every parameter.

    ``step(closure)`` or ``step(loss=value)`` gives ``f(x_t)`` for the Polyak rule; the
    Polyak denominator is ``Σ‖g‖²`` over all groups (``‖g‖`` with ``normalize=True``).

    Reference: J. Ma & S. Fattahi, "Global Convergence of Sub-gradient Method for Robust Matrix Recovery: Small
        Initialization, Noisy Measurements, and Over-parameterization" (JMLR 2023).

    Example:
        >>> import torch, overparam as op
        >>> P = op.problems.sensing(n=10, r=2, m=400, loss="l1", generator=0)
        >>> U = P.init("small", rank=4, scale=1e-3, generator=1).requires_grad_()
        >>> opt = op.optim.SubGM([U], step=op.optim.geometric(lr0=0.5, decay=0.95))
        >>> for _ in range(150):
        ...     opt.zero_grad(); P.loss(U).backward(); opt.step()
        >>> float(P.relative_error(U.detach())) < 1e-3
        True
    """

    def __init__(self, params: Iterable[Any], step: StepRule | float, normalize: bool = False, *,
                 check_finite: bool = False) -> None:
        if not isinstance(normalize, bool):
            raise TypeError(f"normalize must be a bool, got {type(normalize).__name__}")
        super().__init__(params, dict(step=as_rule(step), normalize=normalize,
                                      check_finite=check_finite_flag(check_finite)))

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a group (``torch.optim.Optimizer.add_param_group``); its ``"step"`` may be a rule or a
        number (a constant step), ``"check_finite"`` must be a bool.

        Example:
            >>> a, b = torch.zeros(2, requires_grad=True), torch.zeros(3, requires_grad=True)
            >>> opt = SubGM([a], step=0.1)
            >>> opt.add_param_group({"params": [b], "step": 0.5})
            >>> [g["step"] for g in opt.param_groups]
            [Constant(lr=0.1), Constant(lr=0.5)]
        """
        param_group = dict(param_group)
        if "step" in param_group:
            param_group["step"] = as_rule(param_group["step"])
        if "check_finite" in param_group:
            check_finite_flag(param_group["check_finite"])
        super().add_param_group(param_group)

    @torch.no_grad()
    def step(self, closure: Callable[[], Tensor] | None = None, *, loss: float | Tensor | None = None):
        """One step ``x ← x − η_t g`` (``η_t g/‖g‖`` with ``normalize=True``) on every parameter.

        The Polyak rule needs ``f(x_t)``: a ``closure`` that re-evaluates it, or ``loss=`` (not both).
        Returns the closure's loss, or None.

        Example:
            >>> x = torch.tensor([3.0, -4.0], requires_grad=True)
            >>> from overparam.optim import polyak
            >>> opt = SubGM([x], step=polyak(0.0))
            >>> f = x.abs().sum()  # f = 7, g = sign(x), ‖g‖² = 2
            >>> f.backward()
            >>> opt.step(loss=f)  # η = 7/2
            >>> x.tolist()
            [-0.5, -0.5]
        """
        needs = any(g["step"].needs_loss for g in self.param_groups)
        ret, f = loss_value(closure, loss, needed=needs, who="SubGM")
        check_finite_grads(self)
        grads = [[p for p in g["params"] if p.grad is not None] for g in self.param_groups]
        allg = tuple(p.grad for ps in grads for p in ps)
        if any(g.is_sparse for g in allg):
            raise TypeError("SubGM does not support sparse gradients")
        need_sq = any(g["step"].needs_grad_norm or g["normalize"] for g in self.param_groups)
        sq = float(vec.dot(allg, allg)) if (allg and need_sq) else 0.0
        for group, ps in zip(self.param_groups, grads):
            if not group["params"]:
                continue
            st = self.state[group["params"][0]]
            t, best = st.get("step", 0), st.get("best_loss")
            norm_sq = math.sqrt(sq) if group["normalize"] else sq
            lr = group["step"](StepInfo(step=t, loss=f, grad_sq_norm=norm_sq, best_loss=best))
            if group["normalize"] and sq != 0:  # a NaN norm propagates, never skips normalization
                lr = lr / math.sqrt(sq)
            if ps:
                vec.axpy_(-lr, tuple(p.grad for p in ps), tuple(ps))
            st["step"] = t + 1
            if f is not None:
                st["best_loss"] = f if best is None else min(best, f)
        return ret
