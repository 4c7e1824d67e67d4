import pytest
import torch

import overparam.hessian as oh
from overparam.testing import symmetric_with_spectrum


def test_combinators_match_dense():
    A = symmetric_with_spectrum([3.0, 1.0, -2.0, 0.5], generator=0)
    B = symmetric_with_spectrum([1.0, 2.0, 0.0, -1.0], generator=1)
    a, b = oh.as_operator(A), oh.as_operator(B)
    eye = torch.eye(4, dtype=torch.float64)
    torch.testing.assert_close((a + b).to_dense(), A + B, rtol=1e-14, atol=1e-14)
    torch.testing.assert_close((a - 2 * b).to_dense(), A - 2 * B, rtol=1e-14, atol=1e-14)
    torch.testing.assert_close((-a).shift(0.5).to_dense(), -A + 0.5 * eye, rtol=1e-14, atol=1e-14)
    torch.testing.assert_close((a * 3.0).to_dense(chunk=3), 3 * A, rtol=1e-14, atol=1e-14)
    V = torch.randn(4, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close((a + b) @ V, (A + B) @ V, rtol=1e-14, atol=1e-14)


def test_as_operator_variants_and_errors():
    A = symmetric_with_spectrum([3.0, 1.0, 2.0], generator=0)
    v = torch.ones(3, dtype=torch.float64)

    class HasMatvec:
        shape = (3, 3)

        def matvec(self, x):
            return A @ x

    for obj in (A, HasMatvec(), oh.as_operator(lambda x: A @ x, n=3)):
        torch.testing.assert_close(oh.as_operator(obj) @ v, A @ v)
    with pytest.raises(ValueError, match="symmetric"):
        oh.as_operator(torch.tensor([[1.0, 2.0], [0.0, 1.0]]))
    with pytest.raises(ValueError, match="n is required"):
        oh.as_operator(lambda x: x)
    with pytest.raises(TypeError):
        oh.as_operator(3)
    with pytest.raises(ValueError, match="different parameter shapes"):
        oh.as_operator(A) + oh.as_operator(torch.eye(2, dtype=torch.float64))
    with pytest.raises(ValueError, match="shape"):
        oh.as_operator(A).matmat(torch.ones(2, 2, dtype=torch.float64))


def test_as_operator_refuses_contradicting_n_and_dtype_and_non_finite_matrices():
    # issue 20: as_operator(3×3 tensor, n=5) ignored n; a dense matrix holding inf reached torch's eigh
    A = symmetric_with_spectrum([3.0, 1.0, 2.0], generator=0)

    class Sized:
        shape = (3, 3)

        def matvec(self, x):
            return A @ x

    for obj in (A, oh.as_operator(A), Sized()):
        with pytest.raises(ValueError, match="n=5"):
            oh.as_operator(obj, n=5)
        assert oh.as_operator(obj, n=3).n == 3
    for bad in (0, -2, 2.0, True):
        with pytest.raises(ValueError, match="n must"):
            oh.as_operator(lambda x: x, n=bad)
    with pytest.raises(ValueError, match="dtype"):
        oh.as_operator(A, dtype=torch.float32)
    with pytest.raises(TypeError, match="dtype"):
        oh.as_operator(lambda x: x, n=3, dtype="float64")
    for value in (float("inf"), float("nan")):
        B = A.clone()
        B[1, 1] = value
        with pytest.raises(ValueError, match="NaN or inf"):
            oh.as_operator(B)
        with pytest.raises(ValueError, match="NaN or inf"):
            oh.lanczos(B, k=1)


@pytest.mark.parametrize("a", [float("nan"), float("inf"), "2", True])
def test_scaled_operator_refuses_a_that_is_not_a_finite_number(a):
    A = oh.DenseOperator(torch.eye(3, dtype=torch.float64))
    with pytest.raises(ValueError, match="a must be a finite real number"):
        oh.ScaledOperator(A, a)
    assert torch.equal((2.5 * A).to_dense(), 2.5 * torch.eye(3, dtype=torch.float64))
