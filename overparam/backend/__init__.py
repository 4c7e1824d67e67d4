"""The one tensor backend every overparam package stands on.

* :mod:`~overparam.backend.vec`: parameter-shaped vectors (tuples of tensors) with foreach ops;
* :mod:`~overparam.backend.linalg`: CGS2 orthogonalization, tridiagonal eigensolve, damped r×r
  solves, Cholesky-QR2, exact and randomized truncated SVDs;
* :mod:`~overparam.backend.random`: Gaussian / Rademacher / uniform draws, probes and orthonormal
  matrices from an explicit generator;
* :mod:`~overparam.backend.select`: the one selection language (``op.select``);
* :mod:`~overparam.backend.topk`: the one top-k / top-fraction selection and its tie rule;
* :mod:`~overparam.backend.nm`: N:M grouping and masks (reference, batched, Triton);
* :mod:`~overparam.backend.layers`: the registry of layer kinds (Linear, Conv, Embedding, attention,
  transformers' ``Conv1D``): how each stores its weight, fans, repeated blocks;
* :mod:`~overparam.backend.patches`: a convolution's input patches (im2col) as matrix rows;
* :mod:`~overparam.backend.checks`: the argument checks several packages share;
* :mod:`~overparam.backend.dispatch`: the registry of routines with several implementations;
* :mod:`~overparam.backend.dist`: ``torch.distributed`` helpers, no-ops in one process;
* :mod:`~overparam.backend.sharded`: flat vectors sharded like FSDP2's parameters (this rank's
  coordinates) and the global reductions the solvers need on them;
* :mod:`~overparam.backend.kernels`: optional Triton kernels, each beside its torch reference.

It imports no other overparam package.

Example:
    >>> import overparam as op
    >>> [(i.name, i.available) for i in op.backend.implementations("top_svd")]
    [('svd', True), ('randomized', True)]
"""

from . import (checks, dispatch, dist, kernels, layers, linalg, nm, packed_step, random, select, sharded, softmax_ce,
               sparse24, topk, vec)
from .dispatch import implementations
from .random import construction_generator, measurement_generator

__all__ = ["vec", "linalg", "random", "select", "topk", "nm", "layers", "softmax_ce", "sparse24", "packed_step", "checks", "dispatch", "dist", "sharded",
           "implementations",
           "construction_generator", "measurement_generator"]
