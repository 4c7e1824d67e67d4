"""Flat vectors sharded over ranks like FSDP2's DTensor parameters, and the few global reductions
the solvers need on them; with ``space=None`` every helper is the plain single-process operation.

A :class:`ShardedSpace` fixes, from DTensor parameters (``Shard(d)`` on a 1-D mesh, FSDP2's
layout), which coordinates of the ``n``-dimensional flat vector (parameters concatenated in order,
each flattened row-major, as :func:`overparam.backend.vec.flatten`) this rank holds: its local
shard of every parameter, flattened and concatenated (``n_local`` entries). Inner products and
norms of such vectors are local sums plus one all-reduce; a full vector drawn from a seed
shared by every rank is cut to this rank's coordinates (:meth:`ShardedSpace.localize`), so sharded
probes are exactly the single-process probes' shards. All collectives go through
:mod:`overparam.backend.dist`. See docs/distributed.md.

Example:
    >>> import torch
    >>> S = ShardedSpace([torch.zeros(2, 3), torch.zeros(4)])   # plain tensors, one process: all coordinates
    >>> S.n, S.n_local, S.local_shapes
    (10, 10, (torch.Size([2, 3]), torch.Size([4])))
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from . import dist
from .checks import check_floats

__all__ = ["ShardedSpace", "localize", "reduce", "norm", "qr"]


def _chunk(t: Tensor, d: int | None, world: int, r: int) -> Tensor:
    """Rank ``r``'s part of ``t`` under ``Shard(d)`` (torch.chunk rule; missing trailing chunks empty)."""
    if d is None:
        return t
    parts = t.chunk(world, d)
    return parts[r] if r < len(parts) else t.narrow(d, 0, 0)


class ShardedSpace:
    """The coordinates of ``n``-dimensional flat vectors that this rank holds, laid out like ``layout``.

    Args:
        layout: one tensor per parameter: DTensors sharded ``Shard(d)`` on a 1-D mesh spanning
            ``group`` (FSDP2's parameters), or, in a single process, plain tensors (held whole).
        group: the process group the mesh spans (default: the world).

    Attributes:
        n: the global dimension ``Σ_i numel_i``. ``n_local``: the entries this rank holds.
        shapes / local_shapes: global / this rank's shard shapes, one per parameter.

    Raises:
        ValueError: a replicated parameter or a plain tensor inside a process group, a mesh of
            another size than ``group``, a placement other than ``Shard``.

    Example:
        >>> S = ShardedSpace([torch.zeros(3)])
        >>> S.localize(torch.arange(3.)).tolist(), float(norm(S, torch.tensor([3., 4., 0.])))
        ([0.0, 1.0, 2.0], 5.0)
    """

    def __init__(self, layout: Sequence[Tensor], *, group=None):
        if isinstance(layout, Tensor) or not isinstance(layout, Sequence) or not layout:
            raise TypeError("layout must be a non-empty sequence of tensors (the parameters' layout)")
        self.group, self.world, self.rank = group, dist.world_size(group), dist.rank(group)
        dims = []
        for i, p in enumerate(layout):
            if not isinstance(p, Tensor):
                raise TypeError(f"layout[{i}] must be a torch.Tensor, got {type(p).__name__}")
            d = dist.shard_dim(p, f"layout[{i}]")
            if self.world > 1 and d is None:
                raise ValueError(f"layout[{i}] is replicated or not a DTensor: sharded vectors need Shard(d) "
                                 "DTensor parameters (FSDP2's fully_shard); use vectors='replicated'")
            if dist.is_dtensor(p) and (p.device_mesh.size() != self.world or p.device_mesh.get_local_rank() != self.rank):
                raise ValueError(f"layout[{i}]'s mesh ({p.device_mesh.size()} ranks) does not span the group "
                                 f"({self.world} ranks, this is rank {self.rank})")
            dims.append(d)
        self.layout, self.dims = tuple(layout), tuple(dims)
        self.shapes = tuple(torch.Size(p.shape) for p in layout)
        self.n = sum(s.numel() for s in self.shapes)
        idx, start = [], 0
        for s in self.shapes:
            idx.append(torch.arange(start, start + s.numel()).view(s))
            start += s.numel()
        parts = [torch.cat([_chunk(t, d, self.world, r).reshape(-1) for t, d in zip(idx, dims)])
                 for r in range(self.world)]
        self.sizes = [len(p) for p in parts]
        self.order = torch.cat(parts)  # the global coordinates in rank-major order
        self.index = parts[self.rank]
        self.n_local = len(self.index)
        self.local_shapes = tuple(_chunk(t, d, self.world, self.rank).shape for t, d in zip(idx, dims))

    def localize(self, full: Tensor) -> Tensor:
        """``(..., n_local)``: this rank's coordinates of ``full (..., n)`` (identical on every rank).

        Example:
            >>> ShardedSpace([torch.zeros(2)]).localize(torch.tensor([[1., 2.]])).shape
            torch.Size([1, 2])
        """
        if not isinstance(full, Tensor) or full.ndim == 0 or full.shape[-1] != self.n:
            raise ValueError(f"full must have shape (..., {self.n}), got {tuple(getattr(full, 'shape', ()))}")
        return full if self.world == 1 else full[..., self.index.to(full.device)]

    def reduce(self, t: Tensor) -> Tensor:
        """``t`` summed over the ranks in place (partial inner products → global ones); returned.

        Example:
            >>> ShardedSpace([torch.zeros(2)]).reduce(torch.tensor([2.]))
            tensor([2.])
        """
        return dist.all_reduce_vec((t,), group=self.group)[0]

    def gather(self, x: Tensor, *, ok: bool = True) -> Tensor:
        """``(B, n)``: the full vectors whose local parts ``x (B, n_local)`` every rank holds (one
        all-gather); every rank raises ``ValueError`` when any rank passed ``ok=False`` (its ``x`` is
        then ignored), so a rank's bad input never leaves the others waiting.

        Example:
            >>> ShardedSpace([torch.zeros(2)]).gather(torch.ones(1, 2))
            tensor([[1., 1.]])
        """
        B, m = x.shape[0], max(self.sizes)
        buf = torch.zeros(B * m + 1, dtype=x.dtype, device=x.device)
        if ok:
            buf[:-1].view(B, m)[:, : self.n_local] = x
        else:
            buf[-1] = 1
        got = dist.all_gather(buf, group=self.group)
        bad = [r for r in range(self.world) if float(got[r, -1]) != 0]
        if bad:
            raise ValueError(f"ranks disagree on the vector layout: ranks {bad} passed vectors that are not this "
                             "operator's sharded layout (DTensors with its parameters' mesh, placements and shapes, "
                             "or flat local parts)")
        rows = got[:, :-1].reshape(self.world, B, m)
        out = torch.empty(B, self.n, dtype=x.dtype, device=x.device)
        out[:, self.order.to(x.device)] = torch.cat([rows[r, :, :s] for r, s in enumerate(self.sizes)], dim=1)
        return out

    def scatter(self, full: Tensor, weight: float = 1.0) -> Tensor:
        """``(B, n_local)``: this rank's part of ``Σ_r weight_r · full_r`` for ``full (B, n)`` on
        every rank (one reduce-scatter).

        Example:
            >>> ShardedSpace([torch.zeros(2)]).scatter(torch.ones(1, 2), 0.5)
            tensor([[0.5000, 0.5000]])
        """
        B, m = full.shape[0], max(self.sizes)
        rm = full[:, self.order.to(full.device)] * weight if weight != 1 else full[:, self.order.to(full.device)]
        buf = torch.zeros(self.world, B, m, dtype=full.dtype, device=full.device)
        for r, (a, s) in enumerate(zip([0, *torch.tensor(self.sizes).cumsum(0).tolist()], self.sizes)):
            buf[r, :, :s] = rm[:, a: a + s]
        return dist.reduce_scatter(buf.view(self.world, -1), group=self.group).view(B, m)[:, : self.n_local]

    def wrap(self, local: Sequence[Tensor], *, batch: int | None = None) -> tuple[Tensor, ...]:
        """Local shards (entries ``local_shapes[i]``, or ``(B, *local_shapes[i])``) as DTensors in
        the layout (plain tensors where ``layout`` holds plain ones).

        Example:
            >>> [t.shape for t in ShardedSpace([torch.zeros(2)]).wrap([torch.ones(2)])]
            [torch.Size([2])]
        """
        return tuple(dist.dtensor_like(t, p, batch=batch) for t, p in zip(local, self.layout))


def _space(space) -> None:
    if space is not None and not isinstance(space, ShardedSpace):
        raise TypeError(f"space must be a ShardedSpace or None (plain vectors), got {type(space).__name__}")


def localize(space: ShardedSpace | None, full: Tensor) -> Tensor:
    """``full`` cut to this rank's coordinates (``full`` itself for ``space=None``).

    Example:
        >>> localize(None, torch.ones(3)).shape
        torch.Size([3])
    """
    _space(space)
    check_floats({"full": full}, nonempty=False)
    return full if space is None else space.localize(full)


def reduce(space: ShardedSpace | None, t: Tensor) -> Tensor:
    """A partial sum over this rank's coordinates made global (``t`` itself for ``space=None``).

    Example:
        >>> reduce(None, torch.tensor(2.))
        tensor(2.)
    """
    _space(space)
    check_floats({"t": t}, nonempty=False)
    return t if space is None else space.reduce(t)


def norm(space: ShardedSpace | None, x: Tensor, dim: int | None = None, keepdim: bool = False) -> Tensor:
    """The Euclidean norm of the (sharded) vectors ``x`` over ``dim`` (all entries for None);
    ``torch.linalg.vector_norm`` for ``space=None``.

    Example:
        >>> norm(None, torch.tensor([3., 4.]))
        tensor(5.)
    """
    _space(space)
    check_floats({"x": x}, nonempty=False)
    if dim is not None and (isinstance(dim, bool) or not isinstance(dim, int) or not -x.ndim <= dim < max(x.ndim, 1)):
        raise ValueError(f"dim must be None or an int in [-{x.ndim}, {x.ndim}), got {dim!r}")
    if not isinstance(keepdim, bool):
        raise TypeError(f"keepdim must be a bool, got {type(keepdim).__name__}")
    if space is None:
        return torch.linalg.vector_norm(x, dim=dim, keepdim=keepdim)
    return space.reduce((x * x).sum(dim=dim, keepdim=keepdim)).sqrt()


def qr(space: ShardedSpace | None, Y: Tensor) -> tuple[Tensor, Tensor]:
    """Reduced QR of ``Y (n, s)`` whose rows are sharded: ``Q (n_local, s)`` (this rank's rows of an
    orthonormal basis), ``R (s, s)`` identical on every rank. Tall-skinny QR: a local Householder QR,
    the ``R`` factors gathered (one all-gather) and factored once more; exact for rank-deficient
    ``Y`` too. ``torch.linalg.qr`` for ``space=None``.

    Example:
        >>> Q, R = qr(None, torch.tensor([[3.], [4.]], dtype=torch.float64))
        >>> Q.shape, float(R.abs().squeeze())
        (torch.Size([2, 1]), 5.0)
    """
    _space(space)
    check_floats({"Y": Y})
    if Y.ndim != 2:
        raise ValueError(f"Y must be a 2-D tensor (rows, columns), got shape {tuple(Y.shape)}")
    if space is None:
        return torch.linalg.qr(Y)
    s = Y.shape[1]
    Q1, R1 = torch.linalg.qr(Y)  # (n_local, t), (t, s) with t = min(n_local, s)
    R1p = torch.zeros(s, s, dtype=Y.dtype, device=Y.device)
    R1p[: R1.shape[0]] = R1
    Rs = dist.all_gather(R1p, group=space.group).reshape(space.world * s, s)
    Q2, R = torch.linalg.qr(Rs)  # (world·s, s), (s, s)
    return Q1 @ Q2[space.rank * s: space.rank * s + Q1.shape[1]], R
