"""The documentation site (mkdocs.yml, docs/) holds together without building it.

* every name in every package's ``__all__`` is in the API reference (docs/api/<pkg>.md), and the
  reference lists nothing that is not public;
* every page of the navigation exists, and every page under docs/ is in the navigation;
* the "Coming from ..." pages run: their ``title="overparam"`` code blocks (after the page's
  ``title="setup"`` blocks) are executed; where the anchor is torch itself (torch.nn.utils.prune,
  torch.ao.pruning) the anchor's blocks and the ``title="check"`` blocks comparing both run too;
* the getting-started tour runs and shows the README's two set-up commands verbatim;
* every test file docs/guarantees.md cites exists;
* (benchmarks/RESULTS.md and its builder are tested in tests/test_benchmarks.py.)

``mkdocs build --strict`` itself runs in CI (.ci/run), with the ``docs`` extra.
"""

from __future__ import annotations

import importlib
import re
import types
from pathlib import Path

import pytest
import torch

import overparam

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PACKAGES = ("backend", "factor", "optim", "scaling", "prune", "hessian", "problems", "testing", "experiments")
FENCE = re.compile(r'^```python title="([^"]+)"\n(.*?)^```', re.S | re.M)
DIRECTIVE = re.compile(r"^::: ([\w.]+)\n((?:    .*\n?)*)", re.M)
# pages the site gets from outside docs/ (docs/_hooks.py): the benchmark results, and the report
# when no checked-in copy exists yet
GENERATED = {"benchmarks/RESULTS.md", "benchmarks/results/history.md", "report.md"}
# anchors that are torch itself, so their snippets run in the test suite too
TORCH_ANCHORS = {"torch-prune.md": "torch.nn.utils.prune", "torch-ao-pruning.md": "torch.ao.pruning"}


def code_blocks(page: Path, *titles: str) -> str:
    """The page's ``python`` code blocks whose title is one of ``titles``, joined in page order."""
    return "\n".join(code for title, code in FENCE.findall(page.read_text()) if title in titles)


def reference() -> dict[str, list[str] | None]:
    """``{object path: its members list (None: members false or unset)}`` over docs/api/*.md."""
    out: dict[str, list[str] | None] = {}
    for page in sorted((DOCS / "api").glob("*.md")):
        for path, options in DIRECTIVE.findall(page.read_text()):
            members = re.search(r"^      members:\n((?:        - .*\n?)+)", options, re.M)
            out[path] = re.findall(r"- (\w+)", members.group(1)) if members else None
    return out


@pytest.mark.parametrize("package", PACKAGES)
def test_api_reference_lists_every_public_name(package):
    mod = importlib.import_module(f"overparam.{package}")
    ref = reference()
    assert f"overparam.{package}" in ref, f"docs/api/{package}.md has no '::: overparam.{package}' block"
    listed = set(ref[f"overparam.{package}"] or ())
    missing = [n for n in mod.__all__ if n not in listed
               and not (isinstance(getattr(mod, n), types.ModuleType) and f"overparam.{package}.{n}" in ref)]
    assert not missing, f"add to the members of '::: overparam.{package}' in docs/api/{package}.md: {missing}"
    stale = sorted(listed - set(mod.__all__))
    assert not stale, f"docs/api/{package}.md lists names that are not in overparam.{package}.__all__: {stale}"
    for path, members in ref.items():
        if path.startswith(f"overparam.{package}.") and members:
            sub = importlib.import_module(path)
            assert set(members) <= set(sub.__all__), (path, sorted(set(members) - set(sub.__all__)))


def test_api_reference_top_level():
    ref = reference()
    public = [n for n in overparam.__all__ if not n.startswith("_") and n not in PACKAGES]
    assert all(f"overparam.{n}" in ref for n in public), public


def _nav_pages() -> list[str]:
    return re.findall(r"^\s*- (?:[^:\n]+: )?([\w./-]+\.md)\s*$", (ROOT / "mkdocs.yml").read_text(), re.M)


def test_nav_pages_exist_and_every_page_is_in_the_nav():
    nav = _nav_pages()
    assert len(nav) == len(set(nav)), "a page is twice in the nav"
    missing = [p for p in nav if not (DOCS / p).exists() and p not in GENERATED]
    assert not missing, missing
    # each experiment folder under docs/report/ keeps the runner's own report.md (excluded in mkdocs.yml:
    # docs/report.md holds the same content, its plots are served from those folders)
    pages = {p.relative_to(DOCS).as_posix() for p in DOCS.rglob("*.md") if p.parent.parent != DOCS / "report"}
    assert not pages - set(nav), f"pages missing from the nav in mkdocs.yml: {sorted(pages - set(nav))}"


COMING_FROM = sorted(p.name for p in (DOCS / "coming-from").glob("*.md") if p.name != "index.md")


@pytest.mark.parametrize("page", COMING_FROM)
def test_coming_from_snippets_run(page):
    path = DOCS / "coming-from" / page
    ours = code_blocks(path, "overparam")
    assert ours.strip(), f"{page} has no title=\"overparam\" block"
    titles = ("setup", "overparam") + ((TORCH_ANCHORS[page], "check") if page in TORCH_ANCHORS else ())
    code = "\n".join(code for title, code in FENCE.findall(path.read_text()) if title in titles)
    with torch.random.fork_rng():  # the snippets seed the global RNG as a user script would
        exec(compile(code, str(path), "exec"), {"__name__": f"docs_{page[:-3].replace('-', '_')}"})


def test_coming_from_index_links_every_page():
    text = (DOCS / "coming-from" / "index.md").read_text()
    assert all(f"({p})" in text for p in COMING_FROM), COMING_FROM


def test_getting_started_tour_runs_and_shows_the_readme_commands():
    page = DOCS / "getting-started.md"
    lines = page.read_text().splitlines()
    for line in (ROOT / ".ci" / "commands").read_text().splitlines():
        assert line.split(":", 1)[1].strip() in lines, line
    with torch.random.fork_rng():
        exec(compile(code_blocks(page, "tour"), str(page), "exec"), {"__name__": "docs_tour"})


def test_guarantees_cite_existing_tests():
    cited = set(re.findall(r"tests/[\w/]+\.py", (DOCS / "guarantees.md").read_text()))
    assert cited, "docs/guarantees.md cites no test file"
    assert not [c for c in sorted(cited) if not (ROOT / c).exists()], "docs/guarantees.md cites missing test files"
