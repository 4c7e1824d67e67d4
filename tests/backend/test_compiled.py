"""The lazy torch.compile wrapper of the "compiled" implementations (the routines' own equality tests
live beside their references: test_packed_step.py, test_sparse24.py, test_softmax_ce.py)."""

import pytest
import torch
import torch._dynamo

from overparam.backend.compiled import BACKEND_ENV_VAR, compile_unavailable, lazy_compile


def test_compiles_at_the_first_call_once_per_backend(monkeypatch):
    def core(x, h):
        return x * h[0] + h[1]

    f = lazy_compile(core)
    assert f._compiled == {}                 # nothing compiled before the first call
    monkeypatch.setenv(BACKEND_ENV_VAR, "eager")
    x = torch.arange(5.0)
    assert torch.equal(f(x, torch.tensor([2.0, 1.0])), 2 * x + 1)
    assert list(f._compiled) == ["eager"]
    with torch._dynamo.config.patch(error_on_recompile=True):
        for a in (3.0, 4.0):                 # new numbers as a tensor: the same compiled code
            assert torch.equal(f(x, torch.tensor([a, 1.0])), a * x + 1)
        assert torch.equal(f(torch.arange(7.0), torch.tensor([1.0, 0.0])), torch.arange(7.0))   # dynamic: a new size
    monkeypatch.setenv(BACKEND_ENV_VAR, "aot_eager")
    f(x, torch.tensor([1.0, 0.0]))
    assert sorted(f._compiled) == ["aot_eager", "eager"]


def test_bad_input_and_availability():
    with pytest.raises(TypeError, match="fn must be callable"):
        lazy_compile(3)
    assert compile_unavailable(torch.device("cpu")) is None
