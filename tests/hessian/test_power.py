import torch

import overparam.hessian as oh
from overparam.testing import symmetric_with_spectrum


def test_deflated_power_iteration_matches_dense():
    lam = [10.0, -6.0, 3.0, 1.0, 0.5, 0.1]
    A = symmetric_with_spectrum(lam, generator=0)
    eig = oh.power_iteration(A, k=3, tol=1e-10, max_iters=2000, generator=0)
    assert eig.converged
    torch.testing.assert_close(eig.values, torch.tensor([10.0, -6.0, 3.0], dtype=torch.float64), rtol=1e-9, atol=0)
    X = eig.matrix()
    assert float(torch.linalg.vector_norm(A @ X - X * eig.values, dim=0).max()) < 1e-8
    # Lanczos needs fewer products for the same answer
    lz = oh.lanczos(A, k=3, which="LM", tol=1e-10, generator=0)
    assert lz.n_matvecs <= eig.n_matvecs
