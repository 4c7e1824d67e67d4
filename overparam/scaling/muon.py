"""μP for Muon: ``torch.optim.Muon`` on the hidden matrices, AdamW on the rest, from one plan.

Muon (Jordan et al. 2024) replaces a hidden matrix's update by its orthogonalized momentum
(Newton–Schulz), whose singular values are all about 1; ``torch.optim.Muon`` then multiplies the
learning rate by ``adjust(A, B)`` of the stored shape ``(A, B)``: ``√max(1, A/B)`` (``"original"``,
the default) or ``0.2·√max(A, B)`` (``"match_rms_adamw"``). μP asks for a spectral update norm
``∝ √(fan_out/fan_in)`` (Yang, Simon & Bernstein 2023, "A Spectral Condition for Feature
Learning"), so relative to the base a hidden matrix gets the Muon learning rate

    ``lr · adjust(base) / adjust(model) · √(m_out/m_in) · depth factor``

(1 for square growth with ``"original"``, ``1/√m`` with ``"match_rms_adamw"``), where the depth
factor is the plan's (an update that ignores the gradient scale follows Adam's depth rules). Every
other tensor (input and output layers, vectors, hidden tensors of more than two dimensions) keeps
the plan's AdamW groups. Weight decay is scaled as in :meth:`~overparam.scaling.Plan.param_groups`.

Example:
    >>> import torch, overparam as op
    >>> mlp = lambda w: torch.nn.Sequential(torch.nn.Linear(4, w), torch.nn.ReLU(), torch.nn.Linear(w, w),
    ...                                     torch.nn.ReLU(), torch.nn.Linear(w, 3))
    >>> model = mlp(256)
    >>> p = op.scaling.plan(model, "mup", base=mlp(64))
    >>> muon, adam = op.scaling.muon_param_groups(p, model, lr=0.02, adam_lr=1e-3)
    >>> [g["lr"] for g in muon], sorted({g["lr"] for g in adam})
    ([0.02], [0.00025, 0.001])
    >>> opts = torch.optim.Muon(muon), torch.optim.AdamW(adam)
"""

from __future__ import annotations

import math

from torch import nn

from ..backend.checks import check_real
from .plan import Plan, _groups

__all__ = ["muon_param_groups"]

_ADJUST = (None, "original", "match_rms_adamw")


def _adjust(shape: tuple[float, float], how: str | None) -> float:
    a, b = shape
    return math.sqrt(max(1.0, a / b)) if how in (None, "original") else 0.2 * math.sqrt(max(a, b))


def muon_param_groups(plan: Plan, model: nn.Module, *, lr: float, adam_lr: float, weight_decay: float = 0.0,
                      adam_weight_decay: float | None = None, decay: str = "independent", vector_decay: bool = True,
                      eps: float | None = None, adjust_lr_fn: str | None = None) -> tuple[list[dict], list[dict]]:
    """``(muon_groups, adamw_groups)``: every trainable parameter of ``model`` in exactly one group.

    Args:
        plan: an ``optimizer="adam"`` plan of ``model`` (any parameterization).
        model: the planned model.
        lr: the base Muon learning rate (tuned on the base model).
        adam_lr: the base AdamW learning rate for the other tensors.
        weight_decay: base decay of the Muon groups; ``adam_weight_decay`` that of the AdamW
            groups (default the same).
        decay, vector_decay, eps: as in :meth:`~overparam.scaling.Plan.param_groups` (``eps``
            only for the AdamW groups).
        adjust_lr_fn: the ``adjust_lr_fn`` you give ``torch.optim.Muon`` (None = ``"original"``,
            or ``"match_rms_adamw"``); stored in each Muon group and compensated for.

    Returns:
        groups for ``torch.optim.Muon`` (2-D tensors of role ``"hidden"``, each with
        ``adjust_lr_fn``) and for ``torch.optim.AdamW``; the first list is empty when no tensor
        qualifies.

    Raises:
        ValueError: a plan not made for Adam, an unknown ``adjust_lr_fn``, and whatever
            :meth:`~overparam.scaling.Plan.param_groups` refuses.

    Reference: K. Jordan et al., "Muon: An optimizer for hidden layers in neural networks" (2024);
    G. Yang, J. B. Simon, J. Bernstein, "A Spectral Condition for Feature Learning" (2023).

    Example:
        >>> from overparam.scaling import plan
        >>> mlp = lambda w: nn.Sequential(nn.Linear(4, w), nn.ReLU(), nn.Linear(w, w), nn.ReLU(), nn.Linear(w, 3))
        >>> model = mlp(32)
        >>> p = plan(model, "mup", base=mlp(8))
        >>> muon, adam = muon_param_groups(p, model, lr=0.02, adam_lr=1e-3, adjust_lr_fn="match_rms_adamw")
        >>> [(len(g["params"]), g["lr"]) for g in muon]  # 0.02 / √m with m = 4: the hidden matrix
        [(1, 0.01)]
        >>> sum(len(g["params"]) for g in muon + adam) == len(list(model.parameters()))
        True
    """
    if not isinstance(plan, Plan):
        raise TypeError(f"plan must be a Plan (op.scaling.plan(...)), got {type(plan).__name__}")
    if plan.optimizer != "adam":
        raise ValueError(f"plan must be made with optimizer='adam' (the AdamW groups and the depth rules), "
                         f"got optimizer={plan.optimizer!r}")
    check_real(lr, "lr", above=0.0, finite=True)
    check_real(adam_lr, "adam_lr", above=0.0, finite=True)
    if adam_weight_decay is not None:
        check_real(adam_weight_decay, "adam_weight_decay", at_least=0.0, finite=True)
    if adjust_lr_fn not in _ADJUST:
        raise ValueError(f"adjust_lr_fn must be one of {_ADJUST}, got {adjust_lr_fn!r}")
    plan.param_groups(model, lr=adam_lr, weight_decay=weight_decay, decay=decay, eps=eps)  # validates everything
    params = dict(model.named_parameters())
    hidden = [k for k, r in plan.rules.items() if r.shape.role == "hidden" and len(r.size) == 2]
    rest = [k for k in plan.rules if k not in hidden]
    scale = {}
    for k in hidden:
        r, s = plan.rules[k], plan.rules[k].shape
        per_dim = (s.m_out, s.m_in) if r.size == (s.fan_out, s.fan_in) else (s.m_in, s.m_out)  # (out, in) or (in, out)
        base = (r.size[0] / per_dim[0], r.size[1] / per_dim[1])
        width = _adjust(base, adjust_lr_fn) / _adjust(r.size, adjust_lr_fn) * math.sqrt(s.m_out / s.m_in)
        scale[k] = width * r.lr_scale * s.m_in  # r.lr_scale = (1/m_in) × the depth factor under Adam
    muon = _groups(plan, params, hidden, lr=lr, weight_decay=weight_decay, decay=decay, vector_decay=vector_decay,
                   eps=None, extra={"adjust_lr_fn": adjust_lr_fn}, lr_scale=scale)
    awd = weight_decay if adam_weight_decay is None else adam_weight_decay
    adam = _groups(plan, params, rest, lr=adam_lr, weight_decay=awd, decay=decay, vector_decay=vector_decay, eps=eps,
                   extra={})
    return muon, adam
