"""Run a registered experiment and write ``result.json``, its plots and ``report.md``; run a set of
them for ``overparam report --run`` (:func:`run_all`)."""

from __future__ import annotations

import json
import math
import os
import platform
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from .. import __version__
from . import Context, Experiment, get
from ._report import details_of, seconds_text, setting_of, write_report


def _jsonable(x: Any) -> Any:
    if isinstance(x, torch.Tensor):
        return _jsonable(x.tolist())
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, float) and not math.isfinite(x):
        return str(x)
    if hasattr(x, "item") and callable(x.item):
        return x.item()
    return x


def check_run_args(device: str | torch.device, threads: int | None) -> torch.device:
    """The run's device, after refusing a ``threads`` below 1 or a CUDA device torch cannot use (ValueError)."""
    if threads is not None and threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was asked for but torch.cuda.is_available() is False")
    return dev


def run_experiment(exp: Experiment, *, out: Path, quick: bool = False, seed: int = 0, device: str = "cpu",
                   progress: bool = True, threads: int | None = 1) -> dict[str, Any]:
    """Run ``exp`` and write its artefacts into ``out``; returns the result dict.

    ``threads`` sets torch's intra-op threads for the run (restored afterwards; None keeps
    the current setting). The experiments' tensors are small, where one thread is fastest.
    """
    dev = check_run_args(device, threads)
    out.mkdir(parents=True, exist_ok=True)
    ctx = Context(out=out, seed=seed, device=dev, quick=quick, params=exp.params_for(quick), show_progress=progress)
    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    load0 = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    try:
        t0, c0 = time.perf_counter(), time.process_time()
        measured = exp.run(ctx)
        seconds, cpu_seconds = time.perf_counter() - t0, time.process_time() - c0
    finally:
        torch.set_num_threads(before)
    if "claim_holds" not in measured or "summary" not in measured:
        raise RuntimeError(f"experiment {exp.name!r} must return 'claim_holds' and 'summary'")
    result = {
        "experiment": exp.name,
        "paper": exp.paper,
        "claim": exp.claim,
        "setting": setting_of(exp),
        "details": details_of(exp),
        "claim_holds": bool(measured.pop("claim_holds")),
        "summary": list(measured.pop("summary")),
        "measured": measured,
        "params": ctx.params,
        "quick": quick,
        "seed": seed,
        "device": str(dev),
        "seconds": round(seconds, 3),
        "cpu_seconds": round(cpu_seconds, 3),
        "load_average": [load0, os.getloadavg()[0]] if load0 is not None else None,
        "figures": ctx.figures,
        "notes": ctx.notes,
        "versions": {"overparam": __version__, "torch": torch.__version__, "python": platform.python_version()},
    }
    (out / "result.json").write_text(json.dumps(_jsonable(result), indent=2) + "\n")
    write_report([result], out / "report.md", folders=[out])
    return result


def failed_result(exp, err: BaseException, *, quick: bool, seed: int, device: str, seconds: float) -> dict[str, Any]:
    """The result of an experiment whose run raised ``err``: failed, with the traceback."""
    return {"experiment": exp.name, "paper": exp.paper, "claim": exp.claim, "claim_holds": False,
            "summary": [f"the run raised {type(err).__name__}: {err}"], "measured": {},
            "params": exp.params_for(quick), "quick": quick, "seed": seed, "device": device,
            "seconds": round(seconds, 3), "figures": [], "notes": [],
            "error": _traceback(err)}


def _traceback(err: BaseException) -> str:
    """The last frames of ``err``'s traceback by file name (no machine paths: the page is checked in)."""
    frames = traceback.extract_tb(err.__traceback__)[-6:]
    return "".join(f"  {Path(f.filename).name}:{f.lineno} in {f.name}\n" for f in frames) + f"{type(err).__name__}: {err}\n"


def run_one(name: str, out: Path, quick: bool, seed: int, device: str, threads: int | None) -> tuple[Path, dict[str, Any]]:
    """Run experiment ``name`` into ``out/NAME``: ``(folder, result)``; a run that raises gives a
    failed result (:func:`failed_result`, also written as ``result.json``)."""
    exp = get(name)
    folder = out / exp.name
    t0 = time.perf_counter()
    try:
        res = run_experiment(exp, out=folder, quick=quick, seed=seed, device=device, progress=False, threads=threads)
    except Exception as err:  # noqa: BLE001 - one broken experiment must not hide the others' results
        res = failed_result(exp, err, quick=quick, seed=seed, device=device, seconds=time.perf_counter() - t0)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "result.json").write_text(json.dumps(res, indent=2) + "\n")
    return folder, res


def run_all(names: list[str], out: Path, *, quick: bool, seed: int = 0, device: str = "cpu", threads: int | None = 1,
            jobs: int = 1, log: Callable[[str], None] = print) -> list[tuple[Path, dict[str, Any]]]:
    """Run the experiments ``names`` (:func:`run_one` each); ``(folder, result)`` in the order of ``names``.

    ``jobs > 1`` runs that many at once, each in its own (spawned) process: on a machine with
    ``jobs × threads`` idle cores the wall time of each run is unchanged and the total shrinks.
    """
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise ValueError(f"jobs must be an int >= 1, got {jobs!r}")
    for name in names:
        get(name)                                   # unknown names fail before anything runs
    args = (out, quick, seed, device, threads)
    done: dict[str, tuple[Path, dict[str, Any]]] = {}

    def finished(name: str, found: tuple[Path, dict[str, Any]]) -> None:
        done[name] = found
        log(f"{found[1]['experiment']:22s} {'PASS' if found[1]['claim_holds'] else 'FAIL'}  {seconds_text(found[1])}")

    if jobs == 1:
        for name in names:
            finished(name, run_one(name, *args))
    else:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor, as_completed

        with ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = {pool.submit(run_one, name, *args): name for name in names}
            for fut in as_completed(futures):
                finished(futures[fut], fut.result())
    return [done[name] for name in names]
