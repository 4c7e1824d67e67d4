"""A rank that dies mid-computation: the survivor ends in a clear error within the process-group
timeout, never a hang (its own short-lived 2-process gloo group: the death ends the group)."""

import os
import time

import pytest
import torch
from _dist_launch import launch

from overparam import hessian as H
from overparam.backend import dist as opdist
from overparam.testing import tanh_mlp

PG_TIMEOUT = 5.0


def _dies(rank, world):
    net = tanh_mlp([3, 4, 1], generator=0)
    g = torch.Generator().manual_seed(rank)
    x, y = torch.randn(6, 3, generator=g, dtype=torch.float64), torch.randn(6, 1, generator=g, dtype=torch.float64)
    Hd = H.distributed_hessian(net, torch.nn.functional.mse_loss, (x, y))  # collectives: both ranks alive
    seed = opdist.broadcast_seed(0)
    if rank == 1:
        os._exit(1)  # dies between two collectives of the Lanczos run below
    start = time.monotonic()
    try:
        H.lanczos(Hd, k=3, generator=seed)
    except Exception as err:  # noqa: BLE001 - the error the survivor sees is the result
        return {"error": f"{type(err).__name__}: {err}", "seconds": time.monotonic() - start}
    return {"error": None, "seconds": time.monotonic() - start}


@pytest.mark.dist
def test_dead_rank_ends_in_error_not_hang():
    r0, r1 = launch(_dies, dead=(1,), timeout=4 * PG_TIMEOUT + 30, pg_timeout=PG_TIMEOUT)
    assert r1 is None
    assert r0["error"] is not None, "the survivor finished a Lanczos run without its peer"
    assert r0["seconds"] < PG_TIMEOUT + 5, r0  # within the process-group timeout (gloo: at once, the peer's socket closed)
    assert "RuntimeError" in r0["error"] and ("closed" in r0["error"] or "reset" in r0["error"]
                                              or "timed out" in r0["error"].lower()), r0["error"]
