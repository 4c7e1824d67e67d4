"""The ``overparam`` command: list, run and report reproductions of published claims; run benchmarks.

    overparam list
    overparam run NAME [--quick] [--out DIR] [--seed S] [--device cpu|cuda] [--quiet] [--threads N]
    overparam report [--out DIR] [--page FILE] [--run [--quick] [--only NAME ...] [--jobs J] [--seed S] [--device D] [--threads N]]
    overparam bench [--root DIR] [NAME [-- ARGS...]]

``report`` gathers every ``result.json`` under ``--out`` into one Markdown page (``--page``,
default ``OUT/REPORT.md``); with ``--run`` it first runs every registered experiment (or the
``--only`` ones) into ``OUT/NAME``, and exits 1 unless every claim is reproduced.

``bench`` runs ``benchmarks/NAME.py`` (or ``NAME_bench.py``) of a source checkout (``--root``,
default the current folder) in a fresh interpreter, with the checkout first on ``PYTHONPATH``
so that the checkout's ``overparam`` is the one measured; without NAME it lists the scripts.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

DEFAULT_OUT = Path("results")


def benchmarks(root: Path) -> dict[str, Path]:
    """The benchmark scripts under ``root/benchmarks`` by name (``hessian_bench.py`` is ``hessian``)."""
    folder = root / "benchmarks"
    if not folder.is_dir():
        raise ValueError(f"no benchmarks/ folder under {root}: run from a source checkout or pass --root")
    return {p.stem.removesuffix("_bench"): p for p in sorted(folder.glob("*.py")) if not p.name.startswith("_")}


def _bench(root: Path, name: str | None, args: list[str]) -> int:
    try:
        found = benchmarks(root)
    except ValueError as e:
        print(f"overparam: {e}", file=sys.stderr)
        return 2
    if name is None:
        for k, path in found.items():
            doc = next((ln.strip().strip('"') for ln in path.read_text().splitlines() if ln.strip()), "")
            print(f"{k:22s} {doc}")
        return 0
    script = found.get(name.removesuffix("_bench"))
    if script is None:
        print(f"overparam: unknown benchmark {name!r}; available: {', '.join(found)}", file=sys.stderr)
        return 2
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(root.resolve())] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    return subprocess.run([sys.executable, str(script.resolve()), *args], cwd=root, env=env).returncode


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="overparam", description="Reproduce over-parameterization claims.")
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="list the experiments")
    r = sub.add_parser("run", help="run one experiment")
    r.add_argument("name")
    r.add_argument("--quick", action="store_true", help="reduced size (under a minute on 2 CPU cores)")
    r.add_argument("--out", type=Path, default=None, help="output folder (default results/NAME)")
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    r.add_argument("--quiet", action="store_true", help="no progress bars")
    r.add_argument("--threads", type=int, default=1, help="torch intra-op CPU threads (default 1: small tensors)")
    rep = sub.add_parser("report", help="run the experiments (--run) and/or gather their results into one page")
    rep.add_argument("--out", type=Path, default=DEFAULT_OUT, help="the results folder (one sub-folder per experiment)")
    rep.add_argument("--page", type=Path, default=None, help="the Markdown page to write (default OUT/REPORT.md)")
    rep.add_argument("--run", action="store_true", help="run the experiments first (default: gather existing results)")
    rep.add_argument("--quick", action="store_true", help="with --run: the reduced sizes")
    rep.add_argument("--only", nargs="+", metavar="NAME", help="with --run: these experiments only")
    rep.add_argument("--seed", type=int, default=0)
    rep.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    rep.add_argument("--threads", type=int, default=1, help="torch intra-op CPU threads (default 1)")
    rep.add_argument("--jobs", type=int, default=1, help="with --run: experiments run at once, one process each")
    b = sub.add_parser("bench", help="list the benchmark scripts of a source checkout, or run one")
    b.add_argument("--root", type=Path, default=Path("."), help="the checkout holding benchmarks/ (default: .)")
    b.add_argument("name", nargs="?", help="benchmark to run (omit to list them)")
    b.add_argument("args", nargs=argparse.REMAINDER, help="arguments for the benchmark, after --")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "bench":
        return _bench(args.root, args.name, args.args[1:] if args.args[:1] == ["--"] else args.args)
    from . import experiments

    if args.command == "list":
        for name, exp in experiments.registry().items():
            print(f"{name:24s} {exp.paper}\n{'':24s}   {exp.claim}")
        return 0
    if args.command == "run":
        from .experiments._runner import check_run_args, run_experiment

        try:
            exp = experiments.get(args.name)
            check_run_args(args.device, args.threads)
        except ValueError as e:
            print(f"overparam: {e}", file=sys.stderr)
            return 2
        out = args.out if args.out is not None else DEFAULT_OUT / exp.name
        print(f"overparam run {exp.name}{' --quick' if args.quick else ''}: {exp.paper}")
        print(f"claim: {exp.claim}")
        res = run_experiment(exp, out=out, quick=args.quick, seed=args.seed, device=args.device, progress=not args.quiet,
                             threads=args.threads)
        for line in res["summary"]:
            print("  " + line)
        for note in res["notes"]:
            print("note: " + note)
        print(f"claim {'REPRODUCED' if res['claim_holds'] else 'NOT reproduced'} in {res['seconds']:.1f} s; "
              f"wrote {out / 'result.json'}, {out / 'report.md'}" + (f" and {len(res['figures'])} plot(s)" if res["figures"] else ""))
        return 0 if res["claim_holds"] else 1
    if args.command == "report":
        return _report(args)
    return 2  # pragma: no cover


def _report(args: argparse.Namespace) -> int:
    import time

    from . import experiments
    from .experiments._report import load_results, machine, run_intro, write_report
    from .experiments._runner import check_run_args, run_all

    page = args.page if args.page is not None else args.out / "REPORT.md"
    if not args.run:
        bad = [f"--{k}" for k in ("quick", "only") if getattr(args, k)] + (["--jobs"] if args.jobs != 1 else [])
        if bad:
            print(f"overparam: {' and '.join(bad)} only apply with --run", file=sys.stderr)
            return 2
        found = load_results(args.out)
        if not found:
            print(f"overparam: no result.json under {args.out}; run an experiment first (or pass --run)", file=sys.stderr)
            return 2
        sizes = sorted({"quick" if r.get("quick") else "full" for _, r in found})
        intro = [f"Gathered by `overparam report` from {len(found)} result folder(s) ({' and '.join(sizes)} size; "
                 f"read on {machine()}).", ""]
    else:
        try:
            names = list(experiments.registry()) if args.only is None else [experiments.get(n).name for n in args.only]
            check_run_args(args.device, args.threads)
            if args.jobs < 1:
                raise ValueError(f"jobs must be >= 1, got {args.jobs}")
        except ValueError as e:
            print(f"overparam: {e}", file=sys.stderr)
            return 2
        size = "--quick" if args.quick else "full size"
        print(f"overparam report --run ({size}): {len(names)} experiment(s) into {args.out}")
        t0, load = time.perf_counter(), os.getloadavg()[0] if hasattr(os, "getloadavg") else None
        found = run_all(names, args.out, quick=args.quick, seed=args.seed, device=args.device, threads=args.threads,
                        jobs=args.jobs)
        total = time.perf_counter() - t0
        cmd = "overparam report --run" + (" --quick" if args.quick else "") + (f" --only {' '.join(args.only)}" if args.only else "") + (f" --jobs {args.jobs}" if args.jobs != 1 else "")
        intro = run_intro(cmd, found, quick=args.quick, seed=args.seed, device=args.device, threads=args.threads,
                          jobs=args.jobs, wall=total, load=load)
    results = [r for _, r in found]
    path = write_report(results, page, folders=[f for f, _ in found], intro=intro)
    print(f"wrote {path} ({len(found)} experiment(s), {sum(bool(r['claim_holds']) for r in results)} reproduced)")
    return 0 if not args.run or all(r["claim_holds"] for r in results) else 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
