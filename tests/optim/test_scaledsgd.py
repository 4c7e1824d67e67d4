import copy

import pytest
import torch

import overparam as op
from overparam.optim import ScaledGD, ScaledSGD

D = torch.float64


def test_full_batch_step_equals_scaledgd():
    P = op.problems.completion(n=12, r=2, p=0.6, symmetric=False, generator=0)
    outs = []
    for cls in (ScaledGD, ScaledSGD):
        L, R = (t.requires_grad_() for t in P.init("small", rank=3, scale=0.5, generator=1))
        opt = cls([(L, R)], lr=0.4, damping=0.01)
        for _ in range(3):
            opt.zero_grad()
            P.loss((L, R)).backward()
            opt.step()
        outs.append((L.detach(), R.detach()))
    torch.testing.assert_close(outs[0], outs[1], rtol=0, atol=1e-12)


@pytest.mark.parametrize("symmetric", [False, True])
def test_minibatch_touches_only_sampled_rows_and_tracks_grams(symmetric):
    P = op.problems.completion(n=30, r=2, p=0.5, symmetric=symmetric, generator=0)
    X = P.init("spectral", rank=3)
    params = [X] if symmetric else list(X)
    for t in params:
        t.requires_grad_()
    pair = params[0] if symmetric else tuple(params)
    opt = ScaledSGD([pair], lr=0.01, damping=1e-3, refresh=1000)
    g = torch.Generator().manual_seed(0)
    moved = 0
    for step in range(25):
        idx = P.minibatch(5, generator=g)
        before = [t.detach().clone() for t in params]
        opt.zero_grad()
        P.loss(pair if not symmetric else params[0], entries=idx).backward()
        opt.step()
        touched = set(P.rows[idx].tolist()) | (set(P.cols[idx].tolist()) if symmetric else set())
        changed = set(torch.nonzero((params[0].detach() != before[0]).any(1)).squeeze(1).tolist())
        assert changed <= touched
        moved += len(changed)
    assert moved > 25
    st = opt.state[params[0]]
    torch.testing.assert_close(st["gram_L"], params[0].detach().T @ params[0].detach(), rtol=1e-9, atol=1e-12)
    if not symmetric:
        torch.testing.assert_close(st["gram_R"], params[1].detach().T @ params[1].detach(), rtol=1e-9, atol=1e-12)


def test_converges_on_ill_conditioned_completion_and_state_dict():
    P = op.problems.completion(n=40, r=2, p=0.5, kappa=20, symmetric=False, generator=0)
    L, R = (t.requires_grad_() for t in P.init("spectral", rank=2))
    opt = ScaledSGD([(L, R)], lr=0.2, refresh=50)
    g = torch.Generator().manual_seed(1)
    for _ in range(1500):
        opt.zero_grad()
        P.loss((L, R), entries=P.minibatch(64, generator=g)).backward()
        opt.step()
    assert float(P.relative_error((L, R)).detach()) < 1e-8
    sd = copy.deepcopy(opt.state_dict())
    L2, R2 = L.detach().clone().requires_grad_(), R.detach().clone().requires_grad_()
    opt2 = ScaledSGD([(L2, R2)])
    opt2.load_state_dict(sd)
    torch.testing.assert_close(opt2.state[L2]["gram_R"], opt.state[L]["gram_R"])
    assert opt2.param_groups[0]["refresh"] == 50


def test_bad_refresh():
    with pytest.raises(ValueError, match="refresh"):
        ScaledSGD([torch.zeros(3, 2, requires_grad=True)], refresh=0)
