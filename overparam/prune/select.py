"""Which parameters to prune: a name → parameter selection over a model.

A *mask* in overparam is a ``dict[str, Tensor]`` from parameter names (as in
``model.named_parameters()``) to bool tensors of the parameter's shape; ``True`` = kept.
:func:`targets` picks the parameters a mask covers: by default the ``weight`` of every
``nn.Linear`` and ``nn.Conv{1,2,3}d`` (biases and normalisation layers are left dense),
minus the modules skipped by type or by name pattern (``fnmatch`` on the module name).

Example:
    >>> import torch
    >>> net = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))
    >>> list(targets(net))
    ['0.weight', '2.weight']
    >>> list(targets(net, skip_names=["2"]))
    ['0.weight']
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Mapping

import torch
from torch import Tensor, nn

__all__ = ["Masks", "DEFAULT_TYPES", "targets", "check_masks", "density", "match_override"]

Masks = dict[str, Tensor]
"""Parameter name → bool tensor of the parameter's shape (``True`` = kept)."""

DEFAULT_TYPES: tuple[type[nn.Module], ...] = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def targets(
    model: nn.Module,
    *,
    types: Iterable[type[nn.Module]] = DEFAULT_TYPES,
    skip_types: Iterable[type[nn.Module]] = (),
    skip_names: Iterable[str] = (),
    param: str = "weight",
) -> dict[str, nn.Parameter]:
    """The parameters to prune, in ``named_modules`` order.

    Args:
        model: any module.
        types: module types whose ``param`` is pruned.
        skip_types: module types never pruned (checked after ``types``).
        skip_names: ``fnmatch`` patterns on module names (``"head"``, ``"blocks.*.attn.*"``).
        param: the parameter attribute to take from each selected module.

    Returns:
        ``{"module.name.weight": parameter}``; raises ``ValueError`` when nothing is selected.
    """
    types, skip_types = tuple(types), tuple(skip_types)
    if isinstance(skip_names, str):
        raise TypeError("skip_names must be a list of patterns, not a single string")
    pats = list(skip_names)
    out: dict[str, nn.Parameter] = {}
    for mname, mod in model.named_modules():
        if not isinstance(mod, types) or (skip_types and isinstance(mod, skip_types)):
            continue
        if any(fnmatch.fnmatchcase(mname, p) for p in pats):
            continue
        p = getattr(mod, param, None)
        if isinstance(p, nn.Parameter):
            out[f"{mname}.{param}" if mname else param] = p
    if not out:
        raise ValueError("no parameter selected: check types / skip_types / skip_names")
    return out


def check_masks(masks: Mapping[str, Tensor], params: Mapping[str, Tensor]) -> None:
    """Raise ``ValueError`` / ``TypeError`` unless every mask names a parameter, is bool and has its shape."""
    if not isinstance(masks, Mapping):
        raise TypeError(f"masks must be a dict name -> bool tensor, got {type(masks).__name__}")
    for k, m in masks.items():
        if k not in params:
            raise ValueError(f"masks[{k!r}] names no parameter of the model")
        if not isinstance(m, Tensor) or m.dtype != torch.bool:
            raise TypeError(f"masks[{k!r}] must be a bool tensor, got {getattr(m, 'dtype', type(m).__name__)}")
        if m.shape != params[k].shape:
            raise ValueError(f"masks[{k!r}] has shape {tuple(m.shape)} but the parameter has {tuple(params[k].shape)}")


def density(masks: Mapping[str, Tensor]) -> float:
    """Fraction of kept entries over all masks.

    Example:
        >>> density({"w": torch.tensor([True, False, False, True])})
        0.5
    """
    total = sum(m.numel() for m in masks.values())
    if total == 0:
        raise ValueError("masks is empty")
    return float(sum(int(m.sum()) for m in masks.values())) / total


def match_override(name: str, overrides: Mapping[str, float]) -> float | None:
    """The first override whose pattern matches parameter ``name`` (or its module name)."""
    mod = name.rsplit(".", 1)[0] if "." in name else name
    for pat, val in overrides.items():
        if fnmatch.fnmatchcase(name, pat) or fnmatch.fnmatchcase(mod, pat):
            return val
    return None
