"""Experiments and benchmarks use the user packages only through public names, never
``overparam.testing`` (read from the source: every ``import`` / ``from ... import``)."""

import ast
import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FILES = sorted((ROOT / "overparam" / "experiments").glob("*.py")) + sorted((ROOT / "benchmarks").glob("*.py"))


def _imports(path: Path):
    """``(absolute module, imported name or None)`` for every import of ``overparam`` in ``path``."""
    pkg = "overparam.experiments" if path.parent.name == "experiments" else None
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            yield from ((a.name, None) for a in node.names if a.name.split(".")[0] == "overparam")
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg.rsplit(".", node.level - 1)[0] if node.level > 1 else pkg
                mod = f"{base}.{node.module}" if node.module else base
            else:
                mod = node.module or ""
            if mod.split(".")[0] == "overparam":
                yield from ((mod, a.name) for a in node.names)


@pytest.mark.parametrize("path", FILES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_only_public_names_and_never_testing(path):
    for mod, name in _imports(path):
        assert not mod.startswith("overparam.testing") and name != "testing", f"{path.name} imports {mod}"
        inner = mod.startswith("overparam.experiments") and path.parent.name == "experiments"
        if inner:  # the experiments' own private modules (runner, report) are theirs to use
            continue
        assert not any(part.startswith("_") for part in mod.split(".")), f"{path.name} imports private {mod}"
        if name is not None and name != "*":
            dunder = name.startswith("__") and name.endswith("__")
            assert dunder or not name.startswith("_"), f"{path.name} imports private {mod}.{name}"
            m = importlib.import_module(mod)
            public = getattr(m, "__all__", None)
            sub = f"{mod}.{name}"
            if public is not None and not _is_module(sub):
                assert name in public, f"{path.name} imports {name} from {mod}, which is not in its __all__"


def _is_module(name: str) -> bool:
    try:
        importlib.import_module(name)
    except ImportError:
        return False
    return True


def test_the_check_sees_relative_and_absolute_imports(tmp_path):
    fake = tmp_path / "experiments" / "x.py"
    fake.parent.mkdir()
    fake.write_text("from ..hessian._model import X\nfrom ..testing import tanh_mlp\nimport overparam.prune\n"
                    "from . import Context\nimport torch\n")
    assert list(_imports(fake)) == [("overparam.hessian._model", "X"), ("overparam.testing", "tanh_mlp"),
                                    ("overparam.prune", None), ("overparam.experiments", "Context")]
