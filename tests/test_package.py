"""Packaging contract: the public surface exists, optional extras are not imported."""

import subprocess
import sys

import overparam as op


def test_subpackages_and_version():
    for name in ["factor", "optim", "scaling", "prune", "hessian", "problems", "backend", "testing"]:
        assert hasattr(op, name)
    assert isinstance(op.__version__, str) and op.__version__.count(".") == 2


def test_import_does_not_load_optional_extras():
    # torch itself may import some of these (e.g. tqdm); only what overparam adds counts
    code = ("import sys, torch; before = set(sys.modules); import overparam; "
            "bad = [m for m in ('matplotlib', 'triton', 'tqdm', 'sklearn', 'scipy') "
            "if m in sys.modules and m not in before]; print(bad); sys.exit(1 if bad else 0)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_py_typed_marker_ships():
    from importlib.resources import files

    assert files("overparam").joinpath("py.typed").is_file()
