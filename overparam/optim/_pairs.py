"""Factor pairs -> optimizer param groups, and the pair-preconditioned optimizer base class.

THE PAIR PROTOCOL: a factor pair is a 2-tuple ``(L, R)`` of tensors with ``L (n1, k)`` and
``R (n2, k)`` representing ``L @ R.T``; the symmetric case ``X Xᵀ`` is ``(X, X)`` (the same
object twice) or a lone 2-D tensor ``X``. ``op.factor.pairs(model)`` yields such tuples.

A pair optimizer takes an iterable of pairs, or of param-group dicts whose ``"pairs"`` (or
``"params"``) entry is such an iterable, plus per-group hyperparameters. Internally each group
stores its distinct tensors in ``group["params"]`` (so ``state_dict``/``load_state_dict``
work as for any torch optimizer) and the pairs as index tuples ``group["pair_index"]``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from torch.optim import Optimizer

from ..backend import dist
from ..backend.checks import check_float
from ..backend.linalg import NotPositiveDefiniteError, spd_solve
from ._finite import check_finite_flag, check_finite_grads

__all__ = ["as_pair", "PairOptimizer", "PairStep", "check_nonnegative"]


def check_nonnegative(group: dict, *names: str) -> None:
    """Raise a ValueError naming the hyperparameter when one in ``names`` is negative."""
    for name in names:
        v = group.get(name)
        if v is None:
            continue
        if not isinstance(v, (int, float)) or isinstance(v, bool):
            raise TypeError(f"{name} must be a real number, got {type(v).__name__}")
        if not 0 <= v < float("inf"):
            raise ValueError(f"{name} must be finite and >= 0, got {v}")


def as_pair(item: Any, where: str = "pairs") -> tuple[Tensor, Tensor]:
    """Validate one factor pair: ``(L, R)`` with matching rank, or a lone ``X`` -> ``(X, X)``.

    Example:
        >>> L, R = torch.zeros(5, 2), torch.zeros(3, 2)
        >>> as_pair((L, R))[1].shape
        torch.Size([3, 2])
    """
    if isinstance(item, Tensor):
        if item.ndim != 2:
            raise ValueError(
                f"{where}: got a lone tensor of shape {tuple(item.shape)}, which is not part of a factor pair; "
                "pass (L, R) tuples, or a 2-D tensor X for the symmetric factorization X Xᵀ"
            )
        check_float(item, f"{where}: X")
        return item, item
    if not (isinstance(item, (tuple, list)) and len(item) == 2 and all(isinstance(t, Tensor) for t in item)):
        raise TypeError(f"{where}: a factor pair must be a 2-tuple (L, R) of tensors or a 2-D tensor, got {item!r:.80}")
    L, R = item
    if L.ndim != 2 or R.ndim != 2:
        raise ValueError(f"{where}: factors must be 2-D (n1, k) and (n2, k), got {tuple(L.shape)} and {tuple(R.shape)}")
    if L.shape[1] != R.shape[1]:
        raise ValueError(f"{where}: factors of mismatched rank: L {tuple(L.shape)} has k = {L.shape[1]} "
                         f"but R {tuple(R.shape)} has k = {R.shape[1]}")
    check_float(L, f"{where}: L")
    if L.dtype != R.dtype or L.device != R.device:
        raise ValueError(f"{where}: L and R must share dtype and device, got {L.dtype}/{L.device} and {R.dtype}/{R.device}")
    return L, R


def _normalize(params: Any) -> list[dict]:
    if isinstance(params, Tensor):
        params = [params]
    elif isinstance(params, tuple) and len(params) == 2 and all(isinstance(t, Tensor) for t in params):
        raise TypeError("params is a bare 2-tuple of tensors, which is ambiguous: pass [(L, R)] for one factor "
                        "pair or [X1, X2] for two symmetric factors")
    if isinstance(params, dict):
        params = [params]
    items = list(params)
    if not items:
        raise ValueError("optimizer got an empty list of factor pairs")
    groups, loose = [], []
    for it in items:
        (groups if isinstance(it, dict) else loose).append(it)
    if loose:
        groups.insert(0, {"pairs": loose})
    return groups


def _pair_name(gi: int, group: dict, i: int) -> str:
    for n, (a, b) in enumerate(group["pair_index"]):
        if i in (a, b):
            factor = "X" if a == b else ("L" if i == a else "R")
            return f"factor {factor} of pairs[{n}] in param group {gi}"
    return f"param_groups[{gi}]['params'][{i}]"  # pragma: no cover - every tensor belongs to a pair


@dataclass
class PairStep:
    """One pair's factors, gradients and preconditioned directions (``dR is None`` when symmetric)."""

    L: Tensor
    R: Tensor
    gL: Tensor
    gR: Tensor | None
    dL: Tensor
    dR: Tensor | None
    group: Any = None  # FSDP2 row shards (the factors' process group): sums are all-reduced

    @property
    def symmetric(self) -> bool:
        return self.dR is None

    def scaled_sq_norm(self) -> Tensor:
        """``<g, g P⁻¹>`` summed over the factors: the squared gradient norm in the scaled metric."""
        s = (self.gL * self.dL).sum()
        if self.dR is not None:
            s = s + (self.gR * self.dR).sum()
        return dist.all_reduce_vec((s,), group=self.group)[0] if self.group is not None else s

    def apply_(self, lr: float | Tensor) -> None:
        """``L -= lr·dL``, ``R -= lr·dR`` (in place, both from the old factors)."""
        self.L.sub_(lr * self.dL)
        if self.dR is not None:
            self.R.sub_(lr * self.dR)


def _local(t: Tensor) -> Tensor:
    return t.to_local() if dist.is_dtensor(t) else t


def _group(t: Tensor):
    """The process group over which a factor's rows are sharded (FSDP2 ``Shard(0)``), else None."""
    d = dist.shard_dim(t, "factor")
    if d is not None and d % t.ndim != 0:
        raise ValueError(f"pair optimizers need factors sharded along their rows (Shard(0), FSDP2's default), got "
                         f"{t.placements} for a factor of shape {tuple(t.shape)}")
    return None if d is None else t.device_mesh.get_group()


def _local_gram(t: Tensor) -> tuple[Tensor, Tensor]:
    """``(local factor, FᵀF)``: for row shards the Gram matrix is the all-reduced sum of the shards' (r×r)."""
    loc = _local(t)
    G = loc.mT @ loc
    pg = _group(t)
    return loc, G if pg is None else dist.all_reduce_vec((G,), group=pg)[0]


class PairOptimizer(Optimizer):
    """Base class: parses factor pairs and computes the preconditioned directions
    ``dL = ∇_L f (RᵀR + λI)⁻¹``, ``dR = ∇_R f (LᵀL + λI)⁻¹`` (symmetric: ``∇f (XᵀX + λI)⁻¹``).

    ``check_finite`` (a default for every group, or per group): subclasses call
    :meth:`_check_finite` first thing in ``step()``, which raises
    :class:`~overparam.optim.NonFiniteGradientError` naming the pair and factor whose gradient
    holds NaN or inf, before anything changes (see ``overparam.optim._finite``).

    Each param group keeps its distinct tensors in ``"params"`` and the pairs as index tuples
    ``"pair_index"`` (a symmetric ``X`` is ``(i, i)``).

    Reference: T. Tong, C. Ma & Y. Chi, "Accelerating Ill-Conditioned Low-Rank Matrix Estimation via
    Scaled Gradient Descent" (2021); X. Xu et al., "The Power of Preconditioning in Overparameterized
    Low-Rank Matrix Sensing" (2023).

    Example:
        >>> class Plain(PairOptimizer):  # a pair optimizer needs only __init__ and step
        ...     def __init__(self, params, lr=0.1):
        ...         super().__init__(params, dict(lr=lr, damping=0.0))
        >>> L, R, X = torch.zeros(4, 2), torch.zeros(3, 2), torch.zeros(5, 2)
        >>> opt = Plain([(L, R), X])
        >>> opt.param_groups[0]["pair_index"], [tuple(t.shape) for t in opt.param_groups[0]["params"]]
        ([(0, 1), (2, 2)], [(4, 2), (3, 2), (5, 2)])
    """

    _nonnegative: tuple[str, ...] = ("lr", "damping")

    def __init__(self, params: Any, defaults: dict[str, Any], *, check_finite: bool = False) -> None:
        check_nonnegative(defaults, *self._nonnegative)
        defaults = dict(defaults, check_finite=check_finite_flag(check_finite))
        super().__init__(_normalize(params), defaults)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a group ``{"pairs": [(L (n1, k), R (n2, k)) or X (n, k), ...], **hyperparameters}``
        (``"params"`` is accepted in place of ``"pairs"``); missing hyperparameters take the defaults.

        Raises:
            ValueError: no pairs, both ``"pairs"`` and ``"params"``, a tensor in two pairs, factors of
                mismatched rank, a negative hyperparameter.

        Example:
            >>> from overparam.optim import ScaledGD
            >>> opt = ScaledGD([torch.zeros(4, 2)], lr=0.5)
            >>> opt.add_param_group({"pairs": [(torch.zeros(3, 2), torch.zeros(5, 2))], "damping": 0.1})
            >>> [(g["pair_index"], g["lr"], g["damping"]) for g in opt.param_groups]
            [([(0, 0)], 0.5, 0.0), ([(0, 1)], 0.5, 0.1)]
        """
        group = dict(param_group)
        if "pairs" in group and "params" in group:
            raise ValueError("a param group must give its factors as 'pairs' or 'params', not both")
        raw = group.pop("pairs") if "pairs" in group else group.pop("params", None)
        if raw is None:
            raise ValueError("a param group needs a 'pairs' entry: an iterable of (L, R) factor pairs")
        raw = [raw] if isinstance(raw, Tensor) else list(raw)
        tensors: list[Tensor] = []
        index: dict[int, int] = {}
        pair_index = []
        for n, item in enumerate(raw):
            L, R = as_pair(item, where=f"pairs[{n}]")
            ij = []
            for t in (L, R) if L is not R else (L,):
                if id(t) in index:
                    raise ValueError(f"pairs[{n}]: a tensor of shape {tuple(t.shape)} appears in more than one factor pair")
                index[id(t)] = len(tensors)
                tensors.append(t)
                ij.append(index[id(t)])
            pair_index.append((ij[0], ij[-1]))
        group["params"] = tensors
        group["pair_index"] = pair_index
        for k, v in self.defaults.items():
            group.setdefault(k, v)
        check_nonnegative(group, *self._nonnegative)
        check_finite_flag(group["check_finite"])
        self._check_group(group)
        super().add_param_group(group)

    def _check_group(self, group: dict[str, Any]) -> None:
        """Subclass hook for extra per-group validation."""

    def _check_finite(self) -> None:
        """Raise if a gradient in a ``check_finite`` group holds NaN/inf, naming ``pairs[n]`` and the factor."""
        check_finite_grads(self, _pair_name)

    @torch.no_grad()
    def _pair_steps(self, group: dict[str, Any], damping: float) -> list[PairStep]:
        out = []
        ps = group["params"]
        for n, (i, j) in enumerate(group["pair_index"]):
            L, R = ps[i], ps[j]
            if L.grad is None and R.grad is None:
                continue
            if L.grad is not None and L.grad.is_sparse or R.grad is not None and R.grad.is_sparse:
                raise TypeError(f"{type(self).__name__} does not support sparse gradients")
            gL = _local(L.grad if L.grad is not None else torch.zeros_like(L))
            pg, (Ll, GL) = _group(L), _local_gram(L)
            try:
                if i == j:
                    out.append(PairStep(Ll, Ll, gL, None, spd_solve(GL, gL, damping=damping), None, pg))
                    continue
                gR = _local(R.grad if R.grad is not None else torch.zeros_like(R))
                L, (R, GR) = Ll, _local_gram(R)
                out.append(PairStep(L, R, gL, gR, spd_solve(GR, gL, damping=damping), spd_solve(GL, gR, damping=damping),
                                    pg))
            except NotPositiveDefiniteError as e:
                raise NotPositiveDefiniteError(
                    f"{type(self).__name__}: factor pair {n} (shapes {tuple(ps[i].shape)}, {tuple(ps[j].shape)}): {e}") from None
        return out
