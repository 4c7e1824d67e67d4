"""The one tensor backend every overparam package stands on.

* :mod:`~overparam.backend.vec`: parameter-shaped vectors (tuples of tensors) with foreach ops;
* :mod:`~overparam.backend.linalg`: batched Gram-Schmidt, tridiagonal eigensolve, damped r×r solves;
* :mod:`~overparam.backend.random`: Gaussian / Rademacher / uniform draws, probes and orthonormal
  matrices from an explicit generator;
* :mod:`~overparam.backend.checks`: the argument checks several packages share;
* :mod:`~overparam.backend.dispatch`: "reference" | "batched" | "triton" implementation choice;
* :mod:`~overparam.backend.dist`: ``torch.distributed`` helpers, no-ops in one process;
* :mod:`~overparam.backend.kernels`: optional Triton kernels, each beside its torch reference.

It imports no other overparam package.
"""

from . import checks, dispatch, dist, linalg, random, vec
from .dispatch import Implementations
from .random import make_generator

__all__ = ["vec", "linalg", "random", "checks", "dispatch", "dist", "Implementations", "make_generator"]
