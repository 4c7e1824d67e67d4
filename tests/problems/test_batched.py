"""Batched problems: instance b of every batched method equals the single-instance method on problems[b]."""

import dataclasses

import pytest
import torch

import overparam as op
from overparam.problems import Batched, shared_sensing


def _close(a, b, tol=1e-13):
    return float((a - b).abs().max()) <= tol * max(1.0, float(b.abs().max()))


@pytest.mark.parametrize("symmetric", [True, False])
def test_sensing_batch_equals_each_instance(symmetric):
    Ps = [op.problems.sensing(n=6, r=2, m=50, kappa=k, symmetric=symmetric, generator=s)
          for s, k in [(0, 1.0), (1, 3.0), (2, 10.0)]]
    B = Batched(Ps)
    assert B.stacked == ("A", "y", "M_star") and B.shared == () and len(B) == 3
    X = B.init("small", rank=3, scale=0.5, generators=[5, 6, 7])
    loss, err, prod = B.loss(X), B.relative_error(X), B.product(X)
    for b, P in enumerate(Ps):
        xb = X[b] if symmetric else (X[0][b], X[1][b])
        ref = P.init("small", rank=3, scale=0.5, generator=5 + b)
        assert torch.equal(ref, xb) if symmetric else all(torch.equal(u, v) for u, v in zip(ref, xb))
        assert _close(loss[b], P.loss(xb)) and _close(err[b], P.relative_error(xb)) and _close(prod[b], P.product(xb))


def test_other_problem_types_batch():
    cases = [
        [op.problems.robust_pca(8, 2, 0.1, generator=s) for s in range(2)],
        [op.problems.deep_linear(5, 4, 2, 3, 20, generator=s) for s in range(2)],
        [op.problems.teacher_student(4, 2, 30, generator=s) for s in range(2)],
    ]
    for Ps in cases:
        B = Batched(Ps)
        X = B.init("small", scale=0.3, generators=[1, 2])
        for b, P in enumerate(Ps):
            xb = X[b] if isinstance(X, torch.Tensor) else type(X)(t[b] for t in X)
            assert _close(B.loss(X)[b], P.loss(xb)), type(P).__name__
            assert _close(B.relative_error(X)[b], P.relative_error(xb)), type(P).__name__


def test_shared_sensing_keeps_one_ensemble_and_matches_its_instances():
    B = shared_sensing(6, 2, 40, seeds=[0, 1], kappa=[1.0, 4.0], measurement_seed=9)
    assert B.shared == ("A",) and B.problems[0].A is B.problems[1].A
    A = op.problems.sensing(6, 2, 40, generator=9).A
    assert torch.equal(B.problems[0].A, A)
    for P, k in zip(B.problems, (1.0, 4.0)):
        s = torch.linalg.svdvals(P.M_star)
        assert abs(float(s[0] / s[1]) - k) < 1e-10
        assert _close(P.y, A.reshape(40, -1) @ P.M_star.reshape(-1))


def test_bad_batches_are_refused():
    with pytest.raises(ValueError, match="non-empty"):
        Batched([])
    with pytest.raises(TypeError, match="one problem type"):
        Batched([op.problems.sensing(4, 1, 10, generator=0), op.problems.robust_pca(4, 1, 0.1, generator=0)])
    with pytest.raises(ValueError, match="'A'.*nothing is padded"):
        Batched([op.problems.sensing(4, 1, 10, generator=0), op.problems.sensing(4, 1, 12, generator=0)])
    with pytest.raises(ValueError, match="'rank' differs"):
        Batched([op.problems.sensing(4, 1, 10, generator=0), op.problems.sensing(4, 2, 10, generator=0)])
    with pytest.raises(TypeError, match="dataclass"):
        Batched([torch.zeros(2)])
    B = shared_sensing(4, 1, 10, seeds=[0, 1])
    with pytest.raises(ValueError, match="one entry per instance"):
        B.init("small", generators=[1])
    with pytest.raises(ValueError, match="kappa"):
        shared_sensing(4, 1, 10, seeds=[0, 1], kappa=[1.0])
    with pytest.raises(ValueError, match="outliers"):
        shared_sensing(4, 1, 10, seeds=[0], outliers=0.1)


def test_problems_are_not_modified():
    Ps = [op.problems.sensing(4, 1, 10, generator=s) for s in range(2)]
    before = [dataclasses.asdict(P) for P in Ps]
    B = Batched(Ps)
    B.loss(B.init("small", generators=[0, 1]))
    for P, d in zip(Ps, before):
        for k, v in dataclasses.asdict(P).items():
            assert (torch.equal(v, d[k]) if isinstance(v, torch.Tensor) else v == d[k])
