"""The one tensor backend every overparam package stands on.

* :mod:`~overparam.backend.vec`: parameter-shaped vectors (tuples of tensors) with foreach ops;
* :mod:`~overparam.backend.linalg`: batched Gram-Schmidt, tridiagonal eigensolve, damped r×r solves;
* :mod:`~overparam.backend.random`: Rademacher / Gaussian probes from an explicit generator;
* :mod:`~overparam.backend.select`: the one selection language (``op.select``);
* :mod:`~overparam.backend.dispatch`: "reference" | "batched" | "triton" implementation choice;
* :mod:`~overparam.backend.dist`: ``torch.distributed`` helpers, no-ops in one process;
* :mod:`~overparam.backend.kernels`: optional Triton kernels, each beside its torch reference.

It imports no other overparam package.
"""

from . import dispatch, dist, linalg, random, select, vec
from .dispatch import Implementations
from .random import make_generator

__all__ = ["vec", "linalg", "random", "select", "dispatch", "dist", "Implementations", "make_generator"]
