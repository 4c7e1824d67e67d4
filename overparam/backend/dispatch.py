"""One registry for routines with several implementations of one signature.

A *routine* (``"nm_mask"``, ``"top_svd"``, an HVP, a kernel) has named implementations, each
registered once with :func:`register`; the first one registered is the routine's
*reference*: the eager, fp64-capable oracle that the others must equal in tests. Adding an
implementation is one function plus one ``register`` call:

* ``available(device) -> str | None``: ``None`` when it can run on ``device``, else the reason;
* ``loader() -> callable``: imports an optional dependency (e.g. Triton) only when chosen;
* ``priority``: an ``int`` or ``{device_type: int}``; ``"auto"`` picks the available
  implementation with the highest priority for the device type (default 0; a device type
  missing from a mapping is never picked by ``"auto"``; ties go to the earliest registered).

The choice is, in order: the ``impl`` argument, the ``OVERPARAM_IMPL`` environment variable
(a name for every routine, and/or ``routine=name`` entries separated by commas), then
``"auto"``. ``"reference"`` always names a routine's reference. An unknown name raises a
``ValueError`` listing the valid ones; forcing an implementation that cannot run here raises
a ``RuntimeError`` saying why. Nothing is cached: the environment is read at each call.

The module-level :func:`register`, :func:`implementations`, :func:`choose` and :func:`call` act
on the one library-wide :class:`Registry`; a fresh ``Registry()`` is only for tests and examples.

Example:
    >>> import torch
    >>> reg = Registry()
    >>> _ = reg.register("square", "reference", lambda x: x * x)
    >>> @reg.register("square", "pow", priority=1)
    ... def square_pow(x):
    ...     return x.pow(2)
    >>> reg.call("square", torch.tensor(3.0)), reg.choose("square") is square_pow
    (tensor(9.), True)
    >>> [(i.name, i.available) for i in reg.implementations("square")]
    [('reference', True), ('pow', True)]
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch

__all__ = ["ENV_VAR", "Implementation", "Registry", "register", "implementations", "choose", "call", "triton_unavailable"]

ENV_VAR = "OVERPARAM_IMPL"


@dataclass(frozen=True)
class Implementation:
    """One registered implementation as :func:`implementations` reports it."""

    routine: str
    name: str
    available: bool
    reason: str | None


@dataclass(frozen=True)
class _Entry:
    name: str
    fn: Callable | None
    loader: Callable[[], Callable] | None
    available: Callable[[torch.device], str | None] | None
    priority: int | Mapping[str, int] | None

    def reason(self, device: torch.device) -> str | None:
        return None if self.available is None else self.available(device)

    def rank(self, device: torch.device) -> int | None:
        if self.priority is None:
            return 0
        if isinstance(self.priority, int):
            return self.priority
        return self.priority.get(device.type)


def _check_name(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value or "," in value or "=" in value:
        raise ValueError(f"{what} must be a non-empty string without ',' or '=', got {value!r}")
    return value


def _device(device) -> torch.device:
    return torch.device(device) if device is not None else torch.device("cpu")


def _requested(routine: str, impl: str | None) -> tuple[str, str]:
    """The requested name and where it came from (for error messages)."""
    if impl is not None:
        return impl, "impl"
    raw = os.environ.get(ENV_VAR, "")
    name = "auto"
    for part in filter(None, (p.strip() for p in raw.split(","))):
        key, sep, val = part.partition("=")
        if not sep:
            name = key
        elif key.strip() == routine:
            return val.strip(), f"environment variable {ENV_VAR}"
    return name, f"environment variable {ENV_VAR}"


class Registry:
    """Routines and their implementations; see the module docstring. ``Registry()`` is empty."""

    def __init__(self) -> None:
        self._routines: dict[str, dict[str, _Entry]] = {}

    def register(self, routine: str, name: str, fn: Callable | None = None, *,
                 loader: Callable[[], Callable] | None = None, available: Callable[[torch.device], str | None] | None = None,
                 priority: int | Mapping[str, int] | None = None):
        """Register implementation ``name`` of ``routine``; usable as a decorator (``fn`` omitted).

        Args:
            routine: the routine's name (e.g. ``"nm_mask"``).
            name: the implementation's name (not ``"auto"``; ``"reference"`` only for the first).
            fn: the implementation, any callable; or give ``loader``.
            loader: zero-argument callable returning the implementation, called when it is chosen.
            available: ``available(device) -> None | reason`` (default: always available).
            priority: ``int`` or ``{device_type: int}`` for ``"auto"`` (default 0 everywhere).

        Returns:
            ``fn`` (so the decorator leaves the function as it is), or ``None`` with ``loader``.

        Raises:
            ValueError: a duplicate ``(routine, name)``, a reserved name, or not exactly one of
                ``fn`` / ``loader`` (with ``loader`` the call is not a decorator).

        Example:
            >>> Registry().register("twice", "reference", lambda x: 2 * x)(4)
            8
        """
        _check_name(routine, "routine")
        _check_name(name, "name")
        impls = self._routines.get(routine, {})
        if name == "auto" or (name == "reference" and impls):
            raise ValueError(f"implementation name {name!r} is reserved" + (" for the first one registered" if impls else ""))
        if name in impls:
            raise ValueError(f"{routine!r} already has an implementation named {name!r}")
        if not (priority is None or (isinstance(priority, int) and not isinstance(priority, bool))
                or (isinstance(priority, Mapping) and all(isinstance(v, int) for v in priority.values()))):
            raise TypeError(f"priority must be an int or a {{device_type: int}} mapping, got {priority!r}")
        if available is not None and not callable(available):
            raise TypeError(f"available must be callable, got {type(available).__name__}")
        if loader is not None:
            if fn is not None or not callable(loader):
                raise ValueError("give exactly one of fn and loader (a callable)")
            self._routines.setdefault(routine, {})[name] = _Entry(name, None, loader, available, priority)
            return None
        if fn is None:
            return lambda f: self.register(routine, name, f, available=available, priority=priority)
        if not callable(fn):
            raise TypeError(f"fn must be callable, got {type(fn).__name__}")
        self._routines.setdefault(routine, {})[name] = _Entry(name, fn, None, available, priority)
        return fn


    def _entries(self, routine: str) -> dict[str, _Entry]:
        if routine not in self._routines:
            raise ValueError(f"unknown routine {routine!r}; registered: {', '.join(map(repr, sorted(self._routines)))}")
        return self._routines[routine]


    def implementations(self, routine: str | None = None, *, device: torch.device | str | None = None) -> list[Implementation]:
        """The registered implementations of ``routine`` (all routines when ``None``), reference first,
        with whether each can run on ``device`` (default CPU) and why not.

        Example:
            >>> [i.name for i in implementations("nm_mask")]
            ['reference', 'batched', 'compiled', 'triton']
        """
        dev = _device(device)
        routines = sorted(self._routines) if routine is None else [routine]
        out = []
        for r in routines:
            for e in self._entries(r).values():
                why = e.reason(dev)
                out.append(Implementation(r, e.name, why is None, why))
        return out


    def choose(self, routine: str, impl: str | None = None, *, device: torch.device | str | None = None) -> Callable:
        """The implementation of ``routine`` that a call with ``impl`` on ``device`` runs.

        Args:
            routine: a registered routine.
            impl: an implementation name, ``"reference"``, ``"auto"``, or ``None`` (read ``OVERPARAM_IMPL``,
                default ``"auto"``).
            device: where the data lives (default CPU): decides availability and ``"auto"``.

        Raises:
            ValueError: unknown routine or implementation name (the message lists the valid ones).
            RuntimeError: the requested implementation cannot run on ``device`` (the message says why).

        Example:
            >>> choose("nm_mask", "reference").__name__
            'nm_reference'
        """
        entries = self._entries(routine)
        name, source = _requested(routine, impl)
        dev = _device(device)
        if name == "auto":
            ranked = [(e.rank(dev), -i, e) for i, e in enumerate(entries.values()) if e.rank(dev) is not None]
            runnable = [t for t in ranked if t[2].reason(dev) is None]
            entry = max(runnable, key=lambda t: t[:2])[2] if runnable else next(iter(entries.values()))
        else:
            entry = next(iter(entries.values())) if name == "reference" else entries.get(name)
            if entry is None:
                valid = ("auto", "reference", *(n for n in entries if n != "reference"))
                raise ValueError(f"{source} must name an implementation of {routine!r}: one of "
                                 f"{', '.join(map(repr, valid))}; got {name!r}")
        why = entry.reason(dev)
        if why is not None:
            raise RuntimeError(f"implementation {entry.name!r} of {routine!r} cannot run on {dev.type}: {why}")
        return entry.fn if entry.fn is not None else entry.loader()


    def call(self, routine: str, *args: Any, impl: str | None = None, **kwargs: Any) -> Any:
        """Run ``routine`` with the implementation :func:`choose` picks; the device is the first tensor
        argument's (positional, then keyword).

        Example:
            >>> call("nm_mask", torch.tensor([1., 3., 2., 0.]), 1, 2, impl="reference").tolist()
            [False, True, True, False]
        """
        device = next((a.device for a in (*args, *kwargs.values()) if isinstance(a, torch.Tensor)), None)
        return self.choose(routine, impl, device=device)(*args, **kwargs)


_REGISTRY = Registry()
register = _REGISTRY.register
implementations = _REGISTRY.implementations
choose = _REGISTRY.choose
call = _REGISTRY.call


def triton_unavailable(device: torch.device | str | None = None) -> str | None:
    """``None`` when Triton kernels can run on ``device`` (Triton installed, and a CUDA device, or a
    CPU one with ``TRITON_INTERPRET=1``), else the reason: the ``available`` of every Triton kernel.

    Example:
        >>> triton_unavailable("meta") is not None
        True
    """
    if importlib.util.find_spec("triton") is None:
        return "the triton package is not installed (pip install 'overparam[triton]')"
    dev = _device(device)
    if dev.type == "cuda":
        return None
    if dev.type == "cpu":
        if os.environ.get("TRITON_INTERPRET") == "1":
            return None
        return "CPU tensors need TRITON_INTERPRET=1 set before triton is imported"
    return f"Triton kernels run on CUDA devices (or CPU under TRITON_INTERPRET=1), not {dev.type}"
