"""Stochastic estimate of the diagonal of an operator (Bekas, Kokiopoulou & Saad 2007).

``diag A ≈ mean_i v_i ⊙ A v_i`` with Rademacher probes: exact after one probe when ``A`` is
diagonal, unbiased in general with per-entry variance ``Σ_{j≠i} A_ij²``.

Example:
    >>> import torch
    >>> A = torch.diag(torch.tensor([1., 2., 3.], dtype=torch.float64))
    >>> diagonal(A, probes=1, generator=0).mean[0]
    tensor([1., 2., 3.], dtype=torch.float64)
"""

from __future__ import annotations

from ..backend import vec
from ..backend.random import GeneratorLike, make_generator
from .operators import as_operator
from .trace import Estimate, _check_probes, _matmat_chunks, _stderr, probe_block

__all__ = ["diagonal"]


def diagonal(A, probes: int = 100, *, kind: str = "rademacher", block: int = 16,
             generator: GeneratorLike = None) -> Estimate:
    """Estimate ``diag A`` from ``probes`` products.

    Returns:
        :class:`~overparam.hessian.Estimate` whose ``mean`` and ``stderr`` are parameter-shaped
        vectors (tuples; one ``(n,)`` entry for a dense matrix) and ``samples`` is ``(probes, n)``.
    """
    op = as_operator(A)
    _check_probes(probes, 1, "diagonal")
    V = probe_block(op, probes, kind, make_generator(generator))
    s = (V * _matmat_chunks(op, V, block)).mT  # (probes, n)
    return Estimate(vec.unflatten(s.mean(dim=0), op.like), vec.unflatten(_stderr(s), op.like), probes, s)
