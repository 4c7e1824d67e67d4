"""Markdown report over one or several experiment results."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def load_results(root: Path) -> list[tuple[Path, dict[str, Any]]]:
    """``(folder, result)`` for every ``result.json`` at or below ``root``, sorted by path."""
    return [(p.parent, json.loads(p.read_text())) for p in sorted(root.rglob("result.json"))]


def write_report(results: list[dict[str, Any]], path: Path, *, root: Path, folders: list[Path] | None = None) -> Path:
    """Write a markdown report of ``results`` to ``path`` (figure links relative to ``root``)."""
    lines = ["# overparam reproduction report", ""]
    lines += ["| experiment | paper | claim holds | seconds |", "| --- | --- | --- | --- |"]
    for r in results:
        lines.append(f"| {r['experiment']} | {r['paper']} | {'yes' if r['claim_holds'] else '**no**'} | {r['seconds']} |")
    for i, r in enumerate(results):
        folder = folders[i] if folders else root
        rel = folder.relative_to(root) if folder != root else Path(".")
        lines += ["", f"## {r['experiment']}{' (quick)' if r.get('quick') else ''}", "",
                  f"*Paper:* {r['paper']}", "", f"*Claim:* {r['claim']}", "",
                  f"*Reproduced:* {'yes' if r['claim_holds'] else 'no'} "
                  f"(seed {r['seed']}, {r['device']}, {r['seconds']} s)", ""]
        lines += [f"    {s}" for s in r["summary"]]
        for note in r.get("notes", []):
            lines += ["", f"> {note}"]
        for fig in r.get("figures", []):
            lines += ["", f"![{fig}]({(rel / fig).as_posix()})"]
    path.write_text("\n".join(lines) + "\n")
    return path
