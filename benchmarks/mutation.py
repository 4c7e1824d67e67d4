"""Mutation review of the test suite: apply small realistic bugs one at a time, run the tests.

Each mutant in ``benchmarks/_mutants.py`` replaces one exact snippet of one
source file (the snippet must occur exactly once). The review copies the git-tracked and
untracked-but-not-ignored files of the repository into a temporary directory (the working tree
is never touched), and for each mutant:

1. applies it to the copy;
2. runs the mutant's targeted test files (``tests=``), then, if they all pass, the whole
   package's tests ``tests/<pkg>``, each run with ``pytest -x`` under ``timeout`` (a hang counts
   as killed);
3. restores the file.

A mutant is *killed* when some run fails; the first failing test is recorded. Mutants marked
``equivalent`` (no observable difference, with a reason) are run but not counted.

Usage (from the repository root)::

    python benchmarks/mutation.py                 # all mutants, summary per package
    python benchmarks/mutation.py --only hessian-3 prune  # some (ids or id prefixes)
    python benchmarks/mutation.py --json out.json # also write the per-mutant results

Writes nothing into the repository unless ``--json`` names a path there.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _mutants import MUTANTS  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def _copy_tree(dst: Path) -> None:
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, check=True,
                           capture_output=True, text=True).stdout.split("\n")
    for f in files:
        if f and (ROOT / f).is_file():
            (dst / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / f, dst / f)


def _pytest(cwd: Path, targets: list[str], timeout: int) -> tuple[bool, str]:
    """Run pytest; return (passed, first failing test or reason)."""
    cmd = ["timeout", str(timeout), sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *targets]
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
    r = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=env)
    if r.returncode == 0:
        return True, ""
    if r.returncode in (124, 137):
        return False, f"timeout {timeout}s ({' '.join(targets)})"
    m = re.search(r"^(FAILED|ERROR) (\S+)", r.stdout, flags=re.M)
    return False, m.group(2) if m else f"exit {r.returncode}: {r.stdout.strip()[-200:]}"


def line_of(mutant: dict, root: Path = ROOT) -> int:
    text = (root / mutant["file"]).read_text()
    return text[: text.index(mutant["old"])].count("\n") + 1


def run_one(work: Path, mutant: dict, timeout: int, package: bool = True) -> dict:
    path = work / mutant["file"]
    original = path.read_text()
    if original.count(mutant["old"]) != 1:
        raise ValueError(f"{mutant['id']}: snippet occurs {original.count(mutant['old'])} times in {mutant['file']}")
    line = line_of(mutant, work)
    path.write_text(original.replace(mutant["old"], mutant["new"]))
    try:
        killed_by = ""
        for targets in (mutant.get("tests", []), [f"tests/{mutant['pkg']}"] if package else []):
            if targets:
                ok, why = _pytest(work, list(targets), timeout)
                if not ok:
                    killed_by = why
                    break
    finally:
        path.write_text(original)
    return {"id": mutant["id"], "pkg": mutant["pkg"], "file": mutant["file"], "line": line, "what": mutant["what"],
            "killed": bool(killed_by), "killed_by": killed_by, "equivalent": mutant.get("equivalent", "")}


def summary(results: list[dict]) -> str:
    rows, tot_k, tot_n = [], 0, 0
    for pkg in dict.fromkeys(r["pkg"] for r in results):
        counted = [r for r in results if r["pkg"] == pkg and not r["equivalent"]]
        k = sum(r["killed"] for r in counted)
        tot_k, tot_n = tot_k + k, tot_n + len(counted)
        rows.append(f"{pkg:10s} {k:3d}/{len(counted):3d}  {100 * k / max(len(counted), 1):5.1f}%")
    rows.append(f"{'overall':10s} {tot_k:3d}/{tot_n:3d}  {100 * tot_k / max(tot_n, 1):5.1f}%")
    return "\n".join(rows)


def markdown(results: list[dict]) -> str:
    """The per-mutant table of docs/mutation.md."""
    rows = ["| id | file:line | the change | result |", "|---|---|---|---|"]
    for r in results:
        state = (f"equivalent: {r['equivalent']}" if r["equivalent"]
                 else f"killed by `{r['killed_by']}`" if r["killed"] else "**survived**")
        rows.append(f"| {r['id']} | `{r['file'].removeprefix('overparam/')}:{r['line']}` | {r['what']} | {state} |")
    return "\n".join(rows)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--only", nargs="*", default=None, help="mutant ids or id prefixes")
    ap.add_argument("--timeout", type=int, default=120, help="seconds per pytest run (a hang counts as killed)")
    ap.add_argument("--json", default=None, help="write the per-mutant results here")
    ap.add_argument("--targeted-only", action="store_true",
                    help="run only each mutant's targeted tests (a quick first pass; rerun survivors without it)")
    ap.add_argument("--markdown", default=None, metavar="JSON", help="print the table of a --json file and exit")
    args = ap.parse_args(argv)
    if args.markdown:
        results = json.loads(Path(args.markdown).read_text())
        print(markdown(results) + "\n\n" + summary(results))
        return 0
    chosen = [m for m in MUTANTS if args.only is None or any(m["id"] == o or m["id"].startswith(o) for o in args.only)]
    results = []
    with tempfile.TemporaryDirectory(prefix="overparam-mutants-") as tmp:
        work = Path(tmp)
        _copy_tree(work)
        for m in chosen:
            r = run_one(work, m, args.timeout, package=not args.targeted_only)
            results.append(r)
            state = "equivalent" if r["equivalent"] else ("killed" if r["killed"] else "SURVIVED")
            print(f"{r['id']:12s} {state:10s} {r['file']}:{r['line']}  {r['what']}  {r['killed_by']}", flush=True)
            if args.json:
                Path(args.json).write_text(json.dumps(results, indent=1))
    print(summary(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
