"""Every public name, and every public method or property of a public class, documents itself with a
runnable example (``>>>``; the examples run in tests/test_doctests.py).

Methods count when the class defines them itself (inherited ``torch.nn.Module`` / ``torch.optim.Optimizer``
methods are documented by torch); ``extra_repr`` is a ``repr`` hook, not called by users.
"""

from __future__ import annotations

import importlib
import inspect
import types

import pytest

PACKAGES = ("backend", "factor", "optim", "scaling", "prune", "hessian", "problems", "testing", "experiments")
EXEMPT_METHODS = {"extra_repr"}
# packages whose examples are still being written (issue 16); strict: a finished package must leave the set
PENDING: set[str] = set()


def _undocumented(pkg: str) -> list[str]:
    mod = importlib.import_module(f"overparam.{pkg}")
    missing = []
    for name in mod.__all__:
        obj = getattr(mod, name)
        if inspect.ismodule(obj) or not callable(obj) or isinstance(obj, types.GenericAlias):
            continue  # a type alias such as ``Masks = dict[str, Tensor]`` documents itself in the docs page
        if ">>>" not in (inspect.getdoc(obj) or ""):
            missing.append(name)
        if not inspect.isclass(obj):
            continue
        for attr, member in vars(obj).items():
            if attr.startswith("_") or attr in EXEMPT_METHODS:
                continue
            fn = member.fget if isinstance(member, property) else member
            if isinstance(fn, (staticmethod, classmethod)):
                fn = fn.__func__
            if fn is None or not callable(fn):
                continue
            if ">>>" not in (inspect.getdoc(fn) or ""):
                missing.append(f"{name}.{attr}")
    return missing


@pytest.mark.parametrize("pkg", [pytest.param(p, marks=pytest.mark.xfail(strict=True, reason="issue 16: examples pending"))
                                 if p in PENDING else p for p in PACKAGES])
def test_public_names_have_runnable_examples(pkg):
    missing = _undocumented(pkg)
    assert not missing, f"overparam.{pkg}: {len(missing)} public names/methods without a '>>>' example: {missing}"
