import pytest
import torch

import overparam as op


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
    with pytest.raises(ValueError, match="rank must be <="):
        P.init("spectral", rank=5)
