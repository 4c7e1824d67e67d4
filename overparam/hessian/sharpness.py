"""Sharpness measures: the top Hessian eigenvalue against the edge-of-stability reference
``2/η`` (Cohen et al. 2021), and ε-sharpness / adaptive sharpness as used by SAM (Foret et al.
2021; Keskar et al. 2017) and ASAM (Kwon et al. 2021):

* ε-sharpness ``max_{‖δ‖≤ρ} L(θ + δ) − L(θ)``;
* adaptive sharpness ``max_{‖T_θ⁻¹δ‖≤ρ} L(θ + δ) − L(θ)`` with ``T_θ = diag(|θ| + η)``,
  invariant to the layer-wise rescalings that leave a ReLU network's function unchanged (η = 0).

The inner maximization is projected gradient ascent on the ball (``δ = T u``, ``‖u‖ = ρ``):
``u ← ρ · normalize(u + ρ ∇_u/‖∇_u‖)``, starting from the gradient direction (or a random one
when the gradient vanishes) and keeping the best value seen. SAM's one-step perturbation is
``steps=1``; on a quadratic ``½θᵀAθ`` at ``θ = 0`` the iteration is a shifted power
iteration and the value converges to ``½ρ²λ_max(A)``.

Example:
    >>> import torch
    >>> A = torch.diag(torch.tensor([3., 1., -2.], dtype=torch.float64))
    >>> f = lambda th: 0.5 * th[0] @ A @ th[0]
    >>> s = ball_sharpness(f, (torch.zeros(3, dtype=torch.float64),), rho=0.1, steps=100, generator=0)
    >>> round(float(s.value), 6)  # ½ ρ² λmax = 0.015
    0.015
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..backend import vec
from ..backend.random import GeneratorLike, measurement_generator, probes_like
from ..backend.select import Spec
from ._model import Objective
from .lanczos import Eigen, lanczos
from ..backend.checks import check_real

__all__ = ["Sharpness", "ball_sharpness", "epsilon_sharpness", "lambda_max", "eos_threshold", "EoS"]


def eos_threshold(lr: float) -> float:
    """The edge-of-stability reference ``2/η`` of full-batch GD with step ``lr``.

    Reference: Cohen, Kaur, Li, Kolter and Talwalkar, "Gradient descent on neural networks typically
    occurs at the edge of stability", ICLR 2021.

    Example:
        >>> eos_threshold(0.01)
        200.0
    """
    if not lr > 0:
        raise ValueError(f"lr must be > 0, got {lr}")
    return 2.0 / lr


@dataclass
class EoS:
    """``λ_max`` of the Hessian next to the GD stability threshold ``2/η``: ``ratio = λ_max·η/2``.

    Attributes:
        lambda_max: the top eigenvalue; threshold: ``2/η``; ratio: ``λ_max·η/2`` (≥ 1: at or past
        the edge of stability); eigen: the :class:`~overparam.hessian.Eigen` it came from.

    Reference: J. Cohen et al., "Gradient Descent on Neural Networks Typically Occurs at the Edge of Stability"
        (ICLR 2021)

    Example:
        >>> e = lambda_max(torch.diag(torch.tensor([3., 1.], dtype=torch.float64)), lr=0.5, generator=0)
        >>> round(e.lambda_max, 6), e.threshold, round(e.ratio, 6)
        (3.0, 4.0, 0.75)
    """

    lambda_max: float
    threshold: float
    ratio: float
    eigen: Eigen


def lambda_max(A, *, lr: float | None = None, v0=None, tol: float = 1e-4, generator: GeneratorLike = None,
               **kwargs) -> EoS | Eigen:
    """Top eigenvalue of ``A`` (e.g. a Hessian operator; anything :func:`~overparam.hessian.lanczos` takes) by Lanczos (warm-startable with ``v0``, e.g. the previous result's
    ``eigen``). With ``lr`` returns an :class:`EoS` comparing it to ``2/lr``; else the :class:`Eigen`.

    ``generator=None`` never advances the global RNG (the measurement rule, docs/index.md).
    ``output`` and ``attention`` as for :class:`~overparam.hessian.HessianOperator`.

    Reference: J. Cohen et al., "Gradient Descent on Neural Networks Typically Occurs at the Edge of Stability"
        (ICLR 2021)

    Example:
        >>> A = torch.diag(torch.tensor([1., 4., 2.], dtype=torch.float64))
        >>> round(lambda_max(A, lr=0.25, generator=0).ratio, 12)
        0.5
    """
    if isinstance(v0, EoS):
        v0 = v0.eigen
    eig = lanczos(A, k=1, which="LA", tol=tol, v0=v0, generator=generator, **kwargs)
    if lr is None:
        return eig
    lam, thr = float(eig.values[0]), eos_threshold(lr)
    return EoS(lam, thr, lam / thr, eig)


@dataclass
class Sharpness:
    """Result of an ε-/adaptive-sharpness maximization.

    Attributes:
        value: ``L(θ + δ) − L(θ)`` at the best perturbation found (0-dim tensor).
        loss: ``L(θ)``; perturbed_loss: ``L(θ + δ)``.
        delta: the perturbation ``δ`` (parameter-shaped).
        n_grads: gradient evaluations used.

    Example:
        >>> f = lambda th: (th[0] ** 2).sum()
        >>> s = ball_sharpness(f, (torch.zeros(2, dtype=torch.float64),), rho=0.5, steps=5, generator=0)
        >>> round(float(s.value), 6), round(float(s.perturbed_loss - s.loss), 6)  # ρ² λ_max(2I)/2 = 0.25
        (0.25, 0.25)
    """

    value: Tensor
    loss: Tensor
    perturbed_loss: Tensor
    delta: vec.Vec
    n_grads: int


def _grad_at(f: Callable[[vec.Vec], Tensor], theta: vec.Vec) -> tuple[Tensor, vec.Vec]:
    leaves = tuple(t.detach().requires_grad_(True) for t in theta)
    val = f(leaves)
    g = torch.autograd.grad(val, leaves, allow_unused=True, materialize_grads=True)
    return val.detach(), tuple(g)


def ball_sharpness(f: Callable[[vec.Vec], Tensor], theta, rho: float, *, steps: int = 20, adaptive: bool = False,
                   eta: float = 0.01, generator: GeneratorLike = None) -> Sharpness:
    """ε-sharpness (``adaptive=False``) or adaptive sharpness of a scalar function ``f(θ)``.

    ``generator=None`` never advances the global RNG (the measurement rule, docs/index.md).
    ``output`` and ``attention`` as for :class:`~overparam.hessian.HessianOperator`.

    Args:
        f: maps a parameter-shaped vector to a scalar loss.
        theta: the point, a parameter-shaped vector (tuple of tensors; not modified).
        rho: radius ``ρ > 0`` (in the scaled coordinates ``u = T⁻¹δ`` when adaptive).
        steps: ascent steps (1 = SAM's first-order perturbation ``ρ T²∇L/‖T∇L‖``).
        adaptive: use ``T = diag(|θ| + eta)`` (ASAM) instead of ``T = I``.
        eta: ASAM's offset ``η >= 0``.
        generator: for the random start when the gradient at θ is zero.

    Returns:
        a :class:`Sharpness`; ``delta`` is shaped like ``theta``.

    Reference: Keskar et al., "On large-batch training for deep learning: generalization gap and
    sharp minima", ICLR 2017 (ε-sharpness); Kwon, Kim, Park and Choi, "ASAM: adaptive
    sharpness-aware minimization", ICML 2021 (adaptive).

    Example (a quadratic ``½θᵀAθ`` at 0: ``½ρ²λ_max``):
        >>> A = torch.diag(torch.tensor([3., 1., -2.], dtype=torch.float64))
        >>> s = ball_sharpness(lambda th: 0.5 * th[0] @ A @ th[0], (torch.zeros(3, dtype=torch.float64),),
        ...                    rho=0.1, steps=100, generator=0)
        >>> round(float(s.value), 6), [d.shape for d in s.delta]
        (0.015, [torch.Size([3])])
    """
    if not callable(f):
        raise TypeError(f"f must be callable, got {type(f).__name__}")
    th = vec.as_vec(theta, name="theta")
    check_real(rho, "rho", above=0, finite=True)
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive int, got {steps!r}")
    check_real(eta, "eta", at_least=0, finite=True)
    T = tuple(t.abs() + eta for t in th) if adaptive else None

    def perturb(u):
        return vec.add(th, tuple(torch._foreach_mul(u, T)) if T is not None else u)

    def ascent_dir(g):  # gradient in u coordinates, T ∇L
        return tuple(torch._foreach_mul(g, T)) if T is not None else g

    base, g0 = _grad_at(f, th)
    d = ascent_dir(g0)
    if float(vec.norm(d)) == 0:
        d = probes_like(th, kind="gaussian", generator=measurement_generator(generator))
    u = vec.scale(rho / vec.norm(d), d)
    best_val, best_u, count = None, u, 1
    for _ in range(steps):
        val, g = _grad_at(f, perturb(u))
        count += 1
        if best_val is None or bool(val > best_val):
            best_val, best_u = val, u
        d = ascent_dir(g)
        dn = vec.norm(d)
        if float(dn) == 0:
            break
        w = vec.axpy(rho / dn, d, u)
        u = vec.scale(rho / vec.norm(w), w)
    val = f(tuple(t.detach() for t in perturb(u))).detach()
    if bool(val > best_val):
        best_val, best_u = val, u
    delta = vec.sub(perturb(best_u), th)
    return Sharpness(best_val - base, base, best_val, delta, count)


def epsilon_sharpness(model: nn.Module, loss_fn: Callable, data, rho: float, *, params: Spec = None,
                      exclude: Spec = None, steps: int = 20, adaptive: bool = False, eta: float = 0.01, reduction: str = "mean",
                      generator: GeneratorLike = None, output="auto", attention: str | None = "math") -> Sharpness:
    """:func:`ball_sharpness` of a model's loss over ``data`` (one batch or a loader, per-sample
    mean), w.r.t. the parameters that ``params`` selects minus ``exclude`` (specs of
    :func:`overparam.select`; default every trainable parameter). The model itself is never modified.

    ``generator=None`` never advances the global RNG (the measurement rule, docs/index.md).
    ``output`` and ``attention`` as for :class:`~overparam.hessian.HessianOperator`.

    Reference: N. S. Keskar et al., "On Large-Batch Training for Deep Learning: Generalization Gap and Sharp Minima"
        (ICLR 2017)

    Example:
        >>> net = torch.nn.Linear(3, 1).double().eval()
        >>> x, y = torch.randn(16, 3, dtype=torch.float64), torch.randn(16, 1, dtype=torch.float64)
        >>> s = epsilon_sharpness(net, torch.nn.functional.mse_loss, (x, y), rho=0.05, generator=0)
        >>> bool(s.value >= 0)
        True
    """
    obj = Objective.build(model, loss_fn, data, params, exclude=exclude, reduction=reduction, output=output,
                          attention=attention)
    return ball_sharpness(obj.total_loss, obj.theta, rho, steps=steps, adaptive=adaptive, eta=eta, generator=generator)
