"""Curvature operators over data-parallel ranks: each rank's product on its own data, summed.

Every rank builds the operator on its shard of the data (a ``DistributedSampler`` DataLoader,
or any per-rank batches); :class:`DistributedOperator` multiplies the local product by the
rank's sample share ``n_r / N`` (loss ``"mean"``; 1 for ``"sum"``) and all-reduces it, so that
``A v`` is the product of the operator on all the data, identical on every rank. Every solver
of :mod:`overparam.hessian` (:func:`lanczos`, :func:`hutchinson`, :func:`hutchpp`,
:func:`xtrace`, :func:`slq`, :func:`lambda_max`, ...) runs on it unchanged, provided every rank
draws the same probes: pass the same ``generator`` seed on every rank
(:func:`overparam.backend.dist.broadcast_seed`). With ``check_probes=True`` (default) each
product verifies that the ranks held the same vector (a fingerprint carried by the product's
all-reduce) and raises ``ValueError`` on every rank otherwise.

``distributed_hessian`` / ``distributed_ggn`` take a plain, ``DistributedDataParallel`` or FSDP2
(``fully_shard``, DTensor parameters) model. The functional forward runs on ``model.module`` (DDP)
or on :func:`overparam.backend.dist.unsharded_copy` (FSDP2: the full parameters gathered once, when
the operator is built, into a plain copy without FSDP's hooks, whose forward FSDP would otherwise
reroute through its own all-gathered tensors). Vectors are full-size and identical on every rank,
as under DDP, or with ``vectors="sharded"`` laid out like the DTensor parameters (each rank keeps
its shard: a Lanczos basis costs ``n_local/n`` of the memory; each product all-gathers ``v`` and
reduce-scatters the result); ``backend="finite_difference"`` with sharded vectors never gathers the
parameters at all (central differences through FSDP's own forward/backward); see docs/distributed.md.

In a single process the wrapper is the local operator (weight 1, no communication).

Example:
    >>> import torch
    >>> from overparam.hessian.operators import as_operator
    >>> A = DistributedOperator(as_operator(2 * torch.eye(3, dtype=torch.float64)), samples=[5])
    >>> A.weight, (A @ torch.ones(3, dtype=torch.float64)).tolist()   # one process: the local operator
    (1.0, [2.0, 2.0, 2.0])
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from ..backend import dist, vec
from ..backend.sharded import ShardedSpace
from ..backend.select import Spec
from ._model import _batch_size
from .ggn import GGNOperator
from .hvp import HessianOperator
from .operators import Operator
from ._fsdp_fd import FSDPFiniteDifference
from ._sharded import sharded_call

__all__ = ["DistributedOperator", "distributed_hessian", "distributed_ggn"]


def _local_count(op: Operator, samples: Sequence[int] | None, group) -> int | None:
    """Samples behind a local operator's mean (None when its loss is a sum)."""
    if isinstance(op, GGNOperator):
        return round(1.0 / op.scale) if op.loss.reduction == "mean" else None
    obj = getattr(op, "obj", None)
    if obj is not None:
        return sum(_batch_size(b[0]) for b in obj.batches) if obj.reduction == "mean" else None
    if samples is None:
        raise TypeError(f"cannot count the samples behind a {type(op).__name__}; pass samples= (the per-rank counts)")
    counts = list(samples)
    if len(counts) != dist.world_size(group):
        raise ValueError(f"samples must hold one count per rank ({dist.world_size(group)}), got {counts}")
    return counts[dist.rank(group)]


_PROBE_MSG = "the probe vector (use the same generator seed on every rank: overparam.backend.dist.broadcast_seed)"


def _fingerprint(flat: Tensor, positions: Tensor | None = None) -> Tensor:
    """Two int64 numbers that differ (almost surely) when two vectors differ in any bit: the sum of
    the entries' bit patterns and their position-weighted sum (integer arithmetic, wrapping, so the
    same on every rank), read in place (no int64 copy). ``positions``: :func:`_positions` of the
    size, when the caller keeps it (one product after another); else made here."""
    bits = flat.detach().contiguous().view(-1).view({8: torch.int64, 4: torch.int32, 2: torch.int16}[flat.element_size()])
    idx = _positions(bits) if positions is None else positions
    return torch.stack([bits.sum(dtype=torch.int64), (bits * idx).sum(dtype=torch.int64)]).cpu()


def _positions(bits: Tensor) -> Tensor:
    """``1, 2, ..., n`` for the bit patterns ``bits`` (int64 for 8-byte entries, else int32)."""
    return torch.arange(1, bits.numel() + 1, dtype=torch.int64 if bits.dtype == torch.int64 else torch.int32,
                        device=bits.device)


class DistributedOperator(Operator):
    """``A = Σ_r w_r A_r``: a local curvature operator ``A_r`` (built on rank ``r``'s data)
    summed over the ranks of ``group`` with weights ``w_r = n_r / N`` (mean losses) or 1 (sums).

    Args:
        local: this rank's operator (:class:`HessianOperator`, :class:`GGNOperator`, or any
            Operator when ``samples`` is given); same parameter shapes on every rank (checked).
        samples: per-rank sample counts in rank order (identical on every rank, checked), or
            None: counted from ``local``'s data and gathered once.
        group: process group (default: the world).
        check_probes: verify before every product that all ranks multiply the same vector.
        vectors: ``"replicated"`` (every rank holds the full vectors) or ``"sharded"``: vectors laid
            out like ``layout`` (this rank holds its shard of each; ``space`` says which coordinates):
            each product all-gathers ``v``, multiplies on this rank's data and reduce-scatters the
            weighted result (two collectives); the solvers keep ``n_local/n`` of their vectors.
        layout: with ``vectors="sharded"``: the DTensor parameters (FSDP2's), in ``local``'s order.

    Shapes: as ``local`` (flat ``(n,)``, blocks ``(n, B)`` or parameter-shaped tuples). Sharded:
    tuples of DTensors in ``layout`` (entries ``shape_i`` or ``(B, *shape_i)``, returned as such),
    or this rank's part, flat ``(n_local,)`` / ``(n_local, B)`` or shard-shaped; ``n``, ``shape``
    and ``like`` then count this rank's coordinates, ``space.n`` the global dimension.

    Raises:
        ValueError: ranks disagree on the parameter shapes, the declared counts, or a probe.

    Example:
        >>> from overparam.hessian import HessianOperator; from overparam.testing import tanh_mlp
        >>> x, y = torch.randn(6, 2, dtype=torch.float64), torch.randn(6, 1, dtype=torch.float64)
        >>> H = HessianOperator(tanh_mlp([2, 3, 1], generator=0), torch.nn.functional.mse_loss, (x, y))
        >>> A, v = DistributedOperator(H), torch.randn(H.n, dtype=torch.float64)   # one process: weight 1
        >>> A.weight, A.n, torch.allclose(A @ v, H @ v)
        (1.0, 13, True)
    """

    def __init__(self, local: Operator, *, samples: Sequence[int] | None = None, group=None,
                 check_probes: bool = True, vectors: str = "replicated", layout: Sequence[Tensor] | None = None):
        if not isinstance(local, Operator):
            raise TypeError(f"local must be an overparam Operator, got {type(local).__name__}")
        if samples is not None and (not isinstance(samples, Sequence) or isinstance(samples, str)):
            raise TypeError(f"samples must be a list of per-rank sample counts, got {type(samples).__name__}")
        self.local, self.group, self.check_probes = local, group, bool(check_probes)
        self.like, self.dtype, self.device = local.like, local.dtype, local.device
        dist.agree([tuple(s) for s in self.like] + [str(self.dtype)], "the operator's parameter shapes and dtype",
                   group=group)
        count = _local_count(local, samples, group)
        if count is None and samples is not None:
            raise ValueError("samples= weights mean losses; the local operator's loss is a sum (weight 1 per rank)")
        dist.agree(count is None, "whether the loss is a mean (weighted by samples) or a sum", group=group)
        self.weight = 1.0 if count is None else dist.sample_weight(count, samples=samples, group=group)
        self._world, self._idx = dist.world_size(group), None  # _idx: the probe positions, made at the first product
        self._fused = self.check_probes and dist.is_distributed(group) and self.dtype in (torch.float32, torch.float64) \
            and self._world <= 256  # the probe check rides on the product's all-reduce (see _product)
        if vectors not in ("replicated", "sharded"):
            raise ValueError(f"vectors must be 'replicated' or 'sharded', got {vectors!r}")
        if (layout is None) != (vectors == "replicated"):
            raise ValueError("layout= (the DTensor parameters) goes with vectors='sharded', and only with it")
        if vectors == "sharded":
            self.space = ShardedSpace(layout, group=group)
            if self.space.shapes != tuple(local.like):
                raise ValueError(f"layout has shapes {self.space.shapes}, the operator acts on {tuple(local.like)}")
            dist.agree([*self.space.shapes, *self.space.dims], "the sharded vectors' layout", group=group)
            self.like = self.space.local_shapes

    @property
    def names(self) -> list[str]:
        """The local operator's parameter names (the same on every rank).

        Example:
            >>> from overparam.hessian import HessianOperator; from overparam.testing import tanh_mlp
            >>> x, y = torch.randn(4, 2, dtype=torch.float64), torch.randn(4, 1, dtype=torch.float64)
            >>> DistributedOperator(HessianOperator(tanh_mlp([2, 3, 1]), torch.nn.functional.mse_loss, (x, y))).names
            ['0.weight', '0.bias', '2.weight', '2.bias']
        """
        return list(self.local.names)

    def _check(self, V: vec.Vec) -> None:
        if self.check_probes and dist.is_distributed(self.group):
            dist.agree(_fingerprint(vec.flatten(V)).tolist(), _PROBE_MSG, group=self.group)

    def _reduce(self, out: vec.Vec) -> vec.Vec:
        return dist.all_reduce_vec(out, weight=self.weight, group=self.group)

    def _product(self, V: vec.Vec, local: Callable[[vec.Vec], vec.Vec]) -> vec.Vec:
        """``Σ_r w_r A_r V`` with the probe check riding on the product's all-reduce: each rank adds
        four 8-bit pieces ``f`` of its probe's fingerprint and their squares to the reduced buffer;
        the ranks agree iff ``W·Σf² = (Σf)²`` for every piece (exact in fp32/fp64 for W ≤ 256), so
        one collective per product instead of two; other dtypes: a separate check first."""
        if not self._fused:
            self._check(V)
            return self._reduce(local(V))
        flat = vec.flatten(V)
        if self._idx is None or self._idx.numel() != flat.numel():
            self._idx = _positions(flat.view({8: torch.int64, 4: torch.int32}[flat.element_size()]))
        key = hashlib.blake2b(repr(_fingerprint(flat, self._idx).tolist()).encode(), digest_size=4).digest()
        f = torch.tensor(list(key), dtype=self.dtype, device=self.device)
        out = local(V)
        buf = vec.flatten((*out, f, f * f))  # one copy; weighted in place, returned as views of buf
        if self.weight != 1:
            buf[:-8].mul_(self.weight)
        dist.all_reduce_vec((buf,), group=self.group)
        s, s2 = buf[-8:-4], buf[-4:]
        if bool((s2 * self._world != s * s).any()):
            raise ValueError(f"ranks disagree on {_PROBE_MSG}")
        return vec.unflatten(buf[:-8], out)

    def _mv(self, v: vec.Vec) -> vec.Vec:
        if self.space is not None:
            return vec.unflatten(sharded_call(self, vec.flatten(v)[None], batched=False, trusted=True)[0], self.like)
        return self._product(v, self.local._mv)

    def _mm(self, V: vec.Vec) -> vec.Vec:
        if self.space is not None:
            return vec.unflatten(sharded_call(self, vec.flatten(V, batch=True), batched=True, trusted=True), self.like)
        return self._product(V, self.local._mm)

    def matvec(self, v):
        """``A v`` (see :meth:`Operator.matvec`); sharded: DTensor tuples in, DTensor tuples out.

        Example:
            >>> from overparam.hessian.operators import as_operator
            >>> A = DistributedOperator(as_operator(2 * torch.eye(2)), samples=[1], vectors="sharded", layout=[torch.ones(2)])
            >>> A.matvec(torch.ones(2)).tolist(), A.space.n   # one process: this rank holds every coordinate
            ([2.0, 2.0], 2)
        """
        return super().matvec(v) if self.space is None else sharded_call(self, v, batched=False)

    def matmat(self, V):
        """``A V`` (see :meth:`Operator.matmat`); sharded: batched DTensor tuples in and out.

        Example:
            >>> from overparam.hessian.operators import as_operator
            >>> DistributedOperator(as_operator(torch.eye(2)), samples=[1]).matmat(torch.ones(2, 1)).tolist()
            [[1.0], [1.0]]
        """
        return super().matmat(V) if self.space is None else sharded_call(self, V, batched=True)

    def to_dense(self, *, chunk: int = 64) -> Tensor:
        """The ``(n, n)`` matrix (replicated vectors only; see :meth:`Operator.to_dense`).

        Example:
            >>> from overparam.hessian.operators import as_operator
            >>> DistributedOperator(as_operator(torch.eye(2)), samples=[1]).to_dense().tolist()
            [[1.0, 0.0], [0.0, 1.0]]
        """
        if self.space is not None:
            raise ValueError("to_dense of an operator on sharded vectors: build it with vectors='replicated'")
        return super().to_dense(chunk=chunk)

    def gradient(self) -> Tensor:
        """The gradient of the loss on all the data, flat ``(n,)``, identical on every rank.

        Example:
            >>> from overparam.hessian import HessianOperator; from overparam.testing import tanh_mlp
            >>> x, y = torch.randn(6, 2, dtype=torch.float64), torch.randn(6, 1, dtype=torch.float64)
            >>> H = HessianOperator(tanh_mlp([2, 3, 1], generator=0), torch.nn.functional.mse_loss, (x, y))
            >>> g = DistributedOperator(H).gradient()   # one process: the local gradient
            >>> g.shape, torch.allclose(g, H.gradient())
            (torch.Size([13]), True)
        """
        if not hasattr(self.local, "gradient"):
            raise TypeError(f"the local {type(self.local).__name__} has no gradient()")
        if self.space is not None:  # this rank's coordinates (n_local,)
            return self.space.scatter(self.local.gradient()[None], self.weight)[0]
        return self._reduce((self.local.gradient().clone(),))[0]


def _wrap(local, model, samples, group, check_probes, vectors) -> DistributedOperator:
    layout = None
    if vectors == "sharded":
        own = dict(dist.unwrap(model).named_parameters())
        layout = [own[name] for name in local.names]
    return DistributedOperator(local, samples=samples, group=group, check_probes=check_probes, vectors=vectors,
                               layout=layout)


def distributed_hessian(model: nn.Module, loss_fn: Callable, data, *, params: Spec = None, exclude: Spec = None,
                        samples: Sequence[int] | None = None, group=None, check_probes: bool = True,
                        vectors: str = "replicated", **kwargs) -> DistributedOperator:
    """The Hessian of the loss on the data of all ranks: :class:`~overparam.hessian.HessianOperator`
    ``(model, loss_fn, data, params=, exclude=, **kwargs)`` on this rank's ``data`` (``model`` plain,
    DDP-wrapped or FSDP2: :func:`~overparam.backend.dist.unsharded_copy`), wrapped in
    :class:`DistributedOperator` ``(samples=, group=, check_probes=, vectors=)``; with
    ``vectors="sharded"`` (FSDP2 models) the vectors are laid out like the model's DTensor parameters
    (DTensor tuples, or this rank's flat coordinates ``(n_local,)``); adding
    ``backend="finite_difference"`` (and optionally ``fd_step=``) gives the memory-true route: central
    differences of gradients from FSDP's own forward/backward on the local shards, never a gathered
    parameter copy (an :class:`~overparam.hessian.Operator` with ``space``, not a DistributedOperator).

    Example:
        >>> from overparam.testing import tanh_mlp
        >>> x, y = torch.randn(6, 2, dtype=torch.float64), torch.randn(6, 1, dtype=torch.float64)
        >>> H = distributed_hessian(tanh_mlp([2, 3, 1], generator=0), torch.nn.functional.mse_loss, (x, y))
        >>> H.local.backend, H.names
        ('double_backward', ['0.weight', '0.bias', '2.weight', '2.bias'])
        >>> S = distributed_hessian(tanh_mlp([2, 3, 1], generator=0), torch.nn.functional.mse_loss, (x, y),
        ...                         vectors="sharded")   # one process: this rank holds all 13 coordinates
        >>> S.space.n, S.n, torch.allclose(S @ torch.ones(13, dtype=torch.float64), H @ torch.ones(13, dtype=torch.float64))
        (13, 13, True)
    """
    inner = dist.unwrap(model)
    if vectors == "sharded" and kwargs.get("backend") == "finite_difference" and \
            any(dist.is_dtensor(p) for p in inner.parameters()):  # the memory-true route: FSDP's own passes
        if set(kwargs) - {"backend", "fd_step"}:
            raise TypeError(f"the FSDP finite-difference route takes fd_step= only, got {sorted(set(kwargs) - {'backend'})}")
        return FSDPFiniteDifference(inner, loss_fn, data, params=params, exclude=exclude, samples=samples, group=group,
                                    fd_step=kwargs.get("fd_step"))
    local = HessianOperator(dist.unsharded_copy(model), loss_fn, data, params=params, exclude=exclude, **kwargs)
    return _wrap(local, model, samples, group, check_probes, vectors)


def distributed_ggn(model: nn.Module, loss_fn: Callable, data, *, params: Spec = None, exclude: Spec = None,
                    samples: Sequence[int] | None = None, group=None, check_probes: bool = True,
                    vectors: str = "replicated", **kwargs) -> DistributedOperator:
    """The Gauss-Newton matrix on the data of all ranks: :class:`~overparam.hessian.GGNOperator` on
    this rank's ``data`` wrapped in :class:`DistributedOperator` (arguments as :func:`distributed_hessian`).
    With a token-mean cross-entropy the weights are the per-rank counts of non-ignored targets.

    Example:
        >>> from overparam.testing import tanh_mlp
        >>> x, y = torch.randn(6, 2, dtype=torch.float64), torch.randn(6, 1, dtype=torch.float64)
        >>> distributed_ggn(tanh_mlp([2, 3, 1], generator=0), torch.nn.functional.mse_loss, (x, y)).n
        13
    """
    local = GGNOperator(dist.unsharded_copy(model), loss_fn, data, params=params, exclude=exclude, **kwargs)
    return _wrap(local, model, samples, group, check_probes, vectors)
