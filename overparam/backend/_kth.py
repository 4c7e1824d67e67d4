"""The exact k-th smallest of floats held in pieces (one process, or shards over ranks): bisection
on the order-preserving integer image of the floats, each round one reduction of a count through a
callback, so the same code serves :func:`overparam.backend.dist.global_kth_value` over any group.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

INT_VIEW = {torch.float64: torch.int64, torch.float32: torch.int32, torch.float16: torch.int16, torch.bfloat16: torch.int16}


def _ordered_keys(values: Tensor) -> Tensor:
    """Integers (int64) whose order is the order of the floats (for non-NaN values)."""
    ity = INT_VIEW[values.dtype]
    bits = values.contiguous().view(ity)
    mask = torch.iinfo(ity).max
    return torch.where(bits < 0, bits ^ mask, bits).to(torch.int64)


def _from_key(key: Tensor, dtype: torch.dtype) -> Tensor:
    k = key.to(INT_VIEW[dtype])
    return torch.where(k < 0, k ^ torch.iinfo(k.dtype).max, k).view(dtype)


def kth_by_bisection(values: Tensor, k: int, reduce: Callable[[Tensor, str], Tensor]) -> Tensor:
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
