"""Stochastic trace estimators: Hutchinson, Hutch++ and XTrace, each with a standard error.

* Hutchinson (1989): ``tr A ≈ mean_i v_iᵀ A v_i`` with Rademacher (or Gaussian) ``v_i``.
* Hutch++ (Meyer, Musco, Musco & Woodruff 2021): ``m/3`` products sketch the top range ``Q``
  of ``A``, ``tr(QᵀAQ)`` is exact on it, Hutchinson handles the deflated rest with ``m/3``
  probes. Much lower error when the spectrum decays.
* XTrace (Epperly, Tropp & Webber 2024): the exchangeable version of Hutch++ -- every probe is
  used both for the sketch and for the residual estimate, leaving one out each time; the
  ``m/2`` leave-one-out estimates give the standard error.

Example:
    >>> import torch
    >>> A = torch.diag(torch.arange(1., 11., dtype=torch.float64))
    >>> est = hutchinson(A, probes=8, generator=0)
    >>> float(est.mean), float(est.stderr)  # exact on a diagonal matrix with Rademacher probes
    (55.0, 0.0)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from ..backend import sharded
from ..backend.random import GeneratorLike, measurement_generator, probe
from .operators import Operator, as_operator

__all__ = ["Estimate", "hutchinson", "hutchpp", "xtrace", "trace", "probe_block"]


@dataclass
class Estimate:
    """A stochastic estimate ``mean ± stderr`` and the number of operator products it used.

    ``mean`` and ``stderr`` are 0-dim tensors for traces, tensors/vectors for diagonals.
    ``samples`` holds the per-probe estimates when they exist.

    Example:
        >>> est = hutchinson(torch.eye(4, dtype=torch.float64), probes=3, generator=0)
        >>> float(est.mean), float(est.stderr), est.n_matvecs, est.samples.shape
        (4.0, 0.0, 3, torch.Size([3]))
    """

    mean: Tensor
    stderr: Tensor
    n_matvecs: int
    samples: Tensor | None = None


def probe_block(op: Operator, m: int, kind: str, g: torch.Generator) -> Tensor:
    """``(n, m)`` i.i.d. probes of ``kind`` (see :func:`~overparam.backend.random.probe`) drawn from ``g``
    (sharded vectors, ``op.space``: this rank's rows of the single-process block)."""
    sp = op.space
    P = probe(kind, (m, op.global_n), generator=g, dtype=op.dtype, device=op.device)
    return sharded.localize(sp, P).mT


def _check_probes(probes: int, least: int, name: str) -> None:
    if isinstance(probes, bool) or not isinstance(probes, int) or probes < least:
        raise ValueError(f"probes must be an int >= {least} for {name}, got {probes!r}")


def _check_block(block: int) -> None:
    if isinstance(block, bool) or not isinstance(block, int) or block < 1:
        raise ValueError(f"block must be a positive int (products per matmat call), got {block!r}")


def _matmat_chunks(op: Operator, V: Tensor, block: int) -> Tensor:
    return torch.cat([op.matmat(V[:, s: s + block]) for s in range(0, V.shape[1], block)], dim=1)


def _stderr(samples: Tensor) -> Tensor:
    m = samples.shape[0]
    return samples.std(dim=0, correction=1) / math.sqrt(m) if m > 1 else torch.full_like(samples[0], float("nan"))


def hutchinson(A, probes: int = 100, *, kind: str = "rademacher", block: int = 16,
               generator: GeneratorLike = None) -> Estimate:
    """Hutchinson's estimator of ``tr A`` from ``probes`` products (``block`` at a time).

    ``generator=None`` never advances the global RNG (the measurement rule, docs/index.md).

    Returns:
        :class:`Estimate` with ``samples (probes,)`` = ``v_iᵀ A v_i``.

    Reference: Hutchinson, "A stochastic estimator of the trace of the influence matrix for
    Laplacian smoothing splines", Communications in Statistics 1989.

    Example:
        >>> A = torch.diag(torch.arange(1., 11., dtype=torch.float64))
        >>> float(hutchinson(A, probes=8, generator=0).mean)  # exact on a diagonal with Rademacher probes
        55.0
    """
    op = as_operator(A)
    _check_probes(probes, 1, "hutchinson")
    _check_block(block)
    V = probe_block(op, probes, kind, measurement_generator(generator))
    AV = _matmat_chunks(op, V, block)
    s = sharded.reduce(op.space, (V * AV).sum(dim=0))
    return Estimate(s.mean(), _stderr(s), probes, s)


def hutchpp(A, probes: int = 99, *, kind: str = "rademacher", block: int = 16,
            generator: GeneratorLike = None) -> Estimate:
    """Hutch++ with ``probes`` products in all: ``probes//3`` for the sketch ``S``, as many
    for ``A Q`` and the rest for Hutchinson on ``(I − QQᵀ)A(I − QQᵀ)``.

    The standard error is that of the Hutchinson part (the ``tr(QᵀAQ)`` part is exact).

    ``generator=None`` never advances the global RNG (the measurement rule, docs/index.md).

    Reference: Meyer, Musco, Musco and Woodruff, "Hutch++: optimal stochastic trace estimation",
    SOSA 2021.

    Example (exact when the sketch captures the whole range):
        >>> from overparam.testing import symmetric_with_spectrum
        >>> A = symmetric_with_spectrum([5., 3., 1.] + [0.] * 17, generator=0)
        >>> round(float(hutchpp(A, probes=12, generator=0).mean), 8)
        9.0
    """
    op = as_operator(A)
    _check_probes(probes, 3, "hutchpp")
    _check_block(block)
    g = measurement_generator(generator)
    s = probes // 3
    sp = op.space
    S = probe_block(op, s, kind, g)
    Q, _ = sharded.qr(sp, _matmat_chunks(op, S, block))
    top = sharded.reduce(sp, (Q * _matmat_chunks(op, Q, block)).sum())
    G = probe_block(op, probes - 2 * s, kind, g)
    G = G - Q @ sharded.reduce(sp, Q.mT @ G)
    rest = sharded.reduce(sp, (G * _matmat_chunks(op, G, block)).sum(dim=0))
    return Estimate(top + rest.mean(), _stderr(rest), probes, top + rest)


def _colsum(X: Tensor, Y: Tensor) -> Tensor:
    return (X * Y).sum(dim=0)


def xtrace(A, probes: int = 100, *, block: int = 16, generator: GeneratorLike = None) -> Estimate:
    """XTrace: ``probes//2`` Gaussian probes ``Ω``, ``Y = AΩ = QR``, ``Z = AQ``; the average of
    the ``probes//2`` leave-one-out estimates ``tr(Q_iᵀAQ_i) + ω_iᵀ(I − Q_iQ_iᵀ)A(I − Q_iQ_iᵀ)ω_i``,
    computed in closed form by downdating the QR factorization (Epperly et al., Alg. 1).

    Exact (to rounding) when ``rank A < probes//2``; ``samples`` are the leave-one-out estimates.

    ``generator=None`` never advances the global RNG (the measurement rule, docs/index.md).

    Reference: Epperly, Tropp and Webber, "XTrace: making the most of every sample in stochastic
    trace estimation", SIAM J. Matrix Anal. Appl. 2024.

    Example:
        >>> from overparam.testing import symmetric_with_spectrum
        >>> A = symmetric_with_spectrum([5., 3., 1.] + [0.] * 17, generator=0)
        >>> est = xtrace(A, probes=10, generator=0)
        >>> round(float(est.mean), 8), est.n_matvecs
        (9.0, 10)
    """
    op = as_operator(A)
    _check_probes(probes, 4, "xtrace")
    _check_block(block)
    m, sp = probes // 2, op.space
    if m >= op.global_n:
        raise ValueError(f"probes//2 = {m} must be < n = {op.global_n} for xtrace")
    Om = probe_block(op, m, "gaussian", measurement_generator(generator))
    Y = _matmat_chunks(op, Om, block)
    Q, R = sharded.qr(sp, Y)
    W = sharded.reduce(sp, Q.mT @ Om)
    S = torch.linalg.inv(R).mT
    S = S / torch.linalg.vector_norm(S, dim=0, keepdim=True)
    Z = _matmat_chunks(op, Q, block)
    H = sharded.reduce(sp, Q.mT @ Z)
    HW = H @ W
    T = sharded.reduce(sp, Z.mT @ Om)
    dSW, dSHS = _colsum(S, W), _colsum(S, H @ S)
    dTW, dWHW = _colsum(T, W), _colsum(W, HW)
    dSRmHW, dTmHRS = _colsum(S, R - HW), _colsum(T - H.mT @ W, S)
    ests = torch.trace(H) - dSHS + (dWHW - dTW + dTmHRS * dSW + dSW.square() * dSHS + dSW * dSRmHW)
    return Estimate(ests.mean(), _stderr(ests), 2 * m, ests)


def trace(A, probes: int = 100, *, method: str = "hutch++", generator: GeneratorLike = None, **kwargs) -> Estimate:
    """``tr A`` by ``method`` ∈ {"hutchinson", "hutch++", "xtrace"} with about ``probes`` products.

    ``generator=None`` never advances the global RNG (the measurement rule, docs/index.md).

    Reference: M. F. Hutchinson (1989); R. A. Meyer, C. Musco, C. Musco & D. P. Woodruff, "Hutch++: Optimal
        Stochastic Trace Estimation" (SOSA 2021); E. N. Epperly, J. A. Tropp & R. J. Webber, "XTrace: Making the
        Most of Every Sample in Stochastic Trace Estimation" (SIMAX 2024)

    Example:
        >>> A = torch.diag(torch.arange(1., 41., dtype=torch.float64))
        >>> est = trace(A, probes=30, method="hutch++", generator=0)
        >>> bool(abs(est.mean - 820) < 4 * est.stderr + 1e-9)
        True
    """
    fns = {"hutchinson": hutchinson, "hutch++": hutchpp, "xtrace": xtrace}
    if method not in fns:
        raise ValueError(f"method must be one of {sorted(fns)}, got {method!r}")
    return fns[method](A, probes, generator=generator, **kwargs)

