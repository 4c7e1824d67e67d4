import pytest
import torch

import overparam as op
from overparam.problems import sensing


def test_ground_truth_rank_spectrum_and_symmetry():
    M = op.problems.ground_truth(12, 3, kappa=10.0, generator=0)
    torch.testing.assert_close(M, M.T)
    ev = torch.linalg.eigvalsh(M).flip(0)
    torch.testing.assert_close(ev[:3], torch.linspace(1, 0.1, 3, dtype=torch.float64), rtol=0, atol=1e-12)
    assert float(ev[3:].abs().max()) < 1e-12
    A = op.problems.ground_truth(8, 2, n2=5, symmetric=False, kappa=4.0, generator=0)
    torch.testing.assert_close(torch.linalg.svdvals(A)[:2], torch.tensor([1.0, 0.25], dtype=torch.float64))


def test_measurements_loss_and_gradient_closed_form():
    P = op.problems.sensing(n=6, r=2, m=50, generator=0)
    torch.testing.assert_close(P.measure(P.M_star), P.y)
    X = P.init("small", rank=3, scale=0.5, generator=1)
    r = torch.stack([(A * (X @ X.T)).sum() for A in P.A]) - P.y
    torch.testing.assert_close(P.loss(X), (r**2).sum() / (4 * 50))
    # gradient of 1/(4m)||A(XX^T) - y||^2 is (1/m) sum r_i sym(A_i) X
    grad = torch.func.grad(P.loss)(X)
    expected = sum(ri * (Ai + Ai.T) / 2 for ri, Ai in zip(r, P.A)) @ X / 50
    torch.testing.assert_close(grad, expected, rtol=1e-12, atol=1e-12)
    assert float(P.loss(P.init("spectral", rank=2))) < float(P.loss(X))


def test_asymmetric_and_l1():
    P = op.problems.sensing(n=5, n2=4, r=2, m=40, symmetric=False, loss="l1", generator=0)
    L, R = P.init("small", rank=3, scale=1.0, generator=2)
    assert L.shape == (5, 3) and R.shape == (4, 3)
    torch.testing.assert_close(P.loss((L, R)), (P.measure(L @ R.T) - P.y).abs().mean())
    assert float(P.relative_error((torch.zeros(5, 1, dtype=torch.float64), torch.zeros(4, 1, dtype=torch.float64)))) == 1.0
    with pytest.raises(TypeError, match="asymmetric"):
        P.product(L)


def test_bad_input():
    with pytest.raises(ValueError, match="r must be"):
        op.problems.sensing(n=3, r=4, m=10)
    with pytest.raises(ValueError, match="kappa"):
        op.problems.sensing(n=3, r=1, m=10, kappa=0.5)
    with pytest.raises(ValueError, match="loss"):
        op.problems.sensing(n=3, r=1, m=10, loss="huber")
    P = op.problems.sensing(n=4, r=1, m=10, generator=0)
    with pytest.raises(ValueError, match="kind"):
        P.init("orthogonal")
    with pytest.raises(ValueError, match=r"k \(rank\) must be <= min"):
        P.init("spectral", rank=5)


def test_loss_conventions_against_explicit_sums():
    P = sensing(n=5, r=2, m=40, generator=0)
    X = P.init("small", rank=3, scale=0.5, generator=1)
    res = torch.stack([(P.A[i] * (X @ X.T)).sum() - P.y[i] for i in range(P.m)])
    torch.testing.assert_close(P.loss(X), res.square().sum() / (4 * P.m), rtol=1e-12, atol=0)
    Q = sensing(n=5, r=2, m=40, n2=4, symmetric=False, generator=0)
    L, R = Q.init("small", rank=3, scale=0.5, generator=1)
    res = torch.stack([(Q.A[i] * (L @ R.T)).sum() - Q.y[i] for i in range(Q.m)])
    torch.testing.assert_close(Q.loss((L, R)), res.square().sum() / (2 * Q.m), rtol=1e-12, atol=0)
    Q1 = sensing(n=5, r=2, m=40, n2=4, symmetric=False, loss="l1", generator=0)
    torch.testing.assert_close(Q1.loss((L, R)), res.abs().mean(), rtol=1e-12, atol=0)


def test_truth_has_zero_loss_and_error_and_spectrum():
    P = sensing(n=8, r=3, m=100, kappa=10, generator=0)
    ev, V = torch.linalg.eigh(P.M_star)
    torch.testing.assert_close(ev[-3:], torch.tensor([0.1, 0.55, 1.0], dtype=torch.float64), rtol=0, atol=1e-12)
    Xs = V[:, -3:] * ev[-3:].sqrt()
    assert float(P.loss(Xs)) < 1e-28 and float(P.relative_error(Xs)) < 1e-14


@pytest.mark.parametrize("noise", ["sparse", "gaussian"])
def test_outliers(noise):
    P = sensing(n=6, r=2, m=4000, outliers=0.3, noise=noise, generator=0)
    clean = sensing(n=6, r=2, m=4000, generator=0)
    assert torch.equal(P.M_star, clean.M_star) and torch.equal(P.A, clean.A)
    frac = float(P.outlier_mask.double().mean())
    assert abs(frac - 0.3) < 0.03
    diff = P.y - clean.y
    assert bool((diff[~P.outlier_mask] == 0).all())
    assert float(diff[P.outlier_mask].abs().mean()) > 2 * float(clean.y.std())
    # seeded: same generator, same outliers
    assert torch.equal(P.y, sensing(n=6, r=2, m=4000, outliers=0.3, noise=noise, generator=0).y)


def test_bad_arguments():
    with pytest.raises(ValueError, match="outliers"):
        sensing(n=4, r=1, m=10, outliers=1.0)
    with pytest.raises(ValueError, match="noise"):
        sensing(n=4, r=1, m=10, outliers=0.1, noise="cauchy")
    with pytest.raises(ValueError, match="kind"):
        sensing(n=4, r=1, m=10).init("zeros")
    with pytest.raises(ValueError, match="rank"):
        sensing(n=4, r=1, m=10).init("spectral", rank=5)
    with pytest.raises(ValueError, match="scale"):
        sensing(n=4, r=1, m=10).init("small", scale=-1.0)


def test_spectral_init_is_close_with_many_measurements():
    P = sensing(n=6, r=2, m=3000, generator=0)
    assert float(P.relative_error(P.init("spectral"))) < 0.3
    Q = sensing(n=6, r=2, m=3000, symmetric=False, generator=0)
    L, R = Q.init("spectral", rank=4)
    assert L.shape == (6, 4) and float(Q.relative_error((L, R))) < 0.3


def test_generators_are_keyword_only_and_default_to_none():
    """The dialect: every public function and init/minibatch method of problems takes generator=None keyword-only."""
    import inspect
    fns = [getattr(op.problems, n) for n in op.problems.__all__]
    fns += [getattr(c, m) for c in fns if inspect.isclass(c) for m in ("init", "minibatch") if hasattr(c, m)]
    seen = 0
    for f in fns:
        if not callable(f) or inspect.isclass(f):
            continue
        par = inspect.signature(f).parameters.get("generator")
        if par is not None:
            seen += 1
            assert par.kind is inspect.Parameter.KEYWORD_ONLY and par.default is None, f
    assert seen >= 10
    L, R = op.problems.small_factors((5, 3), 2, like=torch.zeros(5, 3, dtype=torch.float64), symmetric=False,
                                     generator=0)
    assert L.shape == (5, 2) and R.shape == (3, 2) and L.dtype == torch.float64
