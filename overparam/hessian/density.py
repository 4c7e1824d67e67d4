"""Spectral density by stochastic Lanczos quadrature (SLQ; Golub & Meurant, Ubaru et al. 2017,
Ghorbani et al. 2019).

For each unit probe ``v``, ``m`` Lanczos steps (full re-orthogonalization) give a tridiagonal
``T = S diag(θ) Sᵀ``; the Gauss quadrature ``Σ_i τ_i δ(t − θ_i)`` with ``τ_i = S[0, i]²``
matches ``vᵀ δ(t − A) v`` on every polynomial of degree ``≤ 2m − 1``. The density estimate is
the probe average, smoothed by a Gaussian kernel of width ``sigma`` onto a grid.

Example:
    >>> import torch
    >>> A = torch.diag(torch.tensor([-1., 0., 2.], dtype=torch.float64))
    >>> q = slq(A, probes=2, steps=3, generator=0)
    >>> q.nodes[0].round(decimals=8).tolist(), q.weights.sum(dim=1).round(decimals=8).tolist()
    ([-1.0, 0.0, 2.0], [1.0, 1.0])
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from ..backend import linalg, sharded
from ..backend.random import GeneratorLike, gaussian, measurement_generator, probe
from ..backend.checks import check_real
from .operators import Operator, as_operator
from .trace import _check_block

__all__ = ["Quadrature", "Density", "slq", "density", "plot_density"]


@dataclass
class Quadrature:
    """Gauss quadrature rules, one per probe: ``nodes (P, m)`` and ``weights (P, m)`` (rows sum to 1).

    Example (the rules integrate low-degree polynomials exactly: ``mean_p Σ_i τ_pi θ_pi ≈ tr A / n``):
        >>> A = torch.diag(torch.arange(1., 9., dtype=torch.float64))
        >>> q = slq(A, probes=4, steps=4, generator=0)
        >>> q.nodes.shape, q.weights.shape, q.n_matvecs
        (torch.Size([4, 4]), torch.Size([4, 4]), 16)
        >>> round(float((q.weights * q.nodes).sum(1).mean()), 8)  # Rademacher probes: vᵀAv/n = tr A/n exactly
        4.5
    """

    nodes: Tensor
    weights: Tensor
    n_matvecs: int


@dataclass
class Density:
    """A smoothed spectral density ``values`` on ``grid`` (both ``(G,)``), from ``nodes``/``weights``.

    With ``scale="log"`` the grid is ``log10|λ|`` and the density is that of ``log10|λ|``.

    Example:
        >>> rho = density(torch.diag(torch.tensor([-1., 0., 2.], dtype=torch.float64)), probes=2, steps=3,
        ...               sigma=0.05, grid=200, generator=0)
        >>> rho.grid.shape, rho.values.shape, rho.scale
        (torch.Size([200]), torch.Size([200]), 'linear')
        >>> dx = float(rho.grid[1] - rho.grid[0])
        >>> round(float(rho.values.sum()) * dx, 2)  # integrates to one
        1.0
    """

    grid: Tensor
    values: Tensor
    nodes: Tensor
    weights: Tensor
    sigma: float
    scale: str
    n_matvecs: int


def _lanczos_block(op: Operator, V0: Tensor, steps: int, g: torch.Generator) -> tuple[Tensor, Tensor]:
    """Independent Lanczos runs from the unit rows of ``V0 (B, n)``; returns ``alpha (B, m)``, ``beta (B, m-1)``."""
    B, n = V0.shape
    sp = op.space  # sharded vectors: n is this rank's share of sp.n
    basis = torch.zeros(B, steps, n, dtype=op.dtype, device=op.device)
    alpha = torch.zeros(B, steps, dtype=op.dtype, device=op.device)
    beta = torch.zeros(B, max(steps - 1, 0), dtype=op.dtype, device=op.device)
    v = V0
    eps = torch.finfo(op.dtype).eps
    for j in range(steps):
        basis[:, j] = v
        w = op.matmat(v.mT).mT
        alpha[:, j] = sharded.reduce(sp, (w * v).sum(dim=1))
        if j == steps - 1:
            break
        scale = sharded.norm(sp, w, dim=1)
        red = None if sp is None else sp.reduce  # full re-orthogonalization (CGS2)
        w, _ = linalg.orthogonalize(w, basis[:, : j + 1].mT, reduce=red)
        b = sharded.norm(sp, w, dim=1)
        dead = b <= 100 * eps * scale.clamp(min=1e-300)
        if bool(dead.any()):  # invariant subspace: continue with a fresh orthogonal vector, coupling 0
            r = sharded.localize(sp, gaussian((B, op.global_n), generator=g, dtype=op.dtype,
                                              device=op.device))
            r, _ = linalg.orthogonalize(r, basis[:, : j + 1].mT, reduce=red)
            r = r / sharded.norm(sp, r, dim=1, keepdim=True)
            b = torch.where(dead, torch.zeros_like(b), b)
            v = torch.where(dead.unsqueeze(1), r, w / b.clamp(min=1e-300).unsqueeze(1))
        else:
            v = w / b.unsqueeze(1)
        beta[:, j] = b
    return alpha, beta


def slq(A, probes: int | Tensor = 10, steps: int = 80, *, kind: str = "rademacher", block: int | None = None,
        generator: GeneratorLike = None) -> Quadrature:
    """Stochastic Lanczos quadrature rules.

    ``generator=None`` never advances the global RNG (the measurement rule, docs/index.md).

    Args:
        A: symmetric operator / dense tensor (see :func:`~overparam.hessian.as_operator`).
        probes: number of random probes, or explicit probes ``(P, n)`` (normalized here).
        steps: Lanczos steps ``m`` per probe (``1 <= m <= n``).
        kind: ``"rademacher"`` or ``"gaussian"`` random probes.
        block: probes run together through ``matmat`` (default: all when the bases fit in
            256 MiB, else 1).
        generator: for the probes.

    Returns:
        :class:`Quadrature` with ``nodes``/``weights`` ``(P, m)``.

    Reference: Ubaru, Chen and Saad, "Fast estimation of tr(f(A)) via stochastic Lanczos
    quadrature", SIAM J. Matrix Anal. Appl. 2017; Ghorbani, Krishnan and Xiao, "An investigation
    into neural net optimization via Hessian eigenvalue density", ICML 2019.

    Example (with ``steps = n`` the nodes are the eigenvalues):
        >>> q = slq(torch.diag(torch.tensor([-1., 0., 2.], dtype=torch.float64)), probes=2, steps=3, generator=0)
        >>> q.nodes[0].round(decimals=8).tolist(), q.weights.sum(dim=1).round(decimals=8).tolist()
        ([-1.0, 0.0, 2.0], [1.0, 1.0])
    """
    op = as_operator(A)
    sp = op.space  # sharded vectors: explicit probes are this rank's coordinates, (P, op.n)
    n = op.global_n
    if not isinstance(steps, int) or not 1 <= steps <= n:
        raise ValueError(f"steps must be an int in [1, n={n}], got {steps!r}")
    g = measurement_generator(generator)
    if isinstance(probes, Tensor):
        if probes.ndim != 2 or probes.shape[1] != op.n:
            raise ValueError(f"explicit probes must have shape (P, {op.n}), got {tuple(probes.shape)}")
        V = probes.to(dtype=op.dtype, device=op.device)
    elif isinstance(probes, int) and probes >= 1:
        V = sharded.localize(sp, probe(kind, (probes, n), generator=g, dtype=op.dtype, device=op.device))
    else:
        raise ValueError(f"probes must be a positive int or a (P, n) tensor, got {probes!r}")
    norms = sharded.norm(sp, V, dim=1, keepdim=True)
    if bool((norms == 0).any()):
        raise ValueError("a probe is zero")
    V = V / norms
    P = V.shape[0]
    if block is None:
        block = P if P * steps * n * V.element_size() <= 256 * 2**20 else 1  # n global: same on every rank
    _check_block(block)
    alphas, betas = [], []
    for s in range(0, P, block):
        a, b = _lanczos_block(op, V[s: s + block], steps, g)
        alphas.append(a)
        betas.append(b)
    theta, S = linalg.tridiag_eigh(torch.cat(alphas), torch.cat(betas))
    return Quadrature(theta, S[:, 0, :].square(), P * steps)


def density(A, probes: int | Tensor = 10, steps: int = 80, *, sigma: float | None = None, grid: Tensor | int = 1000,
            scale: str = "linear", floor: float = 1e-12, generator: GeneratorLike = None, **kwargs) -> Density:
    """Smoothed spectral density ``ρ(t) = mean_p Σ_i τ_pi N(t; θ_pi, σ²)``.

    ``generator=None`` never advances the global RNG (the measurement rule, docs/index.md).

    Args:
        A, probes, steps, generator, kwargs: as in :func:`slq`.
        sigma: kernel width (default 1% of the node range, in the variable of ``scale``).
        grid: a ``(G,)`` tensor of points, or the number of points of a grid spanning the nodes
            ± 6σ (then the density integrates to 1 up to the trapezoid rule's error).
        scale: ``"linear"`` (density of λ) or ``"log"`` (density of ``log10(|λ| + floor)``).

    Reference: S. Ubaru, J. Chen & Y. Saad, "Fast Estimation of tr(f(A)) via Stochastic Lanczos Quadrature" (SIMAX
        2017); B. Ghorbani, S. Krishnan & Y. Xiao, "An Investigation into Neural Net Optimization via Hessian
        Eigenvalue Density" (ICML 2019)

    Example:
        >>> A = torch.diag(torch.linspace(0, 1, 50, dtype=torch.float64))
        >>> rho = density(A, probes=4, steps=20, generator=0)
        >>> round(float(torch.trapezoid(rho.values, rho.grid)), 6)
        1.0
    """
    if scale not in ("linear", "log"):
        raise ValueError(f"scale must be 'linear' or 'log', got {scale!r}")
    check_real(floor, "floor", at_least=0, finite=True)
    if sigma is not None:
        check_real(sigma, "sigma", above=0, finite=True)
    q = slq(A, probes, steps, generator=generator, **kwargs)
    x = q.nodes if scale == "linear" else torch.log10(q.nodes.abs() + floor)
    lo, hi = float(x.min()), float(x.max())
    if sigma is None:
        sigma = max(0.01 * (hi - lo), 1e-3 * max(abs(lo), abs(hi)), 1e-12)
    if isinstance(grid, int):
        if grid < 2:
            raise ValueError(f"grid must have at least 2 points, got {grid}")
        grid = torch.linspace(lo - 6 * sigma, hi + 6 * sigma, grid, dtype=x.dtype, device=x.device)
    elif not isinstance(grid, Tensor) or grid.ndim != 1:
        raise ValueError("grid must be an int or a 1-D tensor")
    t = grid.to(dtype=x.dtype, device=x.device)
    kern = torch.exp(-0.5 * ((t[:, None, None] - x[None]) / sigma) ** 2) / (sigma * math.sqrt(2 * math.pi))
    values = (kern * q.weights[None]).sum(dim=2).mean(dim=1)
    return Density(t, values, q.nodes, q.weights, float(sigma), scale, q.n_matvecs)


def plot_density(rho: Density, ax=None, *, logy: bool = True, **kwargs):
    """Plot a :class:`Density` (matplotlib is imported here, only when called); returns the axes.

    Args:
        rho: the density (``grid``, ``values`` ``(G,)``).
        ax: a matplotlib axes to draw on (default: a new figure).
        logy: a log-scale density axis (values clamped at 1e-12).
        kwargs: passed to ``ax.plot``.

    Example:
        >>> import matplotlib
        >>> matplotlib.use("Agg")
        >>> rho = density(torch.diag(torch.tensor([-1., 2.], dtype=torch.float64)), probes=1, steps=2, generator=0)
        >>> plot_density(rho).get_xlabel()
        'eigenvalue'
    """
    if ax is None:
        try:
            import matplotlib.pyplot as plt
        except ImportError as e:  # pragma: no cover - depends on the environment
            raise ImportError("plot_density needs matplotlib: pip install 'overparam[plot]'") from e
        _, ax = plt.subplots(figsize=(5, 3.5))
    y = rho.values.detach().cpu()
    if logy:
        y = y.clamp(min=1e-12)
        ax.semilogy(rho.grid.detach().cpu(), y, **kwargs)
    else:
        ax.plot(rho.grid.detach().cpu(), y, **kwargs)
    ax.set_xlabel("eigenvalue" if rho.scale == "linear" else r"$\log_{10}|\lambda|$")
    ax.set_ylabel("density")
    return ax
