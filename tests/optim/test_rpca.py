import math

import pytest
import torch
from hypothesis import given, settings, strategies as st

import overparam as op
from overparam.optim import hard_threshold, rpca_scaledgd, sparsify


def _sparsify_oracle(M, alpha):
    n1, n2 = M.shape
    kr, kc = math.floor(alpha * n2 + 0.5), math.floor(alpha * n1 + 0.5)  # the library's count rule
    out = torch.zeros_like(M)
    A = M.abs()
    for i in range(n1):
        for j in range(n2):
            rank_row = int((A[i] > A[i, j]).sum())  # entries strictly larger in the row
            rank_col = int((A[:, j] > A[i, j]).sum())
            if rank_row < kr and rank_col < kc and A[i, j] > 0:
                out[i, j] = M[i, j]
    return out


@settings(max_examples=30, deadline=None)
@given(n1=st.integers(1, 7), n2=st.integers(1, 7), alpha=st.sampled_from([0.0, 0.1, 0.25, 0.3, 0.5, 1.0]),
       seed=st.integers(0, 100), ties=st.booleans())
def test_sparsify_matches_oracle(n1, n2, alpha, seed, ties):
    M = torch.randn(n1, n2, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    if ties:
        M = M.round()
    assert torch.equal(sparsify(M, alpha), _sparsify_oracle(M, alpha))


def test_hard_threshold_and_errors():
    assert torch.equal(hard_threshold(torch.tensor([3.0, -0.5, -2.0]), 1.0), torch.tensor([3.0, 0.0, -2.0]))
    with pytest.raises(ValueError, match="alpha"):
        sparsify(torch.zeros(2, 2), 1.5)
    with pytest.raises(ValueError, match="zeta"):
        hard_threshold(torch.zeros(2), -1.0)
    with pytest.raises(ValueError, match="exactly one"):
        rpca_scaledgd(torch.zeros(4, 4, dtype=torch.float64), 1)
    with pytest.raises(ValueError, match="rank"):
        rpca_scaledgd(torch.zeros(4, 4, dtype=torch.float64), 5, alpha=0.1)
    nan = torch.tensor([[1.0, float("nan")], [0.0, 2.0]])
    for bad in (lambda: sparsify(nan, 0.5), lambda: hard_threshold(nan, 1.0)):   # a NaN is not an outlier or not
        with pytest.raises(ValueError, match="M holds NaN"):
            bad()
    with pytest.raises(ValueError, match="zeta"):
        hard_threshold(torch.zeros(2), math.nan)
    Y = torch.eye(4, dtype=torch.float64)
    for kwargs, name in [({"iters": 2.5}, "iters"), ({"tol": math.nan}, "tol"), ({"tol": -1.0}, "tol")]:
        with pytest.raises(ValueError, match=name):
            rpca_scaledgd(Y, 1, alpha=0.1, **kwargs)
    with pytest.raises(ValueError, match="Y must be non-empty"):
        rpca_scaledgd(Y[:0, :0], 1, alpha=0.1)
    res = rpca_scaledgd(Y, 1, alpha=0.25, iters=0)                   # iters is a maximum: 0 gives the init
    assert res.iterations == 0 and res.history == [] and not res.converged


@pytest.mark.parametrize("kappa", [1, 5])
def test_recovers_low_rank_plus_sparse(kappa):
    P = op.problems.robust_pca(n=60, r=2, alpha=0.05, kappa=kappa, generator=0)
    res = rpca_scaledgd(P.Y, 2, alpha=0.15, lr=0.8, iters=200)
    assert float(P.relative_error((res.L, res.R))) < 1e-8
    assert res.converged
    # outliers found: support of the estimate covers the true outliers
    assert bool(((P.S_star != 0) <= (res.S != 0)).all())
    if kappa > 1:
        return
    # threshold schedule variant (a decaying level; needs a well-conditioned M* here)
    z0 = float(P.M_star.abs().max())
    res2 = rpca_scaledgd(P.Y, 2, threshold=lambda t: 2 * z0 * 0.8**t, iters=200)
    assert float(P.relative_error((res2.L, res2.R))) < 1e-8


def test_init_alpha_sets_the_initial_outlier_estimate_only():
    P = op.problems.robust_pca(n=40, r=2, alpha=0.05, generator=1)
    seen = {}

    def cb(t, L, R, S):
        seen.setdefault(t, (L.clone(), R.clone()))

    res = rpca_scaledgd(P.Y, 2, alpha=0.2, init_alpha=0.1, lr=0.5, iters=1, callback=cb)
    # oracle: spectral init from sparsify(Y, 0.1), then one ScaledGD step with S_1 = sparsify(Y - L0 R0ᵀ, 0.2)
    U, s, Vh = torch.linalg.svd(P.Y - sparsify(P.Y, 0.1))
    L0, R0 = U[:, :2] * s[:2].sqrt(), Vh[:2].T * s[:2].sqrt()
    S1 = sparsify(P.Y - L0 @ R0.T, 0.2)
    D = L0 @ R0.T + S1 - P.Y
    eL = L0 - 0.5 * D @ R0 @ torch.linalg.inv(R0.T @ R0)
    eR = R0 - 0.5 * D.T @ L0 @ torch.linalg.inv(L0.T @ L0)
    torch.testing.assert_close(res.L, eL, rtol=0, atol=1e-12)
    torch.testing.assert_close(res.R, eR, rtol=0, atol=1e-12)
    assert torch.equal(res.S, S1)
    with pytest.raises(ValueError, match="init_alpha"):
        rpca_scaledgd(P.Y, 2, threshold=1.0, init_alpha=0.1)
    Q = op.problems.robust_pca(n=60, r=2, alpha=0.05, generator=0)
    full = rpca_scaledgd(Q.Y, 2, alpha=0.15, init_alpha=0.075, lr=0.8, iters=150)  # the authors' α / 2α split
    assert float(Q.relative_error((full.L, full.R))) < 1e-8


def test_non_finite_input_is_refused_naming_y():
    Y = torch.eye(4, dtype=torch.float64)
    Y[0, 1] = float("nan")
    with pytest.raises(ValueError, match="Y holds NaN or inf"):
        rpca_scaledgd(Y, 1, alpha=0.1)
