import pytest
import torch
from torch import nn

import overparam as op
import overparam.hessian as oh
from overparam.backend import dispatch
from overparam.backend.random import gaussian
from overparam.hessian import hvp_backends
from overparam.testing import dense_hessian, tanh_mlp

F = nn.functional


def _case():
    net = tanh_mlp([3, 5, 2], generator=0)
    return net, (gaussian((9, 3), generator=1, dtype=torch.float64), gaussian((9, 2), generator=2, dtype=torch.float64))


def test_backends_are_listed_by_the_dispatch_registry_and_auto_follows_the_device():
    assert [(i.name, i.available, i.reason) for i in op.backend.implementations("hvp")] == [
        ("double_backward", True, None), ("jvp", True, None), ("finite_difference", True, None)]
    assert oh.BACKENDS == ("double_backward", "jvp", "finite_difference")
    assert dispatch.choose("hvp", device="cpu") is hvp_backends.DoubleBackward
    assert dispatch.choose("hvp", device="cuda") is hvp_backends.Jvp  # never run here: the choice only
    assert dispatch.choose("hvp", "reference", device="cuda") is hvp_backends.DoubleBackward
    net, batch = _case()
    assert oh.hessian(net, F.mse_loss, batch).backend == "double_backward"
    assert oh.hessian(net, F.mse_loss, batch, backend="reference").backend == "double_backward"
    with pytest.raises(ValueError, match="backend must be"):
        oh.hessian(net, F.mse_loss, batch, backend="triton")


def test_backend_none_reads_the_environment(monkeypatch):
    net, batch = _case()
    monkeypatch.setenv(dispatch.ENV_VAR, "hvp=jvp")
    assert oh.hessian(net, F.mse_loss, batch, backend=None).backend == "jvp"
    assert oh.hessian(net, F.mse_loss, batch).backend == "double_backward"  # "auto" is explicit
    monkeypatch.setenv(dispatch.ENV_VAR, "hvp=finite_difference")
    assert oh.hessian(net, F.mse_loss, batch, backend=None).backend == "finite_difference"


class _Functional(hvp_backends.Products):
    """A fourth backend in a few lines: torch.autograd.functional.hvp on the objective."""

    name = "autograd_functional"

    def mv(self, v):
        return torch.autograd.functional.hvp(lambda *th: self.obj.total_loss(th), tuple(self.obj.theta), tuple(v))[1]


def test_adding_a_backend_is_one_class_and_one_registration(monkeypatch):
    routines = dispatch._REGISTRY._routines  # restore the library-wide registry after the test
    monkeypatch.setattr(dispatch._REGISTRY, "_routines", {**routines, "hvp": dict(routines["hvp"])})
    dispatch.register("hvp", _Functional.name, _Functional)
    assert [i.name for i in op.backend.implementations("hvp")][-1] == "autograd_functional"
    net, batch = _case()
    H = oh.hessian(net, F.mse_loss, batch, backend="autograd_functional")
    assert H.backend == "autograd_functional" and H.jvp_mode is None
    Hd = dense_hessian(net, F.mse_loss, batch)
    V = gaussian((H.n, 3), generator=3, dtype=torch.float64)
    torch.testing.assert_close(H @ V, Hd @ V, rtol=1e-10, atol=1e-12)
    assert oh.hessian(net, F.mse_loss, batch).backend == "double_backward"  # "auto" unchanged (priority 0)
