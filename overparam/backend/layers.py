"""The one registry of layer kinds: how each weight-bearing layer stores its weight.

Every package that looks inside layers (factor wrappers and adapters, prune's targets and N:M
masks, scaling's fans, the calibration block finder) asks this registry instead of testing
``isinstance(m, nn.Linear)``. A :class:`LayerKind` names module types and, for each of their
weight parameters, a :class:`Layout`: how the stored tensor maps to the matrix the layer
computes with, ``(out, in·∏kernel)``.

Built-in kinds (stored weight → the computation's matrix): ``linear`` ``(out, in)``, itself;
``conv`` (Conv1d/2d/3d) ``(out, in/groups, *k)`` → ``w.reshape(out, -1)``; ``conv_transpose``
``(in, out/groups, *k)``, fans only (neither wrapped nor pruned); ``embedding`` ``(num, dim)``, the
table itself, fans ``(num, dim)``; ``embedding_bag``, fans only; ``multihead_attention``
``in_proj_weight (3·E, E)`` (and ``q/k/v_proj_weight``), itself; ``hf_conv1d`` (transformers'
``Conv1D`` in GPT-2) ``(in, out)`` → ``w.T`` (a view), N:M groups along storage dim 0.

transformers' ``Conv1D`` is matched by its dotted name through ``sys.modules``: transformers is
never imported here (a model holding a Conv1D has imported it already). Other kinds are added
with :func:`register_layer`.

Example:
    >>> import torch
    >>> lin = torch.nn.Linear(3, 2)
    >>> kind_of(lin).name, layout_of(lin).in_dim, fans(lin)
    ('linear', 1, (3, 2))
    >>> kind_of(torch.nn.LayerNorm(3)) is None
    True
"""

from __future__ import annotations

import math
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from torch import Tensor, nn

from .layout import CONV, LINEAR, PACKED, TABLE, TRANSPOSED_LINEAR, Layout, _check_bools

__all__ = ["uncovered_layers", "check_covered", "Layout", "LayerKind", "LayerWeight", "LINEAR", "TRANSPOSED_LINEAR", "register_layer", "unregister_layer",
           "kinds", "kind_of", "layout_of", "layer_types", "fans", "weights_of", "unknown_weight_layers",
           "repeated_blocks"]

@dataclass(frozen=True, eq=False)
class LayerKind:
    """A kind of weight-bearing layer.

    Attributes:
        name: the kind's name (unique in the registry).
        types: module classes, or dotted names ``"package.module.Class"`` matched only once that
            module is in ``sys.modules`` (never imported here).
        weights: ``{parameter name: Layout}`` of the weights the kind holds.
        prune_default: its weights are pruned by ``targets=None`` (Linear, Conv, Conv1D, attention).
        prunable: its weights can be pruned when a ``targets`` spec names them (also embeddings).
        factor: the factor wrappers and adapters can wrap it (needs ``forward`` on ``"weight"``).

    Example:
        >>> class Scaled(nn.Linear): ...
        >>> kind = LayerKind("scaled", (Scaled,), {"weight": LINEAR}, factor=True)
        >>> kind.matches(Scaled(2, 2)), kind.matches(nn.Linear(2, 2))
        (True, False)
    """

    name: str
    types: tuple
    weights: Mapping[str, Layout]
    prune_default: bool = True
    prunable: bool = True
    factor: bool = False

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name:
            raise TypeError(f"name must be a non-empty str, got {self.name!r}")
        types = tuple(self.types) if isinstance(self.types, (list, tuple)) else (self.types,)
        for t in types:
            if isinstance(t, str) and "." in t:
                continue
            if not (isinstance(t, type) and issubclass(t, nn.Module)):
                raise TypeError(f"types: each entry must be an nn.Module class or a dotted name 'pkg.mod.Class', got {t!r}")
        object.__setattr__(self, "types", types)
        if not isinstance(self.weights, Mapping) or not self.weights:
            raise TypeError("weights must be a non-empty dict {parameter name: Layout}")
        for k, v in self.weights.items():
            if not isinstance(k, str) or not isinstance(v, Layout):
                raise TypeError(f"weights[{k!r}] must map a parameter name to a Layout, got {type(v).__name__}")
        object.__setattr__(self, "weights", MappingProxyType(dict(self.weights)))
        _check_bools(self, ("prune_default", "prunable", "factor"))
        if self.factor and ("weight" not in self.weights or self.weights["weight"].forward is None):
            raise ValueError("factor=True needs a 'weight' Layout with a forward")

    def resolved_types(self) -> tuple[type, ...]:
        """The classes of :attr:`types` available now (dotted names whose module is imported)."""
        out = []
        for t in self.types:
            if isinstance(t, str):
                mod, _, cls = t.rpartition(".")
                t = getattr(sys.modules.get(mod), cls, None)
                if not isinstance(t, type):
                    continue
            out.append(t)
        return tuple(out)

    def matches(self, module) -> bool:
        """Whether ``module`` is an instance of one of :attr:`types`."""
        return isinstance(module, self.resolved_types())


@dataclass(frozen=True)
class LayerWeight:
    """One registered weight of a model, as :func:`weights_of` reports it.

    Attributes:
        name: the parameter's name as ``model.named_parameters()`` lists it.
        module_name, module, param_name: its first registered owner and the name it has there.
        kind, layout: that owner's kind and the weight's layout.
        owners: ``(qualified module name, kind)`` of every registered layer holding the tensor
            (several for a tied weight: GPT-2's ``transformer.wte`` and ``lm_head``).
    """

    name: str
    module_name: str
    module: nn.Module
    param_name: str
    kind: LayerKind
    layout: Layout
    owners: tuple

def _check_model(model) -> None:
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")

_BUILTIN = (
    LayerKind("linear", (nn.Linear,), {"weight": LINEAR}, factor=True),
    LayerKind("conv", (nn.Conv1d, nn.Conv2d, nn.Conv3d), {"weight": CONV}, factor=True),
    LayerKind("conv_transpose", (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d),
              {"weight": Layout(transposed=True)}, prune_default=False, prunable=False),
    LayerKind("embedding", (nn.Embedding,), {"weight": TABLE},
              prune_default=False, factor=True),
    LayerKind("embedding_bag", (nn.EmbeddingBag,), {"weight": Layout(table=True)}, prune_default=False, prunable=False),
    LayerKind("multihead_attention", (nn.MultiheadAttention,),
              {n: PACKED for n in ("in_proj_weight", "q_proj_weight", "k_proj_weight", "v_proj_weight")}),
    LayerKind("hf_conv1d", ("transformers.pytorch_utils.Conv1D",), {"weight": TRANSPOSED_LINEAR}, factor=True),
)
_USER: list[LayerKind] = []                          # register_layer: checked before the built-ins


def register_layer(kind: LayerKind) -> LayerKind:
    """Add ``kind`` to the registry (checked before the built-in kinds, the latest first); a
    registered kind of the same name is replaced. Returns ``kind``.

    Raises:
        TypeError: ``kind`` is not a :class:`LayerKind`.
        ValueError: its name is a built-in kind's.

    Example:
        >>> class MyLinear(nn.Linear): ...
        >>> _ = register_layer(LayerKind("my_linear", (MyLinear,), {"weight": LINEAR}, factor=True))
        >>> kind_of(MyLinear(2, 2)).name
        'my_linear'
        >>> unregister_layer("my_linear")
    """
    if not isinstance(kind, LayerKind):
        raise TypeError(f"kind must be a LayerKind, got {type(kind).__name__}")
    if any(k.name == kind.name for k in _BUILTIN):
        raise ValueError(f"kind: {kind.name!r} is a built-in kind's name; choose another")
    _USER[:] = [kind] + [k for k in _USER if k.name != kind.name]
    return kind


def unregister_layer(name: str) -> None:
    """Remove the registered kind called ``name`` (one added by :func:`register_layer`).

    Raises:
        ValueError: no kind of that name was registered (built-in kinds cannot be removed).
    """
    if not isinstance(name, str):
        raise TypeError(f"name must be a str, got {type(name).__name__}")
    if not any(k.name == name for k in _USER):
        raise ValueError(f"name: no registered layer kind {name!r} (registered: {[k.name for k in _USER]})")
    _USER[:] = [k for k in _USER if k.name != name]


def kinds() -> tuple[LayerKind, ...]:
    """Every kind, in the order :func:`kind_of` tries them (registered ones, then the built-ins)."""
    return tuple(_USER) + _BUILTIN


def kind_of(module: nn.Module) -> LayerKind | None:
    """The kind of ``module`` (the first of :func:`kinds` it is an instance of), or ``None``."""
    if not isinstance(module, nn.Module):
        raise TypeError(f"module must be an nn.Module, got {type(module).__name__}")
    return next((k for k in kinds() if k.matches(module)), None)


def layout_of(module: nn.Module, name: str = "weight") -> Layout | None:
    """The layout of ``module``'s parameter ``name``, or ``None`` when the kind has no such weight."""
    if not isinstance(name, str):
        raise TypeError(f"name must be a str, got {type(name).__name__}")
    kind = kind_of(module)
    return None if kind is None else kind.weights.get(name)


def layer_types(which: str = "all") -> tuple[type, ...]:
    """The module classes (available now) of the kinds with flag ``which``: ``"all"``,
    ``"factor"``, ``"prunable"`` or ``"prune_default"`` (for ``select(types=...)``).

    Example:
        >>> nn.Linear in layer_types("factor"), nn.Embedding in layer_types("prune_default")
        (True, False)
    """
    flags = ("all", "factor", "prunable", "prune_default")
    if which not in flags:
        raise ValueError(f"which must be one of {flags}, got {which!r}")
    return tuple(t for k in kinds() if which == "all" or getattr(k, which) for t in k.resolved_types())


def fans(module: nn.Module | None, name: str = "weight", *, shape=None) -> tuple[int, int]:
    """``(fan_in, fan_out)`` of ``module``'s parameter ``name`` (of ``shape``, default its own).

    Counted on the computation: a Conv1D weight ``(in, out)`` has fan_in ``in``. A parameter that
    no kind describes (or ``module=None``): 0-D ``(1, 1)``, 1-D ``(1, n)``, else
    ``(shape[1]·∏shape[2:], shape[0]·∏shape[2:])``.

    Example:
        >>> fans(nn.Conv2d(3, 8, 3)), fans(nn.Embedding(10, 5)), fans(nn.Linear(3, 4), "bias")
        ((27, 72), (10, 5), (1, 4))
    """
    if module is not None and not isinstance(module, nn.Module):
        raise TypeError(f"module must be an nn.Module or None, got {type(module).__name__}")
    if not isinstance(name, str):
        raise TypeError(f"name must be a str, got {type(name).__name__}")
    if shape is None:
        p = None if module is None else getattr(module, name, None)
        if not isinstance(p, Tensor):
            raise ValueError(f"module ({type(module).__name__}) has no tensor named {name!r}; pass shape=")
        shape = p.shape
    shape = tuple(shape)
    if not all(isinstance(s, int) and s >= 0 for s in shape):
        raise ValueError(f"shape must be a tuple of non-negative ints, got {shape}")
    layout = None if module is None else layout_of(module, name)
    if len(shape) >= 2 and layout is not None:
        return layout.fans(shape)
    if len(shape) == 0:
        return 1, 1
    if len(shape) == 1:
        return 1, shape[0]
    rf = math.prod(shape[2:])
    return shape[1] * rf, shape[0] * rf


def weights_of(model: nn.Module) -> dict[str, LayerWeight]:
    """Every weight of ``model`` that a registered kind describes, keyed and ordered as
    ``model.named_parameters()`` (a tied tensor once, under its first name, with all its owners).

    Example:
        >>> net = nn.Sequential(nn.Embedding(5, 3), nn.Linear(3, 5))
        >>> net[1].weight = net[0].weight                      # a tied read-out
        >>> w = weights_of(net)
        >>> list(w), [(n, k.name) for n, k in w["0.weight"].owners]
        (['0.weight'], [('0', 'embedding'), ('1', 'linear')])
    """
    _check_model(model)
    found: dict[int, list] = {}
    for mname, mod in model.named_modules(remove_duplicate=False):
        kind = kind_of(mod)
        if kind is None:
            continue
        for pname, layout in kind.weights.items():
            p = mod._parameters.get(pname)
            if p is not None:
                found.setdefault(id(p), []).append((mname, mod, pname, kind, layout))
    out = {}
    for name, p in model.named_parameters():
        owners = found.get(id(p))
        if owners:
            mname, mod, pname, kind, layout = owners[0]
            every = tuple(dict.fromkeys((o[0], o[3]) for o in owners))
            out[name] = LayerWeight(name, mname, mod, pname, kind, layout, every)
    return out


def unknown_weight_layers(model: nn.Module) -> dict[str, type]:
    """``{module name: type}`` of the modules holding a parameter called ``weight`` with ≥ 2
    dimensions that no registered kind describes (a layer overparam would otherwise skip).

    Example:
        >>> class Mine(nn.Module):
        ...     def __init__(self):
        ...         super().__init__()
        ...         self.weight = nn.Parameter(Tensor(2, 2))
        >>> {n: t.__name__ for n, t in unknown_weight_layers(nn.Sequential(nn.Linear(2, 2), Mine())).items()}
        {'1': 'Mine'}
    """
    _check_model(model)
    out = {}
    for mname, mod in model.named_modules():
        p = mod._parameters.get("weight")
        if p is not None and p.ndim >= 2 and layout_of(mod, "weight") is None:
            out[mname] = type(mod)
    return out


def uncovered_layers(model: nn.Module, which: str = "prunable") -> dict[str, type]:
    """``{module name: type}`` of the weight-bearing modules a ``targets=None`` default of kind flag
    ``which`` would skip: :func:`unknown_weight_layers`, and for ``which="factor"`` also the modules of
    registered kinds without factor support (``nn.MultiheadAttention``'s packed projections,
    transposed convolutions, ``EmbeddingBag``) that hold a parameter with ≥ 2 dimensions.

    Example:
        >>> mha = nn.Sequential(nn.Linear(4, 4), nn.MultiheadAttention(4, 2))
        >>> list(uncovered_layers(mha)), list(uncovered_layers(mha, "factor"))
        ([], ['1'])
    """
    if which not in ("prunable", "factor"):
        raise ValueError(f"which must be 'prunable' or 'factor', got {which!r}")
    out = dict(unknown_weight_layers(model))
    if which == "factor":
        for mname, mod in model.named_modules():
            k = kind_of(mod)
            if k is not None and not k.factor and any(
                    p is not None and p.ndim >= 2 for p in mod._parameters.values()):
                out[mname] = type(mod)
    return out


def check_covered(model: nn.Module, exclude=None, *, which: str = "prunable") -> None:
    """Raise ``ValueError`` when ``targets=None`` would skip a layer of :func:`uncovered_layers` that
    ``exclude`` (a selection spec) does not remove: a default never skips a weight silently.

    Example:
        >>> check_covered(nn.Sequential(nn.Linear(2, 2)), which="factor")
    """
    from .select import select

    bad = uncovered_layers(model, which)
    gone = set(select(model, exclude, kind="parameters", argname="exclude")) if exclude is not None else set()
    if bad and gone:
        mods = dict(model.named_modules())

        def covered(n: str) -> bool:
            names = [pn for pn, p in mods[n]._parameters.items() if p is not None and p.ndim >= 2]
            return all((f"{n}.{pn}" if n else pn) in gone for pn in names)

        bad = {n: t for n, t in bad.items() if not covered(n)}
    if not bad:
        return
    unknown = unknown_weight_layers(model)
    listed = ", ".join(f"{n or '<root>'} ({t.__module__}.{t.__qualname__}"
                       f"{'' if n in unknown else ': no ' + which + ' support'})" for n, t in bad.items())
    raise ValueError(f"targets=None would skip these weight-bearing layers: {listed}; name the targets explicitly, "
                     "exclude= them, or describe an unknown kind with "
                     "overparam.backend.layers.register_layer(LayerKind(...))")


def repeated_blocks(model: nn.Module) -> tuple[str, nn.Module]:
    """``(name, container)`` of the model's repeated blocks: the longest ``nn.ModuleList`` /
    ``nn.Sequential`` whose children share one class and each contain a registered layer (GPT-2
    ``transformer.h``, LLaMA ``model.layers``, BERT ``bert.encoder.layer``); the first in
    ``named_modules`` order among equally long ones.

    Raises:
        ValueError: no such container (pass the blocks explicitly to the caller).

    Example:
        >>> block = lambda: nn.Sequential(nn.Linear(2, 2), nn.ReLU())
        >>> net = nn.Sequential(nn.Linear(2, 2), nn.ModuleList([block(), block(), block()]))
        >>> repeated_blocks(net)[0]
        '1'
    """
    _check_model(model)
    best: tuple[str, nn.Module] | None = None
    for name, mod in model.named_modules():
        if not isinstance(mod, (nn.ModuleList, nn.Sequential)) or len(mod) == 0:
            continue
        children = list(mod.children())
        if len({type(c) for c in children}) != 1 or len(children) != len(mod):
            continue
        if all(any(kind_of(s) is not None for s in list(c.modules())[1:]) for c in children):
            if best is None or len(mod) > len(best[1]):
                best = (name, mod)
    if best is None:
        raise ValueError(f"model: {type(model).__name__} has no ModuleList/Sequential of same-class blocks holding "
                         "registered layers; pass the blocks explicitly")
    return best
