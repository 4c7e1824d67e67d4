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

Fans follow the module that owns the tensor: ``Linear``/``Bilinear``-style ``(out, in)``
weights, convolutions ``(out, in/groups, *kernel)`` (receptive field counted in both fans),
``Embedding`` ``(num, dim)`` (a one-hot input: fan-in = num, fan-out = dim), 1-D tensors
(biases, norm gains: fan-out = the length, fan-in 1).

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

import fnmatch
import math
from dataclasses import dataclass

from torch import nn

__all__ = ["ROLES", "TensorShape", "fans", "infer_shapes"]

ROLES = ("input", "hidden", "output", "fixed")

_CONV = (nn.modules.conv._ConvNd,)


@dataclass(frozen=True)
class TensorShape:
    """Width information of one parameter.

    Attributes:
        role: one of :data:`ROLES`.
        fan_in, fan_out: the fans of this tensor in the target model.
        m_in, m_out: width multipliers ``fan / base fan`` (1.0 for a dimension that does not grow).
    """

    role: str
    fan_in: int
    fan_out: int
    m_in: float
    m_out: float


def _owners(model: nn.Module) -> dict[str, nn.Module]:
    return {f"{mod_name}.{p_name}" if mod_name else p_name: mod
            for mod_name, mod in model.named_modules() for p_name, _ in mod.named_parameters(recurse=False)}


def fans(shape: tuple[int, ...], owner: nn.Module | None = None) -> tuple[int, int]:
    """``(fan_in, fan_out)`` of a parameter of ``shape`` owned by ``owner``.

    Example:
        >>> fans((8, 3, 3, 3), nn.Conv2d(3, 8, 3))
        (27, 72)
        >>> fans((10, 5), nn.Embedding(10, 5))
        (10, 5)
    """
    if len(shape) == 0:
        return 1, 1
    if len(shape) == 1:
        return 1, shape[0]
    if isinstance(owner, (nn.Embedding, nn.EmbeddingBag)):
        return shape[0], shape[1]
    rf = math.prod(shape[2:]) if len(shape) > 2 else 1
    if isinstance(owner, _CONV) and getattr(owner, "transposed", False):  # (in, out/groups, *k)
        return shape[0] * rf, shape[1] * rf
    return shape[1] * rf, shape[0] * rf


def _differs(a: int, b: int, c: int | None) -> bool:
    return a != b or (c is not None and b != c)


def infer_shapes(model: nn.Module, *, base: nn.Module, delta: nn.Module | None = None,
                 roles: dict[str, str] | None = None) -> dict[str, TensorShape]:
    """Width information for every trainable parameter of ``model``.

    Args:
        model: the target model.
        base: the same architecture at the base width (its parameters must have the same names
            and numbers of dimensions); a dimension is "growing" when it differs from ``base``.
        delta: optional third width; a dimension also counts as growing when ``base`` and
            ``delta`` differ there (for a target that equals the base in some dimension, e.g.
            ``model`` is the base itself: then every multiplier is 1 but the roles are right).
        roles: overrides by name pattern, e.g. ``{"head.weight": "output"}`` (any of :data:`ROLES`).

    Returns:
        ``{name: TensorShape}`` in ``named_parameters`` order.

    Raises:
        ValueError: names or numbers of dimensions that differ from ``base``/``delta``, or an
            unknown role.
    """
    for arg, m in (("model", model), ("base", base), ("delta", delta)):
        if m is not None and not isinstance(m, nn.Module):
            raise TypeError(f"{arg} must be an nn.Module, got {type(m).__name__}")
    roles = dict(roles or {})
    bad = {k: v for k, v in roles.items() if v not in ROLES}
    if bad:
        raise ValueError(f"roles must map name patterns to one of {ROLES}, got {bad}")
    params = [(k, p) for k, p in model.named_parameters() if p.requires_grad]
    bshapes = {k: tuple(p.shape) for k, p in base.named_parameters()}
    dshapes = {k: tuple(p.shape) for k, p in delta.named_parameters()} if delta is not None else None
    owners, bowners = _owners(model), _owners(base)
    downers = _owners(delta) if delta is not None else {}
    out: dict[str, TensorShape] = {}
    for name, p in params:
        if name not in bshapes or (dshapes is not None and name not in dshapes):
            raise ValueError(f"parameter {name!r} of model has no counterpart in base/delta: the architectures differ")
        shape, bshape = tuple(p.shape), bshapes[name]
        if len(shape) != len(bshape) or (dshapes is not None and len(dshapes[name]) != len(shape)):
            raise ValueError(f"parameter {name!r} has shape {shape} but {bshape} in base: the number of dimensions differs")
        fi, fo = fans(shape, owners.get(name))
        bfi, bfo = fans(bshape, bowners.get(name))
        dfi, dfo = fans(dshapes[name], downers.get(name)) if dshapes is not None else (None, None)
        grow_in, grow_out = _differs(fi, bfi, dfi), _differs(fo, bfo, dfo)
        role = {(True, True): "hidden", (True, False): "output", (False, True): "input", (False, False): "fixed"}[
            (grow_in, grow_out)]
        for pat, r in roles.items():
            if fnmatch.fnmatchcase(name, pat):
                role = r
        out[name] = TensorShape(role, fi, fo, fi / bfi, fo / bfo)
    unmatched = [pat for pat in roles if not any(fnmatch.fnmatchcase(k, pat) for k in out)]
    if unmatched:
        raise ValueError(f"roles patterns {unmatched} match no trainable parameter of model")
    return out
