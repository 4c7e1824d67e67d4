import pytest
import torch

from overparam.backend import dispatch


def _op(with_triton=False):
    return dispatch.Implementations(
        "double",
        reference=lambda x: ("reference", 2 * x),
        batched=lambda x: ("batched", x + x),
        triton_loader=(lambda: (lambda x: ("triton", x * 2))) if with_triton else None,
    )


def test_argument_env_and_auto(monkeypatch):
    op = _op()
    monkeypatch.delenv(dispatch.ENV_VAR, raising=False)
    assert op(torch.ones(1))[0] == "batched"
    assert op(torch.ones(1), impl="reference")[0] == "reference"
    monkeypatch.setenv(dispatch.ENV_VAR, "reference")
    assert op(torch.ones(1))[0] == "reference"
    assert op(torch.ones(1), impl="batched")[0] == "batched"  # the argument wins over the environment


def test_implementations_agree():
    op = _op()
    x = torch.randn(5, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    assert torch.equal(op(x, impl="reference")[1], op(x, impl="batched")[1])


def test_unknown_names_list_valid_ones(monkeypatch):
    op = _op()
    with pytest.raises(ValueError, match="'reference', 'batched', 'triton'"):
        op(torch.ones(1), impl="cuda-graphs")
    monkeypatch.setenv(dispatch.ENV_VAR, "fast")
    with pytest.raises(ValueError, match="OVERPARAM_IMPL"):
        op(torch.ones(1))


def test_unavailable_triton_is_a_clear_error(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with pytest.raises(RuntimeError, match="not provided"):
        _op()(torch.ones(1), impl="triton")
    with pytest.raises(RuntimeError, match="TRITON_INTERPRET"):
        _op(with_triton=True)(torch.ones(1), impl="triton")
    assert _op(with_triton=True)(torch.ones(1))[0] == "batched"  # auto never picks triton on CPU


def test_triton_under_interpreter(monkeypatch):
    pytest.importorskip("triton")
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert dispatch.triton_available("cpu")
    assert _op(with_triton=True)(torch.ones(1), impl="triton")[0] == "triton"


def test_reference_only_routine():
    op = dispatch.Implementations("id", reference=lambda x: x)
    assert op.available == ("reference",)
    assert dispatch.resolve("auto", available=op.available) == "reference"
    assert "Implementations('id'" in repr(op)
