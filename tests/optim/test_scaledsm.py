import pytest
import torch

import overparam as op
from overparam.optim import ScaledSM, geometric, polyak
from overparam.testing.optim_oracles import damped_precondition, scaledgd_step

D = torch.float64


def test_polyak_step_uses_the_scaled_norm():
    g = torch.Generator().manual_seed(0)
    L0, R0 = torch.randn(6, 2, generator=g, dtype=D), torch.randn(5, 2, generator=g, dtype=D)
    M = torch.randn(6, 5, generator=g, dtype=D)
    L, R = L0.clone().requires_grad_(), R0.clone().requires_grad_()
    opt = ScaledSM([(L, R)], step=polyak(0.5))
    f = (L @ R.T - M).abs().sum()
    f.backward()
    gL, gR = L.grad.clone(), R.grad.clone()
    opt.step(loss=f)
    PL, PR = damped_precondition(gL, R0, 0.0), damped_precondition(gR, L0, 0.0)
    eta = (float(f.detach()) - 0.5) / float((gL * PL).sum() + (gR * PR).sum())
    torch.testing.assert_close(L.detach(), L0 - eta * PL, rtol=0, atol=1e-12)
    torch.testing.assert_close(R.detach(), R0 - eta * PR, rtol=0, atol=1e-12)


def test_geometric_symmetric_step_and_counter():
    g = torch.Generator().manual_seed(1)
    X0 = torch.randn(5, 2, generator=g, dtype=D)
    X = X0.clone().requires_grad_()
    opt = ScaledSM([X], step=geometric(0.2, 0.5), damping=0.1)
    for t in range(2):
        opt.zero_grad()
        Xb = X.detach().clone()
        (X @ X.T).abs().sum().backward()
        gX = X.grad.clone()
        opt.step()
        expect = scaledgd_step(Xb, None, gX, None, 0.2 * 0.5**t, 0.1)[0]
        torch.testing.assert_close(X.detach(), expect, rtol=0, atol=1e-12)
    assert opt.state[X]["step"] == 2


def test_condition_number_free_robust_recovery():
    iters = {}
    for kappa in (1, 20):
        P = op.problems.sensing(n=10, r=2, m=600, kappa=kappa, symmetric=False, loss="l1", outliers=0.1, generator=0)
        U, S, Vh = torch.linalg.svd(P.M_star)
        f_star = float(P.loss((U[:, :2] * S[:2].sqrt(), Vh[:2].T * S[:2].sqrt())))  # > 0 under outliers
        L, R = (t.requires_grad_() for t in P.init("spectral"))
        opt = ScaledSM([(L, R)], step=polyak(f_star))
        for t in range(300):
            opt.zero_grad()
            f = P.loss((L, R))
            f.backward()
            opt.step(loss=f)
            if float(P.relative_error((L, R)).detach()) < 1e-8:
                break
        iters[kappa] = t
    assert max(iters.values()) < 299
    assert iters[20] < 2 * iters[1] + 10


def test_needs_loss_for_polyak():
    X = torch.ones(3, 2, dtype=D, requires_grad=True)
    X.grad = torch.ones_like(X)
    with pytest.raises(ValueError, match="loss"):
        ScaledSM([X], step=polyak(0.0)).step()
    with pytest.raises(ValueError, match="damping"):
        ScaledSM([X], damping=-1.0)
