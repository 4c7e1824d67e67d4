"""mkdocs hooks of the documentation site (``hooks:`` in mkdocs.yml; not a page of the site).

* The benchmark results live beside the scripts that measure them: ``benchmarks/RESULTS.md``
  (machine-written by ``benchmarks/regenerate.py`` from ``benchmarks/results/*.json``) and
  ``benchmarks/results/*.md`` (the hand-written ``history.md``, the printed output ``latest.md``, the
  scripts' own tables); they are added to the site as they are, under ``benchmarks/``, rather than
  copied into ``docs/``.
* A guide that links to one of them from ``docs/`` (``../benchmarks/results/scaling.md``) has the
  link pointed at the page in the site. Any other link out of ``docs/`` is left as written, so
  mkdocs' own link validation reports it.
* ``docs/report.md`` is written by ``overparam report``; until a checked-in copy exists, the
  site shows a page saying how to generate it, so the navigation stays valid.
"""

from __future__ import annotations

import posixpath
import re
from pathlib import Path

from mkdocs.structure.files import File, Files

ROOT = Path(__file__).resolve().parents[1]
INCLUDED = ("benchmarks/RESULTS.md", "benchmarks/results/*.md")
REPORT_MISSING = """# Reproduction report

No checked-in report yet. Generate it with

```
overparam report --run --quick
```

(see [experiments](experiments.md)).
"""
LINK = re.compile(r"(\]\()([^)\s#]+\.md)((?:#[^)\s]*)?\))")


def _included() -> list[str]:
    return sorted({p.relative_to(ROOT).as_posix() for pattern in INCLUDED for p in ROOT.glob(pattern)})


def on_files(files: Files, config) -> Files:
    for rel in _included():
        if files.get_file_from_path(rel) is None:
            files.append(File.generated(config, rel, abs_src_path=str(ROOT / rel)))
    if files.get_file_from_path("report.md") is None:
        files.append(File.generated(config, "report.md", content=REPORT_MISSING))
    return files


def on_page_markdown(markdown: str, page, config, files: Files) -> str:
    src = page.file.src_uri
    if src.startswith("benchmarks/"):
        return markdown
    included = set(_included())

    def repoint(m: re.Match) -> str:
        target = m.group(2)
        in_repo = posixpath.normpath(posixpath.join("docs", posixpath.dirname(src), target))
        if in_repo not in included:
            return m.group(0)
        return m.group(1) + posixpath.relpath(in_repo, posixpath.dirname(src) or ".") + m.group(3)

    return LINK.sub(repoint, markdown)
