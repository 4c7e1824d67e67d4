"""run_batched: every instance equals the single-instance optimizer on the same problem (fp64, 1e-12)."""

import math

import pytest
import torch

import overparam as op
from overparam.optim import run_batched
from overparam.problems import Batched, shared_sensing


def _single(P, X0, method, steps, lr, damping=0.0, c=1.0, decay=1.0):
    """The reference: the package's single-instance optimizers, one instance at a time."""
    xs = [t.clone().requires_grad_() for t in (X0 if isinstance(X0, tuple) else (X0,))]
    arg = tuple(xs) if isinstance(X0, tuple) else xs[0]
    if method == "gd":
        opt = torch.optim.SGD(xs, lr=lr)
    elif method == "scaledgd":
        opt = op.optim.ScaledGD([arg], lr=lr, damping=damping)
    elif method == "precgd":
        opt = op.optim.PrecGD([arg], lr=lr, c=c)
    else:
        opt = op.optim.SubGM(xs, step=op.optim.geometric(lr0=lr, decay=decay))
    for _ in range(steps):
        opt.zero_grad()
        f = P.loss(arg)
        f.backward()
        opt.step(loss=f) if method == "precgd" else opt.step()
    return tuple(x.detach() for x in xs)


def _rel(a, b):
    return float((a - b).abs().max()) / max(float(b.abs().max()), 1e-300)


@pytest.mark.parametrize("method,kw", [("gd", dict(lr=0.3)), ("scaledgd", dict(lr=0.5, damping=1e-2)),
                                       ("scaledgd", dict(lr=0.5)), ("precgd", dict(lr=0.5, c=1.0)),
                                       ("subgm", dict(lr=0.1, decay=0.98))])
@pytest.mark.parametrize("symmetric", [True, False])
def test_each_instance_equals_its_single_run(method, kw, symmetric):
    Ps = [op.problems.sensing(n=6, r=2, m=60, kappa=k, symmetric=symmetric, generator=s,
                              loss="l1" if method == "subgm" else "l2")
          for s, k in [(0, 1.0), (1, 4.0), (2, 9.0)]]
    B = Batched(Ps)
    rank = 2 if (method == "scaledgd" and "damping" not in kw) else 3
    init = "spectral" if rank == 2 else "small"
    X0 = B.init(init, rank=rank, **({} if init == "spectral" else dict(scale=1e-2, generators=[3, 4, 5])))
    run = run_batched(B, X0, method=method, steps=40, **kw)
    assert run.steps[0] == 0 and run.steps[-1] == 40 and run.loss.shape == (41, 3)
    for b, P in enumerate(Ps):
        x0 = X0[b] if symmetric else (X0[0][b], X0[1][b])
        ref = _single(P, x0, method, 40, **kw)
        got = (run.X[b],) if symmetric else (run.X[0][b], run.X[1][b])
        for g, r in zip(got, ref):
            assert _rel(g, r) < 1e-12, (method, b)
        assert abs(float(run.loss[-1, b]) - float(P.loss(got[0] if symmetric else got))) < 1e-14


def test_per_instance_step_sizes_and_damping():
    B = shared_sensing(6, 2, 60, seeds=[0, 1, 2])
    X0 = B.init("small", rank=3, scale=1e-2, generators=[3, 4, 5])
    lr = torch.tensor([0.1, 0.3, 0.5], dtype=torch.float64)
    lam = torch.tensor([1e-3, 1e-2, 1e-1], dtype=torch.float64)
    run = run_batched(B, X0, method="scaledgd", steps=25, lr=lr, damping=lam)
    for b in range(3):
        (ref,) = _single(B.problems[b], X0[b], "scaledgd", 25, float(lr[b]), float(lam[b]))
        assert _rel(run.X[b], ref) < 1e-12


def test_stopping_masks_freeze_converged_and_diverged_instances():
    B = shared_sensing(6, 2, 80, seeds=[0, 1, 2])
    X0 = B.init("small", rank=2, scale=1e-2, generators=[3, 4, 5])
    lr = torch.tensor([0.5, 50.0, 0.5], dtype=torch.float64)  # instance 1 blows up
    run = run_batched(B, X0, method="gd", steps=400, lr=lr, tol=1e-8, diverge_above=1e6)
    assert run.diverged.tolist() == [False, True, False]
    assert run.converged.tolist() == [True, False, True]
    assert (run.stopped_at >= 0).all()
    # the good instances are unaffected by the bad one: equal to their single runs up to their stopping step
    for b in (0, 2):
        (ref,) = _single(B.problems[b], X0[b], "gd", int(run.stopped_at[b]), 0.5)
        assert _rel(run.X[b], ref) < 1e-12
        assert float(run.relative_error[-1, b]) <= 1e-8
    assert torch.isfinite(run.X[0]).all() and torch.isfinite(run.X[2]).all()
    # a stopped instance no longer changes: its recorded loss is constant after stopping
    s = int(run.stopped_at[0])
    after = [i for i, t in enumerate(run.steps) if t >= s]
    assert len(set(float(run.loss[i, 0]) for i in after)) == 1


def test_rank_deficient_gram_stops_only_that_instance():
    B = shared_sensing(5, 1, 40, seeds=[0, 1])
    X0 = B.init("small", rank=2, scale=1e-1, generators=[1, 2]).clone()
    X0[0, :, 1] = 0.0  # XᵀX singular, undamped ScaledGD cannot step
    run = run_batched(B, X0, method="scaledgd", steps=10, lr=0.5)
    assert run.diverged.tolist() == [True, False] and int(run.stopped_at[0]) == 0
    assert torch.equal(run.X[0], X0[0]) and torch.isfinite(run.X[1]).all()
    (ref,) = _single(B.problems[1], X0[1], "scaledgd", 10, 0.5)
    assert _rel(run.X[1], ref) < 1e-12


def test_deep_factors_with_gd_and_record_every():
    Ps = [op.problems.deep_linear(4, 3, 2, 3, 20, generator=s) for s in range(2)]
    B = Batched(Ps)
    X0 = B.init("small", scale=0.5, generators=[1, 2])
    run = run_batched(B, X0, method="gd", steps=7, lr=0.05, record_every=3)
    assert run.steps == [0, 3, 6, 7]
    for b, P in enumerate(Ps):
        xs = [t[b].clone().requires_grad_() for t in X0]
        opt = torch.optim.SGD(xs, lr=0.05)
        for _ in range(7):
            opt.zero_grad(); P.loss(xs).backward(); opt.step()
        for g, r in zip(run.X, xs):
            assert _rel(g[b], r.detach()) < 1e-12
    assert len(run.rows()) == 4 * 2
    with pytest.raises(ValueError, match="symmetric factor X or a pair"):
        run_batched(B, X0, method="scaledgd", steps=1, lr=0.1)


def test_bad_arguments():
    B = shared_sensing(5, 1, 20, seeds=[0, 1])
    X0 = B.init("small", rank=2, generators=[1, 2])
    with pytest.raises(ValueError, match="method"):
        run_batched(B, X0, method="adam", steps=1, lr=0.1)
    with pytest.raises(ValueError, match="steps"):
        run_batched(B, X0, method="gd", steps=-1, lr=0.1)
    with pytest.raises(ValueError, match="lr must be a number or a tensor of shape \\(2,\\)"):
        run_batched(B, X0, method="gd", steps=1, lr=torch.ones(3))
    with pytest.raises(ValueError, match="lr must be finite"):
        run_batched(B, X0, method="gd", steps=1, lr=math.nan)
    with pytest.raises(ValueError, match="damping= applies"):
        run_batched(B, X0, method="gd", steps=1, lr=0.1, damping=0.1)
    with pytest.raises(ValueError, match="decay"):
        run_batched(B, X0, method="subgm", steps=1, lr=0.1, decay=1.5)
    with pytest.raises(ValueError, match="leading batch dimension of 2"):
        run_batched(B, X0[:1], method="gd", steps=1, lr=0.1)
    with pytest.raises(TypeError, match="X0"):
        run_batched(B, "x", method="gd", steps=1, lr=0.1)
    X = X0.clone()
    run_batched(B, X, method="gd", steps=3, lr=0.1)
    assert torch.equal(X, X0)  # X0 is not modified
