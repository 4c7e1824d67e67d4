import copy
import math

import pytest
import torch

import overparam as op
from overparam.optim import SubGM, constant, geometric, polyak

D = torch.float64


def _params(seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(4, 3, generator=g, dtype=D, requires_grad=True), torch.randn(5, generator=g, dtype=D, requires_grad=True)]


def _l1(ps):
    return ps[0].abs().sum() + (ps[1] - 1).abs().sum()


def test_geometric_steps_follow_the_formula():
    ps = _params()
    opt = SubGM(ps, step=geometric(0.1, 0.5))
    for t in range(3):
        opt.zero_grad()
        _l1(ps).backward()
        g = [p.grad.clone() for p in ps]
        before = [p.detach().clone() for p in ps]
        opt.step()
        for b, p, gi in zip(before, ps, g):
            torch.testing.assert_close(p.detach(), b - 0.1 * 0.5**t * gi, rtol=0, atol=1e-15)
    assert opt.state[ps[0]]["step"] == 3


def test_polyak_known_optimum_and_normalize():
    ps = _params(1)
    opt = SubGM(ps, step=polyak(0.0))
    f = _l1(ps)
    f.backward()
    g = [p.grad.clone() for p in ps]
    before = [p.detach().clone() for p in ps]
    sq = sum(float(gi.square().sum()) for gi in g)
    opt.step(loss=f)
    eta = float(f.detach()) / sq
    for b, p, gi in zip(before, ps, g):
        torch.testing.assert_close(p.detach(), b - eta * gi, rtol=0, atol=1e-14)
    ps = _params(2)
    opt = SubGM(ps, step=constant(0.5), normalize=True)
    _l1(ps).backward()
    g = [p.grad.clone() for p in ps]
    before = [p.detach().clone() for p in ps]
    opt.step()
    nrm = math.sqrt(sum(float(gi.square().sum()) for gi in g))
    for b, p, gi in zip(before, ps, g):
        torch.testing.assert_close(p.detach(), b - 0.5 * gi / nrm, rtol=0, atol=1e-15)


def test_estimated_polyak_tracks_best_loss_and_state_dict():
    ps = _params(3)
    opt = SubGM(ps, step=polyak(None, gamma0=1.0, decay=0.5))

    def closure():
        opt.zero_grad()
        f = _l1(ps)
        f.backward()
        return f

    fs = [float(opt.step(closure).detach()) for _ in range(4)]
    assert opt.state[ps[0]]["best_loss"] == min(fs)
    sd = copy.deepcopy(opt.state_dict())
    ps2 = [p.detach().clone().requires_grad_() for p in ps]
    opt2 = SubGM(ps2, step=1.0)
    opt2.load_state_dict(sd)
    assert opt2.state[ps2[0]]["step"] == 4 and opt2.param_groups[0]["step"] == polyak(None, gamma0=1.0, decay=0.5)


def test_errors():
    ps = _params()
    with pytest.raises(ValueError, match="loss"):
        opt = SubGM(ps, step=polyak(0.0))
        _l1(ps).backward()
        opt.step()
    with pytest.raises(TypeError, match="step"):
        SubGM(ps, step="big")
    with pytest.raises(ValueError, match="closure or loss"):
        SubGM(ps, step=0.1).step(lambda: torch.zeros(()), loss=1.0)


def test_recovers_with_outliers_small_init_overparameterized():
    P = op.problems.sensing(n=10, r=2, m=800, loss="l1", outliers=0.2, generator=0)
    U = P.init("small", rank=5, scale=1e-6, generator=1).requires_grad_()
    opt = SubGM([U], step=geometric(0.3, 0.99))
    for _ in range(1000):
        opt.zero_grad()
        P.loss(U).backward()
        opt.step()
    assert float(P.relative_error(U).detach()) < 1e-5
