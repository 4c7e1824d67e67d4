"""Which parameters to prune: ``targets=`` / ``exclude=`` specs resolved by :func:`overparam.select`.

A *mask* in overparam is a ``dict[str, Tensor]`` from parameter names (as in
``model.named_parameters()``) to bool tensors of the parameter's shape; ``True`` = kept.
:func:`targets` picks the parameters a mask covers. The one rule of prune:

* **the prunable weights** are the weights of the registered layer kinds
  (:mod:`overparam.backend.layers`): ``nn.Linear``, ``nn.Conv1d/2d/3d``, transformers'
  ``Conv1D`` (GPT-2), ``nn.MultiheadAttention``'s ``in_proj_weight`` (and ``q/k/v_proj_weight``)
  and ``nn.Embedding``; biases, normalisation layers and the parameters of other modules are
  never pruned;
* ``targets=None`` (the default) selects every one of them except embeddings, which stay dense
  unless named. **Tied weights**: a tensor one of whose owners is an Embedding is an embedding
  (GPT-2's and BERT's read-out tied to the token embedding stays dense by default; name it to
  prune it). A module that holds a ``weight`` of ≥ 2 dimensions but is of no registered kind
  makes ``targets=None`` raise a ``ValueError`` naming its type (register it with
  ``overparam.backend.layers.register_layer``, or ``exclude=`` it): a default never skips a
  weight-bearing layer silently;
* ``targets=spec`` selects the prunable weights *inside* what ``spec`` selects (the
  :mod:`overparam.backend.select` grammar: a name or dotted suffix, a glob, a module type, a
  predicate ``fn(name, param)``, or a list): ``"emb"`` selects ``emb.weight`` of an Embedding,
  ``"blocks.0"`` every prunable weight in block 0, ``nn.Embedding`` every embedding table;
* ``exclude=spec`` removes what it selects (same grammar);
* every name, glob or type in ``targets`` must select at least one prunable weight, and every
  one in ``exclude`` something of the model: otherwise a ``ValueError`` names the keyword and
  the item (``targets="norm"`` on a LayerNorm is refused, not silently ignored).

Keyed options use the same grammar: ``overrides={spec: sparsity}`` prunes the targets a key
selects on their own at that sparsity (:func:`resolve_overrides`).

Example:
    >>> import torch
    >>> net = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.LayerNorm(3), torch.nn.Linear(3, 2))
    >>> list(targets(net))
    ['0.weight', '2.weight']
    >>> list(targets(net, exclude="2"))
    ['0.weight']
    >>> targets(net, "1")
    Traceback (most recent call last):
    ...
    ValueError: targets: '1' selects no prunable weight (the weight of a Linear, Conv1d/2d/3d, Conv1D, MultiheadAttention or Embedding)
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn

from ..backend.checks import check_fraction
from ..backend.layers import check_covered, weights_of
from ..backend.select import Spec, name_matches, select

__all__ = ["Masks", "targets", "check_masks", "kept_fraction", "resolve_overrides"]

Masks = dict[str, Tensor]
"""Parameter name → bool tensor of the parameter's shape (``True`` = kept)."""

_WHAT = "prunable weight (the weight of a Linear, Conv1d/2d/3d, Conv1D, MultiheadAttention or Embedding)"


def _weights(model: nn.Module, default: bool) -> dict[str, nn.Parameter]:
    """The registered weights, in ``named_parameters`` order: with ``default`` those every owner
    of which prunes by default (a tied embedding stays dense), else those any owner can prune."""
    out = {}
    for name, w in weights_of(model).items():
        kinds = [k for _, k in w.owners]
        if all(k.prune_default for k in kinds) if default else any(k.prunable for k in kinds):
            out[name] = w.module._parameters[w.param_name]
    return out


def _flat(spec: Spec) -> list:
    if isinstance(spec, (list, tuple)):
        return [x for it in spec for x in _flat(it)]
    return [spec]


def targets(model: nn.Module, targets: Spec = None, *, exclude: Spec = None) -> dict[str, nn.Parameter]:
    """The parameters to prune, in ``named_parameters`` order (see the module docstring).

    Args:
        model: any module.
        targets: a selection spec; ``None`` = every registered weight but embeddings.
        exclude: a selection spec removed from the selection.

    Returns:
        ``{"module.name.weight": parameter}``.

    Raises:
        ValueError: an item of ``targets`` selects no prunable weight, an item of ``exclude``
            nothing, nothing is left to prune, or (``targets=None``) a module holds a ≥ 2-D
            ``weight`` of no registered kind.

    Example:
        >>> emb = torch.nn.Sequential(torch.nn.Embedding(10, 4), torch.nn.Linear(4, 2))
        >>> list(targets(emb)), list(targets(emb, torch.nn.Embedding)), list(targets(emb, ["0", "1"]))
        (['1.weight'], ['0.weight'], ['0.weight', '1.weight'])
    """
    check_model(model)
    if targets is None:
        check_covered(model, exclude, which="prunable")
        pool = _weights(model, True)
        chosen = set(pool)
    else:
        pool = _weights(model, False)
        chosen = set()
        for item in _flat(targets):
            got = set(select(model, item, kind="parameters", argname="targets")).intersection(pool)
            if not got and (isinstance(item, (str, type))):
                raise ValueError(f"targets: {_show(item)} selects no {_WHAT}")
            chosen |= got
    if exclude is not None:
        chosen -= set(select(model, exclude, kind="parameters", argname="exclude"))
    out = {n: p for n, p in pool.items() if n in chosen}
    if not out:
        raise ValueError(f"no parameter selected: targets={targets!r}, exclude={exclude!r} leave no {_WHAT}")
    return out


def check_model(model: nn.Module) -> dict[str, nn.Parameter]:
    """``dict(model.named_parameters())``, raising ``TypeError`` (naming ``model``) unless it is an ``nn.Module``."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    return dict(model.named_parameters())


def check_callable(fn, name: str) -> None:
    """Raise ``TypeError`` naming ``name`` unless ``fn`` is callable."""
    if not callable(fn):
        raise TypeError(f"{name} must be callable, got {type(fn).__name__}")


def _show(item) -> str:
    return item.__name__ if isinstance(item, type) else repr(item)


def resolve_overrides(overrides: Mapping | None, names, *, model: nn.Module | None = None) -> dict[str, float]:
    """``{parameter name: sparsity}`` for the ``names`` that a key of ``overrides={spec: sparsity}`` selects.

    With ``model`` the keys are any selection spec (a name, glob, module type, predicate, or a
    tuple of these), resolved by :func:`overparam.backend.select.matches`; without a model
    (score dicts) they are names or globs, matched as :func:`~overparam.backend.select.select`
    matches a string: the parameter itself or a module containing it (``"fc"`` selects
    ``"fc.weight"``). The first key that selects a name wins.

    Raises:
        ValueError: a key selects none of ``names`` (naming ``overrides`` and the key), or a
            sparsity outside [0, 1).

    Example:
        >>> resolve_overrides({"fc": 0.9}, ["fc.weight", "head.weight"])
        {'fc.weight': 0.9}
    """
    if overrides is None:
        return {}
    if not isinstance(overrides, Mapping):
        raise TypeError(f"overrides must be a dict {{spec: sparsity}}, got {type(overrides).__name__}")
    names = list(names)
    own: dict[str, float] = {}
    for key, val in overrides.items():
        sp = check_fraction(val, f"overrides[{key!r}]", high_open=True)  # a sparsity, in [0, 1)
        if model is not None:
            chosen = select(model, key, kind="parameters", argname="overrides")  # a bad or unmatched item raises
            hits = [n for n in names if n in chosen]
        elif isinstance(key, str) and key:
            hits = [n for n in names if any(name_matches(key, q) for q in _owners(n))]
        else:
            raise TypeError(f"overrides: key {key!r} must be a name or glob when there is no model "
                            "(module types and predicates need a model-level function such as magnitude)")
        if not hits:
            raise ValueError(f"overrides: {_show(key)} selects none of the pruned parameters {names}")
        for n in hits:
            own.setdefault(n, sp)
    return own


def _owners(name: str) -> list[str]:
    """``"a.b.c"`` → ``["a", "a.b", "a.b.c"]``: the name and the modules that contain it."""
    parts = name.split(".")
    return [".".join(parts[: i + 1]) for i in range(len(parts))]


def check_masks(masks: Mapping[str, Tensor], params: Mapping[str, Tensor], argname: str = "masks") -> None:
    """Raise ``ValueError`` / ``TypeError`` (naming ``argname``) unless ``masks`` is a non-empty
    dict whose every mask names a parameter, is bool and has its shape."""
    if not isinstance(masks, Mapping):
        raise TypeError(f"{argname} must be a dict name -> bool tensor, got {type(masks).__name__}")
    if not masks:
        raise ValueError(f"{argname} is empty: pass at least one name -> bool tensor")
    for k, m in masks.items():
        if k not in params:
            raise ValueError(f"{argname}[{k!r}] names no parameter of the model")
        if not isinstance(m, Tensor) or m.dtype != torch.bool:
            raise TypeError(f"{argname}[{k!r}] must be a bool tensor, got {getattr(m, 'dtype', type(m).__name__)}")
        if m.shape != params[k].shape:
            raise ValueError(f"{argname}[{k!r}] has shape {tuple(m.shape)} but the parameter has "
                             f"{tuple(params[k].shape)}")


def kept_fraction(masks: Mapping[str, Tensor]) -> float:
    """Fraction of kept entries over all masks (``1 − sparsity``).

    Example:
        >>> kept_fraction({"w": torch.tensor([True, False, False, True])})
        0.5
    """
    if not isinstance(masks, Mapping):
        raise TypeError(f"masks must be a dict name -> bool tensor, got {type(masks).__name__}")
    total = sum(m.numel() for m in masks.values())
    if total == 0:
        raise ValueError("masks is empty")
    return float(sum(int(m.sum()) for m in masks.values())) / total
