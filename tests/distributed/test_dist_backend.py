"""backend.dist's FSDP2 glue in a real 2-process gloo group: local_part cuts a full tensor exactly as
DTensor shards it (uneven and empty shards included); unsharded_copy computes what the model does."""

import pytest
import torch
from _dist_launch import register, results

from overparam.backend import dist as opdist

CASES = [((5, 3), 0), ((5, 3), 1), ((1, 4), 0), ((3,), 0), ((4, 2), 0)]


@register
def _worker(rank, world):
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard
    from torch.distributed.tensor import Shard, distribute_tensor

    mesh = init_device_mesh("cpu", (world,))
    out = {"local_part": []}
    for shape, d in CASES:
        full = torch.arange(float(torch.Size(shape).numel())).reshape(shape)
        dt = distribute_tensor(full, mesh, [Shard(d)])
        got = opdist.local_part(full, dt)
        out["local_part"].append(got.shape == dt.to_local().shape and torch.equal(got, dt.to_local()))
    net = torch.nn.Sequential(torch.nn.Linear(3, 5), torch.nn.Tanh(), torch.nn.Linear(5, 2)).double()
    torch.nn.init.constant_(net[2].bias, 0.25)
    fully_shard(net[0])
    fully_shard(net)
    x = torch.randn(4, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    copy = opdist.unsharded_copy(net)
    out["model_untouched"] = all(opdist.is_dtensor(p) for p in net.parameters()) and bool(net._forward_pre_hooks)
    out["plain"] = not any(opdist.is_dtensor(p) for p in copy.parameters()) and type(copy) is torch.nn.Sequential
    out["same_output"] = torch.equal(copy(x), net(x).detach())
    out["hooks_gone"] = not copy._forward_pre_hooks and not copy[0]._forward_pre_hooks
    return out


@pytest.mark.dist
def test_local_part_and_unsharded_copy(gloo):
    for r in results(gloo, _worker):
        assert r["local_part"] == [True] * len(CASES)
        assert r["plain"] and r["same_output"] and r["hooks_gone"] and r["model_untouched"]
