"""Step-size rules for the subgradient methods (SubGM, ScaledSM), as small frozen objects.

A rule is called once per step with a :class:`StepInfo` and returns the step size ``η_t``:

* :func:`constant` ``η_t = η``;
* :func:`geometric` ``η_t = η₀ ρᵗ`` (Ma & Fattahi's SubGM, Tong-Ma-Chi's ScaledSM);
* :func:`polyak` ``η_t = (f(x_t) − f*) / ‖g_t‖²`` with a known optimum ``f*``, or, when
  ``f_star=None``, the estimated-optimum variant ``η_t = (f(x_t) − f_best,t + γ_t) / ‖g_t‖²``
  with ``γ_t = γ₀ ρᵗ`` (``f_best,t`` the best loss seen so far, Boyd's "Polyak step with
  estimated optimal value"). For ScaledSM ``‖g_t‖²`` is the norm in the scaled metric.

Example:
    >>> from overparam.optim import geometric
    >>> rule = geometric(lr0=1.0, decay=0.5)
    >>> rule(StepInfo(step=2, loss=None, grad_sq_norm=1.0, best_loss=None))
    0.25
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["closure_loss", "loss_value", "StepInfo", "StepRule", "Constant", "Geometric", "Polyak", "constant", "geometric", "polyak", "as_rule"]


@dataclass(frozen=True)
class StepInfo:
    """What a rule sees at step ``step`` (0-based): the loss ``f(x_t)`` (None when the
    optimizer was not given one), the squared (sub)gradient norm and the best loss so far.

    Example:
        >>> info = StepInfo(step=0, loss=2.0, grad_sq_norm=4.0, best_loss=None)
        >>> polyak(0.0)(info)  # (2 - 0) / 4
        0.5
    """

    step: int
    loss: float | None
    grad_sq_norm: float
    best_loss: float | None


class StepRule:
    """Base class of step rules; ``needs_loss`` says whether ``step()`` must get a loss and
    ``needs_grad_norm`` whether the optimizer must compute ``‖g‖²`` (a device sync).

    A subclass implements ``__call__(info: StepInfo) -> float``; any optimizer taking ``step=`` accepts it.

    Example:
        >>> class InverseT(StepRule):  # η_t = 1/(t + 1)
        ...     def __call__(self, info):
        ...         return 1.0 / (info.step + 1)
        >>> [InverseT()(StepInfo(t, None, 1.0, None)) for t in range(3)]
        [1.0, 0.5, 0.3333333333333333]
        >>> as_rule(InverseT()).needs_loss
        False
    """

    needs_loss: bool = False
    needs_grad_norm: bool = False

    def __call__(self, info: StepInfo) -> float:  # pragma: no cover - interface
        raise NotImplementedError


@dataclass(frozen=True)
class Constant(StepRule):
    """The constant step ``η_t = lr`` (made by :func:`constant`).

    Example:
        >>> Constant(0.1)(StepInfo(step=7, loss=None, grad_sq_norm=1.0, best_loss=None))
        0.1
    """

    lr: float

    def __post_init__(self):
        _check("lr", self.lr)

    def __call__(self, info: StepInfo) -> float:
        return self.lr


@dataclass(frozen=True)
class Geometric(StepRule):
    """The geometrically decaying step ``η_t = lr0 · decay^t`` (made by :func:`geometric`).

    Reference: J. Ma & S. Fattahi, "Global Convergence of Sub-gradient Method for Robust Matrix
    Recovery: Small Initialization, Noisy Measurements, and Over-parameterization" (2022).

    Example:
        >>> Geometric(1.0, 0.5)(StepInfo(step=3, loss=None, grad_sq_norm=1.0, best_loss=None))
        0.125
    """

    lr0: float
    decay: float

    def __post_init__(self):
        _check("lr0", self.lr0)
        if not 0 < self.decay <= 1:
            raise ValueError(f"decay must be in (0, 1], got {self.decay}")

    def __call__(self, info: StepInfo) -> float:
        return self.lr0 * self.decay ** info.step


@dataclass(frozen=True)
class Polyak(StepRule):
    """Polyak's step ``min((f − f*)/‖g‖², max_lr)``, or with ``f_star=None`` the estimated-optimum
    variant ``(f − f_best + γ₀ρᵗ)/‖g‖²`` (made by :func:`polyak`); 0 when ``‖g‖ = 0`` or the gap is ≤ 0.

    Reference: B. T. Polyak, "Introduction to Optimization" (1987), §5.3; S. Boyd, "Subgradient
    Methods" lecture notes (estimated optimal value).

    Example:
        >>> Polyak(f_star=1.0)(StepInfo(step=0, loss=3.0, grad_sq_norm=4.0, best_loss=None))  # (3 - 1) / 4
        0.5
        >>> Polyak(f_star=None, gamma0=1.0, decay=0.5)(StepInfo(step=1, loss=3.0, grad_sq_norm=1.0, best_loss=2.0))
        1.5
    """

    f_star: float | None = 0.0
    gamma0: float = 1.0
    decay: float = 0.9
    max_lr: float = math.inf
    needs_loss = True
    needs_grad_norm = True

    def __post_init__(self):
        if self.f_star is not None and not (isinstance(self.f_star, (int, float)) and math.isfinite(self.f_star)):
            raise ValueError(f"f_star must be a finite number or None, got {self.f_star!r}")
        _check("gamma0", self.gamma0)
        _check("max_lr", self.max_lr)
        if not 0 < self.decay <= 1:
            raise ValueError(f"decay must be in (0, 1], got {self.decay}")

    def __call__(self, info: StepInfo) -> float:
        if info.loss is None:
            raise ValueError("the Polyak step needs the loss: call step(closure) or step(loss=...)")
        if self.f_star is None:
            best = info.loss if info.best_loss is None else min(info.best_loss, info.loss)
            gap = info.loss - best + self.gamma0 * self.decay ** info.step
        else:
            gap = info.loss - self.f_star
        if info.grad_sq_norm <= 0 or gap <= 0:
            return 0.0
        return min(gap / info.grad_sq_norm, self.max_lr)


def _check(name: str, v: float) -> None:
    if not isinstance(v, (int, float)) or isinstance(v, bool) or math.isnan(v):
        raise TypeError(f"{name} must be a real number, got {v!r}")
    if v < 0:
        raise ValueError(f"{name} must be >= 0, got {v}")


def constant(lr: float) -> Constant:
    """``η_t = lr`` (``lr >= 0``).

    Example:
        >>> rule = constant(0.1)
        >>> rule, rule(StepInfo(step=5, loss=None, grad_sq_norm=1.0, best_loss=None))
        (Constant(lr=0.1), 0.1)
    """
    return Constant(lr)


def geometric(lr0: float, decay: float) -> Geometric:
    """``η_t = lr0 · decay^t`` with ``decay ∈ (0, 1]`` (SubGM's step, Ma & Fattahi 2022).

    Reference: J. Ma & S. Fattahi (JMLR 2023) (SubGM); T. Tong, C. Ma & Y. Chi (IEEE TSP 2021) (ScaledSM).

    Example:
        >>> rule = geometric(lr0=1.0, decay=0.5)
        >>> [rule(StepInfo(t, None, 1.0, None)) for t in range(3)]
        [1.0, 0.5, 0.25]
    """
    return Geometric(lr0, decay)


def polyak(f_star: float | None = 0.0, *, gamma0: float = 1.0, decay: float = 0.9, max_lr: float = math.inf) -> Polyak:
    """Polyak's step ``(f − f*)/‖g‖²``; ``f_star=None`` estimates the optimum as
    ``f_best − γ₀ρᵗ`` (``gamma0``, ``decay``). ``max_lr`` caps the step. The optimizer must get the
    loss (``step(closure)`` or ``step(loss=...)``).

    Reference: B. T. Polyak, "Introduction to Optimization" (1987); S. Boyd, "Subgradient Methods" notes (estimated
        optimal value).

    Example:
        >>> rule = polyak(0.0, max_lr=0.3)
        >>> rule.needs_loss, rule(StepInfo(step=0, loss=2.0, grad_sq_norm=4.0, best_loss=None))  # min(2/4, 0.3)
        (True, 0.3)
    """
    return Polyak(f_star, gamma0, decay, max_lr)


def as_rule(step: StepRule | float, name: str = "step") -> StepRule:
    """A rule, or a number ``>= 0`` meaning :func:`constant` (NaN or a negative number is refused,
    naming ``name``).

    Example:
        >>> as_rule(0.1)
        Constant(lr=0.1)
    """
    if isinstance(step, StepRule):
        return step
    if isinstance(step, (int, float)) and not isinstance(step, bool):
        _check(name, step)
        return Constant(float(step))
    raise TypeError(f"{name} must be a step rule (constant/geometric/polyak) or a number, got {type(step).__name__}")


def closure_loss(closure):
    """``closure()`` evaluated with grad enabled, or ``None`` without a closure: what an optimizer's
    ``step(closure)`` returns.

    Example:
        >>> closure_loss(None) is None
        True
    """
    if closure is None:
        return None
    if not callable(closure):
        raise TypeError(f"closure must be callable or None, got {type(closure).__name__}")
    import torch

    with torch.enable_grad():
        return closure()


def loss_value(closure, loss, *, needed: bool, who: str):
    """Evaluate ``closure`` (with grad enabled) or take ``loss``; returns ``(returned, float|None)``."""
    import torch

    if closure is not None and loss is not None:
        raise ValueError(f"{who}.step: pass a closure or loss=, not both")
    ret = closure_loss(closure)
    if closure is not None:
        loss = ret
    if loss is None:
        if needed:
            raise ValueError(f"{who}.step needs the current loss: call step(closure) or step(loss=value)")
        return ret, None
    return ret, float(loss.detach()) if isinstance(loss, torch.Tensor) else float(loss)
