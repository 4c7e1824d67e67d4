"""Parameter-shaped vectors: tuples of tensors that mirror a model's parameters.

A *vector* here is a ``tuple[Tensor, ...]`` whose entries have the shapes of a list of
parameters, e.g. ``tuple(p for p in model.parameters())`` or the gradients that
``torch.autograd.grad`` returns. A *batch of vectors* is a tuple whose entries carry one
extra leading dimension ``B``: entry ``i`` has shape ``(B, *shape_i)``.

Everything here is a pure function (the trailing-underscore ones mutate their first
argument, as in torch). Elementwise work goes through ``torch._foreach_*`` so that a
model with hundreds of small parameters costs a handful of kernel launches, not hundreds.
Reductions (``dot``, ``norm``) accumulate in the promoted dtype of their inputs and
return 0-dim tensors on the vectors' device: nothing calls ``.item()``, so nothing syncs.

Example:
    >>> import torch
    >>> from overparam.backend import vec
    >>> x = (torch.ones(2, 3), torch.ones(4))
    >>> float(vec.dot(x, x)), float(vec.norm(x)) ** 2
    (10.0, 10.0...)
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from torch import Tensor

__all__ = [
    "Vec",
    "as_vec",
    "shapes",
    "numel",
    "dot",
    "norm",
    "axpy",
    "axpy_",
    "scale",
    "add",
    "sub",
    "copy_",
    "zeros_like",
    "flatten",
    "unflatten",
    "stack",
    "unstack",
]

Vec = tuple[Tensor, ...]
"""A parameter-shaped vector: one tensor per parameter."""


def as_vec(x: Iterable[Tensor] | Tensor, *, name: str = "x") -> Vec:
    """Return ``x`` as a tuple of tensors, checking every entry is a tensor.

    A single tensor becomes a one-entry vector. ``name`` is used in error messages.
    """
    if isinstance(x, Tensor):
        return (x,)
    try:
        out = tuple(x)
    except TypeError:
        raise TypeError(f"{name} must be a tensor or an iterable of tensors, got {type(x).__name__}") from None
    for i, t in enumerate(out):
        if not isinstance(t, Tensor):
            raise TypeError(f"{name}[{i}] must be a torch.Tensor, got {type(t).__name__}")
    return out


def _pair(x: Iterable[Tensor], y: Iterable[Tensor]) -> tuple[Vec, Vec]:
    xs, ys = as_vec(x, name="x"), as_vec(y, name="y")
    if len(xs) != len(ys):
        raise ValueError(f"x and y have different numbers of tensors: {len(xs)} != {len(ys)}")
    for i, (a, b) in enumerate(zip(xs, ys)):
        if a.shape != b.shape:
            raise ValueError(f"x[{i}] has shape {tuple(a.shape)} but y[{i}] has shape {tuple(b.shape)}")
    return xs, ys


def _nonempty(x: Vec, name: str) -> None:
    if len(x) == 0:
        raise ValueError(f"{name} is an empty vector (no tensors); its dtype and device are undefined")


def shapes(x: Iterable[Tensor]) -> tuple[torch.Size, ...]:
    """Shapes of the entries of ``x``."""
    return tuple(t.shape for t in as_vec(x))


def numel(x: Iterable[Tensor]) -> int:
    """Total number of scalars in ``x``."""
    return sum(t.numel() for t in as_vec(x))


def dot(x: Iterable[Tensor], y: Iterable[Tensor]) -> Tensor:
    """Inner product ``<x, y>`` of two vectors of equal shapes; a 0-dim tensor.

    Example:
        >>> dot((torch.tensor([1., 2.]),), (torch.tensor([3., 4.]),))
        tensor(11.)
    """
    xs, ys = _pair(x, y)
    _nonempty(xs, "x")
    parts = [torch.dot(a.reshape(-1), b.reshape(-1)) if a.dtype == b.dtype else (a * b).sum() for a, b in zip(xs, ys)]
    return torch.stack(parts).sum() if len(parts) > 1 else parts[0]


def norm(x: Iterable[Tensor]) -> Tensor:
    """Euclidean norm of ``x`` over all its entries; a 0-dim tensor.

    Uses ``torch._foreach_norm`` (one launch for all entries), as ``clip_grad_norm_`` does.
    """
    xs = as_vec(x)
    _nonempty(xs, "x")
    norms = torch._foreach_norm(xs)
    return torch.linalg.vector_norm(torch.stack(norms)) if len(norms) > 1 else norms[0]


def axpy_(a: float | Tensor, x: Iterable[Tensor], y: Iterable[Tensor]) -> Vec:
    """In place ``y += a * x``; returns ``y``. ``a`` is a Python number or a 0-dim tensor."""
    xs, ys = _pair(x, y)
    if isinstance(a, Tensor):
        if a.ndim != 0:
            raise ValueError(f"a must be a number or a 0-dim tensor, got shape {tuple(a.shape)}")
        torch._foreach_add_(ys, torch._foreach_mul(xs, a))
    else:
        torch._foreach_add_(ys, xs, alpha=a)
    return ys


def axpy(a: float | Tensor, x: Iterable[Tensor], y: Iterable[Tensor]) -> Vec:
    """Return ``a * x + y`` as a new vector."""
    xs, ys = _pair(x, y)
    if isinstance(a, Tensor):
        if a.ndim != 0:
            raise ValueError(f"a must be a number or a 0-dim tensor, got shape {tuple(a.shape)}")
        return tuple(torch._foreach_add(ys, torch._foreach_mul(xs, a)))
    return tuple(torch._foreach_add(ys, xs, alpha=a))


def scale(a: float | Tensor, x: Iterable[Tensor]) -> Vec:
    """Return ``a * x``."""
    return tuple(torch._foreach_mul(as_vec(x), a))


def add(x: Iterable[Tensor], y: Iterable[Tensor]) -> Vec:
    """Return ``x + y``."""
    xs, ys = _pair(x, y)
    return tuple(torch._foreach_add(xs, ys))


def sub(x: Iterable[Tensor], y: Iterable[Tensor]) -> Vec:
    """Return ``x - y``."""
    xs, ys = _pair(x, y)
    return tuple(torch._foreach_sub(xs, ys))


def copy_(dst: Iterable[Tensor], src: Iterable[Tensor]) -> Vec:
    """In place ``dst[i].copy_(src[i])``; returns ``dst``."""
    ds, ss = _pair(dst, src)
    torch._foreach_copy_(ds, ss)
    return ds


def zeros_like(x: Iterable[Tensor]) -> Vec:
    """A vector of zeros with the shapes, dtypes and devices of ``x``."""
    return tuple(torch.zeros_like(t) for t in as_vec(x))


def flatten(x: Iterable[Tensor], *, batch: bool = False) -> Tensor:
    """Concatenate the entries of ``x`` into one tensor.

    Args:
        x: a vector (entries ``shape_i``), or with ``batch=True`` a batch of vectors
            (entries ``(B, *shape_i)``).
        batch: whether entries carry a leading batch dimension.

    Returns:
        ``(n,)`` or ``(B, n)`` with ``n = sum(prod(shape_i))``.

    Raises:
        TypeError: when the entries have different dtypes (nothing is cast silently).

    Example:
        >>> flatten((torch.zeros(2, 2), torch.ones(1)))
        tensor([0., 0., 0., 0., 1.])
    """
    xs = as_vec(x)
    _nonempty(xs, "x")
    dtypes = {t.dtype for t in xs}
    if len(dtypes) > 1:
        raise TypeError(f"x has mixed dtypes {sorted(str(d) for d in dtypes)}; cast explicitly before flattening")
    if not batch:
        return torch.cat([t.reshape(-1) for t in xs])
    if any(t.ndim == 0 for t in xs) or len({t.shape[0] for t in xs}) != 1:
        raise ValueError(f"batch=True needs every entry to share a leading batch dimension, got shapes {shapes(xs)}")
    b = xs[0].shape[0]
    return torch.cat([t.reshape(b, -1) for t in xs], dim=1)


def unflatten(flat: Tensor, like: Iterable[Tensor] | Sequence[torch.Size]) -> Vec:
    """Split ``flat`` back into entries shaped like ``like`` (views, no copy).

    Args:
        flat: ``(n,)`` for one vector or ``(B, n)`` for a batch.
        like: an unbatched vector (or the list of its shapes) fixing the entry shapes.

    Returns:
        entries of shape ``shape_i`` or ``(B, *shape_i)``.

    Example:
        >>> unflatten(torch.arange(5.), (torch.zeros(2, 2), torch.zeros(1)))[0]
        tensor([[0., 1.],
                [2., 3.]])
    """
    if not isinstance(flat, Tensor):
        raise TypeError(f"flat must be a torch.Tensor, got {type(flat).__name__}")
    shp = [torch.Size(s.shape if isinstance(s, Tensor) else s) for s in like]
    sizes = [s.numel() for s in shp]
    n = sum(sizes)
    if flat.ndim not in (1, 2) or flat.shape[-1] != n:
        raise ValueError(f"flat must have shape ({n},) or (B, {n}) to match like, got {tuple(flat.shape)}")
    lead = tuple(flat.shape[:-1])
    return tuple(p.view((*lead, *s)) for p, s in zip(torch.split(flat, sizes, dim=-1), shp))


def stack(vectors: Sequence[Iterable[Tensor]]) -> Vec:
    """Stack ``B`` vectors into a batch (entries ``(B, *shape_i)``)."""
    vs = [as_vec(v, name=f"vectors[{i}]") for i, v in enumerate(vectors)]
    if not vs:
        raise ValueError("vectors is empty")
    return tuple(torch.stack(parts) for parts in zip(*vs))


def unstack(batch: Iterable[Tensor]) -> list[Vec]:
    """Inverse of :func:`stack`: a list of ``B`` vectors."""
    bs = as_vec(batch, name="batch")
    _nonempty(bs, "batch")
    return [tuple(t[i] for t in bs) for i in range(bs[0].shape[0])]
