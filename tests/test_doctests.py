"""Every docstring example in the package runs (the runnable examples the docs promise)."""

import doctest
import importlib
import pkgutil

import pytest

import overparam

MODULES = sorted(m.name for m in pkgutil.walk_packages(overparam.__path__, "overparam.")
                 if ".kernels" not in m.name and not m.name.endswith("__main__"))


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name):
    mod = importlib.import_module(name)
    res = doctest.testmod(mod, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, verbose=False)
    assert res.failed == 0, f"{res.failed} of {res.attempted} docstring examples failed in {name}"
