import pytest
"""No public call changes the model's train/eval flags, its state_dict keys or the global RNG,
even with ``generator=None`` (a fresh OS seed, never the global RNG)."""

import torch
from torch import nn

import overparam.hessian as oh
from overparam.backend.random import gaussian
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


def test_stateful_forward_never_touches_the_models_buffers():
    # spectral_norm's power iteration updates its `_u` buffer in every train-mode forward: the operator's
    # forwards run on private buffer copies, so the refusal leaves the model exactly as it was
    from torch.nn.utils.parametrizations import spectral_norm

    net = nn.Sequential(spectral_norm(nn.Linear(3, 4)), nn.Tanh(), nn.Linear(4, 2)).double()
    x, y = torch.randn(6, 3, dtype=torch.float64), torch.randn(6, 2, dtype=torch.float64)
    with assert_no_side_effects(net):
        with pytest.raises(oh.NonDeterministicModelError):
            oh.hessian(net, F.mse_loss, (x, y))
        with pytest.raises(oh.NonDeterministicModelError):
            oh.ggn(net, F.mse_loss, (x, y))
    net.eval()
    with assert_no_side_effects(net):
        H = oh.hessian(net, F.mse_loss, (x, y))
        H @ torch.ones(H.n, dtype=torch.float64)
