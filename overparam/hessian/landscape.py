"""Loss-landscape slices: the loss on a 1-D line ``L(θ + α d)`` or a 2-D plane
``L(θ + α d₁ + β d₂)`` through the current parameters, along the top Hessian eigenvectors,
random directions (optionally filter-normalised, Li et al. 2018) or directions you give.

Every loss is a :func:`torch.func.functional_call` on shifted copies of the parameters: the
model's own parameters, buffers and flags are never touched.

Example:
    >>> import torch
    >>> from overparam.testing import tanh_mlp
    >>> net = tanh_mlp([3, 4, 1], generator=0)
    >>> x, y = torch.randn(16, 3, dtype=torch.float64), torch.randn(16, 1, dtype=torch.float64)
    >>> ls = loss_landscape(net, torch.nn.functional.mse_loss, (x, y), dims=2, steps=5, span=0.5, generator=0)
    >>> ls.alphas.shape, ls.betas.shape, ls.values.shape
    (torch.Size([5]), torch.Size([5]), torch.Size([5, 5]))
    >>> bool(ls.values[2, 2] == ls.center)      # the middle of the grid is θ itself
    True
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..backend import vec
from ..backend.checks import check_int, check_real
from ..backend.random import GeneratorLike, gaussian, measurement_generator
from ..backend.select import Spec
from ._model import Objective, exactly, rng_guard
from .hvp import HessianOperator
from .lanczos import lanczos

__all__ = ["Landscape", "loss_landscape", "plot_landscape", "filter_normalize"]


@dataclass
class Landscape:
    """A 1-D or 2-D slice of the loss.

    Attributes:
        alphas: ``(steps,)`` offsets along the first direction.
        betas: ``(steps,)`` offsets along the second direction (2-D), else None.
        values: ``(steps,)`` losses ``L(θ + α_i d₁)``, or ``(steps, steps)`` with
            ``values[i, j] = L(θ + α_i d₁ + β_j d₂)``.
        directions: the directions, parameter-shaped (one or two tuples).
        names: the parameters moved, in order.
        center: the loss at ``θ`` (0-dim).
        kind: ``"hessian"``, ``"random"`` or ``"given"``.
        eigenvalues: the Hessian eigenvalues of the directions (``kind="hessian"``), else None.

    Example:
        >>> net = torch.nn.Linear(2, 1).double()
        >>> data = (torch.randn(8, 2, dtype=torch.float64), torch.randn(8, 1, dtype=torch.float64))
        >>> ls = loss_landscape(net, torch.nn.functional.mse_loss, data, steps=5, generator=0)
        >>> ls.kind, ls.values.shape, ls.betas is None, ls.names
        ('hessian', torch.Size([5]), True, ['weight', 'bias'])
    """

    alphas: Tensor
    betas: Tensor | None
    values: Tensor
    directions: tuple[vec.Vec, ...]
    names: list[str]
    center: Tensor
    kind: str
    eigenvalues: Tensor | None = None


def filter_normalize(d: Sequence[Tensor], theta: Sequence[Tensor]) -> vec.Vec:
    """Li et al.'s filter normalisation: every filter (slice along dim 0) of a parameter with
    ``ndim >= 2`` is rescaled to the norm of the same filter of ``theta``; 1-D parameters
    (biases, norm gains) get direction 0, as in Li et al. (2018).

    Example:
        >>> d = filter_normalize([torch.ones(2, 2), torch.ones(3)], [torch.tensor([[3., 4.], [0., 1.]]), torch.ones(3)])
        >>> d[0].norm(dim=1).round(decimals=6).tolist(), d[1].tolist()     # filter norms 5 and 1; the 1-D parameter: 0
        ([5.0, 1.0], [0.0, 0.0, 0.0])
    """
    out = []
    for t, p in zip(d, theta):
        if p.ndim < 2:
            out.append(torch.zeros_like(t))
            continue
        dn = torch.linalg.vector_norm(t.reshape(t.shape[0], -1), dim=1)
        pn = torch.linalg.vector_norm(p.reshape(p.shape[0], -1), dim=1)
        scale = torch.where(dn > 0, pn / torch.where(dn > 0, dn, torch.ones_like(dn)), torch.zeros_like(dn))
        out.append(t * scale.reshape(-1, *([1] * (t.ndim - 1))))
    return tuple(out)


def _grid(span, steps: int, dtype, device) -> Tensor:
    if isinstance(span, (tuple, list)):
        if len(span) != 2:
            raise ValueError(f"span must be a number a > 0 (grid [-a, a]) or a pair (lo, hi), got {span!r}")
        lo, hi = (check_real(s, "span", finite=True) for s in span)
        if not lo < hi:
            raise ValueError(f"span must have lo < hi, got {span!r}")
    else:
        hi = check_real(span, "span", above=0.0, finite=True)
        lo = -hi
    return torch.linspace(lo, hi, steps, dtype=dtype, device=device)


def _directions(obj: Objective, directions, dims: int, hess_kwargs: dict, g: torch.Generator):
    like = tuple(t.shape for t in obj.theta)
    if isinstance(directions, str):
        if directions == "random":
            return [tuple(gaussian(s, generator=g, dtype=obj.theta[0].dtype, device=obj.device) for s in like)
                    for _ in range(dims)], "random", None
        if directions == "hessian":
            H = HessianOperator(obj.model, obj.loss_fn, obj.batches, params=exactly(obj.names), **hess_kwargs)
            eig = lanczos(H, k=dims, which="LA", generator=g)
            return list(vec.unstack(eig.vectors)), "hessian", eig.values
        raise ValueError(f"directions must be 'hessian', 'random' or a list of parameter-shaped vectors, got {directions!r}")
    ds = list(directions) if isinstance(directions, (list, tuple)) else None
    if ds is None or len(ds) != dims:
        raise ValueError(f"directions must be 'hessian', 'random' or a list of {dims} parameter-shaped or flat "
                         f"vectors (dims={dims})")
    n = sum(s.numel() for s in like)
    out = []
    for i, d in enumerate(ds):
        if isinstance(d, Tensor) and d.ndim == 1 and d.shape[0] == n:
            d = vec.unflatten(d, like)                   # a flat (n,) vector
        dv = vec.as_vec(d, name=f"directions[{i}]")
        if vec.shapes(dv) != like:
            raise ValueError(f"directions[{i}] has shapes {vec.shapes(dv)}, the selected parameters {list(like)}")
        if any(t.dtype != obj.theta[0].dtype or not bool(torch.isfinite(t).all()) for t in dv):
            raise ValueError(f"directions[{i}] must be finite with the parameters' dtype {obj.theta[0].dtype}")
        out.append(tuple(t.to(obj.device) for t in dv))
    return out, "given", None


def loss_landscape(model: nn.Module, loss_fn: Callable, data, *, params: Spec = None, exclude: Spec = None,
                   directions="hessian", dims: int = 1, steps: int = 21, span=1.0, normalize: str | None = None,
                   generator: GeneratorLike = None, **kwargs) -> Landscape:
    """The loss on a line or plane through the model's parameters.

    ``generator=None`` never advances the global RNG (the measurement rule, docs/index.md).

    Args:
        model, loss_fn, data, params, exclude: as for :func:`~overparam.hessian.hessian`; only
            the selected parameters move.
        directions: ``"hessian"`` (the top ``dims`` eigenvectors of the Hessian, unit norm, by
            :func:`~overparam.hessian.lanczos`), ``"random"`` (Gaussian), or a list of ``dims``
            vectors, parameter-shaped or flat ``(n,)``.
        dims: 1 (a line) or 2 (a plane).
        steps: grid points per axis (``steps`` or ``steps²`` loss evaluations).
        span: ``a > 0`` for the grid ``[-a, a]``, or ``(lo, hi)``.
        normalize: None (directions as they are) or ``"filter"`` (:func:`filter_normalize`,
            the usual choice for random directions).
        generator: for random directions and the Lanczos start vector.
        **kwargs: options of :func:`~overparam.hessian.hessian` for ``directions="hessian"``
            (``backend``, ``reduction`` ...), and ``reduction`` for the loss.

    Returns:
        :class:`Landscape`.

    Reference: Li, Xu, Taylor, Studer and Goldstein, "Visualizing the loss landscape of neural
    nets", NeurIPS 2018.

    Example (a quadratic loss along its top eigenvector: ``L(θ + α d) = L(θ) + α gᵀd + ½ λ α²``):
        >>> net = torch.nn.Linear(2, 1, bias=False).double()
        >>> x, y = torch.randn(16, 2, dtype=torch.float64), torch.randn(16, 1, dtype=torch.float64)
        >>> ls = loss_landscape(net, torch.nn.functional.mse_loss, (x, y), steps=3, span=1.0, generator=0)
        >>> curvature = ls.values[0] + ls.values[2] - 2 * ls.center  # second difference, step 1
        >>> torch.allclose(curvature, ls.eigenvalues[0])
        True
    """
    if dims not in (1, 2) or isinstance(dims, bool):
        raise ValueError(f"dims must be 1 or 2, got {dims!r}")
    check_int(steps, "steps", at_least=2)
    if normalize not in (None, "filter"):
        raise ValueError(f"normalize must be None or 'filter', got {normalize!r}")
    obj = Objective.build(model, loss_fn, data, params, exclude=exclude, reduction=kwargs.get("reduction", "mean"))
    grid = _grid(span, steps, obj.theta[0].dtype, obj.device)
    g = measurement_generator(generator)
    ds, kind, values = _directions(obj, directions, dims, kwargs, g)
    if normalize == "filter":
        ds = [filter_normalize(d, obj.theta) for d in ds]
    with torch.no_grad(), rng_guard(obj.device):
        center = obj.total_loss(obj.theta).detach()

        def at(a, b=None) -> Tensor:
            th = vec.axpy(a, ds[0], obj.theta) if a != 0 else obj.theta
            if b is not None and b != 0:
                th = vec.axpy(b, ds[1], th)
            return obj.total_loss(th).detach()

        if dims == 1:
            out = torch.stack([at(float(a)) for a in grid])
        else:
            out = torch.stack([torch.stack([at(float(a), float(b)) for b in grid]) for a in grid])
    return Landscape(grid, grid.clone() if dims == 2 else None, out, tuple(ds), list(obj.names), center, kind, values)


def plot_landscape(landscape: Landscape, ax=None, *, levels: int = 20, **kwargs):
    """Plot a :class:`Landscape`: a line (1-D) or filled contours (2-D); returns the axes, or
    None with a warning when matplotlib is not installed (``pip install 'overparam[plot]'``).

    Reference: H. Li et al., "Visualizing the Loss Landscape of Neural Nets" (NeurIPS 2018)

    Example:
        >>> ls = Landscape(torch.linspace(-1, 1, 3), None, torch.tensor([1., 0., 1.]), (), [], torch.tensor(0.), "given")
        >>> plot_landscape(ls) is not None   # doctest: +SKIP
        True
    """
    if not isinstance(landscape, Landscape):
        raise TypeError(f"landscape must be a Landscape, got {type(landscape).__name__}")
    check_int(levels, "levels")
    if ax is None:
        try:
            import matplotlib.pyplot as plt
        except ImportError:
            warnings.warn("plot_landscape needs matplotlib, which is not installed: no plot "
                          "(pip install 'overparam[plot]')", RuntimeWarning, stacklevel=2)
            return None
        _, ax = plt.subplots(figsize=(5, 4))
    a, v = landscape.alphas.detach().cpu(), landscape.values.detach().cpu()
    if landscape.betas is None:
        ax.plot(a, v, **kwargs)
        ax.set_xlabel("α")
        ax.set_ylabel("loss")
    else:
        b = landscape.betas.detach().cpu()
        cs = ax.contourf(a, b, v.mT, levels=levels, **kwargs)  # values[i, j] is (α_i, β_j): x = α, y = β
        ax.figure.colorbar(cs, ax=ax)
        ax.set_xlabel("α")
        ax.set_ylabel("β")
    return ax
