"""Build ``benchmarks/RESULTS.md`` from the JSON files the scripts write (``benchmarks/results/*.json``,
the format of ``_rows.py``): a header (machine, dates, versions, load), the summary table of every
row with a target (status computed by ``_rows.status``), the runs, then one section per run.

A run with no JSON, or whose JSON records a failure, gets a row saying so; its old numbers are
never shown as new (benchmarks/regenerate.py replaces the JSON of a run that fails by a failure
record).
"""

from __future__ import annotations

import json
from pathlib import Path

from _rows import status

HISTORY = "results/history.md"   # relative to benchmarks/RESULTS.md


def read(folder: Path) -> dict[str, dict]:
    """``{name: record}`` of every ``*.json`` in ``folder``; unreadable files become failure records."""
    out = {}
    for p in sorted(Path(folder).glob("*.json")):
        try:
            rec = json.loads(p.read_text())
            if not isinstance(rec, dict) or not isinstance(rec.get("rows"), list):
                raise ValueError("no rows list")
        except ValueError as e:
            rec = {"name": p.stem, "failed": f"unreadable JSON ({e})", "rows": []}
        out[p.stem] = rec
    return out


def fmt(x: float | None, unit: str = "") -> str:
    """A number for the page: seconds as ms below 1 s, other units after the number."""
    if x is None:
        return "—"
    if unit == "s":
        return f"{x * 1e3:.3g} ms" if abs(x) < 1 else f"{x:.3g} s"
    if unit == "×":
        return f"{x:.3g}×"
    text = f"{x:.3g}" if abs(x) < 1e5 else f"{x:.3e}"
    return f"{text} {unit}".rstrip()


def _target(row: dict) -> str:
    if row.get("target") is None:
        return "—"
    compare = {"<=": "≤", ">=": "≥"}[row.get("compare", "<=")]
    return f"{compare} {fmt(row['target'], row['unit'] if row.get('judged') == 'ours' else '×')}"


def _judged(row: dict) -> str:
    return fmt(row["ours"], row["unit"]) if row.get("judged") == "ours" else fmt(row["ratio"], "×")


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _load(rec: dict) -> str:
    load = rec.get("load") or {}
    one = [f"{v[0]:.1f}" if v else "n/a" for v in (load.get("start"), load.get("end"))]
    return " → ".join(one) if load else "—"


def failure(rec: dict | None) -> str | None:
    """Why a run has no rows to show (None when it has)."""
    if rec is None:
        return "no JSON: not run, or the script does not emit rows"
    if rec.get("failed"):
        return f"failed: {rec['failed']}"
    if not rec["rows"]:
        return "no rows"
    return None


def page(records: dict[str, dict], expected: list[str], *, scripts: dict[str, str] | None = None) -> str:
    """The page for ``records`` (``read``'s result); every name in ``expected`` gets a line, with a
    "no JSON" row where it has no record. ``scripts`` maps a run's name to its script and arguments."""
    scripts = scripts or {}
    names = list(expected) + sorted(set(records) - set(expected))
    envs = [r["environment"] for r in records.values() if r.get("environment")]
    dates = sorted(r["date"] for r in records.values() if r.get("date"))
    machines = sorted({e["machine"] for e in envs})
    versions: dict[str, set] = {}
    for e in envs:
        for k, v in e.get("versions", {}).items():
            if v != "not installed":
                versions.setdefault(k, set()).add(v)
    out = ["# Benchmark results", "",
           "Machine-written by `python benchmarks/regenerate.py` from `benchmarks/results/*.json` (one file per run "
           "of a script); do not edit by hand. Every figure is overparam against the named anchor, both measured in "
           "the same run of one script; statuses are computed from the ratio and the target. The context of each "
           f"measurement, the explanations of misses and the earlier runs: [history]({HISTORY}).", "",
           f"- machine: {'; '.join(machines) or 'unknown'}",
           f"- runs from {dates[0]} to {dates[-1]}" if dates else "- runs: none",
           "- versions: " + (", ".join(f"{k} {' / '.join(sorted(v))}" for k, v in sorted(versions.items())) or "—"),
           "- load: the machine may be shared with other jobs; each run's 1-minute load average at its start and "
           "end is in the runs table (above the core count: loaded). A ratio measured under load is still a "
           "same-run ratio, but a loaded run's ratios move more between runs.", "",
           "## Summary against the targets", "",
           "The figure judged is the ratio overparam / anchor, or overparam's own figure where the target is absolute.",
           "", "| package | measurement | anchor | judged figure | target | status | run |",
           "| --- | --- | --- | --- | --- | --- | --- |"]
    for name in names:
        rec = records.get(name)
        why = failure(rec)
        if why:
            out.append(f"| — | {_cell(scripts.get(name, name))} | — | — | — | {_cell(why)} | {name} |")
            continue
        for row in rec["rows"]:
            if row.get("target") is not None:
                out.append(f"| {row['package']} | {_cell(row['measurement'])} | {_cell(row['anchor'])} | "
                           f"{_judged(row)} | {_target(row)} | {_cell(status(row))} | [{name}](#run-{name}) |")
    out += ["", "## Runs", "", "| run | command | date | exit | wall time | threads | load (1 min) start → end | rows |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name in names:
        rec = records.get(name)
        run = (rec or {}).get("run") or {}
        wall = f"{run['wall_s']:.0f} s" if run.get("wall_s") is not None else "—"
        known = rec or {}
        out.append(f"| {name} | `{_cell(_command(known, scripts.get(name, name)))}` | {known.get('date', '—')} | "
                   f"{run.get('exit', '—')} | {wall} | {(known.get('environment') or {}).get('threads', '—')} | "
                   f"{_load(known)} | {_cell(failure(rec) or len(rec['rows']))} |")
    for name in names:
        out += ["", f"## Run: {name}", ""] + _section(records.get(name), scripts.get(name, name), machines)
    return "\n".join(out) + "\n"


def _command(rec: dict, default: str) -> str:
    if rec.get("script"):
        return " ".join(["python benchmarks/" + rec["script"], *rec.get("argv", [])])
    return f"python benchmarks/{default}"


def _section(rec: dict | None, script: str, machines: list[str]) -> list[str]:
    why = failure(rec)
    if why:
        lines = [f"`{script}`: {why}."]
        if rec and rec.get("output_tail"):
            lines += ["", "```text", rec["output_tail"].rstrip().replace("```", "'''"), "```"]
        return lines
    env = rec.get("environment") or {}
    lines = [f"`{_command(rec, script)}`, {rec.get('date', '?')}, {env.get('threads', '?')} thread(s), load "
             f"{_load(rec)}; " + ", ".join(f"{k} {v}" for k, v in env.get("versions", {}).items()) + "."]
    if len(machines) > 1:
        lines[0] += f" Machine: {env.get('machine', '?')}."
    lines += ["", "| package | measurement | anchor | overparam | anchor | ratio | target | status | notes |",
              "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for row in rec["rows"]:
        lines.append(f"| {row['package']} | {_cell(row['measurement'])} | {_cell(row['anchor'])} | "
                     f"{fmt(row['ours'], row['unit'])} | {fmt(row['theirs'], row['unit'])} | {fmt(row['ratio'], '×')} | "
                     f"{_target(row)} | {_cell(status(row))} | {_cell(row.get('notes', ''))} |")
    return lines
