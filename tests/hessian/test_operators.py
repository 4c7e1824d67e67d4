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
