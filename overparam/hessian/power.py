"""Deflated power iteration: the simple baseline (PyHessian's ``eigenvalues``), kept for
comparison with :func:`~overparam.hessian.lanczos`.

Eigenpairs are found one at a time; the ``i``-th iterates with the projected operator
``(I − QQᵀ) A (I − QQᵀ)`` where ``Q`` holds the pairs already found, and stops when the
residual ``‖Av − θv‖ <= tol·|θ|``. It converges to the largest-magnitude eigenvalues at the
rate ``|λ_{i+1}/λ_i|`` per product, which is why Lanczos is preferred.

Example:
    >>> import torch
    >>> A = torch.diag(torch.tensor([4., -2., 1.], dtype=torch.float64))
    >>> power_iteration(A, k=2, tol=1e-10, generator=0).values
    tensor([ 4., -2.], dtype=torch.float64)
"""

from __future__ import annotations

import warnings

import torch

from ..backend import linalg, sharded, vec
from ..backend.checks import check_rank
from ..backend.random import GeneratorLike, measurement_generator
from .lanczos import Eigen, start_vector
from ..backend.checks import check_real
from .operators import as_operator

__all__ = ["power_iteration"]


def power_iteration(A, k: int = 1, *, tol: float = 1e-6, max_iters: int = 1000, v0=None,
                    generator: GeneratorLike = None) -> Eigen:
    """The ``k`` largest-magnitude eigenpairs by power iteration with deflation.

    ``generator=None`` never advances the global RNG (the measurement rule, docs/index.md).

    Args:
        A: an operator, a dense symmetric ``(n, n)`` tensor, or anything with ``@``/``.matvec``.
        k: number of eigenpairs (``1 <= k <= n``).
        tol: relative residual tolerance ``‖Av − θv‖ <= tol·|θ|``.
        max_iters: products allowed per eigenpair (a RuntimeWarning when exhausted).
        v0: start vector for the first pair (see :func:`~overparam.hessian.lanczos`).
        generator: for the random start vectors.

    Returns:
        :class:`~overparam.hessian.Eigen`, values in the order found (decreasing magnitude).

    Reference: Yao, Gholami, Keutzer and Mahoney, "PyHessian: neural networks through the lens of
    the Hessian", IEEE BigData 2020 (the baseline this reproduces).

    Example:
        >>> A = torch.diag(torch.tensor([4., -2., 1.], dtype=torch.float64))
        >>> e = power_iteration(A, k=2, tol=1e-10, generator=0)
        >>> e.values, e.matrix().shape
        (tensor([ 4., -2.], dtype=torch.float64), torch.Size([3, 2]))
    """
    op = as_operator(A)
    sp = op.space  # sharded vectors: each rank holds op.n of the sp.n coordinates
    n, red = op.global_n, (None if sp is None else sp.reduce)
    if not isinstance(k, int) or not 1 <= k <= n:
        raise ValueError(f"k must be an int in [1, n={n}], got {k!r}")
    check_real(tol, "tol", above=0, finite=True)
    check_rank(max_iters, name="max_iters")  # an int >= 1
    g = measurement_generator(generator)
    Q = torch.zeros(op.n, 0, dtype=op.dtype, device=op.device)
    values, residuals, count, converged = [], [], 0, True
    for i in range(k):
        v = start_vector(op, v0 if i == 0 else None, g)
        v = linalg.orthogonalize(v, Q, reduce=red)[0]
        v = v / sharded.norm(sp, v)
        ok = False
        for _ in range(max_iters):
            w = linalg.orthogonalize(op.matvec(v), Q, reduce=red)[0]
            count += 1
            theta = sharded.reduce(sp, torch.dot(v, w))
            r = sharded.norm(sp, w - theta * v)
            nw = sharded.norm(sp, w)
            if float(r) <= tol * abs(float(theta)) or float(nw) == 0:
                ok = True
                break
            v = w / nw
        converged &= ok
        values.append(theta)
        residuals.append(r)
        Q = torch.cat([Q, v.unsqueeze(1)], dim=1)
    if not converged:
        warnings.warn(f"power_iteration did not reach tol={tol:.1e} within max_iters={max_iters}", RuntimeWarning,
                      stacklevel=2)
    vectors = vec.unflatten(Q.mT.contiguous(), op.like)
    return Eigen(torch.stack(values), vectors, torch.stack(residuals), count, converged)
