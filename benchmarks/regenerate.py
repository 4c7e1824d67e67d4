"""Regenerate every benchmark in one run, in a throwaway venv, and write benchmarks/RESULTS.md from it.

Run from the repository root: ``python benchmarks/regenerate.py`` (or ``overparam bench regenerate``).

1. A fresh venv (``--venv DIR`` to choose or keep it; ``--no-venv`` to use this interpreter) gets
   ``torch==2.13.0`` first, then this checkout with its ``bench`` extra (the anchors: PyHessian,
   curvlinops, scipy, mup, peft, llmcompressor, and transformers, unit-scaling, attrs that single
   scripts import), with torch held at its pin by a constraints file, so no anchor can swap the build
   (llmcompressor 0.14 admits torch 2.10–2.14.0 and caps transformers at 5.17).
2. Every run of :data:`RUNS` (each ``benchmarks/*_bench.py``, some twice with other arguments) runs
   once, one after the other, with that venv's Python and the checkout first on ``PYTHONPATH``;
   ``--only NAME ...`` picks some (a script's name runs all its runs). Each script writes its rows to
   ``benchmarks/results/<run>.json`` (``_rows.py``); a run that fails, times out or writes no rows
   gets a failure record there instead (its command, exit status and last lines), so an old number is
   never shown as new. Each record gets the run's exit status, wall time and printed output.
3. ``benchmarks/RESULTS.md`` is then written from every JSON present (``_page.py``): machine, dates,
   versions, the summary against the targets (statuses computed, never typed), the runs, one section
   per run; and ``benchmarks/results/latest.md`` holds each run's printed output. ``--gather`` only
   rebuilds the two pages from the JSON present. The hand-written context and earlier runs are in
   ``benchmarks/results/history.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _page import page, read  # noqa: E402
from _rows import RESULTS, now  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TORCH = "torch==2.13.0"
FENCE = "`" * 3
# run name -> (script, its arguments); every benchmarks/*_bench.py has at least one run
RUNS: dict[str, tuple[str, tuple[str, ...]]] = {
    "backend": ("backend_bench.py", ()),
    "batched": ("batched_bench.py", ()),
    "calib": ("calib_bench.py", ()),
    "compiled": ("compiled_bench.py", ()),
    "distributed": ("distributed_bench.py", ()),
    "distributed_16k": ("distributed_bench.py", ("--samples", "16384", "--repeats", "3", "--no-fsdp", "--name",
                                                 "distributed_16k")),
    "factor": ("factor_bench.py", ()),
    "fisher": ("fisher_bench.py", ()),
    "hessian": ("hessian_bench.py", ()),
    "jacobian": ("jacobian_bench.py", ()),
    "kfac": ("kfac_bench.py", ()),
    "optim": ("optim_bench.py", ()),
    "optim_adapters": ("optim_bench.py", ("--adapters",)),
    "packed": ("packed_bench.py", ()),
    "prune": ("prune_bench.py", ("--threads", "1")),   # two OpenMP threads stall when anything else runs on 2 cores
    "removal": ("removal_bench.py", ()),
    "scaling": ("scaling_bench.py", ()),
    "sequence_ggn": ("sequence_ggn_bench.py", ()),
    "softmax_ce": ("softmax_ce_bench.py", ()),
    "umup": ("umup_bench.py", ()),
}
ENVIRONMENT = "import json, sys; sys.path.insert(0, sys.argv[1]); import _rows; print(json.dumps(_rows.environment(None)))"


def scripts(only: list[str] | None) -> list[str]:
    """The run names of :data:`RUNS`, or those ``only`` names: a run (``optim_adapters``) or a
    script (``optim`` or ``optim_bench``: all its runs)."""
    if not only:
        return list(RUNS)
    out, unknown = [], []
    for n in only:
        stem = n.removesuffix(".py").removesuffix("_bench")
        hits = [r for r, (script, _) in RUNS.items() if r == n or script == f"{stem}_bench.py"]
        out += [h for h in hits if h not in out]
        if not hits:
            unknown.append(n)
    if unknown:
        raise SystemExit(f"regenerate: unknown benchmark(s) {unknown}; available: {', '.join(RUNS)}")
    return out


def command(name: str) -> str:
    script, args = RUNS[name]
    return " ".join([script, *args])


def make_venv(path: Path) -> Path:
    """A venv at ``path`` with torch pinned first, then ``.[bench]``; its python."""
    subprocess.run([sys.executable, "-m", "venv", str(path)], check=True)
    python = path / "bin" / "python"
    pip = [str(python), "-m", "pip", "install", "--quiet"]
    subprocess.run(pip + ["--upgrade", "pip"], check=True)
    subprocess.run(pip + [TORCH], check=True)
    constraints = path / "constraints.txt"
    constraints.write_text(TORCH + "\n")
    subprocess.run(pip + ["-c", str(constraints), f"{ROOT}[bench]"], check=True)
    # mup and backpack (curvlinops) pull in torchvision, whose registry wheel may be built for another
    # build of torch (CUDA vs this CPU build): its ops then fail to load, and transformers, which
    # imports it when present, fails with them. No anchor needs it at run time.
    if subprocess.run([str(python), "-c", "import torchvision"], capture_output=True).returncode != 0:
        print("regenerate: torchvision does not load with the pinned torch; uninstalling it", flush=True)
        subprocess.run([str(python), "-m", "pip", "uninstall", "--yes", "--quiet", "torchvision"], check=True)
    return python


def run_one(python: Path, name: str, timeout: float, results: Path) -> tuple[int | str, float, str]:
    """Run one entry of :data:`RUNS`; (exit status or "timeout", wall seconds, stdout + stderr tail)."""
    script, args = RUNS[name]
    env = dict(os.environ, MPLBACKEND="Agg", OVERPARAM_BENCH_RESULTS=str(results))
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    t0 = time.perf_counter()
    try:
        out = subprocess.run([str(python), str(ROOT / "benchmarks" / script), *args], cwd=ROOT, env=env,
                             capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        text = e.stdout.decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
        return "timeout", time.perf_counter() - t0, text
    text = out.stdout
    if out.returncode != 0:
        text += "\n--- stderr (last 40 lines) ---\n" + "\n".join(out.stderr.splitlines()[-40:])
    return out.returncode, time.perf_counter() - t0, text


def settle(name: str, rc: int | str, wall: float, text: str, env: dict, results: Path) -> dict:
    """The run's record: its JSON with the run added, or a failure record when the script failed or
    wrote none (the JSON of an earlier run is removed before the run, never shown as new)."""
    path = results / f"{name}.json"
    rec = read(results).get(name) if path.exists() else None
    if rc != 0 or rec is None or rec.get("failed"):
        why = (f"timed out after {wall:.0f} s" if rc == "timeout" else f"exit {rc}" if rc != 0
               else "exit 0 but no rows written (the script does not emit rows)")
        rec = {"name": name, "script": RUNS[name][0], "argv": list(RUNS[name][1]), "date": now(), "environment": env,
               "failed": why, "output_tail": "\n".join(text.splitlines()[-30:]), "rows": []}
    rec["run"] = {"exit": rc, "wall_s": round(wall, 1), "output": text[-20000:]}
    path.write_text(json.dumps(rec, indent=1, ensure_ascii=False) + "\n")
    return rec


def outputs(records: dict[str, dict]) -> str:
    """``latest.md``: what each run printed in its latest regeneration."""
    out = ["# Printed output of the benchmark runs", "",
           "Machine-written by `python benchmarks/regenerate.py`: what each script printed in its latest run "
           "(their rows are on [RESULTS.md](../RESULTS.md)).", ""]
    for name, rec in records.items():
        run = rec.get("run")
        if not run:
            continue
        out += [f"## Output of {name}", "", f"`python benchmarks/{command(name) if name in RUNS else name}` — {rec.get('date')}, "
                + ("timed out" if run["exit"] == "timeout" else f"exit {run['exit']}") + f", {run['wall_s']:.0f} s", "",
                FENCE + "text", run["output"].rstrip().replace(FENCE, "'''"), FENCE, ""]
    return "\n".join(out)


def gather(results: Path, out: Path) -> dict[str, dict]:
    """Write ``out`` (RESULTS.md) and ``results/latest.md`` from the JSON files in ``results``."""
    records = read(results)
    out.write_text(page(records, list(RUNS), scripts={k: command(k) for k in RUNS}))
    (results / "latest.md").write_text(outputs(records))
    return records


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    where = ap.add_mutually_exclusive_group()
    where.add_argument("--venv", type=Path, help="build (or reuse, if it has bin/python) the venv here and keep it")
    where.add_argument("--no-venv", action="store_true", help="run with this interpreter (its packages as they are)")
    where.add_argument("--gather", action="store_true", help="run nothing: rebuild RESULTS.md from the JSON present")
    ap.add_argument("--only", nargs="+", metavar="NAME", help="only these runs or scripts (default: all)")
    ap.add_argument("--results", type=Path, default=RESULTS, help="folder of the JSON files (default benchmarks/results)")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "RESULTS.md")
    ap.add_argument("--timeout", type=float, default=3 * 3600, help="seconds per run (default 3 h)")
    args = ap.parse_args(argv)
    todo = [] if args.gather else scripts(args.only)
    args.results.mkdir(parents=True, exist_ok=True)
    tmp, ok = None, True
    try:
        if todo:
            if args.no_venv:
                python = Path(sys.executable)
            elif args.venv is not None and (args.venv / "bin" / "python").exists():
                python = args.venv / "bin" / "python"
            else:
                if args.venv is None:
                    tmp = Path(tempfile.mkdtemp(prefix="overparam-bench-"))
                python = make_venv(args.venv or tmp / "venv")
            env = json.loads(subprocess.run([str(python), "-c", ENVIRONMENT, str(ROOT / "benchmarks")],
                                            capture_output=True, text=True, check=True).stdout)
        for name in todo:
            print(f"regenerate: {command(name)} ...", flush=True)
            (args.results / f"{name}.json").unlink(missing_ok=True)
            rc, sec, text = run_one(python, name, args.timeout, args.results)
            rec = settle(name, rc, sec, text, env, args.results)
            ok &= not rec.get("failed")
            print(f"regenerate: {name} exit {rc} in {sec:.0f} s, {len(rec['rows'])} rows"
                  + (f" ({rec['failed']})" if rec.get("failed") else ""), flush=True)
        gather(args.results, args.out)
        print(f"regenerate: wrote {args.out}")
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
