"""ScaledGD-type preconditioning in front of any torch optimizer.

:class:`Preconditioned` wraps a ``torch.optim.Optimizer`` (AdamW, SGD, ...). Before the wrapped
optimizer's step it replaces, in place, the gradients of every factor pair ``(L, R)``
(``L @ R.T``, e.g. from ``op.factor.pairs(model)``: LoRA/DoRA, low-rank layers) by their
ScaledGD directions

    ``∇_L f ← ∇_L f (RᵀR + λI)⁻¹``,    ``∇_R f ← ∇_R f (LᵀL + λI)⁻¹``    (symmetric ``X``: ``∇f (XᵀX + λI)⁻¹``)

(Tong, Ma & Chi 2021 with ``λ = 0``; ScaledGD(λ), Xu et al. 2023, with ``λ > 0``; PrecGD,
Zhang, Fattahi & Zhang 2021, with ``λ_t = max(c·√f, λ)``; for LoRA this is the Riemannian
preconditioner of Zhang & Pilanci 2024, peft's ``create_riemannian_optimizer``). The r×r solves
are Cholesky solves (:func:`~overparam.backend.linalg.spd_solve`, the kernel of the damped Gram
solve, batched over the pairs of one rank) in at least fp32, cast back to the gradient's dtype; ``pinv=True`` uses the pseudo-inverse instead. Every other parameter's
gradient is left alone. Parameters, param groups, state, ``state_dict``, LR schedulers and
``zero_grad`` are the wrapped optimizer's own. A deep product ``W_N ⋯ W_1`` (a
:class:`~overparam.factor.Chain`, from ``op.factor.pairs(model, deep=True)``) gets the depth-``N``
generalisation ``∇_{W_j} f ← (A_jᵀA_j + λI)⁻¹ ∇_{W_j} f (B_jB_jᵀ + λI)⁻¹`` with ``A_j``, ``B_j`` the
products of the factors after and before ``W_j`` (:mod:`overparam.optim.precondition_deep`).
"""

from __future__ import annotations

import inspect
import math
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor
from torch.optim import Optimizer

from ..backend.checks import check_real
from ..backend.linalg import NotPositiveDefiniteError, spd_solve
from ..factor import Chain
from ._finite import check_finite_flag, check_finite_grads
from ._pairs import as_pair
from .precondition_deep import chain_directions
from .steps import loss_value

__all__ = ["Preconditioned", "precondition_grads_"]

_HOOKS = ("_optimizer_step_pre_hooks", "_optimizer_step_post_hooks", "_optimizer_state_dict_pre_hooks",
          "_optimizer_state_dict_post_hooks", "_optimizer_load_state_dict_pre_hooks",
          "_optimizer_load_state_dict_post_hooks")


def _inverses(grams: list[Tensor], damping: float, pinv: bool, names: list[str]) -> list[Tensor]:
    """``(G + λI)⁻¹`` of each ``G (r, r)``: one batched Cholesky (``spd_solve`` against ``I``) or
    ``pinv`` per ``(r, dtype, device)``; a matrix that is not PD raises naming ``names[i]``."""
    out: list[Tensor] = [None] * len(grams)  # type: ignore[list-item]
    groups: dict[tuple, list[int]] = {}
    for i, G in enumerate(grams):
        groups.setdefault((G.shape[-1], G.dtype, G.device), []).append(i)
    for (r, dt, dev), idx in groups.items():
        S = torch.stack([grams[i] for i in idx])
        eye = torch.eye(r, dtype=dt, device=dev)
        try:
            inv = (torch.linalg.pinv(S + damping * eye, hermitian=True) if pinv
                   else spd_solve(S, eye.expand_as(S), damping=damping))
        except NotPositiveDefiniteError as e:
            bad = next(i for i in idx if not bool(torch.linalg.cholesky_ex(grams[i] + damping * eye)[1] == 0))
            raise NotPositiveDefiniteError(f"{names[bad]}: {e}") from None
        for k, i in enumerate(idx):
            out[i] = inv[k]
    return out


@torch.no_grad()
def _solve_grads_(items: list[tuple[Tensor, Tensor, float, str]], damping: float, pinv: bool) -> None:
    """For each ``(g, R, scale, name)``: ``g ← scale · g (RᵀR + λI)⁻¹`` in place, computed in at least
    fp32 from the current ``R``; all inverses first (from the factors, not the gradients)."""
    if not items:
        return
    grams = []
    for _, R, _, _ in items:
        Rd = R.detach().to(torch.promote_types(R.dtype, torch.float32))
        grams.append(Rd.mT @ Rd)
    invs = _inverses(grams, damping, pinv, [name for *_, name in items])
    new = [g.to(P.dtype) @ P for (g, _, _, _), P in zip(items, invs)]
    for (g, _, scale, _), d in zip(items, new):
        g.copy_(d if scale == 1.0 else d.mul_(scale))


def _parse(items: list[Any]) -> list[tuple[Tensor, Tensor] | Chain]:
    """Each item as a validated pair ``(L, R)`` (a lone ``X`` -> ``(X, X)``) or a :class:`Chain`."""
    return [p if isinstance(p, Chain) else as_pair(p, where=f"pairs[{n}]") for n, p in enumerate(items)]


def _has_grad(item: tuple[Tensor, Tensor] | Chain) -> bool:
    return any(t.grad is not None for t in item)


@torch.no_grad()
def _solve_chains_(found: list[tuple[Tensor, Tensor] | Chain], damping: float, pinv: bool) -> None:
    """Every chain's gradients replaced, in place, by their depth-N ScaledGD(λ) directions."""
    for n, c in enumerate(found):
        if isinstance(c, Chain) and _has_grad(c):
            new = chain_directions(list(c), [W.grad for W in c], damping=damping, pinv=pinv, name=f"pairs[{n}] ({c!r})")
            for W, d in zip(c, new):
                if d is not None:
                    W.grad.copy_(d)


def _pair_items(found: list[tuple[Tensor, Tensor] | Chain]) -> list[tuple[Tensor, Tensor, float, str]]:
    items = []
    for n, pair in enumerate(found):
        if isinstance(pair, Chain):
            continue
        L, R = pair
        name = f"factor pair {n} (shapes {tuple(L.shape)}, {tuple(R.shape)})"
        if L.grad is not None:
            items.append((L.grad, R, 1.0, name))
        if L is not R and R.grad is not None:
            items.append((R.grad, L, 1.0, name))
    return items


@torch.no_grad()
def precondition_grads_(pairs: Iterable[Any], *, damping: float = 0.0, pinv: bool = False) -> int:
    """Replace, in place, the ``.grad`` of every factor pair by its ScaledGD(λ) direction.

    ``L.grad ← L.grad (RᵀR + λI)⁻¹`` and ``R.grad ← R.grad (LᵀL + λI)⁻¹`` (both from the current
    ``L``, ``R``); a symmetric ``X`` (or ``(X, X)``): ``X.grad ← X.grad (XᵀX + λI)⁻¹``; a
    :class:`~overparam.factor.Chain` ``W_N ⋯ W_1``: ``W_j.grad ← (A_jᵀA_j + λI)⁻¹ W_j.grad (B_jB_jᵀ + λI)⁻¹``
    (``A_j``, ``B_j``: the products after and before ``W_j``). A factor whose ``.grad`` is None is
    skipped. Solves in at least fp32.

    Args:
        pairs: ``(L (n1, k), R (n2, k))`` tuples, 2-D tensors ``X (n, k)`` or chains.
        damping: ``λ >= 0``.
        pinv: use ``pinv(RᵀR + λI)`` instead of a Cholesky solve (which raises
            :class:`~overparam.backend.linalg.NotPositiveDefiniteError` on a singular matrix).

    Returns:
        the number of pairs with at least one gradient.

    Reference: Tong, Ma & Chi, "Accelerating ill-conditioned low-rank matrix estimation via scaled GD" (JMLR 2021); Xu et al. (ICML 2023) for λ.

    Example:
        >>> L, R = torch.tensor([[2.0, 0.0], [0.0, 1.0]], requires_grad=True), torch.eye(2, requires_grad=True)
        >>> (L @ R.T).sum().backward()
        >>> precondition_grads_([(L, R)]), R.grad
        (1, tensor([[0.5000, 1.0000],
                [0.5000, 1.0000]]))
    """
    check_real(damping, "damping", at_least=0.0)
    if not isinstance(pinv, bool):
        raise TypeError(f"pinv must be a bool, got {type(pinv).__name__}")
    found = _parse(list(pairs))
    _solve_grads_(_pair_items(found), damping, pinv)
    _solve_chains_(found, damping, pinv)
    return sum(1 for p in found if _has_grad(p))


def _needs_closure(opt: Optimizer) -> bool:
    try:
        p = inspect.signature(type(opt).step).parameters.get("closure")
    except (TypeError, ValueError):  # pragma: no cover - a C-level step
        return False
    return p is not None and p.default is inspect.Parameter.empty


class Preconditioned(Optimizer):
    """Any torch optimizer with ScaledGD / ScaledGD(λ) / PrecGD preconditioned factor-pair gradients.

    Args:
        optimizer: the wrapped ``torch.optim.Optimizer``; it must optimize every factor of ``pairs``
            that requires grad (a frozen factor only enters the other's Gram matrix); it may optimize
            other parameters too: their gradients pass through unchanged. An
            optimizer whose ``step`` requires a closure (L-BFGS) is refused: it re-evaluates
            the gradient inside ``step``, past the preconditioner.
        pairs: factor pairs ``(L (n1, k), R (n2, k))``, symmetric factors ``X (n, k)`` or deep
            products (:class:`~overparam.factor.Chain`), e.g. ``op.factor.pairs(model, deep=True)``
            (taken once, at construction).
        damping: ``λ >= 0``: 0 gives ScaledGD, ``> 0`` ScaledGD(λ); with ``c``, the floor of PrecGD's ``λ_t``.
        c: ``None`` (a fixed ``λ``), or PrecGD's coefficient: ``λ_t = max(c·√f_t, damping)`` from
            the loss ``f_t`` given by ``step(closure)`` or ``step(loss=...)``.
        pinv: solve with ``pinv(G + λI)`` (as peft does) instead of a Cholesky solve, which raises
            :class:`~overparam.backend.linalg.NotPositiveDefiniteError` when ``G + λI`` is singular
            (``λ = 0`` and a rank-deficient factor, e.g. LoRA's ``B = 0`` at init).
        check_finite: raise :class:`~overparam.optim.NonFiniteGradientError` naming the parameter
            when a gradient of the wrapped optimizer holds NaN/inf, before anything changes.

    ``param_groups``, ``state``, ``defaults``, ``state_dict()``, ``load_state_dict()``,
    ``zero_grad()`` and ``add_param_group()`` are the wrapped optimizer's; an LR scheduler built
    on the wrapper changes the wrapped optimizer's learning rates. ``step(closure)`` evaluates the
    closure (with gradients enabled), preconditions, then calls the wrapped ``step()`` without it;
``step(loss=...)`` is what PrecGD's ``c`` needs (accepted, unused, without ``c``, so that a training
loop written for :class:`PrecGD` runs unchanged).

    Reference: T. Tong, C. Ma & Y. Chi, "Accelerating Ill-Conditioned Low-Rank Matrix Estimation via Scaled
        Gradient Descent" (JMLR 2021); X. Xu et al. (ICML 2023) for ScaledGD(λ); G. Zhang, S. Fattahi & R. Y. Zhang
        (NeurIPS 2021) for PrecGD; F. Zhang & M. Pilanci, "Riemannian Preconditioned LoRA for Fine-Tuning
        Foundation Models" (ICML 2024).

    Example:
        >>> import torch, overparam as op
        >>> net = torch.nn.Sequential(torch.nn.Linear(6, 6)); _ = op.factor.lora_(net, rank=2, generator=0)
        >>> inner = torch.optim.AdamW([p for p in net.parameters() if p.requires_grad], lr=1e-2)
        >>> opt = op.optim.Preconditioned(inner, op.factor.pairs(net), damping=1e-2)
        >>> x = torch.randn(8, 6, generator=torch.Generator().manual_seed(0))
        >>> for _ in range(3):
        ...     opt.zero_grad(); net(x).pow(2).mean().backward(); opt.step()
        >>> opt.state_dict()["state"][0]["step"]
        tensor(3.)
    """

    def __init__(self, optimizer: Optimizer, pairs: Iterable[Any], *, damping: float = 0.0, c: float | None = None,
                 pinv: bool = False, check_finite: bool = False) -> None:
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"optimizer must be a torch.optim.Optimizer, got {type(optimizer).__name__}")
        if isinstance(optimizer, Preconditioned):
            raise TypeError("optimizer is already Preconditioned; wrap the inner optimizer once")
        if _needs_closure(optimizer):
            raise ValueError(f"optimizer: {type(optimizer).__name__}.step requires a closure and re-evaluates the "
                             "gradient inside step(), which would bypass the preconditioner")
        check_real(damping, "damping", at_least=0.0)
        if c is not None:
            check_real(c, "c", at_least=0.0)
        if not isinstance(pinv, bool):
            raise TypeError(f"pinv must be a bool, got {type(pinv).__name__}")
        self.check_finite = check_finite_flag(check_finite)
        if isinstance(pairs, tuple) and len(pairs) == 2 and all(isinstance(t, Tensor) for t in pairs):
            raise TypeError("pairs is a bare 2-tuple of tensors, which is ambiguous: pass [(L, R)]")
        found = _parse([pairs] if isinstance(pairs, (Tensor, Chain)) else list(pairs))
        if not found:
            raise ValueError("pairs is empty: there is nothing to precondition (op.factor.pairs(model) found no pair?)")
        owned = {id(p) for g in optimizer.param_groups for p in g["params"]}
        seen: set[int] = set()
        for n, item in enumerate(found):
            L, R = (None, None) if isinstance(item, Chain) else item
            named = ([(f"W_{j + 1}", W) for j, W in enumerate(item)] if isinstance(item, Chain)
                     else (("L", L), ("R", R)) if L is not R else (("X", L),))
            for name, t in named:
                if id(t) not in owned and t.requires_grad:
                    raise ValueError(f"pairs[{n}]: factor {name} (shape {tuple(t.shape)}) is not optimized by the "
                                     f"wrapped {type(optimizer).__name__} (freeze it, requires_grad=False, if meant)")
                if id(t) in seen:
                    raise ValueError(f"pairs[{n}]: a tensor of shape {tuple(t.shape)} appears in more than one pair")
                seen.add(id(t))
        self.optimizer = optimizer
        self.pairs = found
        self.damping, self.c, self.pinv = float(damping), (None if c is None else float(c)), pinv
        self.last_damping: float | None = None
        for h in _HOOKS:
            setattr(self, h, OrderedDict())
        self._patch_step_function()

    # ---------------------------------------------------------------- the wrapped optimizer's own
    @property
    def param_groups(self) -> list[dict[str, Any]]:  # type: ignore[override]
        """The wrapped optimizer's ``param_groups`` (the same list; setting it sets theirs).

        Example:
            >>> L, R = torch.ones(3, 2, requires_grad=True), torch.eye(4, 2, requires_grad=True)
            >>> inner = torch.optim.SGD([L, R], lr=0.1); opt = Preconditioned(inner, [(L, R)], damping=1.0)
            >>> opt.param_groups is inner.param_groups, opt.param_groups[0]["lr"]
            (True, 0.1)
        """
        return self.optimizer.param_groups

    @param_groups.setter
    def param_groups(self, value: list[dict[str, Any]]) -> None:
        self.optimizer.param_groups = value

    @property
    def state(self):  # type: ignore[override]
        """The wrapped optimizer's ``state`` (the preconditioner keeps none).

        Example:
            >>> L, R = torch.ones(3, 2, requires_grad=True), torch.eye(4, 2, requires_grad=True)
            >>> inner = torch.optim.SGD([L, R], lr=0.1, momentum=0.9); opt = Preconditioned(inner, [(L, R)], damping=1.0)
            >>> (L @ R.T).sum().backward(); opt.step()
            >>> opt.state is inner.state, tuple(opt.state[L]["momentum_buffer"].shape)
            (True, (3, 2))
        """
        return self.optimizer.state

    @state.setter
    def state(self, value) -> None:
        self.optimizer.state = value

    @property
    def defaults(self) -> dict[str, Any]:  # type: ignore[override]
        """The wrapped optimizer's ``defaults``.

        Example:
            >>> L, R = torch.ones(3, 2, requires_grad=True), torch.eye(4, 2, requires_grad=True)
            >>> inner = torch.optim.SGD([L, R], lr=0.1); opt = Preconditioned(inner, [(L, R)], damping=1.0)
            >>> opt.defaults["lr"], opt.defaults is inner.defaults
            (0.1, True)
        """
        return self.optimizer.defaults

    @defaults.setter
    def defaults(self, value: dict[str, Any]) -> None:
        self.optimizer.defaults = value

    def state_dict(self) -> dict[str, Any]:
        """The wrapped optimizer's ``state_dict()`` (the preconditioner keeps no state).

        Example:
            >>> L, R = torch.ones(3, 2, requires_grad=True), torch.eye(4, 2, requires_grad=True)
            >>> inner = torch.optim.SGD([L, R], lr=0.1); opt = Preconditioned(inner, [(L, R)], damping=1.0)
            >>> opt.state_dict() == inner.state_dict()
            True
        """
        return self.optimizer.state_dict()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """The wrapped optimizer's ``load_state_dict``.

        Example:
            >>> L, R = torch.ones(3, 2, requires_grad=True), torch.eye(4, 2, requires_grad=True)
            >>> inner = torch.optim.SGD([L, R], lr=0.1); opt = Preconditioned(inner, [(L, R)], damping=1.0)
            >>> sd = opt.state_dict(); sd["param_groups"][0]["lr"] = 0.05; opt.load_state_dict(sd)
            >>> inner.param_groups[0]["lr"]
            0.05
        """
        self.optimizer.load_state_dict(state_dict)

    def zero_grad(self, set_to_none: bool = True) -> None:
        """The wrapped optimizer's ``zero_grad``.

        Example:
            >>> L, R = torch.ones(3, 2, requires_grad=True), torch.eye(4, 2, requires_grad=True)
            >>> inner = torch.optim.SGD([L, R], lr=0.1); opt = Preconditioned(inner, [(L, R)], damping=1.0)
            >>> (L @ R.T).sum().backward(); opt.zero_grad()
            >>> L.grad is None, R.grad is None
            (True, True)
        """
        self.optimizer.zero_grad(set_to_none=set_to_none)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a group to the wrapped optimizer (its tensors are not preconditioned unless in ``pairs``).

        Example:
            >>> L, R = torch.ones(3, 2, requires_grad=True), torch.eye(4, 2, requires_grad=True)
            >>> inner = torch.optim.SGD([L, R], lr=0.1); opt = Preconditioned(inner, [(L, R)], damping=1.0)
            >>> bias = torch.zeros(3, requires_grad=True); opt.add_param_group({"params": [bias], "lr": 0.01})
            >>> len(inner.param_groups), len(opt.pairs)
            (2, 1)
        """
        self.optimizer.add_param_group(param_group)

    def __getstate__(self) -> dict[str, Any]:
        # as torch's optimizers: no hooks, no scheduler-patched ``step`` on the instance
        return {k: v for k, v in self.__dict__.items() if k not in _HOOKS and k not in ("step", "_opt_called")}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        for h in _HOOKS:
            setattr(self, h, OrderedDict())
        self._patch_step_function()

    def __repr__(self) -> str:
        how = f"c={self.c}, floor={self.damping}" if self.c is not None else f"damping={self.damping}"
        return f"Preconditioned({len(self.pairs)} pairs, {how}, pinv={self.pinv}) over {self.optimizer!r}"

    # ---------------------------------------------------------------- the step
    @torch.no_grad()
    def step(self, closure: Callable[[], Tensor] | None = None, *, loss: float | Tensor | None = None):
        """Precondition the pairs' gradients in place, then ``optimizer.step()``; returns the closure's loss.

        ``L.grad ← L.grad (RᵀR + λI)⁻¹``, ``R.grad ← R.grad (LᵀL + λI)⁻¹`` (``L (n1, k)``, ``R (n2, k)``),
        with ``λ = damping``, or ``λ_t = max(c·√f, damping)`` from ``closure``/``loss`` when ``c`` is set
        (``opt.last_damping``).

        Args:
            closure: optional; evaluated with grad enabled before preconditioning.
            loss: the current loss, for ``c`` (accepted and unused without it).

        Example:
            >>> L, R = torch.ones(3, 2, requires_grad=True), torch.eye(4, 2, requires_grad=True)
            >>> inner = torch.optim.SGD([L, R], lr=0.1); opt = Preconditioned(inner, [(L, R)], damping=1.0)
            >>> (L @ R.T).sum().backward()
            >>> expect = L.detach() - 0.1 * L.grad @ torch.linalg.inv(R.detach().T @ R.detach() + torch.eye(2))
            >>> opt.step()
            >>> torch.allclose(L.detach(), expect), opt.last_damping
            (True, 1.0)
        """
        ret, f = loss_value(closure, loss, needed=self.c is not None, who="Preconditioned (with c)")
        if self.check_finite:
            check_finite_grads(self, every_group=True)
        lam = self.damping
        if self.c is not None:
            if not math.isfinite(f) or f < 0:
                raise ValueError(f"Preconditioned with c needs a finite non-negative loss, got {f}")
            lam = max(self.c * math.sqrt(f), self.damping)
        self.last_damping = lam
        self._precondition(lam)
        self.optimizer.step()
        return ret

    def _precondition(self, damping: float) -> None:
        """Replace the pairs' gradients by their directions (subclass hook: LoRA-FA)."""
        _solve_grads_(_pair_items(self.pairs), damping, self.pinv)
        _solve_chains_(self.pairs, damping, self.pinv)
