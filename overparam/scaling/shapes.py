"""Which dimensions of each parameter grow with width: fans, roles and width multipliers.

A parameterization (SP, μP, depth-μP) only needs to know, for every tensor, whether its fan-in
and fan-out grow with width, and by how much relative to a *base* model (the model whose
hyperparameters were tuned). As in μTransfer, the growing dimensions are found by comparing
the shapes of the target model with those of a base model of another width (with a third
``delta`` model when a dimension happens to agree between the two).

Roles (Yang & Hu, Tensor Programs IV/V):

* ``"hidden"``: fan-in and fan-out both grow (matrix-like), e.g. a hidden ``Linear`` weight;
* ``"output"``: only the fan-in grows, e.g. the read-out layer ``Linear(width, classes)``;
* ``"input"``: only the fan-out grows (vector-like), e.g. the first layer, biases and
  norm gains of hidden units, embedding tables;
* ``"fixed"``: nothing grows (e.g. the read-out bias).

Fans follow the module that owns the tensor, counted on the computation through the layer-kind
registry :mod:`overparam.backend.layers`: ``Linear``/``Bilinear``-style ``(out, in)`` weights,
transformers' ``Conv1D`` ``(in, out)``, convolutions ``(out, in/groups, *kernel)`` (receptive
field counted in both fans), ``Embedding`` ``(num, dim)`` (a one-hot input: fan-in = num, fan-out
= dim), 1-D tensors (biases, norm gains: fan-out = the length, fan-in 1).

Example:
    >>> import torch
    >>> mlp = lambda w: torch.nn.Sequential(torch.nn.Linear(4, w), torch.nn.ReLU(), torch.nn.Linear(w, w),
    ...                                     torch.nn.ReLU(), torch.nn.Linear(w, 3))
    >>> s = infer_shapes(mlp(256), base=mlp(64))
    >>> [(k, v.role, v.m_in, v.m_out) for k, v in s.items()][:3]
    [('0.weight', 'input', 1.0, 4.0), ('0.bias', 'input', 1.0, 4.0), ('2.weight', 'hidden', 4.0, 4.0)]
    >>> s["4.weight"].role, s["4.bias"].role
    ('output', 'fixed')
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from ..backend import layers
from ..backend.select import Spec, select

__all__ = ["ROLES", "TensorShape", "fans", "infer_shapes"]

ROLES = ("input", "hidden", "output", "fixed")

_ROLE = {(True, True): "hidden", (True, False): "output", (False, True): "input", (False, False): "fixed"}


@dataclass(frozen=True)
class TensorShape:
    """Width information of one parameter.

    Attributes:
        role: one of :data:`ROLES`.
        fan_in, fan_out: the fans of this tensor in the target model.
        m_in, m_out: width multipliers ``fan / base fan`` (1.0 for a dimension that does not grow).

    Reference: G. Yang & E. J. Hu, "Tensor Programs IV: Feature Learning in Infinite-Width Neural
    Networks" (2021); Tensor Programs V (2022).

    Example:
        >>> s = infer_shapes(nn.Linear(32, 3), base=nn.Linear(8, 3))["weight"]
        >>> s
        TensorShape(role='output', fan_in=32, fan_out=3, m_in=4.0, m_out=1.0)
    """

    role: str
    fan_in: int
    fan_out: int
    m_in: float
    m_out: float


def _owners(model: nn.Module) -> tuple[dict[str, tuple[nn.Module, str]], dict[int, list[str]]]:
    """``({name: (owning module, local name)}, {id(parameter): every name it has})``, under every
    name of a tied tensor (one per owning module)."""
    owners: dict[str, tuple[nn.Module, str]] = {}
    aliases: dict[int, list[str]] = {}
    for mod_name, mod in model.named_modules(remove_duplicate=False):
        for p_name, p in mod._parameters.items():
            if p is None:
                continue
            name = f"{mod_name}.{p_name}" if mod_name else p_name
            if name not in owners:
                owners[name] = (mod, p_name)
                aliases.setdefault(id(p), []).append(name)
    return owners, aliases


def fans(shape: tuple[int, ...], owner: nn.Module | None = None, name: str = "weight") -> tuple[int, int]:
    """``(fan_in, fan_out)`` of a parameter ``name`` of ``shape`` owned by ``owner``, counted on the
    computation (:func:`overparam.backend.layers.fans`: a transformers ``Conv1D`` weight ``(in, out)``
    has fan-in ``in``).

    Example:
        >>> fans((8, 3, 3, 3), nn.Conv2d(3, 8, 3))
        (27, 72)
        >>> fans((10, 5), nn.Embedding(10, 5))
        (10, 5)
    """
    return layers.fans(owner, name, shape=tuple(shape))


def _fans_of(owners: dict, name: str, shape: tuple[int, ...], fallback: str | None = None) -> tuple[int, int]:
    mod, local = owners.get(name, owners.get(fallback, (None, "weight")))
    return fans(shape, mod, local)


def _differs(a: int, b: int, c: int | None) -> bool:
    return a != b or (c is not None and b != c)


def _select_trainable(model: nn.Module, spec: Spec, *, argname: str) -> set[str]:
    """Names (as in ``named_parameters``) of the trainable tensors that ``spec`` selects (a tied
    tensor by any of its names, see :mod:`overparam.backend.select`); every item of ``spec``,
    predicates included, must select a trainable tensor, else a ValueError names ``argname``."""
    trainable = {k for k, p in model.named_parameters() if p.requires_grad}
    items = list(spec) if isinstance(spec, (list, tuple)) else [spec]
    if not items or spec is None:
        raise ValueError(f"{argname}: an empty spec selects nothing")
    out: set[str] = set()
    for item in items:
        got = set(select(model, item, kind="parameters", argname=argname)) & trainable
        if not got:
            raise ValueError(f"{argname}: {item!r} matches no trainable parameter of the model")
        out |= got
    return out


def infer_shapes(model: nn.Module, *, base: nn.Module, delta: nn.Module | None = None,
                 roles: dict[Spec, str] | None = None) -> dict[str, TensorShape]:
    """Width information for every trainable parameter of ``model``.

    Args:
        model: the target model.
        base: the same architecture at the base width (its parameters must have the same names
            and numbers of dimensions); a dimension is "growing" when it differs from ``base``.
        delta: optional third width; a dimension also counts as growing when ``base`` and
            ``delta`` differ there (for a target that equals the base in some dimension, e.g.
            ``model`` is the base itself: then every multiplier is 1 but the roles are right).
        roles: role overrides ``{spec: role}`` (any of :data:`ROLES`), each key a selection spec
            of :mod:`overparam.backend.select` (a name or dotted suffix, a glob, a module type, a
            predicate or a tuple of these), e.g. ``{"head.weight": "output"}``,
            ``{"blocks.*.ln.*": "input"}``, ``{nn.LayerNorm: "input"}``; a key may name any of a
            tied parameter's names; where keys overlap the last one wins.

    Returns:
        ``{name: TensorShape}`` in ``named_parameters`` order.

    Tied parameters (one tensor owned by several modules) appear once, under their first name
    in ``named_parameters``; if their owners imply different roles (an embedding tied to a
    read-out) a ``roles`` override naming the tensor is required.

    Raises:
        ValueError: names or numbers of dimensions that differ from ``base``/``delta``, an
            unknown role, a ``roles`` key that selects no trainable parameter, a tied parameter
            whose owners disagree on its role without an override, a model without trainable
            parameters, or a ``base`` of the model's own shapes without ``delta`` (then no
            dimension is seen to grow and every tensor would be ``"fixed"``).
        TypeError: ``model``/``base``/``delta`` not modules, ``roles`` not a dict.

    Reference: G. Yang, E. J. Hu et al., "Tensor Programs V: Tuning Large Neural Networks via Zero-Shot
        Hyperparameter Transfer" (2022) (the base/delta shapes of μTransfer).

    Example:
        >>> mlp = lambda w: nn.Sequential(nn.Linear(4, w), nn.ReLU(), nn.Linear(w, 3))
        >>> {k: (v.role, v.m_in, v.m_out) for k, v in infer_shapes(mlp(16), base=mlp(8)).items()}
        {'0.weight': ('input', 1.0, 2.0), '0.bias': ('input', 1.0, 2.0), '2.weight': ('output', 2.0, 1.0), '2.bias': ('fixed', 1.0, 1.0)}
        >>> s = infer_shapes(mlp(8), base=mlp(8), delta=mlp(16), roles={"2.bias": "output"})  # the base itself
        >>> s["0.weight"].m_out, s["2.bias"].role
        (1.0, 'output')
    """
    for arg, m in (("model", model), ("base", base), ("delta", delta)):
        if m is not None and not isinstance(m, nn.Module):
            raise TypeError(f"{arg} must be an nn.Module, got {type(m).__name__}")
    if roles is not None and not isinstance(roles, dict):
        raise TypeError(f"roles must be a dict {{spec: role}}, got {type(roles).__name__}")
    roles = dict(roles or {})
    bad = {k: v for k, v in roles.items() if v not in ROLES}
    if bad:
        raise ValueError(f"roles must map selection specs to one of {ROLES}, got {bad}")
    params = [(k, p) for k, p in model.named_parameters() if p.requires_grad]
    if not params:
        raise ValueError("model has no trainable parameters: there is nothing to plan")
    bshapes = {k: tuple(p.shape) for k, p in base.named_parameters()}
    dshapes = {k: tuple(p.shape) for k, p in delta.named_parameters()} if delta is not None else None
    (owners, aliases), (bowners, _) = _owners(model), _owners(base)
    downers = _owners(delta)[0] if delta is not None else {}
    role_hits = [(_select_trainable(model, key, argname="roles"), r) for key, r in roles.items()]
    if delta is None and all(tuple(p.shape) == bshapes.get(k) for k, p in params):
        raise ValueError("base has the same shape as model in every parameter, so no dimension is seen to grow "
                         "and every tensor would get the role 'fixed': pass delta= (the architecture at a third "
                         "width) to tell which dimensions grow, or a base of another width")
    out: dict[str, TensorShape] = {}
    for name, p in params:
        if name not in bshapes or (dshapes is not None and name not in dshapes):
            raise ValueError(f"parameter {name!r} of model has no counterpart in base/delta: the architectures differ")
        shape, bshape = tuple(p.shape), bshapes[name]
        if len(shape) != len(bshape) or (dshapes is not None and len(dshapes[name]) != len(shape)):
            raise ValueError(f"parameter {name!r} has shape {shape} but {bshape} in base: the number of dimensions differs")
        names = [name] + [a for a in aliases.get(id(p), []) if a != name]
        by_owner, fans_of = {}, {}
        for a in names:  # a tied parameter: the role implied by each owning module
            fi, fo = _fans_of(owners, a, shape)
            bfi, bfo = _fans_of(bowners, a, bshape, name)
            dfi, dfo = _fans_of(downers, a, dshapes[name], name) if dshapes is not None else (None, None)
            by_owner[a] = _ROLE[(_differs(fi, bfi, dfi), _differs(fo, bfo, dfo))]
            fans_of[a] = (fi, fo, bfi, bfo)
        fi, fo, bfi, bfo = fans_of[name]
        role = by_owner[name]
        overridden = False
        for hit, r in role_hits:
            if name in hit:
                role, overridden = r, True
        if len(set(by_owner.values())) > 1 and not overridden:
            raise ValueError(
                f"parameter {name!r} is shared by modules that give it different roles {by_owner}: "
                "μP for a tied embedding/read-out needs the read-out multiplier 1/m_in in your forward "
                f"(mup's MuSharedReadout); keep the tensor's role with roles={{{name!r}: 'input'}} and "
                "add the multiplier with op.scaling.shared_readout(model, plan, <read-out module>) (or write "
                "logits = h @ E.T / m_in), or untie the weights")
        out[name] = TensorShape(role, fi, fo, fi / bfi, fo / bfo)
    return out
