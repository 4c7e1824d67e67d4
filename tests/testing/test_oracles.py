import pytest
import torch

from overparam import testing


def test_dense_hessian_closed_form_mse():
    # L(w, b) = mean((Xw + b - y)^2): H = (2/N) [X 1]^T [X 1]
    g = torch.Generator().manual_seed(0)
    X = torch.randn(20, 3, generator=g, dtype=torch.float64)
    y = torch.randn(20, 1, generator=g, dtype=torch.float64)
    net = testing.tanh_mlp([3, 1], generator=1)
    H = testing.dense_hessian(net, torch.nn.functional.mse_loss, (X, y))
    Xa = torch.cat([X, torch.ones(20, 1, dtype=torch.float64)], 1)
    torch.testing.assert_close(H, 2 / 20 * Xa.T @ Xa, rtol=1e-12, atol=1e-12)


def test_dense_hessian_symmetric_and_mode_untouched():
    net = testing.tanh_mlp([4, 5, 2], generator=0)
    net.eval()
    x = torch.randn(6, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    y = torch.randn(6, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    with testing.assert_no_side_effects(net):
        H = testing.dense_hessian(net, torch.nn.functional.mse_loss, (x, y))
    n = sum(p.numel() for p in net.parameters())
    assert H.shape == (n, n)
    torch.testing.assert_close(H, H.T, rtol=0, atol=1e-12)


def test_dense_matrix_from_matvec():
    A = testing.symmetric_with_spectrum([1.0, 2.0, -3.0], generator=0)
    torch.testing.assert_close(testing.dense_matrix(lambda v: A @ v, 3), A)
    assert testing.dense_matrix(A) is A
    with pytest.raises(ValueError, match="n is required"):
        testing.dense_matrix(lambda v: v)


def test_cases_are_seeded_and_have_the_spectrum():
    A = testing.symmetric_with_spectrum([5.0, -1.0, 0.0, 2.0], generator=3)
    torch.testing.assert_close(torch.linalg.eigvalsh(A), torch.tensor([-1.0, 0.0, 2.0, 5.0], dtype=torch.float64),
                               rtol=0, atol=1e-12)
    assert torch.equal(A, testing.symmetric_with_spectrum([5.0, -1.0, 0.0, 2.0], generator=3))
    V = testing.ill_conditioned(30, 5, 1e6, generator=0)
    s = torch.linalg.svdvals(V)
    assert abs(float(s[0] / s[-1]) / 1e6 - 1) < 1e-6
    Q = testing.random_orthogonal(6, generator=0)
    testing.assert_orthonormal(Q, atol=1e-13)


def test_tanh_mlp_does_not_touch_global_rng():
    with testing.assert_no_side_effects():
        a = testing.tanh_mlp([3, 4, 1], generator=7)
    b = testing.tanh_mlp([3, 4, 1], generator=7)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


def test_assert_no_side_effects_catches_changes():
    net = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Dropout())
    with pytest.raises(AssertionError, match="train/eval"):
        with testing.assert_no_side_effects(net, check_rng=False):
            net.eval()
    with pytest.raises(AssertionError, match="RNG"):
        with testing.assert_no_side_effects():
            torch.randn(1)
