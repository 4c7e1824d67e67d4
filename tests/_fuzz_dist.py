"""Valid calls of the distributed helpers (overparam.backend.dist, overparam.backend.sharded), merged
into tests/_fuzz_cases.py's CALLS (in one process every helper is its single-process case)."""

from __future__ import annotations

import torch

D = torch.float64


def t(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=D)


DIST_CALLS = {
    "backend.dist.all_reduce_vec": {"x": lambda: (t(3),)}, "backend.dist.all_gather": {"t": lambda: t(3)},
    "backend.dist.global_kth_value": {"values": lambda: t(10), "k": lambda: 3}, "backend.dist.local_part": {"full": lambda: t(3), "like": lambda: t(3)},
    "backend.dist.agree": {"value": lambda: [(2, 3)], "what": lambda: "shapes"}, "backend.dist.sample_weight": {"count": lambda: 3},
    "backend.dist.is_dtensor": {"t": lambda: t(3)}, "backend.dist.shard_dim": {"t": lambda: t(3)},
    "backend.dist.dtensor_like": {"local": lambda: t(3), "like": lambda: t(3)},
    "backend.dist.reduce_scatter": {"parts": lambda: t(1, 3)},
    "backend.sharded.ShardedSpace": {"layout": lambda: [t(2, 3), t(4)]},
    "backend.sharded.localize": {"space": lambda: None, "full": lambda: t(3)},
    "backend.sharded.reduce": {"space": lambda: None, "t": lambda: t(3)},
    "backend.sharded.norm": {"space": lambda: None, "x": lambda: t(3)},
    "backend.sharded.qr": {"space": lambda: None, "Y": lambda: t(5, 2)},
}
