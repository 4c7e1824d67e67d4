"""No public call changes the model's train/eval flags, its state_dict keys or the global RNG,
even with ``generator=None`` (a fresh OS seed, never the global RNG)."""

import pytest
import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

import overparam.hessian as oh
from overparam.backend.random import construction_generator, fan_in_normal_, gaussian
from overparam.testing import assert_no_side_effects, tanh_mlp

F = nn.functional


def test_every_entry_point_leaves_flags_and_global_rng_alone():
    bn = nn.BatchNorm1d(3).double()
    net = nn.Sequential(tanh_mlp([4, 3], generator=0), bn, nn.Dropout(0.0), tanh_mlp([3, 2], generator=1)).train()
    bn.eval()  # an eval submodule inside a train-mode model
    batch = (gaussian((10, 4), generator=2, dtype=torch.float64), gaussian((10, 2), generator=3, dtype=torch.float64))
    loader = [(batch[0][:6], batch[1][:6]), (batch[0][6:], batch[1][6:])]
    with assert_no_side_effects(net):
        for backend in ("double_backward", "jvp", "finite_difference"):
            H = oh.hessian(net, F.mse_loss, batch, backend=backend)
            H @ gaussian((H.n, 2), generator=4, dtype=torch.float64)
        H = oh.hessian(net, F.mse_loss, loader, retain_graph=False)
        oh.blocks(net, F.mse_loss, batch)
        G = oh.ggn(net, F.mse_loss, batch)
        for op in (H, G):
            oh.lanczos(op, k=2, tol=1e-6)
            oh.power_iteration(op, k=1, tol=1e-4, max_iters=50)
            oh.lambda_max(op, lr=0.1)
            oh.hutchinson(op, probes=3)
            oh.hutchpp(op, probes=6)
            oh.xtrace(op, probes=6)
            oh.diagonal(op, probes=2)
            oh.density(op, probes=2, steps=5)
        oh.epsilon_sharpness(net, F.mse_loss, batch, rho=0.05, steps=3)
        oh.epsilon_sharpness(net, F.mse_loss, batch, rho=0.05, steps=3, adaptive=True)
    assert net.training and not bn.training


def _spectral_norm_net(seed: int, *, converged: bool):
    """Linear(3→4, spectral_norm) → tanh → Linear(4→2) in fp64 and a batch, all from one explicit
    generator (spectral_norm's own start vector, drawn from the global RNG, is overwritten). Its
    power-iteration vectors ``_u, _v`` are the top singular pair (``converged``: one more train-mode
    step changes them only in the last bits) or random unit vectors (every step moves σ by ~1e-2)."""
    g = construction_generator(seed)
    net = fan_in_normal_(nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).double(), generator=g)
    spectral_norm(net[0])
    sn, W = net[0].parametrizations.weight[0], net[0].parametrizations.weight.original.detach()
    with torch.no_grad():
        if converged:
            U, _, Vh = torch.linalg.svd(W)
            sn._u.copy_(U[:, 0]), sn._v.copy_(Vh[0])
        else:
            sn._u.copy_(F.normalize(gaussian((4,), generator=g, dtype=torch.float64), dim=0))
            sn._v.copy_(F.normalize(gaussian((3,), generator=g, dtype=torch.float64), dim=0))
    batch = (gaussian((6, 3), generator=g, dtype=torch.float64), gaussian((6, 2), generator=g, dtype=torch.float64))
    return net, batch


def _output_drift(net, x) -> float:
    """Relative change of the outputs between two train-mode forwards on private buffer copies."""
    state = {k: v.clone() for k, v in net.state_dict().items()}
    with torch.no_grad():
        a, b = (torch.func.functional_call(net, state, (x,)) for _ in range(2))
    return float((a - b).norm() / a.norm())


def test_stateful_forward_never_touches_the_models_buffers():
    # spectral_norm's power iteration updates its `_u` buffer in every train-mode forward: the operator's
    # forwards run on private buffer copies, so the refusal leaves the model exactly as it was
    net, (x, y) = _spectral_norm_net(0, converged=False)
    assert _output_drift(net, x) > 1e-6  # the case discriminates: a stateful forward moves the outputs
    before = {k: v.clone() for k, v in net.state_dict().items()}
    with assert_no_side_effects(net):
        with pytest.raises(oh.NonDeterministicModelError):
            oh.hessian(net, F.mse_loss, (x, y))
        with pytest.raises(oh.NonDeterministicModelError):
            oh.ggn(net, F.mse_loss, (x, y))
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    net.eval()
    with assert_no_side_effects(net):
        H = oh.hessian(net, F.mse_loss, (x, y))
        H @ torch.ones(H.n, dtype=torch.float64)
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())


def test_a_stateful_forward_is_refused_even_when_its_values_barely_move():
    net, (x, y) = _spectral_norm_net(0, converged=True)
    assert _output_drift(net, x) < 1e-15  # the values do not show it ...
    state = {k: v.clone() for k, v in net.state_dict().items()}
    with torch.no_grad():
        torch.func.functional_call(net, state, (x,))
    assert not torch.equal(state["0.parametrizations.weight.0._u"], net.state_dict()["0.parametrizations.weight.0._u"])
    with pytest.raises(oh.NonDeterministicModelError):  # ... the buffers do
        oh.hessian(net, F.mse_loss, (x, y))
    with pytest.raises(oh.NonDeterministicModelError):
        oh.ggn(net, F.mse_loss, (x, y))
    with pytest.raises(oh.NonDeterministicModelError):
        oh.gradient(net, F.mse_loss, (x, y))
