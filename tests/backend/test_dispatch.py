import importlib.util

import pytest
import torch

from overparam.backend import dispatch
from overparam.backend.dispatch import Registry


def _reg(with_triton=False):
    reg = Registry()
    reg.register("double", "reference", lambda x: ("reference", 2 * x))
    reg.register("double", "batched", lambda x: ("batched", x + x), priority=1)
    if with_triton:
        reg.register("double", "triton", loader=lambda: (lambda x: ("triton", x * 2)),
                     available=dispatch.triton_unavailable, priority={"cuda": 2})
    return reg


def test_listing_reference_first_with_availability():
    reg = _reg(with_triton=True)
    got = reg.implementations("double", device="meta")
    assert [(i.routine, i.name, i.available) for i in got] == [
        ("double", "reference", True), ("double", "batched", True), ("double", "triton", False)]
    assert got[2].reason and got[0].reason is None
    assert all(isinstance(i, dispatch.Implementation) for i in got)
    reg.register("other", "reference", abs)
    assert [i.routine for i in reg.implementations()] == ["double"] * 3 + ["other"]


def test_argument_env_and_auto(monkeypatch):
    reg = _reg()
    monkeypatch.delenv(dispatch.ENV_VAR, raising=False)
    assert reg.call("double", torch.ones(1))[0] == "batched"  # auto: highest priority
    assert reg.call("double", torch.ones(1), impl="reference")[0] == "reference"
    monkeypatch.setenv(dispatch.ENV_VAR, "reference")
    assert reg.call("double", torch.ones(1))[0] == "reference"
    assert reg.call("double", torch.ones(1), impl="batched")[0] == "batched"  # the argument wins
    monkeypatch.setenv(dispatch.ENV_VAR, "batched, double=reference")  # a per-routine entry wins over the bare name
    assert reg.call("double", torch.ones(1))[0] == "reference"
    monkeypatch.setenv(dispatch.ENV_VAR, "other=nope")  # entries for other routines are ignored
    assert reg.call("double", torch.ones(1))[0] == "batched"


def test_reference_is_the_first_registered_whatever_its_name():
    reg = Registry()
    reg.register("svd", "exact", lambda x: "exact")
    reg.register("svd", "fast", lambda x: "fast", priority=5)
    assert reg.choose("svd", "reference")(0) == "exact"
    assert reg.choose("svd")(0) == "fast"


def test_priority_per_device_type_and_ties_go_to_the_earliest():
    reg = Registry()
    reg.register("r", "reference", lambda: "ref")
    reg.register("r", "gpu", lambda: "gpu", priority={"cuda": 3})
    reg.register("r", "same", lambda: "same")  # priority 0, like the reference: the reference wins the tie
    assert reg.choose("r", device="cpu")() == "ref"
    assert reg.choose("r", device="cuda")() == "gpu"  # chosen by priority; availability is the default (always)


def test_auto_skips_unavailable_implementations():
    reg = Registry()
    reg.register("r", "reference", lambda: "ref")
    reg.register("r", "fast", lambda: "fast", priority=9, available=lambda dev: "never here")
    assert reg.choose("r")() == "ref"
    with pytest.raises(RuntimeError, match="'fast' of 'r' cannot run on cpu: never here"):
        reg.choose("r", "fast")


def test_unknown_names_list_valid_ones(monkeypatch):
    reg = _reg()
    with pytest.raises(ValueError, match="one of 'auto', 'reference', 'batched'; got 'cuda-graphs'"):
        reg.call("double", torch.ones(1), impl="cuda-graphs")
    with pytest.raises(ValueError, match="unknown routine 'triple'.*'double'"):
        reg.choose("triple")
    monkeypatch.setenv(dispatch.ENV_VAR, "fast")
    with pytest.raises(ValueError, match="OVERPARAM_IMPL"):
        reg.call("double", torch.ones(1))


def test_forcing_triton_without_interpreter_is_a_clear_error(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    monkeypatch.delenv(dispatch.ENV_VAR, raising=False)
    with pytest.raises(ValueError, match="got 'triton'"):
        _reg().call("double", torch.ones(1), impl="triton")  # not registered for this routine
    why = "TRITON_INTERPRET=1" if importlib.util.find_spec("triton") else "not installed"
    with pytest.raises(RuntimeError, match=why):
        _reg(with_triton=True).call("double", torch.ones(1), impl="triton")
    assert _reg(with_triton=True).call("double", torch.ones(1))[0] == "batched"  # auto never picks triton on CPU
    with pytest.raises(RuntimeError, match=why):
        dispatch.choose("nm_mask", "triton")  # the library's own registration says the same


def test_triton_under_interpreter(monkeypatch):
    pytest.importorskip("triton")
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert dispatch.triton_unavailable("cpu") is None
    assert dispatch.triton_unavailable("meta") is not None
    assert _reg(with_triton=True).call("double", torch.ones(1), impl="triton")[0] == "triton"


def test_loader_runs_only_when_chosen():
    loaded = []
    reg = Registry()
    reg.register("r", "reference", lambda: "ref")
    reg.register("r", "lazy", loader=lambda: loaded.append(1) or (lambda: "lazy"))
    assert reg.choose("r")() == "ref" and not loaded
    assert [i.available for i in reg.implementations("r")] == [True, True] and not loaded
    assert reg.choose("r", "lazy")() == "lazy" and loaded == [1]


def test_register_as_decorator_returns_the_function():
    reg = Registry()

    @reg.register("r", "reference")
    def f(x):
        return x + 1

    assert f(1) == 2 and reg.choose("r") is f


def test_register_rejects_bad_registrations():
    reg = _reg()
    with pytest.raises(ValueError, match="already has"):
        reg.register("double", "batched", abs)
    with pytest.raises(ValueError, match="reserved"):
        reg.register("double", "reference", abs)
    with pytest.raises(ValueError, match="reserved"):
        reg.register("new", "auto", abs)
    with pytest.raises(ValueError, match="exactly one of fn and loader"):
        reg.register("new", "x", abs, loader=lambda: abs)
    with pytest.raises(TypeError, match="priority"):
        reg.register("new", "x", abs, priority=1.5)
    with pytest.raises(TypeError, match="fn must be callable"):
        reg.register("new", "x", 3)
    with pytest.raises(ValueError, match="name must be"):
        reg.register("new", "a,b", abs)


def test_library_routines_are_registered():
    import overparam as op

    names = {(i.routine, i.name) for i in op.backend.implementations()}
    assert {("nm_mask", "reference"), ("nm_mask", "batched"), ("nm_mask", "triton"),
            ("top_svd", "svd"), ("top_svd", "randomized")} <= names
    assert op.backend.implementations is dispatch.implementations
