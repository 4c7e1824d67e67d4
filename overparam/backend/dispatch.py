"""Choosing an implementation: one public signature, several implementations.

Each numerical routine that has more than one implementation is an :class:`Implementations`
object. Names are

* ``"reference"``: eager torch, written for clarity; the fp64 oracle in tests;
* ``"batched"``: ``torch.func`` / vectorized torch, the default off-GPU;
* ``"triton"``: a Triton kernel (optional extra), the default on CUDA when installed.
  On CPU tensors it runs only under ``TRITON_INTERPRET=1`` (for tests).

The choice is, in order: the ``impl=`` argument of the call, the ``OVERPARAM_IMPL``
environment variable, then ``"auto"``. An unknown name raises a ``ValueError`` listing the
valid ones; asking for an implementation that is not available here raises a
``RuntimeError`` saying why. Nothing is cached: the environment is read at each call.

Example:
    >>> import torch
    >>> square = Implementations("square", reference=lambda x: x * x, batched=lambda x: x.square())
    >>> square(torch.tensor(3.0), impl="reference")
    tensor(9.)
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable
from typing import Any

import torch

__all__ = ["NAMES", "ENV_VAR", "Implementations", "triton_available", "resolve"]

NAMES = ("reference", "batched", "triton")
ENV_VAR = "OVERPARAM_IMPL"


def triton_available(device: torch.device | str | None = None) -> bool:
    """Whether Triton kernels can run on ``device``: Triton is installed and the device is
    CUDA, or the device is CPU and ``TRITON_INTERPRET=1`` is set."""
    if importlib.util.find_spec("triton") is None:
        return False
    dev = torch.device(device) if device is not None else torch.device("cpu")
    if dev.type == "cuda":
        return True
    return dev.type == "cpu" and os.environ.get("TRITON_INTERPRET") == "1"


def resolve(impl: str | None, *, available: tuple[str, ...], device: torch.device | str | None = None) -> str:
    """Resolve a requested implementation name to one in ``available``.

    Args:
        impl: ``None`` (read ``OVERPARAM_IMPL``, default ``"auto"``), ``"auto"`` or one of :data:`NAMES`.
        available: the implementations registered for this routine.
        device: where the data lives; decides ``"auto"`` and Triton's availability.

    Raises:
        ValueError: unknown name (the message lists the valid ones).
        RuntimeError: a valid name that this routine or this machine cannot run.
    """
    name = impl if impl is not None else os.environ.get(ENV_VAR, "auto")
    valid = ("auto", *NAMES)
    if name not in valid:
        source = "impl" if impl is not None else f"environment variable {ENV_VAR}"
        raise ValueError(f"{source} must be one of {', '.join(map(repr, valid))}; got {name!r}")
    dev = torch.device(device) if device is not None else torch.device("cpu")
    if name == "auto":
        if dev.type == "cuda" and "triton" in available and triton_available(dev):
            return "triton"
        return "batched" if "batched" in available else "reference"
    if name not in available:
        raise RuntimeError(f"implementation {name!r} is not provided for this routine; available: {', '.join(available)}")
    if name == "triton" and not triton_available(dev):
        raise RuntimeError(
            "implementation 'triton' needs the triton package (pip install 'overparam[triton]') and a CUDA "
            "device, or TRITON_INTERPRET=1 set before import for CPU tensors"
        )
    return name


class Implementations:
    """A routine with several interchangeable implementations of one signature.

    Args:
        name: routine name, for error messages.
        **impls: ``reference=fn`` (required), ``batched=fn``, ``triton=fn``. A ``triton`` entry
            may be a zero-argument loader returning the kernel function, so Triton is only
            imported when that implementation is chosen: pass it as ``triton_loader=``.

    Calling the object forwards all arguments to the chosen implementation; the keyword
    ``impl`` picks one (see :func:`resolve`). The device is taken from the first tensor argument.
    """

    def __init__(self, name: str, *, reference: Callable, batched: Callable | None = None,
                 triton_loader: Callable[[], Callable] | None = None) -> None:
        self.name = name
        self._impls: dict[str, Callable] = {"reference": reference}
        if batched is not None:
            self._impls["batched"] = batched
        self._triton_loader = triton_loader

    @property
    def available(self) -> tuple[str, ...]:
        names = tuple(self._impls)
        return names + ("triton",) if self._triton_loader is not None else names

    def get(self, impl: str | None = None, *, device: torch.device | str | None = None) -> Callable:
        """The implementation that a call with ``impl`` on ``device`` would run."""
        name = resolve(impl, available=self.available, device=device)
        if name == "triton" and self._triton_loader is not None:
            return self._triton_loader()
        return self._impls[name]

    def __call__(self, *args: Any, impl: str | None = None, **kwargs: Any) -> Any:
        device = next((a.device for a in (*args, *kwargs.values()) if isinstance(a, torch.Tensor)), None)
        return self.get(impl, device=device)(*args, **kwargs)

    def __repr__(self) -> str:
        return f"Implementations({self.name!r}, available={self.available})"
