"""The one selection language: which modules or parameters of a model a *spec* names.

Every overparam function that chooses parts of a model (factor ``targets``, prune ``targets`` /
``overrides``, hessian ``params``, scaling ``roles`` / ``branches``, ``coord_check`` ``modules``)
takes a spec with these rules, plus ``exclude=`` with the same grammar. A spec is

* a **string**: without glob characters (``*?[``) it names a module or parameter by its
  qualified name, exactly or as a dotted suffix (``"fc"`` matches ``"fc"`` and
  ``"block.0.fc"``; ``"weight"`` matches every ``*.weight``) — except a name that begins with
  an index (``"0"``, ``"2.weight"``: an ``nn.Sequential`` / ``ModuleList`` position), which is
  always the full path from the model's root (``"0"`` never matches ``"2.0"``); with glob characters it is a
  shell-style pattern (``fnmatch``, case-sensitive) over the whole qualified name, where ``*``
  also crosses dots (``"blocks.*.attn"``, ``"*.bias"``);
* a **module type** (``nn.Linear``): every module that is an instance of it;
* a **predicate** ``fn(name, obj) -> bool``, called with each candidate's qualified name and the
  module (``kind="modules"``) or parameter (``kind="parameters"``);
* a **list or tuple** of these: their union;
* ``None``: everything (the package's default then applies, e.g. prune's Linear/Conv weights).

A shared module or tied parameter is matched by any of its names (``"head.weight"`` tied to
``"emb.weight"``) and reported under its first name, as ``named_parameters()`` lists it.

A string or type selects the modules it names **and everything inside them**: ``"blocks.0"``
selects block 0 and its submodules; for ``kind="parameters"`` it selects every parameter under
them (``"fc"`` gives ``fc.weight`` and ``fc.bias``; ``"fc.weight"`` only that one). A predicate
selects exactly what it accepts. ``exclude`` removes what it selects, by the same rules.

Every string and type in ``spec`` and ``exclude`` must select something (after the ``types``
filter of the caller, for ``spec``), else a ``ValueError`` names the keyword and the item: a typo
never silently selects nothing. Predicates are the user's code and are not checked this way.
The result is ordered as ``model.named_modules()`` / ``model.named_parameters()``.

Example:
    >>> import torch
    >>> net = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))
    >>> list(select(net, torch.nn.Linear))
    ['0', '2']
    >>> list(select(net, "0", kind="parameters"))
    ['0.weight', '0.bias']
    >>> list(select(net, "*.weight", kind="parameters", exclude="2"))
    ['0.weight']
    >>> select(net, "fc")
    Traceback (most recent call last):
    ...
    ValueError: spec: 'fc' matches no module of the model
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Sequence
from typing import Union

from torch import nn

__all__ = ["Spec", "select", "matches", "name_matches"]

Spec = Union[None, str, type, Callable[[str, object], bool], Sequence["Spec"]]
"""A selection spec: a name or glob, a module type, a predicate ``fn(name, obj)``, a list of these, or ``None``."""

_GLOB = frozenset("*?[")
_KINDS = ("modules", "parameters")


def name_matches(pattern: str, name: str) -> bool:
    """Whether the string spec ``pattern`` names the qualified name ``name`` itself (not what is inside).

    Example:
        >>> name_matches("fc", "block.0.fc"), name_matches("fc", "block.0.fc2"), name_matches("*.fc", "a.fc")
        (True, False, True)
        >>> name_matches("0", "0"), name_matches("0", "2.0"), name_matches("layers.0", "model.layers.0")
        (True, False, True)
    """
    if _GLOB.intersection(pattern):
        return fnmatch.fnmatchcase(name, pattern)
    if pattern.split(".", 1)[0].isdigit():        # an index path is rooted
        return name == pattern
    return name == pattern or name.endswith("." + pattern)


def _prefixes(name: str) -> list[str]:
    """``"a.b.c"`` → ``["a", "a.b", "a.b.c"]``: the name and the names of what contains it."""
    parts = name.split(".") if name else []
    return [".".join(parts[: i + 1]) for i in range(len(parts))]


def _items(spec: Spec, argname: str) -> list:
    if spec is None:
        return []
    items = list(spec) if isinstance(spec, (list, tuple)) else [spec]
    flat: list = []
    for it in items:
        if isinstance(it, (list, tuple)):
            flat.extend(_items(it, argname))
        elif isinstance(it, str):
            if not it:
                raise ValueError(f"{argname}: an empty string names nothing")
            flat.append(it)
        elif isinstance(it, type):
            if not issubclass(it, nn.Module):
                raise TypeError(f"{argname}: a type in a spec must be an nn.Module subclass, got {it.__name__}")
            flat.append(it)
        elif callable(it):
            flat.append(it)
        else:
            raise TypeError(f"{argname}: a spec item must be a name or glob (str), an nn.Module type, a predicate "
                            f"fn(name, obj) or a list of these, got {type(it).__name__}")
    return flat


def _hits(model: nn.Module, item, kind: str) -> list[str]:
    """The names (of ``kind``) that one spec item selects. A shared module or tied parameter is
    matched by any of its names and reported under its first one (as ``named_modules()`` /
    ``named_parameters()`` list it)."""
    every = list(model.named_modules(remove_duplicate=False))
    first: dict[int, str] = {}
    for n, m in every:
        first.setdefault(id(m), n)
    if kind == "parameters":
        every = list(model.named_parameters(remove_duplicate=False))
        for n, p in every:
            first.setdefault(id(p), n)
    if callable(item) and not isinstance(item, (str, type)):
        return list(dict.fromkeys(first[id(obj)] for n, obj in every if item(n, obj)))
    mods = model.named_modules(remove_duplicate=False)
    if isinstance(item, type):
        roots = {n for n, m in mods if isinstance(m, item)}
    else:
        roots = {n for n, _ in mods if n and name_matches(item, n)}
    whole = "" in roots
    out = [first[id(obj)] for n, obj in every
           if whole or any(q in roots for q in _prefixes(n)) or (isinstance(item, str) and name_matches(item, n))]
    return list(dict.fromkeys(out))


def select(model: nn.Module, spec: Spec = None, *, exclude: Spec = None, kind: str = "modules",
           types: type | tuple[type, ...] | None = None, argname: str = "spec",
           what: str | None = None) -> dict[str, object]:
    """The parts of ``model`` that ``spec`` selects, minus those ``exclude`` selects.

    Args:
        model: any module.
        spec: see the module docstring; ``None`` selects everything.
        exclude: same grammar; removed from the selection.
        kind: ``"modules"`` (``named_modules``; the root ``""`` is selected by ``None``, by its
            type or by a predicate, never by a string) or ``"parameters"`` (``named_parameters``).
        types: keep only modules that are instances of these (``kind="modules"``) or parameters
            whose owning module is (``kind="parameters"``); the calling package's default kinds.
        argname: the caller's keyword, used in error messages (``"targets"``, ``"params"``).
        what: how errors name the candidates (default ``"module"`` / ``"parameter"``, or e.g.
            ``"Linear or Conv layer"``).

    Returns:
        ``{qualified name: module or parameter}`` in model order.

    Raises:
        ValueError: a string or type in ``spec`` (after the ``types`` filter) or in ``exclude``
            selects nothing; the message names ``argname`` (or ``exclude``) and the item.
        TypeError: a spec item of another type.

    Example:
        >>> import torch
        >>> net = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.LayerNorm(2))
        >>> list(select(net, None, kind="parameters", types=torch.nn.Linear))
        ['0.weight', '0.bias']
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    if kind not in _KINDS:
        raise ValueError(f"kind must be one of {_KINDS}, got {kind!r}")
    if types is not None:
        types = types if isinstance(types, tuple) else (types,)
    what = what or kind[:-1]
    pool = dict(model.named_modules()) if kind == "modules" else dict(model.named_parameters())
    owner_of = {}
    if kind == "parameters" and types is not None:
        for mname, m in model.named_modules():
            for pname, _ in m.named_parameters(recurse=False, prefix=mname):
                owner_of.setdefault(pname, m)

    def allowed(name: str) -> bool:
        if types is None:
            return True
        obj = pool[name] if kind == "modules" else owner_of.get(name)
        return isinstance(obj, types)

    items = _items(spec, argname)
    if spec is None:
        chosen = {n for n in pool if allowed(n)}
    else:
        chosen = set()
        for it in items:
            got = [n for n in _hits(model, it, kind) if allowed(n)]
            if not got and isinstance(it, (str, type)):
                raise ValueError(f"{argname}: {_show(it)} matches no {what} of the model")
            chosen.update(got)
    for it in _items(exclude, "exclude"):
        got = _hits(model, it, kind)
        if not got and isinstance(it, (str, type)):
            raise ValueError(f"exclude: {_show(it)} matches no {kind[:-1]} of the model")
        chosen.difference_update(got)
    return {n: obj for n, obj in pool.items() if n in chosen}


def matches(model: nn.Module, spec: Spec, name: str, *, kind: str = "parameters") -> bool:
    """Whether ``spec`` selects the module or parameter called ``name`` (no unmatched-item check):
    for keyed options such as prune's ``overrides={spec: sparsity}`` or scaling's ``roles=``.

    Example:
        >>> import torch
        >>> net = torch.nn.Sequential(torch.nn.Linear(2, 2))
        >>> matches(net, "0", "0.bias"), matches(net, torch.nn.Linear, "0.weight"), matches(net, "1", "0.weight")
        (True, True, False)
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    if kind not in _KINDS:
        raise ValueError(f"kind must be one of {_KINDS}, got {kind!r}")
    return any(name in _hits(model, it, kind) for it in _items(spec, "spec"))


def _show(item) -> str:
    return item.__name__ if isinstance(item, type) else repr(item)
