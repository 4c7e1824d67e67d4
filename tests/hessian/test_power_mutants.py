"""power_iteration's tolerance is relative (``‖Av − θv‖ <= tol·|θ|``): a tiny-scale operator
(Hessians near a minimum of a small loss) must still get its top eigenpair, not the first
Rayleigh quotient that happens to have a small absolute residual."""

import torch

from overparam.hessian import power_iteration
from overparam.testing import symmetric_with_spectrum


def test_relative_tolerance_on_a_tiny_scale_operator():
    spec = torch.tensor([3.0, 1.0, 0.5, 0.25, 0.1, -0.2], dtype=torch.float64) * 1e-7
    A = symmetric_with_spectrum(spec, generator=0)
    eig = power_iteration(A, k=2, tol=1e-8, generator=0)
    assert eig.converged
    assert torch.allclose(eig.values, spec[:2], rtol=1e-7, atol=0)
    assert bool((eig.residuals <= 1e-8 * eig.values.abs()).all())
