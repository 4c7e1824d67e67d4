"""Applying masks without rewriting the model.

Masks live beside the model (``dict`` name → bool tensor). :func:`masked` zeroes the pruned
weights, their gradients and every optimizer state tensor of the parameter's shape (SGD
``momentum_buffer``, Adam ``exp_avg``, ``exp_avg_sq``, ``max_exp_avg_sq``, ...) once, then
keeps them exactly zero through training with hooks on the *optimizer*
(``register_step_pre_hook`` / ``register_step_post_hook``, the public API; nothing is
monkey-patched). Two policies:

* ``"grads"``: mask only the gradients before each step. Exact for the optimizers in
  :data:`GRAD_ONLY_EXACT` (SGD with momentum, Nesterov and weight decay; Adam, AdamW,
  AMSGrad; RMSprop; Adagrad): with zero weight, zero state and zero gradient their update of
  an entry is exactly zero, so the entry and its state stay exactly zero. One pass per step.
* ``"full"``: also re-mask the weights and the optimizer state after each step, for any
  optimizer.
* ``"packed"``: for :class:`~overparam.prune.PackedSGD` / :class:`~overparam.prune.PackedAdamW`,
  whose state holds only the kept entries and whose step never touches a pruned one: nothing to
  do per step (the handle checks that the optimizer holds the same masks).

``"auto"`` (default) picks ``"packed"`` for a packed optimizer, ``"grads"`` for :data:`GRAD_ONLY_EXACT`,
else ``"full"``. The model itself is untouched: its
``state_dict`` keys, ``deepcopy``, ``pickle`` and ``torch.compile`` behave exactly as without
masks. Without an optimizer, :meth:`Masked.apply_` re-applies the masks by hand.

For users who want the mask *inside* the module, :func:`parametrize_masks_` registers a
``torch.nn.utils.parametrize`` parametrization (this route does rename ``state_dict`` keys,
``weight`` → ``parametrizations.weight.original``, as parametrize always does);
:func:`unparametrize_masks_` removes it and leaves the masked weights in the same
``Parameter`` objects, registered in their original order (``state_dict`` keys and
``model.parameters()`` come back exactly as before, so an optimizer ``state_dict`` saved before
the round trip loads onto the same tensors).

Example:
    >>> import torch
    >>> from overparam.prune import magnitude
    >>> net = torch.nn.Linear(8, 8)
    >>> opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    >>> with masked(net, magnitude(net, 0.75), optimizer=opt):
    ...     net(torch.randn(4, 8)).square().sum().backward()
    ...     opt.step()
    >>> int((net.weight == 0).sum())
    48
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from .packed import PackedOptimizer
from .targets import Masks, check_masks, check_model

__all__ = ["GRAD_ONLY_EXACT", "Masked", "masked", "apply_masks_", "MaskParametrization", "parametrize_masks_",
           "unparametrize_masks_"]


GRAD_ONLY_EXACT: tuple[type[torch.optim.Optimizer], ...] = (
    torch.optim.SGD, torch.optim.Adam, torch.optim.AdamW, torch.optim.RMSprop, torch.optim.Adagrad)
"""Optimizers whose step leaves an entry with zero weight, state and gradient exactly zero."""


@torch.no_grad()
def apply_masks_(model: nn.Module, masks: Mapping[str, Tensor]) -> None:
    """Zero the pruned entries of the named parameters in place (and of their ``.grad``).

    Example:
        >>> net = torch.nn.Linear(2, 1)
        >>> apply_masks_(net, {"weight": torch.tensor([[True, False]])})
        >>> bool(net.weight[0, 1] == 0)
        True
    """
    params = check_model(model)
    check_masks(masks, params)
    for k, m in masks.items():
        params[k].mul_(m)
        if params[k].grad is not None:
            params[k].grad.mul_(m)


class Masked:
    """A handle keeping pruned weights, gradients and optimizer state at exactly zero.

    Create it with :func:`masked`; it is active from creation until :meth:`remove` (or the end
    of a ``with`` block). Attributes: ``model``, ``masks``, ``optimizer``, ``policy``.

    Example:
        >>> net = torch.nn.Linear(4, 2)
        >>> opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
        >>> with masked(net, {"weight": torch.tensor([[True, False] * 2] * 2)}, optimizer=opt) as handle:
        ...     for _ in range(3):
        ...         opt.zero_grad()
        ...         net(torch.randn(8, 4)).square().sum().backward()
        ...         opt.step()
        >>> handle.policy, bool((net.weight[:, 1::2] == 0).all())
        ('grads', True)
    """

    def __init__(self, model: nn.Module, masks: Mapping[str, Tensor], optimizer: torch.optim.Optimizer | None = None,
                 *, policy: str = "auto") -> None:
        if policy not in ("auto", "grads", "full", "packed"):
            raise ValueError(f"policy must be 'auto', 'grads', 'full' or 'packed', got {policy!r}")
        packed = isinstance(optimizer, PackedOptimizer)
        if policy == "auto":
            policy = "packed" if packed else "grads" if type(optimizer) in GRAD_ONLY_EXACT else "full"
        if (policy == "packed") != packed:
            raise ValueError(f"policy={policy!r} with a {type(optimizer).__name__}: 'packed' is the policy of "
                             "PackedSGD / PackedAdamW and only theirs")
        self.policy = policy
        params = check_model(model)
        check_masks(masks, params)
        if packed:
            held = optimizer.masks
            if set(held) != set(masks) or any(not torch.equal(held[k], masks[k].to(held[k].device)) for k in masks):
                raise ValueError("optimizer holds other masks than masks: call optimizer.set_masks_(masks) first")
        self.model, self.masks, self.optimizer = model, dict(masks), optimizer
        self._params = [params[k] for k in self.masks]
        # masks in each parameter's dtype/device: one foreach multiply per step
        self._fmasks = [m.to(device=p.device, dtype=p.dtype) for m, p in zip(self.masks.values(), self._params)]
        self._hooks: list = []
        if optimizer is not None:
            ids = {id(p) for g in optimizer.param_groups for p in g["params"]}
            missing = [k for k, p in zip(self.masks, self._params) if id(p) not in ids]
            if missing:
                raise ValueError(f"optimizer does not hold masked parameters {missing}")
            if policy != "packed":
                self._hooks = [optimizer.register_step_pre_hook(self._pre)]
            if policy == "full":
                self._hooks.append(optimizer.register_step_post_hook(self._post))
        self.apply_(state=True)

    @torch.no_grad()
    def mask_grads_(self) -> None:
        """Zero the pruned entries of the gradients (done before every optimizer step).

        Example:
            >>> net = torch.nn.Linear(4, 2)
            >>> masks = {"weight": torch.tensor([[True, False] * 2] * 2)}
            >>> opt = torch.optim.Adam(net.parameters(), lr=0.1)
            >>> handle = masked(net, masks, optimizer=opt)
            >>> net(torch.randn(3, 4)).sum().backward()
            >>> handle.mask_grads_()
            >>> bool((net.weight.grad[:, 1::2] == 0).all()), bool((net.weight.grad[:, ::2] != 0).all())
            (True, True)
        """
        pairs = [(p.grad, m) for p, m in zip(self._params, self._fmasks) if p.grad is not None]
        if pairs:
            torch._foreach_mul_([g for g, _ in pairs], [m for _, m in pairs])

    @torch.no_grad()
    def mask_state_(self) -> None:
        """Zero the pruned entries of every optimizer state tensor shaped like its parameter.

        Example:
            >>> net = torch.nn.Linear(4, 2)
            >>> masks = {"weight": torch.tensor([[True, False] * 2] * 2)}
            >>> opt = torch.optim.Adam(net.parameters(), lr=0.1)
            >>> handle = masked(net, masks, optimizer=opt)
            >>> net(torch.randn(3, 4)).sum().backward(); opt.step()
            >>> handle.mask_state_()
            >>> bool((opt.state[net.weight]["exp_avg_sq"][:, 1::2] == 0).all())
            True
        """
        if self.optimizer is None:
            return
        ts, ms = [], []
        for p, m in zip(self._params, self._fmasks):
            for v in self.optimizer.state.get(p, {}).values():
                if isinstance(v, Tensor) and v.shape == p.shape:
                    ts.append(v)
                    ms.append(m if v.dtype == m.dtype else m.to(v.dtype))
        if ts:
            torch._foreach_mul_(ts, ms)

    @torch.no_grad()
    def apply_(self, *, state: bool = True) -> None:
        """Re-apply the masks to weights, gradients and (if ``state``) optimizer state.

        Example (after changing weights by hand):
            >>> net = torch.nn.Linear(4, 2)
            >>> masks = {"weight": torch.tensor([[True, False] * 2] * 2)}
            >>> opt = torch.optim.Adam(net.parameters(), lr=0.1)
            >>> handle = masked(net, masks, optimizer=opt)
            >>> with torch.no_grad():
            ...     _ = net.weight.fill_(1.0)
            >>> handle.apply_()
            >>> net.weight
            Parameter containing:
            tensor([[1., 0., 1., 0.],
                    [1., 0., 1., 0.]], requires_grad=True)
        """
        torch._foreach_mul_(self._params, self._fmasks)
        self.mask_grads_()
        if state:
            self.mask_state_()

    def _pre(self, optimizer, args, kwargs) -> None:
        self.mask_grads_()

    @torch.no_grad()
    def _post(self, optimizer, args, kwargs) -> None:
        torch._foreach_mul_(self._params, self._fmasks)
        self.mask_state_()

    def remove(self) -> None:
        """Detach the optimizer hooks (weights stay as they are).

        Example:
            >>> net = torch.nn.Linear(4, 2)
            >>> masks = {"weight": torch.tensor([[True, False] * 2] * 2)}
            >>> opt = torch.optim.Adam(net.parameters(), lr=0.1)
            >>> handle = masked(net, masks, optimizer=opt)
            >>> handle.remove()
            >>> handle
            Masked(1 tensors, density 0.5000, policy='grads', active=False)
        """
        for h in self._hooks:
            h.remove()
        self._hooks = []

    def __enter__(self) -> "Masked":
        return self

    def __exit__(self, *exc) -> None:
        self.remove()

    def __repr__(self) -> str:
        kept = sum(int(m.sum()) for m in self.masks.values())
        total = sum(m.numel() for m in self.masks.values())
        return (f"Masked({len(self.masks)} tensors, density {kept / total:.4f}, policy={self.policy!r}, "
                f"active={bool(self._hooks)})")


def masked(model: nn.Module, masks: Mapping[str, Tensor], *, optimizer: torch.optim.Optimizer | None = None,
           policy: str = "auto") -> Masked:
    """Apply ``masks`` to ``model`` now and keep them applied through ``optimizer`` steps.

    Args:
        model: any module; not modified beyond zeroing pruned entries.
        masks: name → bool tensor of the parameter's shape (``True`` = kept).
        optimizer: any ``torch.optim.Optimizer`` holding the masked parameters (or ``None``).
        policy: ``"auto"`` | ``"grads"`` | ``"full"`` | ``"packed"`` (see the module docstring).

    Returns:
        a :class:`Masked` handle, usable as a context manager.

    Example (AdamW with weight decay keeps the pruned entries exactly zero):
        >>> from overparam.prune import magnitude
        >>> net = torch.nn.Linear(8, 8)
        >>> opt = torch.optim.AdamW(net.parameters(), lr=0.1, weight_decay=0.1)
        >>> handle = masked(net, magnitude(net, 0.75), optimizer=opt)
        >>> for _ in range(3):
        ...     opt.zero_grad()
        ...     net(torch.randn(4, 8)).square().sum().backward()
        ...     opt.step()
        >>> int((net.weight == 0).sum()), handle.policy
        (48, 'grads')
    """
    return Masked(model, masks, optimizer, policy=policy)


class MaskParametrization(nn.Module):
    """``weight = original * mask`` as a ``torch.nn.utils.parametrize`` parametrization (mask is a buffer).

    ``order`` is the owning module's parameter names as they were registered before any mask
    parametrization; :func:`unparametrize_masks_` restores that order.

    Example:
        >>> p = MaskParametrization(torch.tensor([True, False]))
        >>> p(torch.tensor([3.0, 4.0]))
        tensor([3., 0.])
    """

    def __init__(self, mask: Tensor, order: list[str] | None = None) -> None:
        super().__init__()
        if not isinstance(mask, Tensor) or mask.dtype != torch.bool:
            raise TypeError("mask must be a bool tensor")
        self.register_buffer("mask", mask)
        self.order = list(order or [])

    def forward(self, w: Tensor) -> Tensor:
        """``w * mask`` (any shape broadcasting with the mask; the weight's own shape in practice).

        Example:
            >>> MaskParametrization(torch.tensor([[True], [False]])).forward(torch.ones(2, 2))
            tensor([[1., 1.],
                    [0., 0.]])
        """
        return w * self.mask


def _mask_parametrizations(mod: nn.Module) -> list[MaskParametrization]:
    if not parametrize.is_parametrized(mod):
        return []
    return [p for plist in mod.parametrizations.values() for p in plist if isinstance(p, MaskParametrization)]


def parametrize_masks_(model: nn.Module, masks: Masks) -> nn.Module:
    """Register a :class:`MaskParametrization` on every masked parameter; returns ``model``.

    Undo with :func:`unparametrize_masks_` (the round trip restores parameter and ``state_dict``
    order exactly).

    Example:
        >>> net = torch.nn.Linear(2, 1)
        >>> _ = parametrize_masks_(net, {"weight": torch.tensor([[True, False]])})
        >>> bool(net.weight[0, 1] == 0), "parametrizations.weight.original" in net.state_dict()
        (True, True)
        >>> list(unparametrize_masks_(net).state_dict())
        ['weight', 'bias']
    """
    check_masks(masks, check_model(model))
    for k, m in masks.items():
        mod_name, _, pname = k.rpartition(".")
        mod = model.get_submodule(mod_name)
        earlier = _mask_parametrizations(mod)
        order = earlier[0].order if earlier else list(mod._parameters)
        parametrize.register_parametrization(mod, pname, MaskParametrization(m.to(getattr(mod, pname).device), order))
    return model


def unparametrize_masks_(model: nn.Module) -> nn.Module:
    """Remove every :class:`MaskParametrization`, leaving the masked values in the original
    ``Parameter`` objects, re-registered in the module's original order; returns ``model``.

    Example:
        >>> net = torch.nn.Linear(2, 1)
        >>> w = net.weight
        >>> _ = parametrize_masks_(net, {"weight": torch.tensor([[False, True]])})
        >>> _ = unparametrize_masks_(net)
        >>> net.weight is w, bool(w[0, 0] == 0), [n for n, _ in net.named_parameters()]
        (True, True, ['weight', 'bias'])
    """
    check_model(model)
    for mod in list(model.modules()):
        ours = _mask_parametrizations(mod)
        if not ours:
            continue
        order = ours[0].order
        for pname in list(mod.parametrizations.keys()):
            if any(isinstance(p, MaskParametrization) for p in mod.parametrizations[pname]):
                parametrize.remove_parametrizations(mod, pname, leave_parametrized=True)
        present = [n for n in order if n in mod._parameters]
        rest = [n for n in mod._parameters if n not in present]
        for n in present + rest:  # re-register in the original order (remove appends at the end)
            p = mod._parameters[n]
            delattr(mod, n)
            mod.register_parameter(n, p)
    return model
