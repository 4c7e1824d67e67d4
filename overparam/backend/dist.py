"""``torch.distributed`` helpers; exact no-ops in a single process.

* :func:`all_reduce_vec`: sum or average a parameter-shaped vector over ranks with one
  collective on the flattened vector (e.g. HVPs computed on each rank's data shard).
* :func:`all_gather`: one small tensor from every rank, stacked in rank order;
* :func:`global_kth_value`: the exact k-th smallest value of a tensor sharded over ranks
  (the threshold of a global magnitude mask under data or FSDP sharding), by bisection on
  the order-preserving integer image of the floats: ≤ 64 rounds of one ``all_reduce`` of a
  count each, no gather of the values.

"Single process" means ``torch.distributed`` is unavailable, not initialized, or the
world has size 1; then the input is returned untouched (the same objects).

Example:
    >>> import torch
    >>> global_kth_value(torch.tensor([3., 1., 2.]), 2)
    tensor(2.)
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
import torch.distributed as dist
from torch import Tensor

from . import vec as _vec

__all__ = ["is_distributed", "rank", "all_reduce_vec", "all_gather", "global_kth_value"]


def is_distributed(group=None) -> bool:
    """Whether a process group with more than one rank is active."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size(group) > 1


def rank(group=None) -> int:
    """This process's rank in ``group`` (0 in a single process)."""
    return dist.get_rank(group) if is_distributed(group) else 0


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


def all_reduce_vec(x: Iterable[Tensor], *, op: str = "sum", group=None) -> _vec.Vec:
    """All-reduce a vector in place over ranks and return it.

    Args:
        x: a parameter-shaped vector (same shapes on every rank).
        op: ``"sum"`` or ``"mean"``.
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
    if not is_distributed(group):
        return xs
    flat = _vec.flatten(xs)
    dist.all_reduce(flat, op=dist.ReduceOp.SUM, group=group)
    if op == "mean":
        flat /= dist.get_world_size(group)
    _vec.copy_(xs, _vec.unflatten(flat, xs))
    return xs


_INT_VIEW = {torch.float64: torch.int64, torch.float32: torch.int32, torch.float16: torch.int16, torch.bfloat16: torch.int16}


def _ordered_keys(values: Tensor) -> Tensor:
    """Integers (int64) whose order is the order of the floats (for non-NaN values)."""
    ity = _INT_VIEW[values.dtype]
    bits = values.contiguous().view(ity)
    mask = torch.iinfo(ity).max
    return torch.where(bits < 0, bits ^ mask, bits).to(torch.int64)


def _from_key(key: Tensor, dtype: torch.dtype) -> Tensor:
    ity = _INT_VIEW[dtype]
    k = key.to(ity)
    mask = torch.iinfo(ity).max
    return torch.where(k < 0, k ^ mask, k).view(dtype)


def _kth_by_bisection(values: Tensor, k: int, reduce: Callable[[Tensor, str], Tensor]) -> Tensor:
    """k-th smallest (1-based) of the union of all ranks' ``values`` by integer bisection.

    ``reduce(t, how)`` combines a 0-dim int64 tensor over ranks with ``how`` in {"sum", "min", "max"}.
    """
    keys = _ordered_keys(values.reshape(-1))
    big, small = torch.iinfo(torch.int64).max, torch.iinfo(torch.int64).min
    lo = int(reduce(keys.min() if keys.numel() else torch.tensor(big, device=keys.device), "min"))
    hi = int(reduce(keys.max() if keys.numel() else torch.tensor(small, device=keys.device), "max"))
    # invariant: count(keys <= hi) >= k, answer in [lo, hi]
    while lo < hi:
        mid = (lo + hi) // 2
        cnt = int(reduce((keys <= mid).sum(), "sum"))
        if cnt >= k:
            hi = mid
        else:
            lo = mid + 1
    return _from_key(torch.tensor(lo, device=values.device), values.dtype)


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
    if not isinstance(values, Tensor) or values.dtype not in _INT_VIEW:
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
    return _kth_by_bisection(values, k, _dist_reduce(group))
