import pytest
import torch

from overparam.problems import deep_linear, robust_pca, teacher_student

D = torch.float64


def test_robust_pca_instance():
    P = robust_pca(n=40, r=3, alpha=0.1, kappa=4, generator=0)
    torch.testing.assert_close(P.Y, P.M_star + P.S_star)
    assert abs(float((P.S_star != 0).double().mean()) - 0.1) < 0.03
    assert int(torch.linalg.matrix_rank(P.M_star)) == 3
    U, S, Vh = torch.linalg.svd(P.M_star)
    F = (U[:, :3] * S[:3].sqrt(), Vh[:3].T * S[:3].sqrt())
    assert float(P.relative_error(F)) < 1e-14
    torch.testing.assert_close(P.loss(F, P.S_star), torch.zeros((), dtype=D), rtol=0, atol=1e-25)
    with pytest.raises(ValueError, match="alpha"):
        robust_pca(n=5, r=1, alpha=1.0)


@pytest.mark.parametrize("p", [1.0, 2.0, 4.0])
def test_deep_linear_loss_and_product(p):
    P = deep_linear(d_in=5, d_out=3, r=2, depth=3, samples=30, p=p, generator=0)
    Ws = P.init("small", rank=4, scale=0.5, generator=1)
    W = Ws[2] @ Ws[1] @ Ws[0]
    torch.testing.assert_close(P.product(Ws), W)
    expect = sum((W @ P.X[i] - P.Y[i]).abs().pow(p).sum() for i in range(30)) / (p * 30)
    torch.testing.assert_close(P.loss(Ws), expect, rtol=1e-12, atol=0)


def test_deep_linear_spectral_init_is_balanced_and_exact():
    P = deep_linear(d_in=5, d_out=4, r=2, depth=3, samples=50, generator=0)
    Ws = P.init("spectral", rank=2)
    assert float(P.relative_error(Ws)) < 1e-12  # noiseless, full column rank X
    for a, b in zip(Ws[:-1], Ws[1:]):
        torch.testing.assert_close(b.T @ b, a @ a.T, rtol=0, atol=1e-12)  # balancedness
    one = deep_linear(d_in=5, d_out=4, r=2, depth=1, samples=50, generator=0)
    (W,) = one.init("spectral", rank=2)
    assert W.shape == (4, 5) and float(one.relative_error([W])) < 1e-12
    with pytest.raises(ValueError, match="factors"):
        P.product(Ws[:2])
    with pytest.raises(ValueError, match="depth"):
        deep_linear(d_in=3, d_out=3, r=1, depth=0, samples=5)


@pytest.mark.parametrize("activation", ["relu", "tanh", "quadratic"])
def test_teacher_student_teacher_is_a_zero_of_the_loss(activation):
    P = teacher_student(d=6, teacher_width=2, samples=50, activation=activation, generator=0)
    assert float(P.loss((P.W_star, P.a_star))) == 0.0
    assert float(P.relative_error((P.W_star, P.a_star))) == 0.0
    torch.testing.assert_close(P.W_star @ P.W_star.T, torch.eye(2, dtype=D), rtol=0, atol=1e-12)
    W, a = P.init("small", rank=5, scale=1e-2, generator=1)
    assert W.shape == (5, 6) and a.shape == (5,)
    x = P.X[0]
    torch.testing.assert_close(P.forward((W, a), P.X)[0], sum(a[j] * {"relu": torch.relu, "tanh": torch.tanh,
                               "quadratic": torch.square}[activation](W[j] @ x) for j in range(5)))


def test_teacher_student_quadratic_is_sensing_and_spectral_init():
    P = teacher_student(d=5, teacher_width=2, samples=20000, activation="quadratic", generator=0)
    x = P.X[:3]
    Mstar = P.W_star.T @ torch.diag(P.a_star) @ P.W_star
    torch.testing.assert_close(P.y[:3], torch.einsum("ni,ij,nj->n", x, Mstar, x))
    W, a = P.init("spectral")
    Mhat = W.T @ torch.diag(a) @ W
    assert float(torch.linalg.matrix_norm(Mhat - Mstar) / torch.linalg.matrix_norm(Mstar)) < 0.1
    with pytest.raises(ValueError, match="quadratic"):
        teacher_student(d=5, teacher_width=2, samples=10, activation="relu", generator=0).init("spectral")
    with pytest.raises(ValueError, match="activation"):
        teacher_student(d=5, teacher_width=2, samples=10, activation="gelu")
