"""``torch.distributed`` helpers; exact no-ops in a single process.

Reductions of parameter-shaped vectors (:func:`all_reduce_vec`), small gathers, the exact k-th
value of a sharded tensor (:func:`global_kth_value`: bisection on the order-preserving integer
image of the floats, ≤ 64 scalar all-reduces, no gather of the values), fault checks that never
hang (:func:`agree`), per-rank sample weights and shared seeds, and the glue for DDP
(:func:`unwrap`) and FSDP2's DTensor parameters (:func:`unsharded_copy`, :func:`shard_dim`,
:func:`dtensor_like`, :func:`local_part`). See docs/distributed.md.

"Single process" means ``torch.distributed`` is unavailable, not initialized, or the
world has size 1; then the input is returned untouched (the same objects).

Example:
    >>> import torch
    >>> global_kth_value(torch.tensor([3., 1., 2.]), 2)
    tensor(2.)
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence

import torch
import torch.distributed as dist
from torch import Tensor, nn

from . import vec as _vec
from ._kth import INT_VIEW, kth_by_bisection
from .random import GeneratorLike, measurement_generator

__all__ = ["LOCAL", "is_distributed", "rank", "world_size", "all_reduce_vec", "all_gather", "reduce_scatter",
           "global_kth_value", "agree", "sample_weight", "broadcast_seed", "unwrap", "unsharded_copy", "is_dtensor",
           "shard_dim", "dtensor_like", "local_part"]


class _Local:
    def __repr__(self) -> str:
        return "overparam.backend.dist.LOCAL"


LOCAL = _Local()
"""``group=LOCAL``: this process alone, even inside an initialised process group (e.g. a
replicated DDP weight, which ``group=None``, the world, would treat as one shard of many)."""


def is_distributed(group=None) -> bool:
    """Whether a process group with more than one rank is active (never for :data:`LOCAL`)."""
    if group is LOCAL:
        return False
    return dist.is_available() and dist.is_initialized() and dist.get_world_size(group) > 1


def rank(group=None) -> int:
    """This process's rank in ``group`` (0 in a single process)."""
    return dist.get_rank(group) if is_distributed(group) else 0


def world_size(group=None) -> int:
    """Number of ranks in ``group`` (1 in a single process)."""
    return dist.get_world_size(group) if is_distributed(group) else 1


def all_gather(t: Tensor, *, group=None) -> Tensor:
    """``(world, *t.shape)``: ``t`` from every rank of ``group``, stacked in rank order (same shape
    on every rank); ``t.unsqueeze(0)`` in a single process.

    Example:
        >>> all_gather(torch.tensor([1, 2])).tolist()
        [[1, 2]]
    """
    if not isinstance(t, Tensor):
        raise TypeError(f"t must be a torch.Tensor, got {type(t).__name__}")
    if not is_distributed(group):
        return t.unsqueeze(0)
    parts = [torch.empty_like(t) for _ in range(dist.get_world_size(group))]
    dist.all_gather(parts, t.contiguous(), group=group)
    return torch.stack(parts)


def reduce_scatter(parts: Tensor, *, group=None) -> Tensor:
    """``Σ_r parts_r[rank]``: row ``rank`` of ``parts (world, *shape)`` summed over the ranks (one
    reduce-scatter; every rank passes the same shape); ``parts[0]`` in a single process.

    Example:
        >>> reduce_scatter(torch.ones(1, 2)).tolist()
        [1.0, 1.0]
    """
    if not isinstance(parts, Tensor) or parts.ndim == 0 or parts.shape[0] != world_size(group):
        raise ValueError(f"parts must be a tensor (world={world_size(group)}, ...), got {getattr(parts, 'shape', parts)}")
    if not is_distributed(group):
        return parts[0]
    out = torch.empty(parts[0].numel(), dtype=parts.dtype, device=parts.device)
    dist.reduce_scatter_single(out, parts.contiguous().view(-1), group=group)
    return out.view(parts.shape[1:])


def all_reduce_vec(x: Iterable[Tensor], *, op: str = "sum", weight: float | None = None, check: bool = False,
                   group=None) -> _vec.Vec:
    """All-reduce a vector in place over ranks and return it.

    Args:
        x: a parameter-shaped vector (same shapes on every rank).
        op: ``"sum"`` or ``"mean"``.
        weight: multiply this rank's vector by ``weight`` before the reduction (e.g. its
            :func:`sample_weight`, so that ``op="sum"`` gives the sample-weighted mean); None: 1.
            In a single process the vector is scaled in place.
        check: first verify with :func:`agree` that every rank holds the same shapes (one
            small extra gather; a mismatch raises ``ValueError`` instead of hanging).
        group: process group (default: the world).

    Returns:
        ``x`` itself, its entries overwritten by the reduction (unchanged in one process).

    Example:
        >>> v = (torch.ones(2),)
        >>> all_reduce_vec(v, op="mean") is v
        True
    """
    if op not in ("sum", "mean"):
        raise ValueError(f"op must be 'sum' or 'mean', got {op!r}")
    xs = _vec.as_vec(x)
    if weight is not None and (isinstance(weight, bool) or not isinstance(weight, (int, float))):
        raise TypeError(f"weight must be a float or None, got {type(weight).__name__}")
    if not is_distributed(group):
        if weight is not None and weight != 1:
            for t in xs:
                t.mul_(weight)
        return xs
    if check:
        agree([tuple(t.shape) for t in xs], "vector shapes", group=group)
    flat = _vec.flatten(xs)
    if weight is not None and weight != 1:
        flat = flat * weight
    dist.all_reduce(flat, op=dist.ReduceOp.SUM, group=group)
    if op == "mean":
        flat /= dist.get_world_size(group)
    _vec.copy_(xs, _vec.unflatten(flat, xs))
    return xs


def _dist_reduce(group):
    ops = {"sum": dist.ReduceOp.SUM, "min": dist.ReduceOp.MIN, "max": dist.ReduceOp.MAX}

    def reduce(t: Tensor, how: str) -> Tensor:
        t = t.clone()
        dist.all_reduce(t, op=ops[how], group=group)
        return t

    return reduce


def global_kth_value(values: Tensor, k: int, *, group=None) -> Tensor:
    """Exact k-th smallest value (1-based, as ``torch.kthvalue``) of ``values`` across all ranks.

    Args:
        values: this rank's shard, any shape, floating point, no NaN. Shards may differ in
            size between ranks (and may be empty).
        k: ``1 <= k <= total number of values over all ranks``.
        group: process group (default: the world).

    Returns:
        a 0-dim tensor with ``values``' dtype, equal on every rank to
        ``torch.kthvalue(torch.cat(all shards), k)``.

    Example:
        >>> global_kth_value(torch.tensor([[4., 4.], [1., 9.]]), 3)
        tensor(4.)
    """
    if not isinstance(values, Tensor) or values.dtype not in INT_VIEW:
        raise TypeError("values must be a floating-point tensor (float16, bfloat16, float32 or float64)")
    if isinstance(k, bool) or not isinstance(k, int):
        raise TypeError(f"k must be an int, got {type(k).__name__}")
    if bool(torch.isnan(values).any()):
        raise ValueError("values contains NaN; the k-th value is undefined")
    if not is_distributed(group):
        if not 1 <= k <= values.numel():
            raise ValueError(f"k must be in [1, {values.numel()}] (the number of values), got {k}")
        return torch.kthvalue(values.reshape(-1), k).values
    total = int(_dist_reduce(group)(torch.tensor(values.numel(), device=values.device), "sum"))
    if not 1 <= k <= total:
        raise ValueError(f"k must be in [1, {total}] (values over all ranks), got {k}")
    return kth_by_bisection(values, k, _dist_reduce(group))


def _fingerprint(value) -> int:
    return int.from_bytes(hashlib.blake2b(repr(value).encode(), digest_size=8).digest(), "little") >> 1


def agree(value, what: str, *, group=None) -> None:
    """Raise ``ValueError`` on every rank unless ``value`` (anything with a stable ``repr``:
    shapes, counts, names, settings) is the same on every rank of ``group``.

    One all-gather of two int64 numbers (rank-independent size), so ranks that disagree get
    a clear error instead of a collective that hangs or mixes mismatched buffers. A no-op in
    a single process.

    Example:
        >>> agree([(2, 3), (4,)], "parameter shapes")   # one process: nothing to compare
    """
    if not isinstance(what, str):
        raise TypeError(f"what must be a str, got {type(what).__name__}")
    if not is_distributed(group):
        return
    prints = all_gather(torch.tensor([_fingerprint(value)], dtype=torch.int64), group=group)[:, 0].tolist()
    if len(set(prints)) > 1:
        groups: dict[int, list[int]] = {}
        for r, f in enumerate(prints):
            groups.setdefault(f, []).append(r)
        me = rank(group)
        raise ValueError(f"ranks disagree on {what}: rank {me} has {value!r}; ranks grouped by equal value: "
                         f"{sorted(groups.values())}")


def sample_weight(count: int, *, samples: Sequence[int] | None = None, group=None) -> float:
    """This rank's share ``n_r / N`` of the samples, ``N = Σ_r n_r`` over the ranks of ``group``.

    Args:
        count: this rank's number of samples ``n_r`` (>= 0).
        samples: the declared counts of every rank, in rank order (the same list on every rank,
            checked with :func:`agree`; ``samples[rank]`` must equal ``count``), or None: the
            counts are gathered once.
        group: process group (default: the world).

    Returns:
        ``n_r / N`` (1.0 in a single process, where a declared ``samples`` must be ``[count]``).

    Example:
        >>> sample_weight(7)
        1.0
    """
    if isinstance(count, bool) or not isinstance(count, int) or count < 0:
        raise ValueError(f"count must be an int >= 0, got {count!r}")
    world, me = world_size(group), rank(group)
    if samples is None:
        counts = all_gather(torch.tensor([count], dtype=torch.int64), group=group)[:, 0].tolist()
    else:
        if not isinstance(samples, Sequence) or isinstance(samples, str):
            raise TypeError(f"samples must be a list of per-rank sample counts, got {type(samples).__name__}")
        counts = list(samples)
        if any(isinstance(c, bool) or not isinstance(c, int) or c < 0 for c in counts):
            raise ValueError(f"samples must be ints >= 0, one per rank, got {samples!r}")
        agree(counts, "the declared samples (per-rank sample counts)", group=group)
        if len(counts) != world:
            raise ValueError(f"samples must hold one count per rank ({world}), got {len(counts)}: {counts}")
        if counts[me] != count:
            raise ValueError(f"samples[{me}] = {counts[me]} but rank {me} holds {count} samples")
    total = sum(counts)
    if total == 0:
        raise ValueError("no rank holds any sample")
    return count / total


def broadcast_seed(generator: GeneratorLike = None, *, group=None) -> int:
    """One generator seed, identical on every rank: rank 0's ``generator`` turned into a seed
    (an int as is; None: drawn by the measurement rule from rank 0's global RNG, which is not
    advanced), broadcast to all. Pass it as ``generator=`` to every stochastic solver so that
    all ranks draw the same probes.

    Example:
        >>> broadcast_seed(5)
        5
    """
    if isinstance(generator, int) and not isinstance(generator, bool):
        if generator < 0:
            raise ValueError(f"generator seed must be >= 0, got {generator}")
        seed = generator
    else:
        seed = int(torch.randint(0, 2**62, (1,), generator=measurement_generator(generator)))
    if not is_distributed(group):
        return seed
    t = torch.tensor([seed], dtype=torch.int64)
    dist.broadcast(t, src=dist.get_global_rank(group, 0) if group is not None else 0, group=group)
    return int(t[0])


def unwrap(model: nn.Module) -> nn.Module:
    """The module a ``DistributedDataParallel`` wraps (``model.module``), else ``model`` itself.

    Example:
        >>> unwrap(net := torch.nn.Linear(2, 2)) is net
        True
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def unsharded_copy(model: nn.Module) -> nn.Module:
    """A plain module computing what an FSDP2 (``fully_shard``) ``model`` computes, for functional
    forwards (``functional_call``: curvature products, jvp, finite differences). DTensor parameters
    become detached copies of their full tensors (one all-gather each, every rank, in
    ``named_parameters`` order; tied ones stay tied); FSDP's classes and forward hooks are dropped
    (other hooks kept); buffers and attributes are shared with ``model``, which is left untouched.
    FSDP's mixed-precision casts are not applied. Without DTensor parameters: ``unwrap(model)``.

    Example:
        >>> unsharded_copy(net := torch.nn.Linear(2, 2)) is net
        True
    """
    inner = unwrap(model)
    if not any(is_dtensor(p) for p in inner.parameters()):
        return inner
    from torch.distributed.fsdp import FSDPModule

    made: dict[int, object] = {}  # id -> copy (shared parameters and modules are copied once)

    def fsdp_hook(f) -> bool:  # FSDP's own (bound methods / closures / partials of torch.distributed.fsdp)
        return str(getattr(getattr(f, "func", f), "__module__", "")).startswith("torch.distributed.fsdp")

    def param(p):
        if id(p) not in made:
            made[id(p)] = nn.Parameter((p.full_tensor() if is_dtensor(p) else p).detach(), requires_grad=p.requires_grad)
        return made[id(p)]

    def module(m: nn.Module) -> nn.Module:
        if id(m) not in made:
            cls = type(m).__mro__[type(m)._orig_cls_mro_index] if isinstance(m, FSDPModule) else type(m)
            made[id(m)] = new = cls.__new__(cls)
            new.__dict__.update(m.__dict__, _parameters={k: p if p is None else param(p) for k, p in m._parameters.items()},
                                _buffers=dict(m._buffers),
                                _modules={k: c if c is None else module(c) for k, c in m._modules.items()},
                                **{h: {i: f for i, f in getattr(m, h).items() if not fsdp_hook(f)}
                                   for h in ("_forward_pre_hooks", "_forward_hooks")})
        return made[id(m)]

    return module(inner)


def _tensors(**xs) -> None:
    for name, x in xs.items():
        if not isinstance(x, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")


def is_dtensor(t) -> bool:
    """Whether the tensor ``t`` is a ``torch.distributed.tensor.DTensor`` (FSDP2's sharded parameters)."""
    _tensors(t=t)
    if not dist.is_available():
        return False
    from torch.distributed.tensor import DTensor

    return isinstance(t, DTensor)


def shard_dim(t, name: str = "t") -> int | None:
    """The dimension a DTensor on a 1-D mesh is sharded along (None: replicated, or not a DTensor).

    Raises:
        ValueError: a mesh of more than one dimension, or a placement other than Shard / Replicate
            (the message names ``name``).
    """
    if not is_dtensor(t):
        return None
    from torch.distributed.tensor import Replicate, Shard

    if t.device_mesh.ndim != 1:
        raise ValueError(f"{name}: only 1-D device meshes are supported, got a {t.device_mesh.ndim}-D mesh")
    (pl,) = t.placements
    if isinstance(pl, Replicate):
        return None
    if isinstance(pl, Shard):
        return pl.dim
    raise ValueError(f"{name}: placement {pl} is not supported (Shard or Replicate)")


def dtensor_like(local: Tensor, like, *, batch: int | None = None) -> Tensor:
    """``local`` (this rank's shard) as a DTensor with ``like``'s mesh, placements and global
    shape (``batch=B``: a batch of them, global shape ``(B, *like.shape)``, sharded one dimension
    later); ``local`` itself when ``like`` is not a DTensor."""
    _tensors(local=local, like=like)
    if not is_dtensor(like):
        return local
    from torch.distributed.tensor import DTensor, Shard

    pl, shape = like.placements, like.shape if batch is None else torch.Size((batch, *like.shape))
    pl = pl if batch is None else [Shard(shard_dim(like, "like") + 1)]
    return DTensor.from_local(local, like.device_mesh, pl, run_check=False, shape=shape,
                              stride=torch.empty(shape, device="meta").stride())


def local_part(full: Tensor, like) -> Tensor:
    """This rank's part of ``full`` (the whole tensor, identical on every rank) in ``like``'s layout:
    the chunk a ``Shard(d)`` DTensor holds locally (no communication); ``full`` itself when ``like``
    is replicated or not a DTensor. The inverse of :func:`dtensor_like` for full tensors.

    Example:
        >>> local_part(torch.ones(3, 2), torch.zeros(3, 2)).shape
        torch.Size([3, 2])
    """
    _tensors(full=full, like=like)
    if full.shape != like.shape:
        raise ValueError(f"full has shape {tuple(full.shape)} but like has the global shape {tuple(like.shape)}")
    d = shard_dim(like, "like")
    if d is None:
        return full
    n, r = like.device_mesh.size(), like.device_mesh.get_local_rank()
    parts = full.chunk(n, d)  # DTensor's Shard rule: torch.chunk, missing trailing chunks empty
    return parts[r] if r < len(parts) else full.narrow(d, 0, 0)
