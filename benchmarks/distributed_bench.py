"""Data-parallel curvature on 2 gloo ranks vs one process, and the FSDP2 masked step (issue 19).

An MLP (32 → width → width → 10, tanh, float32, MSE) on N samples. The anchor is one process with
one thread on all N samples; the 2 spawned gloo ranks have one thread each and N/2 samples each and
run the same products through :func:`overparam.hessian.distributed_hessian`. Timed on both sides:
one Hessian-vector product (the operator built beforehand, kept double-backward graph; the median
of ``--inner`` products per round) and a top-5 Lanczos (``which="LA"``, ``tol=1e-6``, seed 0).

Fairness: the ranks are spawned, join their group and build their operators before any timing,
and the anchor builds its operator before any timing too (process start, group creation and
operator construction are outside every timed region); every process runs at one thread
(``OMP_NUM_THREADS=MKL_NUM_THREADS=1`` before the spawn, ``torch.set_num_threads(1)``, reported per
rank); the two sides run in alternating rounds (the ranks wait on a queue while the anchor runs,
the anchor waits while the ranks run), so a change of machine load hits both alike; the load
average is printed for every round. ``--anchor-only`` times the one-process side alone (run it
twice to see the noise of the machine).

Beside the wall-clock ratio (the issue's measure) the script prints, from the same runs:
``cpu`` — the ranks' CPU time (the larger rank's ``process_time``, gloo's threads included) over
the anchor's, which other jobs on a shared machine disturb much less than wall time;
``local`` — the wall time inside the ranks' local products only (no communication), the best two
processes reach on this machine; ``comm`` — the per-product collective (probe fingerprint and the
one all-reduce that carries the probe check) timed alone with both ranks ready, times the products,
over the 2-rank total; ``outside`` — the share of the 2-rank wall time outside the local products
(communication plus waiting for the slower rank plus, for Lanczos, its orthogonalisation, which
every rank repeats); ``serial`` — that orthogonalisation's share of the anchor's Lanczos.
On cores shared with other jobs every collective waits until both ranks are scheduled at once,
so the wall ratio drifts towards 1× as the load average rises; read it with the load beside it.

The FSDP2 part: a training step (forward, backward, AdamW) on 2 ranks, unmasked, masked
(``prune.masked``, 80% global magnitude masks) and packed (``prune.PackedAdamW``), interleaved
rounds of ``--steps`` steps, wall and CPU time, and the masking hook's own time per step.

Run from the repository root:
    python benchmarks/distributed_bench.py [--width 256] [--samples 4096] [--repeats 5]
It prints markdown tables (also written to benchmarks/results/distributed.md unless --no-write).
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import socket
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's overparam, in the spawned ranks too

import torch  # noqa: E402
import torch.distributed as tdist
import torch.multiprocessing as mp

import overparam.hessian as oh
from overparam import prune
from overparam.backend.random import fan_in_normal_
from _rows import Rows  # noqa: E402

mse = torch.nn.functional.mse_loss
CASES = ("hvp", "lanczos")


def problem(width: int, samples: int):
    net = torch.nn.Sequential(torch.nn.Linear(32, width), torch.nn.Tanh(), torch.nn.Linear(width, width),
                              torch.nn.Tanh(), torch.nn.Linear(width, 10))
    fan_in_normal_(net, generator=0)
    g = torch.Generator().manual_seed(1)
    return net, torch.randn(samples, 32, generator=g), torch.randn(samples, 10, generator=g)


def load() -> float:
    return os.getloadavg()[0]


class LocalClock:
    """Wraps an operator's ``_mv`` (the local product) and adds up its wall time."""

    def __init__(self, op):
        self.op, self.inner, self.seconds = op, op._mv, 0.0
        op._mv = self

    def __call__(self, v):
        t0 = time.perf_counter()
        out = self.inner(v)
        self.seconds += time.perf_counter() - t0
        return out


def run_case(H, local: LocalClock, case: str, inner: int) -> dict:
    """Wall and CPU seconds of one HVP (median of ``inner``) or one top-5 Lanczos; the local
    products' wall seconds in it; the product count; the Lanczos' seconds outside its products."""
    v = torch.randn(H.n, generator=torch.Generator().manual_seed(2))
    products = [0.0]
    saved, mv = H.__dict__.get("_mv"), H._mv

    def counted(x):
        t0 = time.perf_counter()
        out = mv(x)
        products[0] += time.perf_counter() - t0
        return out

    H._mv = counted
    local.seconds = 0.0
    try:
        if case == "hvp":
            H @ v  # warm-up
            local.seconds, products[0] = 0.0, 0.0
            walls, cpus = [], []
            for _ in range(inner):
                w0, c0 = time.perf_counter(), time.process_time()
                H @ v
                walls.append(time.perf_counter() - w0)
                cpus.append(time.process_time() - c0)
            return {"wall": statistics.median(walls), "cpu": statistics.median(cpus), "local": local.seconds / inner,
                    "products": 1, "serial": 0.0}
        w0, c0 = time.perf_counter(), time.process_time()
        eig = oh.lanczos(H, k=5, which="LA", tol=1e-6, generator=0)
        wall, cpu = time.perf_counter() - w0, time.process_time() - c0
        return {"wall": wall, "cpu": cpu, "local": local.seconds, "products": eig.n_matvecs,
                "serial": wall - products[0], "values": eig.values.tolist()}
    finally:
        if saved is None:
            del H._mv
        else:
            H._mv = saved


def comm_seconds(H, repeats: int = 20) -> float:
    """Median wall time of the distributed product around an identity local product (the probe
    fingerprint, the one all-reduce carrying the check, the copy back), both ranks ready."""
    flat = torch.randn(H.n, generator=torch.Generator().manual_seed(3))
    ident = lambda V: (V[0].clone(),)  # noqa: E731
    H._product((flat,), ident)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        H._product((flat,), ident)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def fsdp_models(args, half) -> dict:
    """Per kind (unmasked, masked, packed): an FSDP2 MLP on this rank's half, its step, its mask handle."""
    from torch.distributed.fsdp import fully_shard

    kinds = {}
    for kind in ("unmasked", "masked", "packed"):
        net, x, y = problem(args.width, args.samples)
        for m in net:
            if isinstance(m, torch.nn.Linear):
                fully_shard(m)
        fully_shard(net)
        x, y = x[half], y[half]
        masks = prune.global_magnitude(net, 0.8)
        opt = (prune.PackedAdamW(net.named_parameters(), masks, lr=1e-3) if kind == "packed"
               else torch.optim.AdamW(net.parameters(), lr=1e-3))
        handle = prune.masked(net, masks, optimizer=opt) if kind == "masked" else None

        def step(net=net, x=x, y=y, opt=opt):
            opt.zero_grad()
            mse(net(x), y).backward()
            opt.step()

        step()  # warm-up (lazy state)
        kinds[kind] = (step, handle)
    return kinds


def fsdp_round(kinds: dict, steps: int) -> dict:
    out = {}
    for kind, (step, handle) in kinds.items():
        tdist.barrier()
        w0, c0 = time.perf_counter(), time.process_time()
        for _ in range(steps):
            step()
        out[kind] = ((time.perf_counter() - w0) / steps, (time.process_time() - c0) / steps)
        if handle is not None:  # the masking hook alone (on the last step's gradients)
            t0 = time.perf_counter()
            for _ in range(10):
                handle.mask_grads_()
            out["hook"] = ((time.perf_counter() - t0) / 10, 0.0)
    return out


def _rank(rank: int, port: int, args, cmds, results) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    tdist.init_process_group("gloo", rank=rank, world_size=2, timeout=datetime.timedelta(seconds=300))
    net, x, y = problem(args.width, args.samples)
    half = slice(0, args.samples // 2) if rank == 0 else slice(args.samples // 2, None)
    H = oh.distributed_hessian(net, mse, (x[half], y[half]))
    local = LocalClock(H.local)
    kinds = None
    results.put((rank, "ready", {"threads": torch.get_num_threads(), "omp": os.environ.get("OMP_NUM_THREADS")}))
    while (cmd := cmds.get()) is not None:
        tdist.barrier()  # both ranks start together
        if cmd == "fsdp":
            kinds = kinds or fsdp_models(args, half)
            out = fsdp_round(kinds, args.steps)
        else:
            out = run_case(H, local, cmd, args.inner)
            if cmd == "hvp":
                tdist.barrier()
                out["comm"] = comm_seconds(H)
        results.put((rank, cmd, out))
    tdist.destroy_process_group()


class Ranks:
    """Two spawned gloo ranks that run a case when told to and report back."""

    def __init__(self, args):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        ctx = mp.get_context("spawn")
        self.cmds, self.results = [ctx.Queue() for _ in range(2)], ctx.Queue()
        self.procs = [ctx.Process(target=_rank, args=(r, port, args, self.cmds[r], self.results)) for r in range(2)]
        for p in self.procs:
            p.start()
        self.info = self._collect()

    def _collect(self) -> list[dict]:
        got = {}
        while len(got) < 2:
            try:
                rank, _, out = self.results.get(timeout=5)
                got[rank] = out
            except Exception:  # noqa: BLE001 - queue.Empty: stop if a rank died instead of waiting forever
                if any(p.exitcode not in (None, 0) for p in self.procs):
                    self.close(kill=True)
                    sys.exit("a rank failed (see its traceback above)")
        return [got[0], got[1]]

    def run(self, cmd: str) -> list[dict]:
        for q in self.cmds:
            q.put(cmd)
        return self._collect()

    def close(self, kill: bool = False) -> None:
        for p, q in zip(self.procs, self.cmds):
            p.kill() if kill else q.put(None)
        for p in self.procs:
            p.join()


def med(xs) -> float:
    return statistics.median(xs)


def report(args, rounds: list[dict], info, loads, rec=None) -> list[str]:
    """Markdown: the setup line, per-round and summary tables."""
    one = {c: [r[c]["one"] for r in rounds] for c in CASES}
    two = {c: [r[c]["two"] for r in rounds] if "two" in rounds[0][c] else None for c in CASES}
    n = sum(p.numel() for p in problem(args.width, 2)[0].parameters())
    per_round = ", ".join(f"{r['load']:.1f}" for r in rounds)
    threads = "; ".join(f"rank {i}: {d['threads']} thread(s), OMP_NUM_THREADS={d['omp']}" for i, d in enumerate(info))
    lines = [f"n = {n} parameters, N = {args.samples} samples (N/2 per rank), width {args.width}, float32, "
             f"torch {torch.__version__}, {platform.machine()}, {os.cpu_count()} CPUs; anchor: "
             f"{torch.get_num_threads()} thread(s); {threads or 'anchor only'}; load average (1 min) at start / per "
             f"round / end: {loads[0]:.1f} / {per_round} / {loads[1]:.1f}", ""]
    unit = {"hvp": ("ms", 1e3), "lanczos": ("s", 1.0)}
    head = "| round | load | " + " | ".join(
        f"{c} 1 process, wall / cpu ({unit[c][0]})" + ("" if two[c] is None else f" | {c} 2 ranks, wall / cpu "
                                                        f"({unit[c][0]}) | ratio") for c in CASES) + " |"
    lines += [head, "|" + " --- |" * (head.count("|") - 1)]
    for i, r in enumerate(rounds):
        cells = []
        for c in CASES:
            s, o = unit[c][1], r[c]["one"]
            cells.append(f"{o['wall'] * s:.4g} / {o['cpu'] * s:.4g}")
            if two[c] is not None:
                w2, c2 = (max(t[k] for t in r[c]["two"]) for k in ("wall", "cpu"))
                cells += [f"{w2 * s:.4g} / {c2 * s:.4g}", f"{w2 / o['wall']:.2f}x"]
        lines.append(f"| {i + 1} | {r['load']:.1f} | " + " | ".join(cells) + " |")
    if two["hvp"] is None:
        return lines
    lines += ["", f"Medians over {len(rounds)} rounds (a 2-rank time is the slower rank's):", "",
              "| case | products | 1 process (s) | 2 ranks (s) | ratio (wall) | ratio (cpu) | local only | comm | "
              "outside | serial |", "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    comm = med(max(t["comm"] for t in r["hvp"]["two"]) for r in rounds)
    for c in CASES:
        w1 = med(t["wall"] for t in one[c])
        c1 = med(t["cpu"] for t in one[c])
        w2 = med(max(t["wall"] for t in ts) for ts in two[c])
        c2 = med(max(t["cpu"] for t in ts) for ts in two[c])
        loc = med(max(t["local"] for t in ts) for ts in two[c])
        prods = two[c][0][0]["products"]
        outside = med(max(t["wall"] - t["local"] for t in ts) / max(t["wall"] for t in ts) for ts in two[c])
        serial = med(t["serial"] / t["wall"] for t in one[c])
        lines.append(f"| {c} | {prods} | {w1:.4f} | {w2:.4f} | {w2 / w1:.2f}x | {c2 / c1:.2f}x | {loc / w1:.2f}x | "
                     f"{100 * comm * prods / w2:.1f}% | {100 * outside:.1f}% | {100 * serial:.1f}% |")
        if rec is not None:
            what = {"hvp": "one HVP", "lanczos": "top-5 Lanczos"}.get(c, c)
            rec.add("hessian", f"{what} on 2 gloo ranks (1 thread each, N/2 samples each), {args.samples} samples, "
                    f"width {args.width}, fp32 (wall, the slower rank)", "one process, 1 thread, all N samples",
                    ours=w2, theirs=w1, target=0.6,
                    notes=f"CPU-time ratio {c2 / c1:.2f}; communication {100 * comm * prods / w2:.1f}% of the 2-rank "
                          f"time; outside the local products {100 * outside:.1f}%; medians of {len(rounds)} rounds")
    gap = max(abs(a - b) / abs(b) for a, b in zip(two["lanczos"][0][0]["values"], one["lanczos"][0]["values"]))
    lines += ["", f"top-5 eigenvalues, 2 ranks vs 1 process: largest relative difference {gap:.1e}"]
    if "fsdp" in rounds[0]:
        f = [r["fsdp"] for r in rounds]
        wall = {k: med(max(t[k][0] for t in ts) for ts in f) for k in ("unmasked", "masked", "packed")}
        cpu = {k: med(max(t[k][1] for t in ts) for ts in f) for k in ("unmasked", "masked", "packed")}
        hook = med(max(t["hook"][0] for t in ts) for ts in f)
        per = {k: ", ".join(f"{max(t[k][0] for t in ts) / max(t['unmasked'][0] for t in ts):.2f}" for ts in f)
               for k in ("masked", "packed")}
        lines += ["", f"FSDP2 training step (forward, backward, AdamW) on 2 ranks, N/2 each, 80% global magnitude "
                  f"masks, {args.steps} steps per round, medians over {len(rounds)} rounds (the slower rank):", "",
                  "| step | wall (s) | vs unmasked (wall) | per round | cpu (s) | vs unmasked (cpu) |",
                  "| --- | ---: | ---: | --- | ---: | ---: |"]
        for k in ("unmasked", "masked", "packed"):
            lines.append(f"| {k} | {wall[k]:.4f} | {wall[k] / wall['unmasked']:.2f}x | {per.get(k, '')} | "
                         f"{cpu[k]:.4f} | {cpu[k] / cpu['unmasked']:.2f}x |")
            if rec is not None and k != "unmasked":
                rec.add("prune", f"FSDP2 training step on 2 gloo ranks with 80% masks: {k} "
                        f"({'`prune.masked` AdamW' if k == 'masked' else '`PackedAdamW`'}), wall, the slower rank",
                        "the unmasked FSDP2 AdamW step", ours=wall[k], theirs=wall["unmasked"], target=1.15,
                        notes=f"CPU-time ratio {cpu[k] / cpu['unmasked']:.2f}; medians of {len(rounds)} rounds")
        lines += ["", f"The masking hook (`Masked.mask_grads_`, one `_foreach_mul_` on the DTensor gradients) alone: "
                  f"{hook * 1e3:.3f} ms per step = {100 * hook / wall['unmasked']:.2f}% of the unmasked step."]
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--width", type=int, default=256)
    ap.add_argument("--samples", type=int, default=4096)
    ap.add_argument("--repeats", type=int, default=5, help="alternating rounds (medians over them)")
    ap.add_argument("--inner", type=int, default=5, help="HVPs per round (their median is the round's HVP time)")
    ap.add_argument("--steps", type=int, default=20, help="FSDP2 steps per round and kind")
    ap.add_argument("--anchor-only", action="store_true", help="time the one-process side alone")
    ap.add_argument("--no-fsdp", action="store_true", help="skip the FSDP2 training step")
    ap.add_argument("--no-write", action="store_true")
    ap.add_argument("--name", default="distributed", help="the results' file stem (results/NAME.md and NAME.json)")
    args = ap.parse_args()
    os.environ.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")  # inherited by the spawned ranks
    torch.set_num_threads(1)
    loads = [load()]
    rec = None if args.no_write or args.anchor_only else Rows(args.name)
    ranks = None if args.anchor_only else Ranks(args)
    net, x, y = problem(args.width, args.samples)
    H = oh.hessian(net, mse, (x, y))
    local = LocalClock(H)
    rounds = []
    for _ in range(args.repeats):
        r = {"load": load()}
        for c in CASES:
            r[c] = {} if ranks is None else {"two": ranks.run(c)}
            r[c]["one"] = run_case(H, local, c, args.inner)
        if ranks is not None and not args.no_fsdp:
            r["fsdp"] = ranks.run("fsdp")
        rounds.append(r)
    if ranks is not None:
        ranks.close()
    loads.append(load())
    text = "\n".join(report(args, rounds, ranks.info if ranks else [], loads, rec))
    print(text)
    if not args.no_write and ranks is not None:
        out = Path(__file__).parent / "results" / f"{args.name}.md"
        out.write_text(text + "\n")
        rec.write()
        print(f"written to {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
