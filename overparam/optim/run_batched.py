"""GD, ScaledGD, ScaledGD(λ), PrecGD and SubGM over many independent problem instances at once.

:func:`run_batched` runs one method on ``B`` instances of a :class:`~overparam.problems.Batched`
problem as one tensor program: factors carry a leading batch dimension, the gradients of all
instances come from one backward pass of ``loss.sum()`` (the instances are independent, so
instance ``b`` gets exactly its own gradient), and the r×r preconditioner solves are batched
(:func:`~overparam.backend.linalg.spd_solve_ex`). Step sizes, damping and decay may differ per
instance (a number, or a tensor ``(B,)``). Per-step updates (``X (B, n, k)``; pairs ``L, R``)::

    gd        X ← X − η_b ∇f_b
    scaledgd  X ← X − η_b ∇f_b (XᵀX + λ_b I)⁻¹              (λ_b = 0: ScaledGD; > 0: ScaledGD(λ))
    precgd    as scaledgd with λ_b = max(c_b √f_b(X), min_damping)
    subgm     X ← X − η_b ρ_bᵗ g_b                           (geometric step; ρ = 1: constant)

(pairs: ``L ← L − η ∇_L f (RᵀR + λI)⁻¹``, ``R ← R − η ∇_R f (LᵀL + λI)⁻¹``, both from the old
iterate, exactly as :class:`~overparam.optim.ScaledGD`).

Stopping masks: an instance whose relative error reaches ``tol`` is *converged*, one whose loss
is non-finite or exceeds ``diverge_above`` (or whose Gram matrix is not positive definite) is
*diverged*; from then on it stops changing, and nothing it holds can reach the other instances.
Each instance equals the single-instance optimizer run on ``problem.problems[b]`` (tests: to
1e-12 in fp64).

Example:
    >>> import torch, overparam as op
    >>> P = op.problems.shared_sensing(8, 2, 120, seeds=[0, 1, 2], kappa=[1.0, 5.0, 25.0])
    >>> X0 = P.init("small", rank=4, scale=1e-3, generators=[3, 4, 5])
    >>> run = op.optim.run_batched(P, X0, method="scaledgd", steps=300, lr=0.5, damping=1e-3, tol=1e-4)
    >>> run.converged.tolist()
    [True, True, True]
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from ..backend.linalg import spd_solve_ex

__all__ = ["BatchedRun", "run_batched", "BATCHED_METHODS"]

BATCHED_METHODS = ("gd", "scaledgd", "precgd", "subgm")


@dataclass
class BatchedRun:
    """The result of :func:`run_batched`.

    Attributes:
        X: the final factors (same structure as ``X0``; stopped instances hold their stopping iterate).
        steps: the step indices at which the history was recorded (``0``, every ``record_every``, last).
        loss: ``(len(steps), B)`` loss history.
        relative_error: ``(len(steps), B)`` relative-error history.
        converged: ``(B,)`` bool — reached ``tol``.
        diverged: ``(B,)`` bool — non-finite / above ``diverge_above`` / non-PD Gram matrix.
        stopped_at: ``(B,)`` long — the step at which the instance stopped, ``-1`` if it ran all steps.
        method: the method name; extra: method-specific records.

    Example:
        >>> import overparam as op
        >>> P = op.problems.shared_sensing(6, 1, 60, seeds=[0, 1])
        >>> run = run_batched(P, P.init("spectral", rank=1), method="gd", steps=4, lr=0.1, record_every=2)
        >>> run.steps, tuple(run.loss.shape), tuple(run.X.shape)  # (len(steps), B); X (B, n, k)
        ([0, 2, 4], (3, 2), (2, 6, 1))
    """

    X: Any
    steps: list[int]
    loss: Tensor
    relative_error: Tensor
    converged: Tensor
    diverged: Tensor
    stopped_at: Tensor
    method: str = ""
    extra: dict = field(default_factory=dict)

    def rows(self) -> list[dict]:
        """One dict per instance and checkpoint: ``instance, step, loss, relative_error`` (tidy form),
        ordered by checkpoint, then instance.

        Example:
            >>> import overparam as op
            >>> P = op.problems.shared_sensing(6, 1, 60, seeds=[0, 1])
            >>> rows = run_batched(P, P.init("spectral", rank=1), method="gd", steps=1, lr=0.1).rows()
            >>> len(rows), sorted(rows[0]), [(r["instance"], r["step"]) for r in rows]
            (4, ['instance', 'loss', 'relative_error', 'step'], [(0, 0), (1, 0), (0, 1), (1, 1)])
        """
        out = []
        for i, s in enumerate(self.steps):
            for b in range(self.loss.shape[1]):
                out.append(dict(instance=b, step=s, loss=float(self.loss[i, b]),
                                relative_error=float(self.relative_error[i, b])))
        return out


def _per_instance(v: float | Tensor, name: str, B: int, like: Tensor) -> Tensor:
    if isinstance(v, Tensor):
        if v.shape != (B,):
            raise ValueError(f"{name} must be a number or a tensor of shape ({B},) (one per instance), got {tuple(v.shape)}")
        v = v.to(dtype=like.dtype, device=like.device)
    elif isinstance(v, (int, float)) and not isinstance(v, bool):
        v = torch.full((B,), float(v), dtype=like.dtype, device=like.device)
    else:
        raise TypeError(f"{name} must be a number or a tensor of shape ({B},), got {type(v).__name__}")
    if not bool(torch.isfinite(v).all()) or not bool((v >= 0).all()):
        raise ValueError(f"{name} must be finite and >= 0 for every instance")
    return v


def _factors(X0: Any, B: int) -> tuple[list[Tensor], bool]:
    """The factor tensors of ``X0`` and whether it is a pair (L, R)."""
    if isinstance(X0, Tensor):
        fs, pair = [X0], False
    elif isinstance(X0, tuple) and len(X0) == 2 and all(isinstance(t, Tensor) for t in X0):
        fs, pair = list(X0), True
    elif isinstance(X0, list) and X0 and all(isinstance(t, Tensor) for t in X0):
        fs, pair = list(X0), False
    else:
        raise TypeError("X0 must be a tensor (B, n, k), a pair (L, R) of them, or a list of factor tensors")
    for i, t in enumerate(fs):
        if t.ndim < 3 or t.shape[0] != B:
            raise ValueError(f"X0 factor {i} must have a leading batch dimension of {B}, got shape {tuple(t.shape)}")
        if not t.is_floating_point():
            raise TypeError(f"X0 factor {i} must be floating point, got {t.dtype}")
        if not bool(torch.isfinite(t).all()):
            raise ValueError(f"X0 factor {i} holds NaN or inf entries")
    return fs, pair


def _rebuild(X0: Any, fs: list[Tensor]) -> Any:
    if isinstance(X0, Tensor):
        return fs[0]
    return tuple(fs) if isinstance(X0, tuple) else list(fs)


def _bcast(v: Tensor, t: Tensor) -> Tensor:
    return v.reshape(-1, *([1] * (t.ndim - 1)))


def run_batched(problem: Any, X0: Any, *, method: str, steps: int, lr: float | Tensor,
                damping: float | Tensor = 0.0, c: float | Tensor = 1.0, min_damping: float = 0.0,
                decay: float | Tensor = 1.0, tol: float | None = None, diverge_above: float = 1e8,
                record_every: int = 1) -> BatchedRun:
    """Run ``method`` for ``steps`` iterations on every instance of a batched problem.

    Args:
        problem: a :class:`~overparam.problems.Batched` problem (anything with batched ``loss``,
            ``relative_error`` and ``size``).
        X0: initial factors with a leading batch dimension (``(B, n, k)``, a pair ``(L, R)``, or for
            ``gd``/``subgm`` a list of deep factors); not modified.
        method: one of ``"gd"``, ``"scaledgd"``, ``"precgd"``, ``"subgm"``.
        steps: number of iterations ``>= 0`` (0 records the initial state only).
        lr: step size ``η`` (number or ``(B,)``).
        damping: ``λ`` of ScaledGD(λ) (``scaledgd`` only; number or ``(B,)``).
        c, min_damping: PrecGD's ``λ_t = max(c·√f, min_damping)``.
        decay: SubGM's geometric ratio ``ρ ∈ (0, 1]`` (number or ``(B,)``).
        tol: stop an instance once its relative error is ``<= tol`` (None: never).
        diverge_above: stop an instance as diverged once its loss exceeds this (or is not finite).
        record_every: record the history every this many steps (and at the last step).

    Returns:
        a :class:`BatchedRun`.

    Reference: ScaledGD(λ): X. Xu et al., "The Power of Preconditioning in Overparameterized Low-Rank
    Matrix Sensing" (2023); PrecGD: G. Zhang, S. Fattahi & R. Y. Zhang (2021); SubGM: J. Ma & S. Fattahi (2022).

    Example:
        >>> import overparam as op
        >>> P = op.problems.shared_sensing(6, 1, 80, seeds=[0, 1])
        >>> X0 = P.init("spectral", rank=1)  # (B, n, k) = (2, 6, 1)
        >>> run = run_batched(P, X0, method="scaledgd", steps=25, lr=torch.tensor([0.5, 0.0]), tol=1e-4)
        >>> run.converged.tolist(), torch.equal(run.X[1], X0[1])  # instance 1 has step size 0
        ([True, False], True)
    """
    if method not in BATCHED_METHODS:
        raise ValueError(f"method must be one of {BATCHED_METHODS}, got {method!r}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise ValueError(f"steps must be an int >= 0, got {steps!r}")
    if isinstance(record_every, bool) or not isinstance(record_every, int) or record_every < 1:
        raise ValueError(f"record_every must be an int >= 1, got {record_every!r}")
    if tol is not None and not (isinstance(tol, (int, float)) and tol >= 0):
        raise ValueError(f"tol must be None or a number >= 0, got {tol!r}")
    if not (isinstance(diverge_above, (int, float)) and diverge_above > 0):
        raise ValueError(f"diverge_above must be a number > 0, got {diverge_above!r}")
    B = problem.size
    fs, pair = _factors(X0, B)
    if method in ("scaledgd", "precgd") and not (len(fs) == 1 or pair):
        raise ValueError(f"method {method!r} needs a symmetric factor X or a pair (L, R), got {len(fs)} factors")
    like = fs[0]
    lr_b = _per_instance(lr, "lr", B, like)
    lam_b = _per_instance(damping, "damping", B, like)
    c_b = _per_instance(c, "c", B, like)
    rho_b = _per_instance(decay, "decay", B, like)
    if not bool((rho_b > 0).all()) or not bool((rho_b <= 1).all()):
        raise ValueError("decay must be in (0, 1] for every instance")
    if method != "scaledgd" and bool((lam_b != 0).any()):
        raise ValueError("damping= applies to method='scaledgd' only (precgd takes c= and min_damping=)")
    if not (isinstance(min_damping, (int, float)) and min_damping >= 0):
        raise ValueError(f"min_damping must be a number >= 0, got {min_damping!r}")

    fs = [t.detach().clone() for t in fs]
    active = torch.ones(B, dtype=torch.bool, device=like.device)
    converged = torch.zeros_like(active)
    diverged = torch.zeros_like(active)
    stopped_at = torch.full((B,), -1, dtype=torch.long, device=like.device)
    rec_steps: list[int] = []
    rec_loss: list[Tensor] = []
    rec_err: list[Tensor] = []

    def stop(mask: Tensor, into: Tensor, t: int) -> None:
        new = mask & active
        into |= new
        stopped_at[new] = t
        active.copy_(active & ~new)

    for t in range(steps + 1):
        xs = [f.requires_grad_() for f in fs]
        with torch.enable_grad():
            try:
                loss = problem.loss(_rebuild(X0, xs))
            except (TypeError, ValueError) as e:
                if t:
                    raise
                raise type(e)(f"X0 does not fit the problem: {e}") from e
            grads = torch.autograd.grad(loss.sum(), xs, allow_unused=True) if t < steps else None
        loss = loss.detach()
        fs = [f.detach() for f in xs]
        with torch.no_grad():
            err = problem.relative_error(_rebuild(X0, fs))
            bad = ~torch.isfinite(loss) | (loss > diverge_above)
            stop(bad, diverged, t)
            if tol is not None:
                stop(err <= tol, converged, t)
            if t % record_every == 0 or t == steps:
                rec_steps.append(t)
                rec_loss.append(loss.clone())
                rec_err.append(err.clone())
            if t == steps or not bool(active.any()):
                if t < steps and (not rec_steps or rec_steps[-1] != t):
                    rec_steps.append(t)
                    rec_loss.append(loss.clone())
                    rec_err.append(err.clone())
                break
            gs = [torch.zeros_like(f) if g is None else g for f, g in zip(fs, grads)]
            if method == "gd":
                dirs, ok = gs, active
            elif method == "subgm":
                dirs, ok = [_bcast(rho_b ** t, g) * g for g in gs], active
            else:
                lam = lam_b if method == "scaledgd" else torch.clamp_min(c_b * torch.sqrt(loss.clamp_min(0)), min_damping)
                if pair:
                    L, R = fs
                    dL, okL = spd_solve_ex(R.mT @ R, gs[0], damping=lam)
                    dR, okR = spd_solve_ex(L.mT @ L, gs[1], damping=lam)
                    dirs, ok = [dL, dR], okL & okR
                else:
                    X = fs[0]
                    d, ok = spd_solve_ex(X.mT @ X, gs[0], damping=lam)
                    dirs = [d]
                stop(~ok, diverged, t)
            fs = [torch.where(_bcast(active, f), f - _bcast(lr_b, f) * d, f) for f, d in zip(fs, dirs)]
    return BatchedRun(X=_rebuild(X0, fs), steps=rec_steps, loss=torch.stack(rec_loss), relative_error=torch.stack(rec_err),
                      converged=converged, diverged=diverged, stopped_at=stopped_at, method=method)
