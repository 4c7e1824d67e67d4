"""dist helpers: exact no-ops in one process, and correct in a real 2-process gloo group."""

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from overparam.backend import dist as opdist
from overparam.backend import vec
from overparam.backend._kth import kth_by_bisection
from overparam.backend.topk import topk_mask


def test_single_process_is_identity():
    x = (torch.ones(2, 3), torch.arange(4.0))
    out = opdist.all_reduce_vec(x, op="mean")
    assert out[0] is x[0] and out[1] is x[1] and torch.equal(x[1], torch.arange(4.0))
    assert not opdist.is_distributed() and opdist.rank() == 0
    assert opdist.all_gather(torch.tensor([3, 4])).tolist() == [[3, 4]]


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_kth_by_bisection_matches_kthvalue_with_ties_and_signs(dtype):
    g = torch.Generator().manual_seed(0)
    vals = torch.randint(-5, 6, (300,), generator=g).to(dtype)  # many ties, both signs, zeros
    vals[::7] = -0.0
    ident = lambda t, how: t  # noqa: E731 - one rank: reductions are identities
    for k in [1, 2, 50, 150, 299, 300]:
        expected = torch.kthvalue(vals.float(), k).values
        got = kth_by_bisection(vals, k, ident)
        assert got.dtype == dtype and float(got) == float(expected)
        assert float(opdist.global_kth_value(vals, k)) == float(expected)


def test_kth_value_extremes_and_errors():
    vals = torch.tensor([float("-inf"), 1e-30, 3.0e38, float("inf")])
    ident = lambda t, how: t  # noqa: E731
    for k in range(1, 5):
        assert float(kth_by_bisection(vals, k, ident)) == float(torch.kthvalue(vals, k).values)
    with pytest.raises(ValueError, match=r"k must be in \[1, 4\]"):
        opdist.global_kth_value(vals, 5)
    with pytest.raises(ValueError, match="NaN"):
        opdist.global_kth_value(torch.tensor([1.0, float("nan")]), 1)
    with pytest.raises(TypeError, match="floating-point"):
        opdist.global_kth_value(torch.tensor([1, 2]), 1)


def test_new_helpers_in_one_process():
    x = (torch.ones(2, dtype=torch.float64),)
    assert opdist.all_reduce_vec(x, weight=0.25, check=True) is x and x[0].tolist() == [0.25, 0.25]
    opdist.agree([(2, 3)], "shapes")  # nothing to compare with
    assert opdist.sample_weight(5) == 1.0 and opdist.sample_weight(5, samples=[5]) == 1.0
    with pytest.raises(ValueError, match=r"samples\[0\] = 4 but rank 0 holds 5"):
        opdist.sample_weight(5, samples=[4])
    with pytest.raises(ValueError, match="one count per rank"):
        opdist.sample_weight(5, samples=[5, 5])
    with pytest.raises(ValueError, match="no rank holds any sample"):
        opdist.sample_weight(0)
    with pytest.raises(ValueError, match="count"):
        opdist.sample_weight(-1)
    assert opdist.broadcast_seed(7) == 7
    torch.manual_seed(3)
    state = torch.get_rng_state()
    assert opdist.broadcast_seed() == opdist.broadcast_seed()  # a measurement: the global RNG is not advanced
    assert torch.equal(state, torch.get_rng_state())
    net = torch.nn.Linear(2, 2)
    assert opdist.unwrap(net) is net and not opdist.is_dtensor(net.weight) and opdist.shard_dim(net.weight) is None
    assert opdist.dtensor_like(net.weight, net.weight) is net.weight
    assert not opdist.is_distributed(opdist.LOCAL) and opdist.world_size(opdist.LOCAL) == 1


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, queue) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        x = (torch.full((2, 2), float(rank + 1), dtype=torch.float64), torch.tensor([rank * 10.0], dtype=torch.float64))
        summed = opdist.all_reduce_vec(tuple(t.clone() for t in x), op="sum")
        mean = opdist.all_reduce_vec(tuple(t.clone() for t in x), op="mean")
        g = torch.Generator().manual_seed(100 + rank)
        shard = torch.randint(-20, 20, (37 + 11 * rank,), generator=g).to(torch.float32)  # unequal shards, ties
        kth = {k: float(opdist.global_kth_value(shard, k)) for k in (1, 10, 40, 84)}
        gathered = opdist.all_gather(torch.tensor([opdist.rank(), 7])).tolist()
        sharded_top = topk_mask(shard, 40, largest=False, group=None).tolist()  # the world: k counts entries over both ranks
        weighted = opdist.all_reduce_vec((torch.ones(2, dtype=torch.float64),), weight=float(rank + 1), check=True)
        extra = {"weight": opdist.sample_weight(3 + rank), "declared": opdist.sample_weight(3 + rank, samples=[3, 4]),
                 "seed": opdist.broadcast_seed(None if rank else 123), "weighted": weighted[0].tolist(),
                 "local": opdist.world_size(opdist.LOCAL), "world": opdist.world_size()}
        for key, call in (("disagree", lambda: opdist.agree(rank, "the rank")),
                          ("bad_shapes", lambda: opdist.all_reduce_vec((torch.ones(2 + rank),), check=True))):
            try:
                call()
                extra[key] = "no error"
            except ValueError as err:
                extra[key] = str(err)
        queue.put((rank, vec.flatten(summed).tolist(), vec.flatten(mean).tolist(), shard.tolist(), kth,
                   opdist.is_distributed(), gathered, sharded_top, extra))
    finally:
        dist.destroy_process_group()


@pytest.mark.dist
def test_two_process_gloo_group():
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    port = _free_port()
    procs = [ctx.Process(target=_worker, args=(r, 2, port, queue)) for r in range(2)]
    for p in procs:
        p.start()
    results = sorted(queue.get(timeout=120) for _ in procs)
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    all_vals = torch.tensor(results[0][3] + results[1][3])
    # exactly 40 smallest over both shards; ties at the threshold by index on rank 0, then rank 1
    got = results[0][7] + results[1][7]
    order = sorted(range(len(all_vals)), key=lambda i: (float(all_vals[i]), i))
    assert got == [i in set(order[:40]) for i in range(len(all_vals))]
    for rank, summed, mean, _, kth, ws, gathered, _, extra in results:
        assert extra["weight"] == (3 + rank) / 7 and extra["declared"] == extra["weight"]
        assert extra["seed"] == 123 and extra["weighted"] == [3.0, 3.0] and (extra["local"], extra["world"]) == (1, 2)
        assert extra["disagree"].startswith(f"ranks disagree on the rank: rank {rank} has {rank}")
        assert "ranks disagree on vector shapes" in extra["bad_shapes"]
        assert ws and gathered == [[0, 7], [1, 7]]
        assert summed == [3.0] * 4 + [10.0]
        assert mean == [1.5] * 4 + [5.0]
        for k, v in kth.items():
            assert v == float(torch.kthvalue(all_vals, k).values), (rank, k)
