import pytest
import torch
from torch import nn

import overparam.hessian as oh
from overparam.backend.random import gaussian
from overparam.testing import assert_no_side_effects, symmetric_with_spectrum, tanh_mlp


class Quadratic(nn.Module):
    """A 'model' whose output is its parameter θ; with loss ½θᵀAθ."""

    def __init__(self, n):
        super().__init__()
        self.theta = nn.Parameter(torch.zeros(n, dtype=torch.float64))

    def forward(self, x):
        return self.theta


def test_epsilon_sharpness_of_quadratic_is_half_eps2_lambda_max():
    A = symmetric_with_spectrum([4.0, 2.0, 1.0, -3.0, 0.5], generator=0)
    model = Quadratic(5)
    loss = lambda out, target: 0.5 * out @ target @ out  # noqa: E731
    for rho in (0.1, 1.0):
        with assert_no_side_effects(model):
            s = oh.epsilon_sharpness(model, loss, (torch.zeros(1, 1), A), rho=rho, steps=200, generator=1)
        assert abs(float(s.value) - 0.5 * rho**2 * 4.0) < 1e-9 * rho**2
        assert abs(float(torch.linalg.vector_norm(s.delta[0])) - rho) < 1e-12
    # adaptive: T = diag(|θ| + η) = η I at θ = 0, so the value is ½ ρ² η² λmax
    s = oh.epsilon_sharpness(model, loss, (torch.zeros(1, 1), A), rho=1.0, steps=200, adaptive=True, eta=0.5, generator=1)
    assert abs(float(s.value) - 0.5 * 0.25 * 4.0) < 1e-9


def test_sam_one_step_and_adaptive_scale_invariance():
    A = torch.diag(torch.tensor([2.0, 1.0], dtype=torch.float64))
    b = torch.tensor([1.0, -1.0], dtype=torch.float64)
    f = lambda th: 0.5 * th[0] @ A @ th[0] + b @ th[0]  # noqa: E731
    th = (torch.tensor([0.3, 0.2], dtype=torch.float64),)
    s = oh.ball_sharpness(f, th, rho=0.01, steps=1)
    g = A @ th[0] + b
    # SAM's first-order perturbation ρ g/‖g‖ (kept when the second step is no better)
    assert s.value >= f((th[0] + 0.01 * g / g.norm(),)) - f(th) - 1e-15
    # adaptive sharpness is invariant to rescaling w -> (c w1, w2 / c) of f(w) = L(w1 w2)
    L = lambda th: (th[0][0] * th[0][1] - 1.0) ** 2  # noqa: E731
    w = (torch.tensor([0.5, 3.0], dtype=torch.float64),)
    ws = (torch.tensor([5.0, 0.3], dtype=torch.float64),)
    a1 = oh.ball_sharpness(L, w, rho=0.1, steps=100, adaptive=True, eta=0.0)
    a2 = oh.ball_sharpness(L, ws, rho=0.1, steps=100, adaptive=True, eta=0.0)
    assert abs(float(a1.value - a2.value)) < 1e-8 * float(a1.value)
    e1 = oh.ball_sharpness(L, w, rho=0.1, steps=100)
    e2 = oh.ball_sharpness(L, ws, rho=0.1, steps=100)
    assert abs(float(e1.value - e2.value)) > 0.1 * float(e1.value)  # plain ε-sharpness is not invariant


def test_lambda_max_and_eos_threshold():
    A = symmetric_with_spectrum([10.0, 3.0, -20.0, 1.0], generator=0)
    eos = oh.lambda_max(A, lr=0.1, tol=1e-10, generator=0)
    assert abs(eos.lambda_max - 10.0) < 1e-8 and eos.threshold == 20.0 and abs(eos.ratio - 0.5) < 1e-9
    again = oh.lambda_max(A, lr=0.1, v0=eos, tol=1e-10, generator=1)
    assert again.eigen.n_matvecs <= eos.eigen.n_matvecs
    with pytest.raises(ValueError, match="lr"):
        oh.eos_threshold(0.0)
    with pytest.raises(ValueError, match="rho"):
        oh.ball_sharpness(lambda th: th[0].sum(), (torch.zeros(2),), rho=0.0)


def test_model_sharpness_leaves_model_untouched():
    net = tanh_mlp([3, 4, 1], generator=0)
    batch = (gaussian((8, 3), generator=1, dtype=torch.float64), gaussian((8, 1), generator=2, dtype=torch.float64))
    before = [p.detach().clone() for p in net.parameters()]
    with assert_no_side_effects(net):
        s = oh.epsilon_sharpness(net, nn.functional.mse_loss, batch, rho=0.05, steps=10, generator=0)
    assert float(s.value) > 0
    assert all(torch.equal(a, p) for a, p in zip(before, net.parameters()))


def test_epsilon_sharpness_away_from_minimum_matches_brute_force_on_circle():
    # L(θ) = ½θᵀAθ + bᵀθ at θ0 ≠ 0 (nonzero loss and gradient): the maximum of L(θ0+δ) − L(θ0)
    # over ‖δ‖ ≤ ρ lies on the circle (A has a positive eigenvalue); dense search over angles.
    A = torch.tensor([[3.0, 1.0], [1.0, -1.0]], dtype=torch.float64)
    b = torch.tensor([0.5, -0.2], dtype=torch.float64)
    f = lambda th: 0.5 * th[0] @ A @ th[0] + b @ th[0]  # noqa: E731
    th0 = torch.tensor([0.7, -0.4], dtype=torch.float64)
    rho = 0.3
    ang = torch.linspace(0, 2 * torch.pi, 200_001, dtype=torch.float64)
    D = rho * torch.stack([ang.cos(), ang.sin()], dim=1)
    vals = 0.5 * ((th0 + D) @ A * (th0 + D)).sum(1) + (th0 + D) @ b - f((th0,))
    s = oh.ball_sharpness(f, (th0,), rho=rho, steps=200, generator=0)
    assert abs(float(s.value - vals.max())) < 1e-9
    assert abs(float(s.loss - f((th0,)))) < 1e-15 and abs(float(s.perturbed_loss - f((th0 + s.delta[0],)))) < 1e-15
    assert abs(float(s.value - (s.perturbed_loss - s.loss))) < 1e-15


def test_warm_start_from_previous_result_saves_products():
    lam = torch.cat([torch.linspace(10, 5, 10), torch.linspace(-1, 1, 190)])
    A = symmetric_with_spectrum(lam, generator=2)
    cold = oh.lambda_max(A, lr=0.1, tol=1e-10, generator=0)
    warm = oh.lambda_max(A, lr=0.1, tol=1e-10, v0=cold, generator=1)
    assert cold.eigen.n_matvecs > 10 and warm.eigen.n_matvecs <= 3 and abs(warm.lambda_max - 10) < 1e-9
    cold = oh.lanczos(A, k=10, tol=1e-10, generator=0)
    warm = oh.lanczos(A, k=10, tol=1e-10, v0=cold, generator=1)
    assert warm.n_matvecs < 0.7 * cold.n_matvecs
    torch.testing.assert_close(warm.values, lam[:10].double(), rtol=1e-9, atol=0)


def test_nan_tolerances_and_offsets_are_refused_by_name():
    """Issue 20: NaN passed `tol <= 0` / `eta < 0` and ran on silently."""
    A = torch.diag(torch.tensor([1.0, 4.0, 2.0], dtype=torch.float64))
    f = lambda th: 0.5 * th[0] @ A @ th[0]  # noqa: E731
    th = (torch.ones(3, dtype=torch.float64),)
    with pytest.raises(ValueError, match="tol"):
        oh.lambda_max(A, tol=float("nan"))
    with pytest.raises(ValueError, match="tol"):
        oh.power_iteration(A, tol=float("nan"))
    with pytest.raises(TypeError, match="max_iters"):
        oh.power_iteration(A, max_iters=2.5)
    with pytest.raises(ValueError, match="eta"):
        oh.ball_sharpness(f, th, 0.1, adaptive=True, eta=float("nan"))
    with pytest.raises(TypeError, match="f must be callable"):
        oh.ball_sharpness(3, th, 0.1)
