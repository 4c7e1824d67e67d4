"""Random draws from an explicit generator; the global RNG is never touched.

* :func:`gaussian`, :func:`rademacher`, :func:`uniform`: i.i.d. entries of a given shape;
* :func:`probe`: the one probe-kind dispatch (``kind`` in :data:`PROBE_KINDS`), and
  :func:`probes_like`: parameter-shaped probes;
* :func:`orthonormal`: a Haar-random ``(n, k)`` matrix with orthonormal columns;
* :func:`fan_in_normal_`: the seeded model initialiser of experiments and tests.

Every stochastic function in overparam takes a keyword-only ``generator`` that may be a
``torch.Generator``, an ``int`` seed, or ``None``. ``None`` draws a fresh seed from the
operating system (``os.urandom``): results then differ run to run, but the global torch
RNG state is still left exactly as it was.

Numbers are drawn on the generator's device and then moved to the requested device, so a
CPU generator gives the same probes whether the model lives on the CPU or on a GPU.

Example:
    >>> from overparam.backend import random as oprandom
    >>> a = oprandom.rademacher((3,), generator=0)
    >>> b = oprandom.rademacher((3,), generator=0)
    >>> bool((a == b).all())
    True
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable

import torch
from torch import Tensor, nn

from . import vec as _vec

__all__ = ["GeneratorLike", "PROBE_KINDS", "make_generator", "rademacher", "gaussian", "uniform", "probe", "probes_like",
           "orthonormal", "fan_in_normal_"]

GeneratorLike = torch.Generator | int | None

PROBE_KINDS = ("rademacher", "gaussian")
"""The kinds of random probe every stochastic estimator accepts (``kind=``)."""


def make_generator(generator: GeneratorLike = None, *, device: torch.device | str | None = None) -> torch.Generator:
    """Turn a generator-like argument into a ``torch.Generator``.

    Args:
        generator: an existing generator (returned as is), an ``int`` seed, or ``None``
            (a fresh seed from ``os.urandom``).
        device: device of a newly created generator (default CPU).

    Example:
        >>> make_generator(7).initial_seed()
        7
    """
    if isinstance(generator, torch.Generator):
        return generator
    if isinstance(generator, bool) or not (generator is None or isinstance(generator, int)):
        raise TypeError(f"generator must be a torch.Generator, an int seed or None, got {type(generator).__name__}")
    seed = int.from_bytes(os.urandom(8), "little") >> 1 if generator is None else generator
    if seed < 0:
        raise ValueError(f"generator seed must be >= 0, got {seed}")
    g = torch.Generator(device=device if device is not None else "cpu")
    g.manual_seed(seed)
    return g


def _float_dtype(dtype: torch.dtype | None) -> torch.dtype:
    dtype = dtype if dtype is not None else torch.get_default_dtype()
    if not dtype.is_floating_point:
        raise TypeError(f"dtype must be a floating-point dtype, got {dtype}")
    return dtype


def _draw(kind: str, shape, generator, dtype, device) -> Tensor:
    g = make_generator(generator)
    dtype = _float_dtype(dtype)
    if kind == "rademacher":
        out = torch.randint(0, 2, tuple(shape), generator=g, device=g.device, dtype=torch.int8)
        out = (out * 2 - 1).to(dtype)
    elif kind == "gaussian":
        out = torch.randn(tuple(shape), generator=g, device=g.device, dtype=dtype)
    else:
        out = torch.rand(tuple(shape), generator=g, device=g.device, dtype=dtype)
    return out if device is None else out.to(device)


def rademacher(shape, *, generator: GeneratorLike = None, dtype: torch.dtype | None = None, device=None) -> Tensor:
    """i.i.d. ±1 entries of the given shape.

    Example:
        >>> rademacher((2, 2), generator=0).abs().sum()
        tensor(4.)
    """
    return _draw("rademacher", shape, generator, dtype, device)


def gaussian(shape, *, generator: GeneratorLike = None, dtype: torch.dtype | None = None, device=None) -> Tensor:
    """i.i.d. standard normal entries of the given shape.

    Example:
        >>> gaussian((2,), generator=0, dtype=torch.float64).shape
        torch.Size([2])
    """
    return _draw("gaussian", shape, generator, dtype, device)


def uniform(shape, *, low: float = 0.0, high: float = 1.0, generator: GeneratorLike = None,
            dtype: torch.dtype | None = None, device=None) -> Tensor:
    """i.i.d. entries uniform on ``[low, high)``, computed as ``low + (high − low) · U[0, 1)``.

    Args:
        shape: output shape.
        low, high: finite bounds, ``low < high``.
        generator: see :func:`make_generator`. dtype: floating point (default: torch's default).
        device: where the result goes (numbers are drawn on the generator's device).

    Example:
        >>> u = uniform((1000,), low=-1.0, high=1.0, generator=0, dtype=torch.float64)
        >>> bool(u.min() >= -1) and bool(u.max() < 1)
        True
    """
    for name, val in (("low", low), ("high", high)):
        if isinstance(val, bool) or not isinstance(val, (int, float)) or not math.isfinite(val):
            raise ValueError(f"{name} must be a finite number, got {val!r}")
    if not low < high:
        raise ValueError(f"low must be < high, got low={low}, high={high}")
    u = _draw("uniform", shape, generator, dtype, device)
    return u if (low, high) == (0.0, 1.0) else u * (high - low) + low


def probe(kind: str, shape, *, generator: GeneratorLike = None, dtype: torch.dtype | None = None,
          device=None) -> Tensor:
    """i.i.d. probe entries of ``kind`` (one of :data:`PROBE_KINDS`): :func:`rademacher` or :func:`gaussian`.

    The one place a probe kind is checked: estimators pass their ``kind=`` argument here.

    Example:
        >>> probe("rademacher", (2, 3), generator=0).abs().sum()
        tensor(6.)
    """
    if kind not in PROBE_KINDS:
        raise ValueError(f"kind must be {' or '.join(map(repr, PROBE_KINDS))}, got {kind!r}")
    return _draw(kind, shape, generator, dtype, device)


def probes_like(
    like: Iterable[Tensor], *, n: int | None = None, kind: str = "rademacher", generator: GeneratorLike = None
) -> _vec.Vec:
    """Random parameter-shaped vector(s) with the dtypes and devices of ``like``.

    Args:
        like: a vector (entries ``shape_i``), e.g. ``model.parameters()``.
        n: ``None`` for one vector, or the batch size ``B`` (entries ``(B, *shape_i)``).
        kind: one of :data:`PROBE_KINDS`.
        generator: see :func:`make_generator`; pass the same generator on to draw more.

    The draw is one flat block of ``n * numel`` numbers split in parameter order, so it
    does not depend on how the parameters are chunked into tensors.

    Example:
        >>> v = probes_like([torch.zeros(2, 3), torch.zeros(4)], n=5, generator=0)
        >>> [tuple(t.shape) for t in v]
        [(5, 2, 3), (5, 4)]
    """
    ls = _vec.as_vec(like, name="like")
    if not ls:
        raise ValueError("like is an empty vector")
    if n is not None and (not isinstance(n, int) or n < 1):
        raise ValueError(f"n must be a positive int or None, got {n!r}")
    g = make_generator(generator)
    total = _vec.numel(ls)
    rows = 1 if n is None else n
    # Draw in the widest dtype present, then cast per entry: the same numbers for every dtype layout.
    wide = torch.float64 if any(t.dtype == torch.float64 for t in ls) else torch.float32
    flat = probe(kind, (rows, total), generator=g, dtype=wide)
    parts = torch.split(flat, [t.numel() for t in ls], dim=1)
    out = tuple(p.reshape(rows, *t.shape).to(dtype=t.dtype, device=t.device) for p, t in zip(parts, ls))
    return tuple(o[0] for o in out) if n is None else out


def orthonormal(n: int, k: int, *, generator: GeneratorLike = None, dtype: torch.dtype | None = None,
                device=None) -> Tensor:
    """A Haar-random ``(n, k)`` matrix with orthonormal columns (``1 <= k <= n``).

    The thin QR ``G = QR`` of a standard Gaussian ``G (n, k)`` (drawn as :func:`gaussian`) with the
    sign of ``diag(R)`` moved into ``Q``, so that ``R`` has a positive diagonal: this makes ``Q``
    uniformly (Haar) distributed on the Stiefel manifold, which plain ``torch.linalg.qr`` does not.

    Example:
        >>> Q = orthonormal(5, 3, generator=0, dtype=torch.float64)
        >>> torch.allclose(Q.mT @ Q, torch.eye(3, dtype=torch.float64))
        True
    """
    for name, val in (("n", n), ("k", k)):
        if isinstance(val, bool) or not isinstance(val, int):
            raise TypeError(f"{name} must be an int, got {type(val).__name__}")
    if not 1 <= k <= n:
        raise ValueError(f"orthonormal columns need 1 <= k <= n, got n={n}, k={k}")
    Q, R = torch.linalg.qr(gaussian((n, k), generator=generator, dtype=dtype, device=device))
    return Q * torch.sign(torch.diagonal(R))


def fan_in_normal_(model: nn.Module, *, std: float = 1.0, bias_std: float = 0.1,
                   generator: GeneratorLike = None) -> nn.Module:
    """Overwrite every parameter of ``model`` in place, in ``model.parameters()`` order:
    a tensor with ``ndim >= 2`` gets ``std · N(0, 1) / sqrt(fan_in)`` (``fan_in`` = the number of
    entries of one output slice, ``p[0].numel()``), a vector ``bias_std · N(0, 1)``.

    The seeded model builder of experiments, benchmarks and tests: the same generator state
    gives the same model on any device and dtype (numbers are drawn in the parameter's dtype
    on the generator's device). Returns ``model``.

    Example:
        >>> net = fan_in_normal_(nn.Linear(4, 2), generator=0)
        >>> float(net.weight.std()) < 1.0
        True
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    for name, val in (("std", std), ("bias_std", bias_std)):
        if isinstance(val, bool) or not isinstance(val, (int, float)) or not val >= 0 or val == float("inf"):
            raise ValueError(f"{name} must be a finite number >= 0, got {val!r}")
    g = make_generator(generator)
    with torch.no_grad():
        for p in model.parameters():
            scale = std / p[0].numel() ** 0.5 if p.ndim > 1 else bias_std
            p.copy_(gaussian(p.shape, generator=g, dtype=p.dtype) * scale)
    return model
