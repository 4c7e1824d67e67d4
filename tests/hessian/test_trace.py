import statistics

import pytest
import torch

import overparam.hessian as oh
from overparam.backend.random import gaussian
from overparam.testing import symmetric_with_spectrum
from overparam.testing.hessian_oracles import xtrace_naive


def test_hutchinson_exact_per_rademacher_probe_on_diagonal():
    d = gaussian((50,), generator=0, dtype=torch.float64)
    est = oh.hutchinson(torch.diag(d), probes=7, generator=1)
    torch.testing.assert_close(est.samples, d.sum().expand(7), rtol=1e-14, atol=1e-13)
    assert est.n_matvecs == 7


def test_hutchinson_10000_probes_within_3_stderr():
    A = symmetric_with_spectrum(torch.linspace(-1, 3, 40), generator=2)
    est = oh.hutchinson(A, probes=10_000, block=2_000, generator=3)
    assert abs(float(est.mean - torch.trace(A))) < 3 * float(est.stderr)
    assert 0 < float(est.stderr) < 0.2


def test_hutchpp_beats_hutchinson_on_low_rank_plus_noise():
    n = 200
    lam = torch.cat([torch.linspace(50, 20, 10), 0.05 * torch.ones(n - 10)])
    A = symmetric_with_spectrum(lam, generator=4)
    exact = float(lam.sum())
    errs = {"hutchinson": [], "hutch++": [], "xtrace": []}
    for seed in range(20):
        for method in errs:
            errs[method].append(abs(float(oh.trace(A, probes=60, method=method, generator=seed).mean) - exact))
    med = {k: statistics.median(v) for k, v in errs.items()}
    assert med["hutch++"] < 0.2 * med["hutchinson"], med
    assert med["xtrace"] < med["hutchinson"], med


def test_xtrace_equals_leave_one_out_definition_and_is_exact_on_low_rank():
    n = 40
    A = symmetric_with_spectrum(torch.rand(n, generator=torch.Generator().manual_seed(0)) ** 3, generator=5)
    est = oh.xtrace(A, probes=16, generator=6)
    Om = gaussian((8, n), generator=6, dtype=torch.float64).mT  # the same draws
    torch.testing.assert_close(est.samples, xtrace_naive(A, Om), rtol=1e-10, atol=1e-10)
    low = symmetric_with_spectrum([5.0, -2.0, 1.0] + [0.0] * 37, generator=7)
    est = oh.xtrace(low, probes=10, generator=8)
    assert abs(float(est.mean) - 4.0) < 1e-10 and float(est.stderr) < 1e-10


def test_estimators_reproducible_and_errors():
    A = symmetric_with_spectrum(torch.linspace(0, 1, 20), generator=0)
    a = oh.hutchpp(A, probes=9, generator=1)
    b = oh.hutchpp(A, probes=9, generator=1)
    assert torch.equal(a.mean, b.mean)
    with pytest.raises(ValueError, match="probes"):
        oh.hutchpp(A, probes=2)
    with pytest.raises(ValueError, match="method"):
        oh.trace(A, method="magic")
    with pytest.raises(ValueError, match="kind"):
        oh.hutchinson(A, probes=3, kind="uniform")
    for bad in (0, -1, 2.5, True):  # issue 20: block=0 gave "range() arg 3 must not be zero"
        for fn in (oh.hutchinson, oh.hutchpp, oh.xtrace, oh.diagonal):
            with pytest.raises(ValueError, match="block"):
                fn(A, probes=10, block=bad)
        with pytest.raises(ValueError, match="block"):
            oh.slq(A, probes=2, steps=5, block=bad)
    with pytest.raises(ValueError, match="probes"):
        oh.hutchinson(A, probes=True)


class _Counting:
    """A dense operator that counts the columns it is applied to."""

    def __init__(self, A):
        self.A, self.shape, self.dtype, self.cols = A, A.shape, A.dtype, 0

    def matvec(self, v):
        self.cols += 1
        return self.A @ v


def test_hutchpp_split_and_product_count_match_definition():
    # Hutch++ (Meyer et al. Alg. 1) with m products: S has m/3 columns, A Q costs m/3, the
    # remaining m - 2m/3 probes go to Hutchinson on the deflated matrix. Same draws, dense oracle.
    from overparam.backend.random import measurement_generator
    from overparam.hessian.trace import probe_block

    A = symmetric_with_spectrum(torch.cat([torch.linspace(9, 3, 6), 0.1 * torch.ones(44)]), generator=9)
    for probes in (9, 10, 14):
        counting = _Counting(A)
        est = oh.hutchpp(counting, probes=probes, generator=11)
        assert counting.cols == probes == est.n_matvecs
        op, g, s = oh.as_operator(A), measurement_generator(11), probes // 3
        S = probe_block(op, s, "rademacher", g)
        Q, _ = torch.linalg.qr(A @ S)
        G = probe_block(op, probes - 2 * s, "rademacher", g)
        P = torch.eye(50, dtype=torch.float64) - Q @ Q.mT
        ref = torch.trace(Q.mT @ A @ Q) + torch.trace(G.mT @ P @ A @ P @ G) / G.shape[1]
        torch.testing.assert_close(est.mean, ref, rtol=1e-12, atol=1e-12)


def test_standard_error_is_sample_std_over_sqrt_probes_and_calibrated():
    A = symmetric_with_spectrum(torch.linspace(-1, 3, 30), generator=12)
    est = oh.hutchinson(A, probes=4000, block=1000, generator=13)
    torch.testing.assert_close(est.stderr, est.samples.std(correction=1) / 4000**0.5, rtol=1e-12, atol=0)
    var = 2 * (A.square().sum() - torch.diagonal(A).square().sum())  # exact Rademacher variance of vᵀAv
    assert abs(float(est.stderr**2 * 4000 / var) - 1) < 0.1
    small = oh.hutchinson(A, probes=5, generator=14)
    torch.testing.assert_close(small.stderr, small.samples.std(correction=1) / 5**0.5, rtol=1e-12, atol=0)
