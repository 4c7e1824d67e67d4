"""Global masks over scores sharded across 2 gloo ranks equal the single-process masks."""

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from overparam.prune.masks import unstructured


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, port: int, shards, sparsity: float, out_dir: str) -> None:
    os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"] = "127.0.0.1", str(port)
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        torch.save(unstructured(shards[rank], sparsity, group=None), os.path.join(out_dir, f"{rank}.pt"))  # the world
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed unavailable")
def test_sharded_global_mask_equals_single_process(tmp_path):
    g = torch.Generator().manual_seed(0)
    # integer scores: many ties across the two ranks' shards
    shards = [{"a": torch.randint(0, 4, (7, 5), generator=g).float(), "b": torch.randint(0, 4, (9,), generator=g).float()},
              {"c": torch.randint(0, 4, (4, 6), generator=g).float()}]
    ctx = mp.get_context("spawn")
    port = _free_port()
    procs = [ctx.Process(target=_worker, args=(r, port, shards, 0.55, str(tmp_path))) for r in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert all(p.exitcode == 0 for p in procs)
    got = {**torch.load(tmp_path / "0.pt"), **torch.load(tmp_path / "1.pt")}
    expect = unstructured({**shards[0], **shards[1]}, 0.55)  # ties: rank 0's entries first, as in flat order
    for k in expect:
        assert torch.equal(got[k], expect[k]), k
    n = sum(v.numel() for v in expect.values())
    assert sum(int((~v).sum()) for v in got.values()) == int(0.55 * n + 0.5)
