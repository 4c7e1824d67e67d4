import math

import pytest
import torch

import overparam as op
from overparam.optim import PrecGD
from overparam.testing.optim_oracles import scaledgd_step

D = torch.float64


def test_step_uses_sqrt_loss_damping():
    P = op.problems.sensing(n=6, r=1, m=80, generator=0)
    X0 = P.init("small", rank=3, scale=0.5, generator=1)
    X = X0.clone().requires_grad_()
    opt = PrecGD([X], lr=0.4, c=2.0)
    f = P.loss(X)
    f.backward()
    g = X.grad.clone()
    opt.step(loss=f)
    lam = 2.0 * math.sqrt(float(f.detach()))
    assert opt.last_damping == [pytest.approx(lam, rel=1e-15)]
    torch.testing.assert_close(X.detach(), scaledgd_step(X0, None, g, None, 0.4, lam)[0], rtol=0, atol=1e-12)


def test_closure_equals_loss_value_and_asymmetric():
    P = op.problems.sensing(n=6, r=1, m=80, symmetric=False, generator=0)
    outs = []
    for use_closure in (True, False):
        L, R = (t.requires_grad_() for t in P.init("small", rank=3, scale=0.5, generator=1))
        opt = PrecGD([(L, R)], lr=0.5, c=1.0)
        for _ in range(3):
            def closure():
                opt.zero_grad()
                f = P.loss((L, R))
                f.backward()
                return f
            if use_closure:
                opt.step(closure)
            else:
                f = closure()
                opt.step(loss=f)
        outs.append((L.detach(), R.detach()))
    torch.testing.assert_close(outs[0], outs[1], rtol=0, atol=0)


def test_needs_loss_and_validates():
    X = torch.ones(3, 2, dtype=D, requires_grad=True)
    opt = PrecGD([X])
    X.grad = torch.ones_like(X)
    with pytest.raises(ValueError, match="loss"):
        opt.step()
    with pytest.raises(ValueError, match="non-negative"):
        opt.step(loss=-1.0)
    with pytest.raises(ValueError, match="c"):
        PrecGD([X], c=-1)
    with pytest.raises(ValueError, match="min_damping"):
        PrecGD([X], min_damping=-1)


def test_min_damping_floor():
    X = torch.tensor([[1.0, 1.0], [1.0, 1.0]], dtype=D, requires_grad=True)  # rank 1: XᵀX singular
    X.grad = torch.ones_like(X)
    opt = PrecGD([X], c=1.0, min_damping=1e-3)
    opt.step(loss=0.0)
    assert opt.last_damping == [1e-3] and torch.isfinite(X).all()


def test_linear_rate_with_overparameterized_rank():
    P = op.problems.sensing(n=10, r=2, m=600, kappa=5, generator=0)
    X = P.init("small", rank=5, scale=1e-3, generator=1).requires_grad_()
    opt = PrecGD([X], lr=0.5, c=1.0, min_damping=1e-14)
    for _ in range(120):
        opt.zero_grad()
        f = P.loss(X)
        f.backward()
        opt.step(loss=f)
    assert float(P.relative_error(X).detach()) < 1e-9
