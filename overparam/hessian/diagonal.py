"""The diagonal of an operator: exact (one product per entry, ``block`` at a time) or the
stochastic estimate of Bekas, Kokiopoulou & Saad (2007).

``diag A ≈ mean_i v_i ⊙ A v_i`` with Rademacher probes: exact after one probe when ``A`` is
diagonal, unbiased in general with per-entry variance ``Σ_{j≠i} A_ij²``. With ``probes=None``
the diagonal is computed exactly from the products ``A e_i`` (``n`` products: small operators,
or the Optimal Brain Damage scores of :mod:`overparam.prune`).

Example:
    >>> import torch
    >>> A = torch.diag(torch.tensor([1., 2., 3.], dtype=torch.float64))
    >>> diagonal(A, probes=1, generator=0).mean[0]
    tensor([1., 2., 3.], dtype=torch.float64)
    >>> B = torch.tensor([[2., 1.], [1., 5.]], dtype=torch.float64)
    >>> diagonal(B, probes=None).mean[0]
    tensor([2., 5.], dtype=torch.float64)
"""

from __future__ import annotations

import torch

from ..backend import vec
from ..backend.random import GeneratorLike, measurement_generator
from .operators import as_operator
from .trace import Estimate, _check_block, _check_probes, _matmat_chunks, _stderr, probe_block

__all__ = ["diagonal"]


def diagonal(A, probes: int | None = 100, *, kind: str = "rademacher", block: int = 16,
             generator: GeneratorLike = None) -> Estimate:
    """``diag A``: exact with ``probes=None``, else estimated from ``probes`` random products.

    ``generator=None`` never advances the global RNG (the measurement rule, docs/index.md).

    Args:
        A: an operator, a dense symmetric ``(n, n)`` tensor or anything :func:`as_operator` takes.
        probes: number of probes, or ``None`` for the exact diagonal (``n`` products ``A e_i``).
        kind: ``"rademacher"`` or ``"gaussian"`` probes.
        block: products per ``matmat`` call (rows of the exact diagonal, or probes).
        generator: for the probes (unused when exact).

    Returns:
        :class:`~overparam.hessian.Estimate` whose ``mean`` and ``stderr`` are parameter-shaped
        vectors (tuples; one ``(n,)`` entry for a dense matrix) and ``samples`` is ``(probes, n)``
        (exact: ``stderr`` zeros, ``samples`` None, ``n_matvecs = n``).

    Reference: Bekas, Kokiopoulou and Saad, "An estimator for the diagonal of a matrix", Applied
    Numerical Mathematics 2007.

    Example:
        >>> B = torch.tensor([[2., 1.], [1., 5.]], dtype=torch.float64)
        >>> diagonal(B, probes=None).mean[0]
        tensor([2., 5.], dtype=torch.float64)
        >>> est = diagonal(B, probes=400, generator=0)
        >>> bool((est.mean[0] - torch.tensor([2., 5.], dtype=torch.float64)).abs().max() < 4 * est.stderr[0].max())
        True
    """
    op = as_operator(A)
    _check_block(block)
    if probes is None:
        n, diag = op.n, []
        for lo in range(0, n, block):  # rows lo..hi of A at once: one batched product
            b = min(block, n - lo)
            E = torch.zeros(n, b, dtype=op.dtype, device=op.device)
            E[torch.arange(lo, lo + b), torch.arange(b)] = 1
            diag.append(op.matmat(E).diagonal(offset=-lo))  # (n, b): column i is column lo+i of A
        d = torch.cat(diag)
        return Estimate(vec.unflatten(d, op.like), vec.unflatten(torch.zeros_like(d), op.like), n, None)
    _check_probes(probes, 1, "diagonal")
    V = probe_block(op, probes, kind, measurement_generator(generator))
    s = (V * _matmat_chunks(op, V, block)).mT  # (probes, n)
    return Estimate(vec.unflatten(s.mean(dim=0), op.like), vec.unflatten(_stderr(s), op.like), probes, s)
