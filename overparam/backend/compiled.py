"""``torch.compile`` implementations of dispatch routines: compiled lazily, once per function.

A routine's ``"compiled"`` implementation (registered with
``dispatch.register(routine, "compiled", available=compile_unavailable)``) validates its arguments
eagerly, turns every number that may change between calls (a step's bias corrections, a
scheduled learning rate) into a tensor, and calls a pure-tensor core wrapped by
:func:`lazy_compile`. The core is compiled at its first call (seconds; ``torch._dynamo`` is not
even imported before), with ``dynamic=True`` so that new sizes do not compile again, and the
compiled function is kept for the process. Numbers passed as tensors never cause a
recompilation; Python flags (``decoupled``, ``None`` for an absent tensor) compile one variant
each.

The compiler backend is ``"inductor"`` unless the environment variable
``OVERPARAM_COMPILE_BACKEND`` names another one (read at each call; e.g. ``"aot_eager"``, which
traces the same graph without generating code: the fast way to test a core's tracing).

Example:
    >>> import torch
    >>> double = lazy_compile(lambda x: 2 * x)          # nothing is compiled yet
    >>> compile_unavailable(torch.device("cpu")) is None
    True
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import torch

__all__ = ["BACKEND_ENV_VAR", "lazy_compile", "compile_unavailable"]

BACKEND_ENV_VAR = "OVERPARAM_COMPILE_BACKEND"


class lazy_compile:  # noqa: N801  (used like a function decorator)
    """``fn`` under ``torch.compile(fn, dynamic=True, backend=...)``, compiled at the first call,
    once per compiler backend (``OVERPARAM_COMPILE_BACKEND``, default ``"inductor"``).

    Example:
        >>> square = lazy_compile(lambda x: x * x)
        >>> square.fn(torch.tensor(3.0))                     # the eager function stays reachable
        tensor(9.)
    """

    def __init__(self, fn: Callable) -> None:
        if not callable(fn):
            raise TypeError(f"fn must be callable, got {type(fn).__name__}")
        self.fn = fn
        self._compiled: dict[str, Callable] = {}

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        backend = os.environ.get(BACKEND_ENV_VAR, "") or "inductor"
        compiled = self._compiled.get(backend)
        if compiled is None:
            compiled = self._compiled[backend] = torch.compile(self.fn, dynamic=True, backend=backend)
        return compiled(*args, **kwargs)


def compile_unavailable(device: torch.device) -> str | None:
    """``None`` when ``torch.compile`` can run here, else the reason (the ``available`` of every
    ``"compiled"`` implementation).

    Example:
        >>> compile_unavailable(torch.device("cpu")) is None
        True
    """
    if not hasattr(torch, "compile"):
        return "this torch has no torch.compile"
    return None
