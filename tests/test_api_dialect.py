"""One API dialect across the packages (docs/index.md, "One dialect"), checked on every ``__all__``.

A new public function is covered automatically: the checks walk the packages' ``__all__``.
"""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest

import overparam as op

PACKAGES = ("backend", "factor", "optim", "scaling", "prune", "hessian", "problems", "testing")
INDEX = Path(__file__).resolve().parents[1] / "docs" / "index.md"

# keywords that the one selection language replaced; no public callable may take them again
OLD_SELECTION_KEYWORDS = {"types", "skip_types", "skip_names", "param_spec", "param"}
GENERATOR_CONVERTERS = {"construction_generator", "measurement_generator"}  # positional by nature
SELECTION_KEYWORDS = {"targets", "params", "exclude", "overrides", "roles", "branches", "branch_outputs", "modules"}


def _public_callables():
    for pkg in PACKAGES:
        mod = getattr(op, pkg)
        for name in mod.__all__:
            obj = getattr(mod, name)
            if inspect.isclass(obj):
                yield pkg, name, obj.__init__, obj
            elif callable(obj) and not inspect.ismodule(obj):
                yield pkg, name, obj, obj


def _signature(fn):
    try:
        return inspect.signature(fn)
    except (TypeError, ValueError):
        return None


def test_every_package_has_an_all():
    for pkg in PACKAGES:
        mod = getattr(op, pkg)
        assert isinstance(mod.__all__, (list, tuple)) and mod.__all__, pkg
        missing = [n for n in mod.__all__ if not hasattr(mod, n)]
        assert not missing, f"overparam.{pkg}.__all__ names what it does not define: {missing}"


def test_no_public_name_means_two_things():
    seen: dict[str, tuple[str, object]] = {}
    clashes = []
    for pkg in PACKAGES:
        mod = getattr(op, pkg)
        for name in mod.__all__:
            obj = getattr(mod, name)
            if inspect.ismodule(obj) or name.startswith("__"):
                continue
            if name in seen and seen[name][1] is not obj:
                clashes.append(f"{name}: overparam.{seen[name][0]} and overparam.{pkg}")
            seen.setdefault(name, (pkg, obj))
    assert not clashes, clashes


def test_generator_is_keyword_only_and_defaults_to_none():
    bad = []
    for pkg, name, fn, _ in _public_callables():
        sig = _signature(fn)
        if sig is None or "generator" not in sig.parameters or name in GENERATOR_CONVERTERS:
            continue
        p = sig.parameters["generator"]
        if p.kind is not inspect.Parameter.KEYWORD_ONLY or p.default is not None:
            bad.append(f"overparam.{pkg}.{name}")
    assert not bad, f"generator must be keyword-only with default None: {bad}"


def test_data_is_called_data_and_selection_keywords_are_the_shared_ones():
    bad = []
    for pkg, name, fn, _ in _public_callables():
        sig = _signature(fn)
        if sig is None:
            continue
        names = set(sig.parameters)
        if "batch" in names:
            bad.append(f"overparam.{pkg}.{name} takes 'batch' (the name is 'data')")
        old = names & OLD_SELECTION_KEYWORDS
        if old and "model" in names:
            bad.append(f"overparam.{pkg}.{name} takes {sorted(old)} (use targets/params/exclude specs)")
    assert not bad, bad


def _table_rows(heading: str) -> list[list[str]]:
    text = INDEX.read_text()
    start = text.index(heading)
    rows = []
    for line in text[start:].splitlines()[1:]:
        if line.startswith("#"):
            break
        if line.startswith("|") and not set(line) <= set("|- "):
            rows.append([c.strip() for c in line.strip().strip("|").split("|")])
    return rows[1:]                      # drop the header row


def test_model_level_functions_take_model_loss_fn_data():
    """The table in docs/index.md lists exactly the public functions that take a model and a
    positional loss function, and each takes ``(model, loss_fn, data, ...)`` in that order (a
    function whose loss is optional takes ``loss_fn=`` / ``data=`` as keywords)."""
    listed = set()
    for row in _table_rows("### Model, loss, data"):
        for cell in re.findall(r"`op\.(\w+)\.(\w+)`", row[0]):
            listed.add(cell)
    actual = set()
    bad = []
    for pkg, name, fn, _ in _public_callables():
        sig = _signature(fn)
        if sig is None:
            continue
        params = [p for p in sig.parameters if p != "self"]
        positional_loss = "loss_fn" in params and sig.parameters["loss_fn"].kind is not inspect.Parameter.KEYWORD_ONLY
        if positional_loss and params[0] in ("model", "make_model"):
            actual.add((pkg, name))
            if params[1:3] != ["loss_fn", "data"]:
                bad.append(f"overparam.{pkg}.{name}{sig}")
    assert not bad, f"model-level functions must take (model, loss_fn, data, ...): {bad}"
    assert listed == actual, (f"docs/index.md's table differs from the code: missing {sorted(actual - listed)}, "
                              f"stale {sorted(listed - actual)}")


def test_selection_keywords_table_names_real_keywords():
    """Every function the selection table lists exists and takes the keywords the table says."""
    rows = _table_rows("### Selecting parts of a model")
    assert rows
    for row in rows:
        kws = re.findall(r"`(\w+)=`", row[1])
        assert kws and set(kws) <= SELECTION_KEYWORDS, row
        for pkg, name in re.findall(r"`op\.(\w+)\.(\w+)`", row[0]):
            fn = getattr(getattr(op, pkg), name)
            sig = _signature(fn.__init__ if inspect.isclass(fn) else fn)
            missing = [k for k in kws if k not in sig.parameters]
            assert not missing, f"overparam.{pkg}.{name} lacks {missing}"


@pytest.mark.parametrize("pkg", PACKAGES)
def test_public_callables_have_docstrings(pkg):
    mod = getattr(op, pkg)
    undocumented = [n for n in mod.__all__ if callable(getattr(mod, n)) and not inspect.getdoc(getattr(mod, n))]
    assert not undocumented, f"overparam.{pkg}: {undocumented}"
