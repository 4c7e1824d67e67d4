"""The reproduction report: one Markdown page over one or several experiment results.

Per experiment the page gives the paper and its claim as stated, the setting used here (the
experiment module's first docstring paragraph, the parameters, seed, device, quick or full size),
the measured figures (the run's summary lines and its scalar results), the plots (links relative
to the page), pass/fail against the claim and the wall and CPU time. Running a set of
registered experiments is in ``_runner`` (``run_all``).
"""

from __future__ import annotations

import json
import os
import platform
import re
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch


def load_results(root: Path) -> list[tuple[Path, dict[str, Any]]]:
    """``(folder, result)`` for every ``result.json`` at or below ``root``, sorted by path."""
    return [(p.parent, json.loads(p.read_text())) for p in sorted(root.rglob("result.json"))]


def _paragraphs(exp) -> list[str]:
    doc = getattr(sys.modules.get(exp.run.__module__), "__doc__", None) or ""
    return [" ".join(p.split()) for p in doc.strip().split("\n\n") if p.strip()]


def setting_of(exp) -> str:
    """What an :class:`~overparam.experiments.Experiment` runs, in one line: its ``setting``, or else
    the first paragraph of the docstring of the module that defines its ``run``."""
    return exp.setting or next(iter(_paragraphs(exp)), "")


def details_of(exp) -> list[str]:
    """The paragraphs after the first of the experiment module's docstring (the paper's claim in
    detail, what is run here, the verdict rule), for the report's fold-out."""
    return _paragraphs(exp)[1:]


def _documented(name: str) -> tuple[str, list[str]]:
    from . import registry

    exp = registry().get(name)
    return (setting_of(exp), details_of(exp)) if exp is not None else ("", [])


def _fmt(v: Any) -> str | None:
    """A short rendering of a scalar or a short flat list of scalars, else None (left out of the table)."""
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, (int, str)) and len(str(v)) <= 60:
        return str(v)
    if isinstance(v, list) and 0 < len(v) <= 10 and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v):
        return "[" + ", ".join(_fmt(x) for x in v) + "]"
    return None


def _figures_table(measured: dict[str, Any]) -> list[str]:
    rows = [(k, s) for k, v in measured.items() if (s := _fmt(v)) is not None]
    if not rows:
        return []
    return ["| measured | value |", "| --- | --- |"] + [f"| `{k}` | {s} |" for k, s in rows]


def seconds_text(r: dict[str, Any]) -> str:
    cpu = r.get("cpu_seconds")
    return f"{r['seconds']:.1f} s" + (f" (CPU {cpu:.1f} s)" if cpu is not None else "")


def _short(paper: str) -> str:
    """The authors and year of a paper reference ("Arora, Cohen & Hazan 2018, On the ..." -> up to 2018)."""
    m = re.match(r".*?\b(?:19|20)\d\d\b", paper)
    return m.group(0) if m else paper


def write_report(results: list[dict[str, Any]], path: Path, *, folders: list[Path] | None = None,
                 intro: Iterable[str] = ()) -> Path:
    """Write the Markdown page of ``results`` to ``path``; ``folders[i]`` holds result i's plots
    (default: ``path``'s folder), linked relative to the page. ``intro``: lines after the title."""
    here = path.parent
    status = {True: "PASS", False: "**FAIL**"}                     # in the table: failures stand out
    lines = ["# overparam reproduction report", "", *intro]
    lines += ["| experiment | paper | claim | time |", "| --- | --- | --- | --- |"]
    for r in results:
        anchor = r["experiment"].replace(" ", "-")
        lines.append(f"| [{r['experiment']}](#{anchor}) | {_short(r['paper'])} | {status[bool(r['claim_holds'])]} "
                     f"| {seconds_text(r)} |")
    for i, r in enumerate(results):
        folder = folders[i] if folders else here
        size = "quick" if r.get("quick") else "full size"
        lines += ["", f"## {r['experiment']}", "",
                  f"**{'PASS' if r['claim_holds'] else 'FAIL'}** — claim {'reproduced' if r['claim_holds'] else 'NOT reproduced'} "
                  f"in {seconds_text(r)} ({size}, seed {r['seed']}, {r['device']}"
                  + (f", load average {r['load_average'][0]:.1f} → {r['load_average'][1]:.1f}" if r.get("load_average") else "")
                  + ").", "",
                  f"*Paper:* {r['paper']}", "", f"*Claim:* {r['claim']}", ""]
        documented = _documented(r["experiment"]) if not (r.get("setting") and r.get("details")) else ("", [])
        setting, details = r.get("setting") or documented[0], r.get("details") or documented[1]
        params = ", ".join(f"`{k}={json.dumps(v)}`" for k, v in r.get("params", {}).items())
        lines += [f"*Setting:* {setting}", "", f"*Parameters ({size}):* {params}", ""]
        if details:
            lines += ["<details><summary>The claim in detail, the setting and the verdict rule (from the "
                      "experiment's documentation)</summary>", "", *[x for d in details for x in (d, "")], "</details>", ""]
        if r.get("error"):
            lines += ["*Error:*", "", "```", *r["error"].rstrip().splitlines()[-12:], "```", ""]
        lines += ["*Measured:*", "", "```", *r["summary"], "```"]
        table = _figures_table(r.get("measured", {}))
        if table:
            lines += ["", *table]
        for note in r.get("notes", []):
            lines += ["", f"> {note}"]
        for fig in r.get("figures", []):
            lines += ["", f"![{r['experiment']}: {fig}]({Path(os.path.relpath(folder / fig, here)).as_posix()})"]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


def run_intro(cmd: str, found: list[tuple[Path, dict[str, Any]]], *, quick: bool, seed: int, device: str,
              threads: int | None, jobs: int, wall: float, load: float | None) -> list[str]:
    """The lines under the title of a page written by ``overparam report --run``."""
    import time

    results = [r for _, r in found]
    cpu = sum(r.get("cpu_seconds") or 0.0 for r in results)
    end = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    lines = [f"Generated by `{cmd}` on {time.strftime('%Y-%m-%d', time.gmtime())} ({machine()}): "
             f"{'**quick (reduced) sizes**' if quick else 'full sizes'}, seed {seed}, {device}, {threads} thread(s), "
             f"{jobs} experiment(s) at once.", "",
             f"**{sum(bool(r['claim_holds']) for r in results)} of {len(results)} claims reproduced.** Total wall time "
             f"{wall:.0f} s, total CPU time of the runs {cpu:.0f} s"
             + (f"; load average {load:.1f} at the start, {end:.1f} at the end (on a shared machine the wall times are "
                f"inflated and the CPU times are the better guide)" if load is not None and end is not None else "") + ".", ""]
    if quick:
        lines += ["> Every experiment ran at its reduced `--quick` parameters, listed in its section; the full-size "
                  "figures differ (see each experiment's documentation). The same command without `--quick` runs the "
                  "full sizes.", ""]
    return lines


def machine() -> str:
    """One line naming this machine and the software versions (for the report's header)."""
    from .. import __version__

    return (f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPU core(s); Python "
            f"{platform.python_version()}, torch {torch.__version__}, overparam {__version__}")
