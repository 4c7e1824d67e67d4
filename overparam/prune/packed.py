"""Masked optimizers whose state holds only the kept entries: sparse training that is cheaper.

:func:`~overparam.prune.masked` keeps a dense optimizer state and zeros its pruned entries, so a
sparse model costs as much optimizer memory (and more step time) as a dense one.
:class:`PackedSGD` and :class:`PackedAdamW` are drop-in optimizers for masked training whose
state tensors hold only the kept entries of each masked parameter, packed in the mask's
row-major order (``p[mask]``): at sparsity ``s`` their state is ``(1 − s)×`` the dense one's
(the masks themselves are the user's, not copied). Unmasked parameters (biases, norms, anything
not in ``masks``) get the ordinary dense update.

FSDP2 (``fully_shard``, DTensor parameters): each mask must be a DTensor with its parameter's
placements (:func:`~overparam.prune.global_magnitude` gives them); every rank packs and updates the
kept entries of its own shard (no communication), so ``state_dict()`` holds this rank's shard.

Semantics — exactly those of the dense masked step (``masked(model, masks, optimizer=SGD/AdamW)``,
which these equal to 1e-12 in fp64): the pruned weights are zeroed once at construction and never
touched again; a kept entry gets the torch optimizer's update from its own gradient and state.
:meth:`PackedOptimizer.set_masks_` changes the masks between steps (gradual pruning, regrowth):
state is re-packed (kept-in-both entries carry their state, regrown entries start from zero
state and zero weight, newly pruned ones are zeroed), as the dense masked step does when given
new masks.

Parameters must be passed *named* (``model.named_parameters()``, or param-group dicts whose
``"params"`` are ``(name, tensor)`` pairs, as torch optimizers accept), so that masks are matched
by name. ``state_dict()`` / ``load_state_dict()`` work as for any torch optimizer (the packed
tensors are saved; loading checks their lengths against the current masks).

Example:
    >>> import torch, overparam as op
    >>> net = torch.nn.Linear(16, 16)
    >>> masks = op.prune.magnitude(net, 0.75)
    >>> opt = op.prune.PackedAdamW(net.named_parameters(), masks, lr=1e-2)
    >>> net(torch.randn(4, 16)).square().sum().backward(); opt.step()
    >>> opt.state[net.weight]["exp_avg"].shape, int((net.weight != 0).sum())
    (torch.Size([64]), 64)
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch
from torch import Tensor
from torch.optim import Optimizer

from ..backend import dist
from ..backend.packed_step import check_adamw_hyper, check_sgd_hyper, packed_adamw_step, packed_sgd_step
from ..optim import closure_loss
from .targets import check_masks

__all__ = ["PackedOptimizer", "PackedSGD", "PackedAdamW"]


def _local(t: Tensor) -> Tensor:
    """This rank's shard of an FSDP2 (DTensor) parameter, gradient or mask; ``t`` itself otherwise."""
    return t.to_local() if dist.is_dtensor(t) else t


class PackedOptimizer(Optimizer):
    """Base class: named parameters, masks by name, packed state for the masked ones.

    Example:
        >>> net = torch.nn.Linear(8, 8); masks = {"weight": torch.rand(8, 8) < 0.25}
        >>> opt = PackedSGD(net.named_parameters(), masks, lr=0.1, momentum=0.9)
        >>> net(torch.randn(2, 8)).sum().backward(); opt.step()
        >>> st = opt.state   # the masked weight's state: its kept entries only; the bias's: dense
        >>> st[net.weight]["momentum_buffer"].numel() == int(masks["weight"].sum()), st[net.bias]["momentum_buffer"].shape
        (True, torch.Size([8]))
        >>> PackedSGD(net.parameters(), masks)   # unnamed parameters cannot be matched to masks
        Traceback (most recent call last):
        TypeError: params must be named: ...
    """

    _packed_keys: tuple[str, ...] = ()

    def __init__(self, params: Iterable[Any], masks: Mapping[str, Tensor], defaults: dict[str, Any]) -> None:
        super().__init__(params, defaults)
        named: dict[str, Tensor] = {}
        for gi, g in enumerate(self.param_groups):
            names = g.get("param_names")
            if names is None:
                raise TypeError("params must be named: pass model.named_parameters() (or groups of (name, tensor) "
                                "pairs) so that masks can be matched by name")
            named.update(zip(names, g["params"]))
        check_masks(masks, named)
        self._masks: dict[int, Tensor] = {}
        self._index: dict[int, Tensor] = {}
        self.set_masks_(masks)

    @property
    def masks(self) -> dict[str, Tensor]:
        """The current masks by parameter name (the tensors given, not copies).

        Example:
            >>> net = torch.nn.Linear(4, 4, bias=False); mask = torch.eye(4, dtype=torch.bool)
            >>> opt = PackedSGD(net.named_parameters(), {"weight": mask}); list(opt.masks), opt.masks["weight"] is mask
            (['weight'], True)
        """
        out = {}
        for g in self.param_groups:
            for name, p in zip(g["param_names"], g["params"]):
                if id(p) in self._masks:
                    out[name] = self._masks[id(p)]
        return out

    @torch.no_grad()
    def set_masks_(self, masks: Mapping[str, Tensor]) -> None:
        """Use new masks from the next step on: re-pack the state, zero the newly pruned weights.

        ``masks`` names a subset of the parameters (the others become, or stay, dense).
        Entries kept by the old and the new mask keep their state; regrown entries start at zero
        state (their weight is zero, as pruned weights are); a parameter that leaves ``masks``
        gets a dense state holding its packed values at the kept entries and zeros elsewhere.

        Example:
            >>> net = torch.nn.Linear(4, 4, bias=False); mask = torch.eye(4, dtype=torch.bool)
            >>> opt = PackedSGD(net.named_parameters(), {"weight": mask}, lr=0.1, momentum=0.9)
            >>> net(torch.ones(1, 4)).sum().backward(); opt.step()   # momentum buffer = grad = 1 at the 4 kept
            >>> grown = mask.clone(); grown[0, 1] = True; opt.set_masks_({"weight": grown})
            >>> opt.state[net.weight]["momentum_buffer"].tolist()   # row-major: (0,0), regrown (0,1), (1,1), ...
            [1.0, 0.0, 1.0, 1.0, 1.0]
            >>> bool(net.weight[0, 1] == 0)   # a regrown weight starts at zero
            True
        """
        named = {n: p for g in self.param_groups for n, p in zip(g["param_names"], g["params"])}
        check_masks(masks, named)
        new: dict[int, Tensor] = {}
        for name, p in named.items():
            old = self._masks.get(id(p))
            m = masks.get(name)
            if m is not None:
                if dist.is_dtensor(p) and not (dist.is_dtensor(m) and m.placements == p.placements):
                    raise ValueError(f"masks[{name!r}]: the parameter is an FSDP2 DTensor {p.placements}; its mask "
                                     "must be a DTensor with the same placements (prune.global_magnitude gives them)")
                m = m.to(device=p.device)
                new[id(p)] = m
                p.mul_(m)
            pl, ml, ol = _local(p), None if m is None else _local(m), None if old is None else _local(old)
            st = self.state.get(p)
            if not st:
                continue
            for k in self._packed_keys:
                v = st.get(k)
                if v is None:
                    continue
                dense = v if ol is None else torch.zeros(pl.shape, dtype=v.dtype, device=v.device).masked_scatter_(ol, v)
                st[k] = dense if ml is None else dense[ml] if old is not m else v
        self._masks = new
        # flat indices of the kept entries: a gather/scatter by index is ~10x faster than by boolean mask
        self._index = {k: _local(m).reshape(-1).nonzero().squeeze(1) for k, m in new.items()}

    def index_bytes(self) -> int:
        """Bytes of the cached flat indices of the kept entries (int64, one per kept entry): memory
        beside the optimizer state (:func:`overparam.optim.optimizer_state_bytes`), derived from the masks and not saved.

        Example:
            >>> net = torch.nn.Linear(4, 4, bias=False); mask = torch.eye(4, dtype=torch.bool)
            >>> PackedSGD(net.named_parameters(), {"weight": mask}).index_bytes()   # 4 kept entries × 8 bytes
            32
        """
        return sum(i.numel() * i.element_size() for i in self._index.values())

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """As :meth:`torch.optim.Optimizer.load_state_dict`, then check every packed tensor's length
        against the current mask (ValueError naming the parameter otherwise).

        Example:
            >>> net = torch.nn.Linear(4, 4, bias=False); mask = torch.eye(4, dtype=torch.bool)
            >>> opt = PackedAdamW(net.named_parameters(), {"weight": mask}); net(torch.ones(1, 4)).sum().backward()
            >>> opt.step(); saved = opt.state_dict()
            >>> again = PackedAdamW(net.named_parameters(), {"weight": mask}); again.load_state_dict(saved)
            >>> torch.equal(again.state[net.weight]["exp_avg"], opt.state[net.weight]["exp_avg"])
            True
            >>> PackedAdamW(net.named_parameters(), {"weight": ~mask}).load_state_dict(saved)
            Traceback (most recent call last):
            ValueError: state_dict: exp_avg of 'weight' has 4 entries but the current mask keeps 12: ...
        """
        super().load_state_dict(state_dict)
        for g in self.param_groups:
            for name, p in zip(g["param_names"], g["params"]):
                m = self._masks.get(id(p))
                n = _local(p).numel() if m is None else int(_local(m).sum())
                for k in self._packed_keys:
                    v = self.state.get(p, {}).get(k)
                    if v is not None and v.numel() != n:
                        raise ValueError(f"state_dict: {k} of {name!r} has {v.numel()} entries but the current mask "
                                         f"keeps {n}: set the masks the state was saved with first (set_masks_)")


class PackedSGD(PackedOptimizer):
    """SGD (momentum, dampening, Nesterov, L2 weight decay as in ``torch.optim.SGD``) with packed state.

    Args:
        params: named parameters (``model.named_parameters()``) or groups of them.
        masks: ``{name: bool tensor}`` for the masked parameters.
        lr, momentum, dampening, weight_decay, nesterov: as ``torch.optim.SGD``.

    Example:
        >>> net = torch.nn.Linear(4, 4)
        >>> opt = PackedSGD(net.named_parameters(), {"weight": torch.eye(4, dtype=torch.bool)}, lr=0.1, momentum=0.9)
        >>> net(torch.ones(1, 4)).sum().backward(); opt.step()
        >>> int((net.weight != 0).sum()), opt.state[net.weight]["momentum_buffer"].shape
        (4, torch.Size([4]))
    """

    _packed_keys = ("momentum_buffer",)

    def __init__(self, params: Iterable[Any], masks: Mapping[str, Tensor], *, lr: float = 1e-3, momentum: float = 0.0,
                 dampening: float = 0.0, weight_decay: float = 0.0, nesterov: bool = False) -> None:
        check_sgd_hyper(lr, momentum, dampening, weight_decay)
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("nesterov needs momentum > 0 and dampening = 0")
        super().__init__(params, masks, dict(lr=lr, momentum=momentum, dampening=dampening,
                                             weight_decay=weight_decay, nesterov=nesterov))

    @torch.no_grad()
    def step(self, closure: Callable[[], Tensor] | None = None) -> Tensor | None:
        """One SGD step on the kept entries (``closure``: re-evaluates and returns the loss).

        Example:
            >>> net = torch.nn.Linear(4, 4, bias=False); mask = torch.eye(4, dtype=torch.bool)
            >>> w0 = net.weight.detach().clone(); opt = PackedSGD(net.named_parameters(), {"weight": mask}, lr=0.1)
            >>> net(torch.ones(1, 4)).sum().backward(); opt.step()   # the gradient is all ones
            >>> torch.equal(net.weight, (w0 - 0.1) * mask)
            True
        """
        loss = closure_loss(closure)
        for g in self.param_groups:
            for p in g["params"]:
                if p.grad is None:
                    continue
                i = self._index.get(id(p))
                st = self.state[p]
                first = g["momentum"] and "momentum_buffer" not in st
                if first:
                    st["momentum_buffer"] = torch.empty(_local(p).numel() if i is None else i.numel(), dtype=p.dtype,
                                                        device=p.device)
                packed_sgd_step(_local(p), _local(p.grad), i, st.get("momentum_buffer"), lr=g["lr"], momentum=g["momentum"],
                                dampening=g["dampening"], weight_decay=g["weight_decay"], nesterov=g["nesterov"],
                                first=bool(first))
        return loss


class PackedAdamW(PackedOptimizer):
    """Adam / AdamW (``decoupled=True``, the default) with packed state, as ``torch.optim.AdamW``.

    Args:
        params: named parameters (``model.named_parameters()``) or groups of them.
        masks: ``{name: bool tensor}`` for the masked parameters.
        lr, betas, eps, weight_decay, amsgrad: as ``torch.optim.AdamW``.
        decoupled: True: AdamW's decoupled decay ``p ← p(1 − lr·wd)``; False: Adam's L2 term
            ``g ← g + wd·p``.

    Example:
        >>> net = torch.nn.Linear(4, 4)
        >>> opt = PackedAdamW(net.named_parameters(), {"weight": torch.eye(4, dtype=torch.bool)}, lr=0.1)
        >>> net(torch.ones(1, 4)).sum().backward(); opt.step()
        >>> sorted(opt.state[net.weight]), opt.state[net.weight]["exp_avg_sq"].shape
        (['exp_avg', 'exp_avg_sq', 'step'], torch.Size([4]))
    """

    _packed_keys = ("exp_avg", "exp_avg_sq", "max_exp_avg_sq")

    def __init__(self, params: Iterable[Any], masks: Mapping[str, Tensor], *, lr: float = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8, weight_decay: float = 1e-2,
                 amsgrad: bool = False, decoupled: bool = True) -> None:
        if not (isinstance(betas, (tuple, list)) and len(betas) == 2 and all(0 <= b < 1 for b in betas)):
            raise ValueError(f"betas must be a pair of numbers in [0, 1), got {betas!r}")
        check_adamw_hyper(lr, betas[0], betas[1], eps, weight_decay, 1.0)
        super().__init__(params, masks, dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay,
                                             amsgrad=bool(amsgrad), decoupled=bool(decoupled)))

    @torch.no_grad()
    def step(self, closure: Callable[[], Tensor] | None = None) -> Tensor | None:
        """One Adam(W) step on the kept entries (``closure``: re-evaluates and returns the loss).

        Example:
            >>> net = torch.nn.Linear(4, 4, bias=False); mask = torch.eye(4, dtype=torch.bool)
            >>> w0 = net.weight.detach().clone(); opt = PackedAdamW(net.named_parameters(), {"weight": mask}, lr=0.1)
            >>> net(torch.ones(1, 4)).sum().backward(); opt.step()   # Adam's first step: lr · sign(grad), then decay
            >>> torch.allclose(net.weight, (w0 * (1 - 0.1 * 0.01) - 0.1) * mask)
            True
        """
        loss = closure_loss(closure)
        for g in self.param_groups:
            b1, b2 = g["betas"]
            lr, wd = g["lr"], g["weight_decay"]
            for p in g["params"]:
                if p.grad is None:
                    continue
                i = self._index.get(id(p))
                st = self.state[p]
                if not st:
                    k = _local(p).numel() if i is None else i.numel()
                    st["step"] = torch.tensor(0.0, dtype=torch.float32)
                    st["exp_avg"] = torch.zeros(k, dtype=p.dtype, device=p.device)
                    st["exp_avg_sq"] = torch.zeros(k, dtype=p.dtype, device=p.device)
                    if g["amsgrad"]:
                        st["max_exp_avg_sq"] = torch.zeros(k, dtype=p.dtype, device=p.device)
                st["step"] += 1
                packed_adamw_step(_local(p), _local(p.grad), i, st["exp_avg"], st["exp_avg_sq"], st.get("max_exp_avg_sq"), lr=lr,
                                  beta1=b1, beta2=b2, eps=g["eps"], weight_decay=wd, step=float(st["step"]),
                                  decoupled=g["decoupled"])
        return loss
