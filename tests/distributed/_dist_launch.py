"""Start ``world`` spawned CPU processes in a gloo group and collect what each returns.

Every worker ``fn(rank, world, *args)`` runs inside an initialised group with a short timeout;
its return value (or the ``repr`` of the exception it raised) comes back in rank order. The
parent never waits longer than ``timeout`` seconds: stragglers are killed and the test fails.

Test modules :func:`register` their workers at import; the session fixture ``gloo``
(conftest.py) runs every registered worker in ONE group (one process start for the folder),
and :func:`results` hands each test its worker's per-rank results.
"""

from __future__ import annotations

import datetime
import os
import queue as _queue
import socket
import traceback

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _entry(rank: int, world: int, port: int, q, fn, args, pg_timeout: float) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    try:
        dist.init_process_group("gloo", rank=rank, world_size=world,
                                timeout=datetime.timedelta(seconds=pg_timeout))
        try:
            q.put((rank, "ok", fn(rank, world, *args)))
        finally:
            dist.destroy_process_group()
    except BaseException as err:  # noqa: BLE001 - reported to the parent, which fails the test
        q.put((rank, "error", f"{type(err).__name__}: {err}\n{traceback.format_exc()}"))


def launch(fn, *args, world: int = 2, timeout: float = 60.0, pg_timeout: float = 15.0, dead=()) -> list:
    """``[fn's result on rank 0, on rank 1, ...]``; raises ``AssertionError`` naming the rank whose
    worker raised or did not finish. Ranks in ``dead`` are expected to exit without a result (None)."""
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    port = _free_port()
    procs = [ctx.Process(target=_entry, args=(r, world, port, q, fn, args, pg_timeout)) for r in range(world)]
    for p in procs:
        p.start()
    got = {}
    try:
        for _ in range(world - len(dead)):
            rank, status, value = q.get(timeout=timeout)
            got[rank] = (status, value)
    except _queue.Empty:
        pass
    finally:
        for p in procs:
            p.join(timeout=5)
            if p.is_alive():
                p.kill()
                p.join()
    missing = sorted(set(range(world)) - set(got) - set(dead))
    assert not missing, f"ranks {missing} did not finish within {timeout} s"
    errors = {r: v for r, (s, v) in got.items() if s == "error"}
    assert not errors, "worker failed:\n" + "\n".join(f"rank {r}: {v}" for r, v in sorted(errors.items()))
    return [got[r][1] if r in got else None for r in range(world)]


WORKERS: list = []


def register(fn):
    """Decorator: run ``fn(rank, world)`` in the folder's shared gloo group."""
    WORKERS.append(fn)
    return fn


def _key(fn) -> str:
    return f"{fn.__module__}.{fn.__qualname__}"


def _run_all(rank: int, world: int, fns) -> dict:
    out = {}
    for fn in fns:
        try:
            out[_key(fn)] = ("ok", fn(rank, world))
        except Exception as err:  # noqa: BLE001 - reported per worker by results()
            out[_key(fn)] = ("error", f"{type(err).__name__}: {err}\n{traceback.format_exc()}")
    return out


def launch_registered(timeout: float = 90.0) -> dict:
    """``{worker name: [(status, value) per rank]}`` for every registered worker, in one group."""
    per_rank = launch(_run_all, list(WORKERS), timeout=timeout)
    return {k: [r[k] for r in per_rank] for k in per_rank[0]}


def results(gloo: dict, fn) -> list:
    """``fn``'s result on every rank; fails naming the rank whose run raised."""
    got = gloo[_key(fn)]
    errors = [f"rank {r}: {v}" for r, (s, v) in enumerate(got) if s == "error"]
    assert not errors, "worker failed:\n" + "\n".join(errors)
    return [v for _, v in got]
