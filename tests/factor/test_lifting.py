import pytest
import torch

from overparam.factor import LiftedSensing
from overparam.problems import sensing

D = torch.float64


@pytest.fixture(scope="module")
def problem():
    return sensing(n=3, r=1, m=10, generator=0)


def test_order_one_is_the_original_loss(problem):
    lifted = LiftedSensing(problem, rank=2, order=1)
    X = torch.randn(3, 2, dtype=D)
    torch.testing.assert_close(lifted.loss(lifted.lift(X)), problem.loss(X), rtol=1e-12, atol=0)


def test_measure_matches_dense_kronecker_oracle(problem):
    lifted = LiftedSensing(problem, rank=2, order=2)
    T = torch.randn(lifted.shape, dtype=D)
    q = lifted.measure(T)
    eye = torch.eye(2, dtype=D)
    Ab = [torch.kron(a, eye) for a in problem.A]
    t = T.reshape(-1)
    for i in (0, 3, 9):
        for j in (0, 5):
            expect = t @ torch.kron(Ab[i], Ab[j]) @ t
            torch.testing.assert_close(q[i, j], expect, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("order", [2, 3])
def test_lift_of_factor_gives_product_loss_and_unlift_inverts(problem, order):
    lifted = LiftedSensing(problem, rank=2, order=order)
    X = torch.randn(3, 2, dtype=D)
    T = lifted.lift(X)
    q = problem.measure(X @ X.T)
    prod_q, prod_y = q, problem.y
    for _ in range(order - 1):
        prod_q, prod_y = prod_q.unsqueeze(-1) * q, prod_y.unsqueeze(-1) * problem.y
    torch.testing.assert_close(lifted.loss(T), 0.25 * (prod_q - prod_y).square().mean(), rtol=1e-10, atol=0)
    torch.testing.assert_close(lifted.product(T), X @ X.T, rtol=1e-9, atol=1e-10)


def test_lifted_loss_vanishes_at_ground_truth_and_is_larger_elsewhere(problem):
    lifted = LiftedSensing(problem, rank=1, order=2)
    X = problem.init("spectral", rank=1)
    evals, evecs = torch.linalg.eigh(problem.M_star)
    Xs = evecs[:, -1:] * evals[-1].sqrt()
    assert float(lifted.loss(lifted.lift(Xs))) < 1e-20
    assert float(lifted.loss(lifted.init(scale=0.1, generator=0))) > 1e-6
    with pytest.raises(ValueError, match="order"):
        LiftedSensing(problem, rank=1, order=0)
    with pytest.raises(ValueError, match="problem"):
        LiftedSensing(sensing(n=3, r=1, m=5, symmetric=False, generator=0), rank=1)


def test_bad_input_names_the_argument(problem):
    with pytest.raises(TypeError, match="problem"):
        LiftedSensing("not a problem", rank=1)
    lifted = LiftedSensing(problem, rank=1, order=2)
    with pytest.raises(ValueError, match="T must"):
        lifted.unlift(torch.ones(3, 2, dtype=D))
    with pytest.raises(ValueError, match="X must"):
        lifted.lift(torch.ones(3, 2, dtype=D))
