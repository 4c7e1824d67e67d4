import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import overparam.hessian as oh
from overparam.backend.random import gaussian
from overparam.testing import symmetric_with_spectrum
from overparam.testing.hessian_oracles import moments


def test_weights_sum_to_one_and_full_steps_give_eigenvalues():
    lam = torch.linspace(-2, 5, 12, dtype=torch.float64)
    A = symmetric_with_spectrum(lam, generator=0)
    q = oh.slq(A, probes=3, steps=12, generator=1)
    torch.testing.assert_close(q.weights.sum(dim=1), torch.ones(3, dtype=torch.float64), rtol=1e-13, atol=1e-13)
    for row in q.nodes:
        torch.testing.assert_close(row, lam, rtol=1e-10, atol=1e-10)
    assert q.n_matvecs == 36


@settings(max_examples=10, deadline=None)
@given(n=st.integers(8, 40), m=st.integers(1, 6), seed=st.integers(0, 2**16))
def test_quadrature_reproduces_moments(n, m, seed):
    A = symmetric_with_spectrum(torch.linspace(-1, 1, n) + gaussian((n,), generator=seed, dtype=torch.float64) * 0.1,
                                generator=seed + 1)
    v = gaussian((2, n), generator=seed + 2, dtype=torch.float64)
    q = oh.slq(A, probes=v, steps=m)
    for p in range(2):
        exact = moments(A, v[p], 2 * m - 1)
        quad = torch.stack([(q.weights[p] * q.nodes[p] ** k).sum() for k in range(2 * m)])
        torch.testing.assert_close(quad, exact, rtol=1e-9, atol=1e-11)


def test_density_integrates_to_one_and_finds_spectrum():
    lam = torch.cat([torch.zeros(150), torch.tensor([4.0, 6.0])])
    A = symmetric_with_spectrum(lam, generator=2)
    rho = oh.density(A, probes=5, steps=30, generator=3)
    assert abs(float(torch.trapezoid(rho.values, rho.grid)) - 1) < 1e-6
    near0 = rho.grid.abs() < 0.5
    mass0 = float(torch.trapezoid(rho.values * near0, rho.grid))
    assert abs(mass0 - 150 / 152) < 0.03  # the bulk at 0 holds 150 of 152 eigenvalues
    log = oh.density(A, probes=5, steps=30, scale="log", generator=3)
    assert abs(float(torch.trapezoid(log.values, log.grid)) - 1) < 1e-6


def test_plot_density_and_errors(tmp_path):
    plt = pytest.importorskip("matplotlib.pyplot")
    A = torch.diag(torch.linspace(0, 1, 20, dtype=torch.float64))
    ax = oh.plot_density(oh.density(A, probes=2, steps=10, generator=0))
    ax.figure.savefig(tmp_path / "d.png")
    plt.close(ax.figure)
    with pytest.raises(ValueError, match="steps"):
        oh.slq(A, steps=21)
    with pytest.raises(ValueError, match="scale"):
        oh.density(A, scale="sqrt")


def test_full_reorthogonalization_keeps_nodes_exact_on_wide_spectrum():
    # plain three-term Lanczos loses orthogonality here (ghost nodes, errors of order 100)
    lam = torch.logspace(-3, 3, 60, dtype=torch.float64)
    q = oh.slq(symmetric_with_spectrum(lam, generator=0), probes=2, steps=60, generator=1)
    assert float((q.nodes - lam).abs().max()) < 1e-9 * 1e3


@pytest.mark.parametrize("kw", [{"floor": -1.0}, {"floor": float("nan")}, {"sigma": float("nan")}, {"sigma": 0.0}])
def test_density_refuses_bad_floor_and_sigma_by_name(kw):
    A = torch.diag(torch.linspace(0, 1, 10, dtype=torch.float64))
    with pytest.raises(ValueError, match=next(iter(kw))):
        oh.density(A, probes=2, steps=3, generator=0, **kw)
