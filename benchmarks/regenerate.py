"""Regenerate every benchmark in one run, in a throwaway venv, into one machine-written page.

Run from the repository root: ``python benchmarks/regenerate.py`` (or ``overparam bench regenerate``).

1. A fresh venv (``--venv DIR`` to choose or keep it; ``--no-venv`` to use this interpreter) gets
   ``torch==2.13.0`` first, then this checkout with its ``bench`` extra (the anchors: PyHessian,
   curvlinops, scipy, mup, peft, and transformers, unit-scaling, attrs that single scripts import),
   with torch held at its pin by a constraints file, so no anchor can swap the build.
2. Every ``benchmarks/*_bench.py`` runs once, one after the other, with that venv's Python and the
   checkout first on ``PYTHONPATH`` (as ``overparam bench NAME`` runs them); ``--only`` picks some.
3. ``benchmarks/results/latest.md`` (``--out``) gets the machine (CPU model and cores, GPU or none),
   the versions of torch and of every anchor, the load average, and per script its command, exit
   status, wall time and printed output. Scripts that write their own ``results/<name>.md``
   (hessian, jacobian, kfac, distributed, scaling) refresh those pages in the same run.

``benchmarks/RESULTS.md`` — the ratios against the targets, with their context — stays a curated
summary: a person copies the new figures from ``latest.md`` into it.
"""

from __future__ import annotations

import argparse
import datetime
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TORCH = "torch==2.13.0"
VERSIONS = ("torch", "pyhessian", "curvlinops", "scipy", "mup", "peft", "transformers", "unit_scaling", "triton")
MACHINE = r"""
import importlib.metadata as md, os, platform, torch
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.processor()) \
    if os.path.exists("/proc/cpuinfo") else platform.processor()
gpu = ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())) or "no GPU"
print(f"{cpu} ({os.cpu_count()} cores), {gpu}; {platform.system()} {platform.machine()}, Python {platform.python_version()}")
names = {"pyhessian": "PyHessian", "curvlinops": "curvlinops-for-pytorch", "unit_scaling": "unit-scaling"}
found = []
for m in %r:
    try:
        found.append(f"{m} {md.version(names.get(m, m))}")
    except md.PackageNotFoundError:
        found.append(f"{m} not installed")
print("; ".join(found))
"""


def scripts(only: list[str] | None) -> list[Path]:
    """The ``*_bench.py`` scripts, or those named in ``only`` (``hessian`` or ``hessian_bench``)."""
    found = {p.stem.removesuffix("_bench"): p for p in sorted((ROOT / "benchmarks").glob("*_bench.py"))}
    if not only:
        return list(found.values())
    unknown = [n for n in only if n.removesuffix("_bench") not in found]
    if unknown:
        raise SystemExit(f"regenerate: unknown benchmark(s) {unknown}; available: {', '.join(found)}")
    return [found[n.removesuffix("_bench")] for n in only]


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
    return python


def load() -> str:
    return " / ".join(f"{x:.2f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"


def run_one(python: Path, script: Path, timeout: float) -> tuple[int | str, float, str]:
    """(exit status or "timeout", wall seconds, stdout + stderr tail) of one script."""
    env = dict(os.environ, MPLBACKEND="Agg")
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    t0 = time.perf_counter()
    try:
        out = subprocess.run([str(python), str(script)], cwd=ROOT, env=env, capture_output=True, text=True,
                             timeout=timeout)
    except subprocess.TimeoutExpired as e:
        text = (e.stdout or b"").decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
        return "timeout", time.perf_counter() - t0, text
    text = out.stdout
    if out.returncode != 0:
        text += "\n--- stderr (last 40 lines) ---\n" + "\n".join(out.stderr.splitlines()[-40:])
    return out.returncode, time.perf_counter() - t0, text


def page(machine: str, versions: str, rows: list[tuple[Path, int | str, float, str]], load0: str, load1: str) -> str:
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    out = ["# Latest benchmark run", "",
           "Machine-written by `python benchmarks/regenerate.py`; the curated ratios and their context are in "
           "[RESULTS.md](../RESULTS.md).", "",
           f"- date: {now}", f"- machine: {machine}", f"- versions: {versions}",
           f"- load average (1, 5, 15 min) at start: {load0}; at end: {load1}", "",
           "| script | exit | wall time |", "| --- | --- | --- |"]
    out += [f"| `{s.name}` | {rc} | {sec:.0f} s |" for s, rc, sec, _ in rows]
    for s, rc, sec, text in rows:
        out += ["", f"## `{s.name}`", "", f"`python benchmarks/{s.name}` — exit {rc}, {sec:.0f} s", "",
                "```text", text.rstrip().replace("```", "'''"), "```"]
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    where = ap.add_mutually_exclusive_group()
    where.add_argument("--venv", type=Path, help="build (or reuse, if it has bin/python) the venv here and keep it")
    where.add_argument("--no-venv", action="store_true", help="run with this interpreter (its packages as they are)")
    ap.add_argument("--only", nargs="+", metavar="NAME", help="only these benchmarks (default: every *_bench.py)")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "latest.md")
    ap.add_argument("--timeout", type=float, default=3 * 3600, help="seconds per script (default 3 h)")
    args = ap.parse_args(argv)
    todo = scripts(args.only)
    tmp = None
    if args.no_venv:
        python = Path(sys.executable)
    elif args.venv is not None and (args.venv / "bin" / "python").exists():
        python = args.venv / "bin" / "python"
    else:
        if args.venv is None:
            tmp = Path(tempfile.mkdtemp(prefix="overparam-bench-"))
        python = make_venv(args.venv or tmp / "venv")
    try:
        info = subprocess.run([str(python), "-c", MACHINE % (VERSIONS,)], capture_output=True, text=True,
                              check=True).stdout.splitlines()
        load0, rows = load(), []
        for script in todo:
            print(f"regenerate: {script.name} ...", flush=True)
            rc, sec, text = run_one(python, script, args.timeout)
            print(f"regenerate: {script.name} exit {rc} in {sec:.0f} s", flush=True)
            rows.append((script, rc, sec, text))
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(page(info[0], info[1], rows, load0, load()))
        print(f"regenerate: wrote {args.out}")
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0 if all(rc == 0 for _, rc, _, _ in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
