"""Many instances of one problem as one tensor program: a leading batch dimension.

Phase diagrams (error against rank, κ, init scale, step size, seed) need hundreds of small
instances. :class:`Batched` stacks ``B`` instances of one problem class (any of this package's
dataclass problems: :class:`MatrixSensing`, :class:`RobustPCA`, :class:`DeepLinearRegression`,
:class:`TeacherStudent`, :class:`MatrixCompletion` with one observed set: :func:`shared_completion` …) and evaluates
``loss``, ``relative_error`` and ``product`` of factors ``(B, …)`` for all of them at once with
:func:`torch.func.vmap` over the single-instance method — so instance ``b`` of a batched
computation is exactly the single-instance computation on ``problems[b]``.

A tensor field that is the *same object* in every instance (e.g. the measurement ensemble ``A``
of sensing problems built with :func:`shared_sensing`) is kept once and broadcast: batched
sensing is then one matrix product ``(B, n²) @ (n², m)`` per step instead of ``B`` matrix-vector
products. Any other tensor field is stacked; fields of different shapes are refused (a
ValueError naming the field: nothing is padded), as are differing non-tensor fields (``rank``,
``symmetric``, ``loss_kind``, ``p``, …).

Example:
    >>> import torch, overparam as op
    >>> Ps = [op.problems.sensing(n=6, r=2, m=60, kappa=k, generator=0) for k in (1.0, 4.0)]
    >>> B = op.problems.Batched(Ps)
    >>> X = B.init("small", rank=3, generators=[1, 2])
    >>> X.shape, B.loss(X).shape
    (torch.Size([2, 6, 3]), torch.Size([2]))
    >>> bool(torch.allclose(B.loss(X)[1], Ps[1].loss(X[1]), rtol=1e-14, atol=0))
    True
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor
from torch.func import vmap

from ..backend.random import GeneratorLike
from .completion import MatrixCompletion, completion
from .sensing import MatrixSensing, sensing

__all__ = ["Batched", "shared_sensing", "shared_completion"]

Factors = Any  # a tensor (B, ...), a tuple of them, or a list of them (deep factors)


class Batched:
    """``B`` instances of one problem dataclass evaluated together (instance ``b`` = ``problems[b]``).

    Args:
        problems: a non-empty sequence of instances of one dataclass problem type.

    Attributes:
        problems: the instances (a tuple; not copied).
        size: ``B``.
        stacked: names of the fields stacked along a new leading dimension.
        shared: names of the tensor fields kept once (the same object in every instance).

    Factors are passed with a leading batch dimension: ``X (B, n, k)``, ``(L (B, n1, k), R (B, n2, k))``,
    or for deep linear a list of ``(B, d_i, d_{i-1})`` tensors — each entry of the single-instance
    argument gets a leading ``B``.

    Example:
        >>> B = Batched([sensing(n=4, r=1, m=20, generator=s) for s in (0, 1)])
        >>> len(B), B.stacked, B.shared
        (2, ('A', 'y', 'M_star'), ())
        >>> B2 = shared_sensing(4, 1, 20, seeds=[0, 1])  # one measurement ensemble, kept once
        >>> B2.shared
        ('A',)
    """

    def __init__(self, problems: Sequence[Any]) -> None:
        problems = tuple(problems) if not isinstance(problems, (str, bytes)) else problems
        if not isinstance(problems, tuple) or not problems:
            raise ValueError("problems must be a non-empty sequence of problem instances")
        first = problems[0]
        if not dataclasses.is_dataclass(first) or isinstance(first, type):
            raise TypeError(f"problems must be problem dataclass instances, got {type(first).__name__}")
        for i, p in enumerate(problems):
            if type(p) is not type(first):
                raise TypeError(f"problems[{i}] is a {type(p).__name__}, problems[0] a {type(first).__name__}: "
                                "a batch holds one problem type")
        self.problems = problems
        self.size = len(problems)
        self._template = first
        self._stacked: dict[str, Tensor] = {}
        self.shared: tuple[str, ...] = ()
        shared = []
        for f in dataclasses.fields(first):
            vals = [getattr(p, f.name) for p in problems]
            v0 = vals[0]
            if isinstance(v0, Tensor):
                if all(v is v0 for v in vals):
                    shared.append(f.name)
                    continue
                for i, v in enumerate(vals):
                    if not isinstance(v, Tensor) or v.shape != v0.shape or v.dtype != v0.dtype or v.device != v0.device:
                        what = (f"a {type(v).__name__}" if not isinstance(v, Tensor)
                                else f"shape {tuple(v.shape)} {v.dtype} on {v.device}")
                        raise ValueError(f"field {f.name!r} of problems[{i}] has {what}, problems[0] shape "
                                         f"{tuple(v0.shape)} {v0.dtype} on {v0.device}: batched instances need equal "
                                         "shapes (nothing is padded)")
                self._stacked[f.name] = torch.stack(vals)
            else:
                for i, v in enumerate(vals):
                    if isinstance(v, Tensor) or v != v0:
                        raise ValueError(f"field {f.name!r} differs between problems[0] ({v0!r}) and problems[{i}] "
                                         f"({v!r}): a batch shares its non-tensor settings")
        self.shared = tuple(shared)
        self.stacked = tuple(self._stacked)

    def __len__(self) -> int:
        return self.size

    def __repr__(self) -> str:
        return (f"Batched({type(self._template).__name__} × {self.size}, stacked={list(self.stacked)}, "
                f"shared={list(self.shared)})")

    def _call(self, method: str, *args: Any) -> Any:
        template = self._template

        def one(fields: dict[str, Tensor], *a: Any) -> Any:
            return getattr(dataclasses.replace(template, **fields), method)(*a)

        return vmap(one)(self._stacked, *args)

    def loss(self, X: Factors) -> Tensor:
        """Per-instance losses ``(B,)`` of factors with a leading batch dimension.

        Example:
            >>> Ps = [sensing(n=4, r=1, m=20, generator=s) for s in (0, 1)]
            >>> B = Batched(Ps)
            >>> X = B.init("small", rank=2, generators=[2, 3])  # (B, n, k)
            >>> L = B.loss(X)
            >>> L.shape, torch.allclose(L, torch.stack([Ps[0].loss(X[0]), Ps[1].loss(X[1])]))
            (torch.Size([2]), True)
        """
        return self._call("loss", X)

    def relative_error(self, X: Factors) -> Tensor:
        """Per-instance relative errors ``(B,)``.

        Example:
            >>> Ps = [sensing(n=4, r=1, m=20, generator=s) for s in (0, 1)]
            >>> B = Batched(Ps)
            >>> B.relative_error(torch.zeros(2, 4, 1, dtype=torch.float64))
            tensor([1., 1.], dtype=torch.float64)
        """
        return self._call("relative_error", X)

    def product(self, X: Factors) -> Tensor:
        """Per-instance products ``(B, …)`` (for the matrix problems ``XXᵀ`` / ``LRᵀ``).

        Example:
            >>> Ps = [sensing(n=4, r=1, m=20, generator=s) for s in (0, 1)]
            >>> B = Batched(Ps)
            >>> X = torch.ones(2, 4, 3, dtype=torch.float64)
            >>> B.product(X).shape, float(B.product(X)[1, 0, 0])
            (torch.Size([2, 4, 4]), 3.0)
        """
        return self._call("product", X)

    def init(self, kind: str = "small", *, generators: Sequence[GeneratorLike] | None = None, **kwargs: Any) -> Factors:
        """Each instance's ``init(kind, generator=generators[b], **kwargs)``, stacked along dim 0.

        ``generators=None`` gives every instance ``generator=None`` (draws from torch's default
        generator in instance order, as a loop over the instances would).

        Example:
            >>> Ps = [sensing(n=4, r=1, m=20, generator=s) for s in (0, 1)]
            >>> B = Batched(Ps)
            >>> L, R = Batched([sensing(n=4, r=1, m=20, symmetric=False, generator=s) for s in (0, 1)]).init(
            ...     "small", rank=2, generators=[5, 6])
            >>> L.shape, R.shape
            (torch.Size([2, 4, 2]), torch.Size([2, 4, 2]))
            >>> torch.equal(B.init(generators=[5, 6])[1], Ps[1].init(generator=6))
            True
        """
        if generators is None:
            generators = [None] * self.size
        if len(generators) != self.size:
            raise ValueError(f"generators must have one entry per instance ({self.size}), got {len(generators)}")
        inits = [p.init(kind, generator=g, **kwargs) for p, g in zip(self.problems, generators)]
        return _stack(inits)


def _stack(items: list[Any]) -> Any:
    first = items[0]
    if isinstance(first, Tensor):
        return torch.stack(items)
    if isinstance(first, (tuple, list)):
        out = [_stack([it[i] for it in items]) for i in range(len(first))]
        return tuple(out) if isinstance(first, tuple) else out
    raise TypeError(f"cannot stack initial factors of type {type(first).__name__}")


def shared_sensing(n: int, r: int, m: int, *, seeds: Sequence[int], kappa: float | Sequence[float] = 1.0,
                   measurement_seed: int = 0, **kwargs: Any) -> Batched:
    """Sensing instances sharing one measurement ensemble ``A``, differing in their ground truths.

    Instance ``b`` is ``sensing(n, r, m, kappa=kappa[b], generator=seeds[b])`` with its ``A``
    replaced by the ensemble of ``sensing(..., generator=measurement_seed)`` (and ``y`` recomputed):
    a single-instance run on ``batch.problems[b]`` is the reference of batched instance ``b``.

    Args:
        n, r, m: shape, true rank and number of measurements (as :func:`sensing`).
        seeds: one construction seed per instance (ground truth ``M*``).
        kappa: one condition number for all, or one per instance.
        measurement_seed: seed of the shared ``A``.
        **kwargs: further :func:`sensing` options (``symmetric``, ``n2``, ``loss``, ``dtype``, ``device``);
            outliers are not supported here (each instance would need its own ``y`` corruption).

    Example:
        >>> B = shared_sensing(8, 2, 100, seeds=[0, 1, 2], kappa=[1.0, 2.0, 4.0])
        >>> B.shared, B.stacked
        (('A',), ('y', 'M_star'))
    """
    seeds, kappas = _seeds_and_kappas(seeds, kappa)
    for bad in ("outliers", "generator"):
        if bad in kwargs:
            raise ValueError(f"shared_sensing does not take {bad}=")
    A = sensing(n, r, m, generator=measurement_seed, **kwargs).A
    out: list[MatrixSensing] = []
    for s, k in zip(seeds, kappas):
        P = sensing(n, r, 1, kappa=k, generator=s, **kwargs)
        M = P.M_star
        y = (A.reshape(m, -1) @ M.reshape(-1))
        out.append(dataclasses.replace(P, A=A, y=y))
    return Batched(out)


def shared_completion(n: int, r: int, p: float, *, seeds: Sequence[int], kappa: float | Sequence[float] = 1.0,
                      mask_seed: int = 0, **kwargs: Any) -> Batched:
    """Completion instances sharing one observed set ``Ω``, differing in their ground truths.

    Instance ``b`` is ``completion(n, r, p, kappa=kappa[b], generator=seeds[b])`` with its ``Ω`` (``rows``,
    ``cols``) replaced by that of ``completion(..., generator=mask_seed)`` and ``values`` read from its
    own ``M*``; independent Bernoulli sets would differ in size and could not share one tensor program.

    Args:
        n, r, p: shape, true rank and sampling probability (as :func:`completion`).
        seeds: one construction seed per instance (ground truth ``M*``).
        kappa: one condition number for all, or one per instance.
        mask_seed: seed of the shared observed set.
        **kwargs: further :func:`completion` options (``n2``, ``symmetric``, ``loss``, ``dtype``, ``device``).

    Example:
        >>> B = shared_completion(8, 2, 0.5, seeds=[0, 1], kappa=[1.0, 4.0])
        >>> B.shared, B.stacked
        (('rows', 'cols'), ('M_star', 'values'))
    """
    seeds, kappas = _seeds_and_kappas(seeds, kappa)
    if "generator" in kwargs:
        raise ValueError("shared_completion does not take generator=")
    ref = completion(n, r, p, generator=mask_seed, **kwargs)
    out: list[MatrixCompletion] = []
    for s, k in zip(seeds, kappas):
        P = completion(n, r, p, kappa=k, generator=s, **kwargs)
        out.append(dataclasses.replace(P, rows=ref.rows, cols=ref.cols, values=P.M_star[ref.rows, ref.cols]))
    return Batched(out)


def _seeds_and_kappas(seeds: Sequence[int], kappa: float | Sequence[float]) -> tuple[list[int], list[float]]:
    seeds = list(seeds)
    if not seeds:
        raise ValueError("seeds must name at least one instance")
    kappas = [float(kappa)] * len(seeds) if isinstance(kappa, (int, float)) else list(kappa)
    if len(kappas) != len(seeds):
        raise ValueError(f"kappa must be a number or have one entry per seed ({len(seeds)}), got {len(kappas)}")
    return seeds, kappas
