"""The layering DESIGN.md promises, read from the code's own import statements.

* ``overparam.backend`` imports no other overparam package;
* the user packages (factor, optim, scaling, prune, hessian, problems, testing) import each other only
  through public names (``from ..hessian import diagonal``; never ``..hessian._model``) and never
  ``experiments``;
* ``experiments`` and ``benchmarks`` use the packages through public names too, and never import
  ``overparam.testing``;
* ``torch.distributed`` is imported only by ``overparam/backend/dist.py``;
* the graph of overparam's modules has no cycle;
* no source file is over 400 lines.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "overparam"
USER = ("factor", "optim", "scaling", "prune", "hessian", "problems", "testing")
MAX_LINES = 400


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _imports(path: Path) -> list[str]:
    """Fully qualified modules (or module.name) that ``path`` imports, at any depth of the file."""
    mod = _module_name(path)
    is_pkg = path.name == "__init__.py"
    package = mod if is_pkg else mod.rpartition(".")[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            out += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)] if node.level > 1 else base
                stem = ".".join(base + ([node.module] if node.module else []))
            else:
                stem = node.module or ""
            out += [f"{stem}.{a.name}" for a in node.names]
    return out


def _sources(top: Path) -> list[Path]:
    return sorted(p for p in top.rglob("*.py") if "__pycache__" not in p.parts)


def _package_of(name: str) -> str | None:
    parts = name.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "overparam" else None


GRAPH = {_module_name(p): [i for i in _imports(p) if i.startswith("overparam")] for p in _sources(PKG)}


def test_backend_imports_no_user_package():
    bad = [(m, i) for m, imps in GRAPH.items() if _package_of(m) == "backend"
           for i in imps if _package_of(i) not in (None, "backend")]
    assert not bad, f"the backend imports user packages: {bad}"


def _public_names(package: str) -> set[str]:
    """``__all__`` of ``overparam/<package>/__init__.py``, read statically."""
    tree = ast.parse((PKG / package / "__init__.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "__all__" for t in node.targets):
            return set(ast.literal_eval(node.value))
    return set()


BENCH = {f"benchmarks.{p.stem}": [i for i in _imports(p) if i.startswith("overparam")]
         for p in _sources(ROOT / "benchmarks")}


def _public_use(src: str, i: str) -> str | None:
    """Why importing ``i`` breaks the layering for a module of package ``src`` (None if it does not)."""
    dst = _package_of(i)
    if dst in (None, src, "backend", "_version"):
        return None
    if dst == "cli" or (dst == "experiments" and src in USER):
        return "imports the layer above"
    if dst == "testing" and src != "testing":
        return "imports overparam.testing"
    parts = i.split(".")
    if len(parts) > 3 or (len(parts) == 3 and parts[2] not in _public_names(dst)):
        return f"is not a name in overparam.{dst}.__all__"
    return None


def test_packages_use_each_other_through_public_names_only():
    """A user package, an experiment or a benchmark takes another package's names from that
    package's ``__all__`` (``from ..hessian import diagonal``), never from its modules
    (``..hessian._model``, ``..problems.sensing``); user packages never import the experiments or
    the CLI; nothing but ``testing`` and the tests imports ``overparam.testing``."""
    bad = []
    for m, imps in {**GRAPH, **BENCH}.items():
        src = "benchmarks" if m.startswith("benchmarks.") else _package_of(m)
        if src not in (*USER, "experiments", "benchmarks"):
            continue
        bad += [(m, i, why) for i in imps if (why := _public_use(src, i))]
    assert not bad, bad


def test_the_import_reader_resolves_relative_imports():
    got = _imports(PKG / "prune" / "masks.py")
    assert "overparam.backend.topk.topk_mask" in got and "overparam.prune.targets.targets" in got


def test_torch_distributed_only_through_backend_dist():
    bad = [m for m, imps in ((m, [i for p in _sources(PKG) if _module_name(p) == m for i in _imports(p)]) for m in GRAPH)
           if m != "overparam.backend.dist" and any(i.startswith("torch.distributed") for i in imps)]
    assert not bad, f"torch.distributed imported outside overparam/backend/dist.py: {bad}"


def _resolve(name: str) -> str | None:
    """The module an imported dotted name lives in (``overparam.prune.nm.nm_mask`` → ``overparam.prune.nm``)."""
    while name and name not in GRAPH:
        name = name.rpartition(".")[0]
    return name or None


def test_no_import_cycle():
    # edges between modules; a package's __init__ re-exporting its own modules is not a cycle
    edges = {m: {r for i in imps if (r := _resolve(i)) and r != m} for m, imps in GRAPH.items()}
    for m in edges:
        edges[m] = {d for d in edges[m] if not (m.startswith(d + ".") and d.count(".") >= 1)}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        stack.append(m)
        for d in sorted(edges.get(m, ())):
            if state.get(d) == 1:
                return stack[stack.index(d):] + [d]
            if d not in state and (cyc := visit(d)):
                return cyc
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(edges):
        if m not in state and (cyc := visit(m)):
            pytest.fail("import cycle: " + " -> ".join(cyc))


@pytest.mark.parametrize("top", ["overparam", "benchmarks", "tests"])
def test_no_file_over_400_lines(top):
    long = {str(p.relative_to(ROOT)): n for p in _sources(ROOT / top)
            if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, f"files over {MAX_LINES} lines: {long}"


def test_test_file_basenames_are_unique():
    """pytest imports test files by basename (no __init__.py in tests/): two with one name break collection."""
    seen: dict[str, Path] = {}
    dup = []
    for p in sorted((ROOT / "tests").rglob("*.py")):
        if p.name == "conftest.py" or p.name == "__init__.py":
            continue
        if p.name in seen:
            dup.append(f"{seen[p.name].relative_to(ROOT)} and {p.relative_to(ROOT)}")
        seen.setdefault(p.name, p)
    assert not dup, f"test modules with one basename: {dup}"
