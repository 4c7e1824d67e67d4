import pytest
import torch
from torch import nn

import overparam.hessian as oh
from overparam.backend.random import gaussian
from overparam.testing import assert_no_side_effects, tanh_mlp

F = nn.functional


def _batch(n=11, d=3, out=2):
    return gaussian((n, d), generator=1, dtype=torch.float64), gaussian((n, out), generator=2, dtype=torch.float64)


def _oracle(model, loss_fn, x, y):
    """The gradient by a plain forward/backward on a deep copy of the model (fp64)."""
    import copy

    twin = copy.deepcopy(model)
    twin.zero_grad(set_to_none=True)
    loss_fn(twin(x), y).backward()
    return {k: p.grad.clone() for k, p in twin.named_parameters()}


def test_gradient_matches_autograd_on_a_ragged_loader_and_leaves_the_model_alone():
    net = nn.Sequential(tanh_mlp([3, 5], generator=0), nn.LayerNorm(5).double(), nn.GELU(), tanh_mlp([5, 2], generator=1))
    x, y = _batch()
    ref = _oracle(net, F.mse_loss, x, y)
    loader = [(x[:4], y[:4]), (x[4:8], y[4:8]), (x[8:], y[8:])]  # sizes 4, 4, 3: a per-sample mean
    with assert_no_side_effects(net):
        for data in ((x, y), loader):
            g = oh.gradient(net, F.mse_loss, data)
            assert list(g) == [k for k, _ in net.named_parameters()]
            for k in g:
                torch.testing.assert_close(g[k], ref[k], rtol=1e-12, atol=1e-15)
    assert all(p.grad is None for p in net.parameters())  # .grad untouched
    summed = oh.gradient(net, lambda o, t: F.mse_loss(o, t, reduction="sum"), loader, reduction="sum")
    torch.testing.assert_close(summed["3.0.weight"], ref["3.0.weight"] * y.numel(), rtol=1e-12, atol=1e-14)


def test_gradient_params_and_exclude_are_selection_specs():
    net = nn.Sequential(tanh_mlp([3, 4], generator=0), nn.Sequential(tanh_mlp([4, 2], generator=1)))
    x, y = _batch()
    ref = _oracle(net, F.mse_loss, x, y)
    assert list(oh.gradient(net, F.mse_loss, (x, y), params="1")) == ["1.0.0.weight", "1.0.0.bias"]
    assert list(oh.gradient(net, F.mse_loss, (x, y), params=nn.Linear, exclude="bias")) == ["0.0.weight", "1.0.0.weight"]
    g = oh.gradient(net, F.mse_loss, (x, y), params="*.weight")
    torch.testing.assert_close(g["1.0.0.weight"], ref["1.0.0.weight"], rtol=1e-12, atol=1e-15)
    net[0][0].bias.requires_grad_(False)
    assert "0.0.bias" not in oh.gradient(net, F.mse_loss, (x, y))  # default: the trainable parameters
    with pytest.raises(ValueError, match="params: 'fc'"):
        oh.gradient(net, F.mse_loss, (x, y), params="fc")


class _Flaky(nn.Module):
    """noise=True: a custom random layer (global RNG); noise=False: its first forward differs (a warm-up cache)."""

    def __init__(self, noise: bool):
        super().__init__()
        self.lin, self.noise, self.calls = tanh_mlp([3, 2], generator=0), noise, 0

    def forward(self, x):
        self.calls += 1
        scale = 1 + 0.1 * torch.rand(()) if self.noise else (1.5 if self.calls == 1 else 1.0)
        return self.lin(x) * scale


def test_gradient_refuses_models_that_are_not_deterministic():
    x, y = _batch()
    drop = nn.Sequential(tanh_mlp([3, 2], generator=0), nn.Dropout(0.5))
    bn = nn.Sequential(tanh_mlp([3, 2], generator=0), nn.BatchNorm1d(2).double())
    stats = {k: b.clone() for k, b in bn.named_buffers()}
    for model, match in ((drop, "Dropout"), (bn, "BatchNorm"), (_Flaky(True), "differ"), (_Flaky(False), "differ")):
        with assert_no_side_effects(model):
            with pytest.raises(oh.NonDeterministicModelError, match=match):
                oh.gradient(model, F.mse_loss, (x, y))
    assert all(torch.equal(stats[k], b) for k, b in bn.named_buffers())
    assert oh.gradient(_Flaky(True), F.mse_loss, (x, y), check=False)  # opted out
    drop.eval()
    oh.gradient(drop, F.mse_loss, (x, y))


def test_gradient_check_first_batch_only():
    """check='first': one extra forward in all (not one per batch), and it still catches both flaky models."""
    x, y = _batch()
    data = [(x[:3], y[:3]), (x[3:6], y[3:6]), (x[6:], y[6:])]
    for check, forwards in ((True, 6), ("first", 4), (False, 3)):
        net = _Flaky(False)
        net.calls = 1                                 # past its warm-up: deterministic from here on
        g = oh.gradient(net, F.mse_loss, data, check=check)
        assert net.calls - 1 == forwards, check
        torch.testing.assert_close(g["lin.0.weight"], oh.gradient(net, F.mse_loss, data, check=False)["lin.0.weight"])
    for flaky in (_Flaky(True), _Flaky(False)):
        with pytest.raises(oh.NonDeterministicModelError, match="differ"):
            oh.gradient(flaky, F.mse_loss, data, check="first")
    with pytest.raises(ValueError, match="check"):
        oh.gradient(_Flaky(False), F.mse_loss, data, check="all")


def test_gradient_bad_input():
    net = tanh_mlp([3, 2], generator=0)
    x, y = _batch()
    with pytest.raises(TypeError, match="model"):
        oh.gradient(lambda t: t, F.mse_loss, (x, y))
    with pytest.raises(TypeError, match="loss_fn"):
        oh.gradient(net, "mse", (x, y))
    with pytest.raises(TypeError, match="data"):
        oh.gradient(net, F.mse_loss, 3)
    with pytest.raises(ValueError, match="reduction"):
        oh.gradient(net, F.mse_loss, (x, y), reduction="max")
    with pytest.raises(ValueError, match="not finite"):
        oh.gradient(net, F.mse_loss, (x, y * float("inf")))
