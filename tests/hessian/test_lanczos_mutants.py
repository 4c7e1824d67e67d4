"""Lanczos checks that a wrong convergence floor or a non-thick restart would fail (issue 20's
mutation review): both mutants still return correct eigenvalues, only after many more products."""

import warnings

import torch

from overparam.hessian import lanczos
from overparam.testing import symmetric_with_spectrum


def test_smallest_eigenvalues_at_zero_converge_with_the_sqrt_eps_floor():
    # 20 exact zeros and 10 eigenvalues in [1e-12, 1e-8]: a relative test |r| <= tol·|θ| can never
    # hold there; the floor √eps·‖A‖ makes it an absolute one.
    spec = torch.cat([torch.zeros(20, dtype=torch.float64), torch.logspace(-12, -8, 10, dtype=torch.float64),
                      torch.linspace(0.1, 10, 70, dtype=torch.float64)])
    A = symmetric_with_spectrum(spec, generator=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        eig = lanczos(A, k=3, which="SA", generator=0)
    assert eig.converged
    assert eig.n_matvecs <= 700  # 507 with the √eps·‖A‖ floor; 1150 (the budget) with eps·‖A‖
    floor = torch.finfo(torch.float64).eps ** 0.5 * 10
    assert float(eig.values.abs().max()) <= floor
    assert float(eig.residuals.max()) <= 1.5e-8 * floor


def test_thick_restart_bounds_the_product_count_when_restarts_are_forced():
    # ncv=10 for k=2 on a clustered spectrum forces many restarts; keeping p = k + (ncv-k)//2 Ritz
    # vectors (thick restart) needs 216 products, keeping only k needs 401.
    A = symmetric_with_spectrum(torch.linspace(1, 2, 400, dtype=torch.float64), generator=1)
    eig = lanczos(A, k=2, which="LA", ncv=10, max_matvecs=5000, generator=0)
    assert eig.converged
    assert eig.n_matvecs <= 300
    top = torch.linspace(1, 2, 400, dtype=torch.float64)[-2:].flip(0)
    assert torch.allclose(eig.values, top, rtol=0, atol=1e-8)
