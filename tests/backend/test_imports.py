"""The backend boundary: nothing under overparam/backend imports another overparam package, and
torch.distributed is called only from backend.dist."""

import ast
from pathlib import Path

import overparam

ROOT = Path(overparam.__file__).parent


def _imports(path: Path) -> list[str]:
    """Absolute module names imported by ``path`` (relative imports resolved)."""
    pkg = ".".join(path.relative_to(ROOT.parent).with_suffix("").parts)
    if path.name != "__init__.py":
        pkg = pkg.rsplit(".", 1)[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = pkg.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            out += [base] + [f"{base}.{a.name}" for a in node.names]
    return out


def test_backend_imports_no_other_overparam_package():
    bad = {(str(p.relative_to(ROOT)), m) for p in (ROOT / "backend").rglob("*.py") for m in _imports(p)
           if m.startswith("overparam") and not m.startswith("overparam.backend")}
    assert not bad, sorted(bad)


def test_torch_distributed_only_through_backend_dist():
    bad = sorted(str(p.relative_to(ROOT)) for p in ROOT.rglob("*.py")
                 if p != ROOT / "backend" / "dist.py" and any(m.startswith("torch.distributed") for m in _imports(p)))
    assert not bad, f"import torch.distributed outside backend/dist.py: {bad}"


def test_the_resolver_sees_relative_imports():
    mods = _imports(ROOT / "prune" / "nm.py")
    assert "overparam.backend.nm" in mods and "overparam.prune.select" in mods
