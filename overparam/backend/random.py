"""Random draws from an explicit generator, and the one rule for ``generator=None``.

* :func:`construction_generator` and :func:`measurement_generator`: turn a ``generator``
  argument into a ``torch.Generator`` (the two halves of the rule below);
* :func:`gaussian`, :func:`rademacher`, :func:`uniform`: i.i.d. entries of a given shape;
* :func:`probe`: the one probe-kind dispatch (``kind`` in :data:`PROBE_KINDS`), and
  :func:`probes_like`: parameter-shaped probes;
* :func:`orthonormal`: a Haar-random ``(n, k)`` matrix with orthonormal columns;
* :func:`fan_in_normal_`: the seeded model initialiser of experiments and tests.

Every stochastic function in overparam takes a keyword-only ``generator``: a
``torch.Generator`` (used and advanced), an ``int`` seed (a fresh generator with that seed),
or ``None``, which follows ``torch.manual_seed`` by one of two rules:

* **construction** (initialisers, wrappers' inits, problem generators, learned-mask inits,
  training-time noise): ``None`` draws from ``torch.default_generator`` and advances it,
  exactly as ``torch.nn.init`` and ``torch.randn`` do (:func:`construction_generator`);
* **measurement** (trace/diagonal probes, Lanczos and power start vectors, SLQ, sharpness,
  scores, coordinate checks): ``None`` seeds a private generator from a hash of
  ``torch.default_generator``'s state, which is read and never advanced
  (:func:`measurement_generator`). A measurement leaves the global stream bitwise unchanged,
  and two measurements with no random draw between them see the same probes.

The draw primitives of this module (:func:`gaussian` ... :func:`fan_in_normal_`) are
constructions, like ``torch.randn``; a measurement resolves its generator with
:func:`measurement_generator` before it draws. Only the CPU default generator is used:
numbers are drawn on the generator's device and then moved to the requested device, so a
seed gives the same numbers whether the model lives on the CPU or on a GPU.

Example:
    >>> from overparam.backend import random as oprandom
    >>> a = oprandom.rademacher((3,), generator=0)
    >>> b = oprandom.rademacher((3,), generator=0)
    >>> bool((a == b).all())
    True
    >>> _ = torch.manual_seed(0); c = oprandom.gaussian((3,))   # construction: as torch.randn(3)
    >>> _ = torch.manual_seed(0); bool((c == torch.randn(3)).all())
    True
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable

import torch
from torch import Tensor, nn

from . import vec as _vec

__all__ = ["GeneratorLike", "PROBE_KINDS", "construction_generator", "measurement_generator", "rademacher", "gaussian",
           "uniform", "probe", "probes_like", "orthonormal", "fan_in_normal_"]

GeneratorLike = torch.Generator | int | None

PROBE_KINDS = ("rademacher", "gaussian")
"""The kinds of random probe every stochastic estimator accepts (``kind=``)."""


def _explicit(generator: GeneratorLike) -> torch.Generator | None:
    """The generator for a ``torch.Generator`` or an ``int`` seed, ``None`` for ``None``; bad types raise."""
    if isinstance(generator, torch.Generator):
        return generator
    if isinstance(generator, bool) or not (generator is None or isinstance(generator, int)):
        raise TypeError(f"generator must be a torch.Generator, an int seed or None, got {type(generator).__name__}")
    if generator is None:
        return None
    if generator < 0:
        raise ValueError(f"generator seed must be >= 0, got {generator}")
    return torch.Generator().manual_seed(generator)


def construction_generator(generator: GeneratorLike) -> torch.Generator:
    """The generator of construction-time randomness (inits, problem generators, training noise).

    Args:
        generator: a ``torch.Generator`` (returned as is), an ``int`` seed >= 0 (a new CPU
            generator with that seed) or ``None``: ``torch.default_generator`` itself, so the
            draw follows ``torch.manual_seed`` and advances the global stream as ``torch.nn.init`` does.

    Example:
        >>> construction_generator(7).initial_seed()
        7
        >>> construction_generator(None) is torch.default_generator
        True
    """
    g = _explicit(generator)
    return torch.default_generator if g is None else g


_SALT = b"overparam.measurement"


def measurement_generator(generator: GeneratorLike) -> torch.Generator:
    """The generator of measurement-time randomness (probes, start vectors, scores, checks).

    Args:
        generator: a ``torch.Generator`` (returned as is), an ``int`` seed >= 0 (a new CPU
            generator with that seed) or ``None``: a new CPU generator seeded from a hash of
            ``torch.default_generator.get_state()``. The global state is only read, so the
            global stream is unchanged, and the seed changes whenever the stream advances.

    Example:
        >>> _ = torch.manual_seed(0)
        >>> a = measurement_generator(None).initial_seed()
        >>> a == measurement_generator(None).initial_seed()   # nothing drawn in between
        True
        >>> _ = torch.rand(1); a == measurement_generator(None).initial_seed()
        False
    """
    g = _explicit(generator)
    if g is not None:
        return g
    state = torch.default_generator.get_state().numpy().tobytes()
    seed = int.from_bytes(hashlib.blake2b(state, digest_size=8, key=_SALT).digest(), "little") >> 1
    return torch.Generator().manual_seed(seed)


def _float_dtype(dtype: torch.dtype | None) -> torch.dtype:
    dtype = dtype if dtype is not None else torch.get_default_dtype()
    if not dtype.is_floating_point:
        raise TypeError(f"dtype must be a floating-point dtype, got {dtype}")
    return dtype


def _draw(kind: str, shape, generator, dtype, device) -> Tensor:
    g = construction_generator(generator)
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
    """i.i.d. ±1 entries of the given shape (``generator``: :func:`construction_generator`).

    Example:
        >>> rademacher((2, 2), generator=0).abs().sum()
        tensor(4.)
    """
    return _draw("rademacher", shape, generator, dtype, device)


def gaussian(shape, *, generator: GeneratorLike = None, dtype: torch.dtype | None = None, device=None) -> Tensor:
    """i.i.d. standard normal entries of the given shape (``generator``: :func:`construction_generator`).

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
        generator: see :func:`construction_generator` (``None``: the default generator).
        dtype: floating point (default: torch's default).
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
    ``generator``: :func:`construction_generator`; estimators pass :func:`measurement_generator`'s.

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
        generator: see :func:`construction_generator` (``None``: the default generator, as
            every draw primitive; a measurement passes :func:`measurement_generator`'s); pass
            the same generator on to draw more.

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
    g = construction_generator(generator)
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
    ``generator``: :func:`construction_generator`.

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
    on the generator's device). ``generator``: :func:`construction_generator` (``None`` advances
    the default generator). Returns ``model``.

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
    g = construction_generator(generator)
    with torch.no_grad():
        for p in model.parameters():
            scale = std / p[0].numel() ** 0.5 if p.ndim > 1 else bias_std
            p.copy_(gaussian(p.shape, generator=g, dtype=p.dtype) * scale)
    return model
