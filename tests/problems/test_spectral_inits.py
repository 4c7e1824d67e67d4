"""Spectral inits and outliers of the problems against dense oracles (mutation review):
the completion init is the best rank-k approximation of ``P_Ω(M*)/p``, the deep-linear init
multiplies out to the rank-k truncation of the least-squares solution with balanced factors,
and sparse outliers are bounded by ``outlier_scale · std(y)``."""

import pytest
import torch

from overparam.problems import completion, deep_linear, sensing


def _best_rank_k(Y, k):
    U, S, Vh = torch.linalg.svd(Y)
    return (U[:, :k] * S[:k]) @ Vh[:k]


def test_completion_spectral_init_is_best_rank_k_of_rescaled_observations():
    P = completion(20, 2, 0.4, n2=15, generator=0)
    Y = torch.zeros_like(P.M_star)
    Y[P.rows, P.cols] = P.M_star[P.rows, P.cols]
    L, R = P.init("spectral", rank=3)
    assert torch.allclose(L @ R.mT, _best_rank_k(Y / 0.4, 3), rtol=0, atol=1e-12)
    assert torch.allclose(L.mT @ L, R.mT @ R, rtol=0, atol=1e-12)  # balanced


@pytest.mark.parametrize("depth", [2, 3])
def test_deep_linear_spectral_init_is_balanced_truncated_least_squares(depth):
    P = deep_linear(6, 5, 2, depth, 40, kappa=4.0, generator=1)  # singular values 1, 1/4
    Ws = P.init("spectral", rank=2)
    W_ls = torch.linalg.lstsq(P.X, P.Y).solution.mT
    prod = Ws[0]
    for W in Ws[1:]:
        prod = W @ prod
    assert torch.allclose(prod, _best_rank_k(W_ls, 2), rtol=0, atol=1e-12)
    for a, b in zip(Ws[:-1], Ws[1:]):  # W_{j+1}ᵀW_{j+1} = W_j W_jᵀ
        assert torch.allclose(b.mT @ b, a @ a.mT, rtol=0, atol=1e-12)


def test_sparse_outliers_are_bounded_by_scale_times_std_of_clean_measurements():
    clean = sensing(8, 2, 400, generator=3)
    P = sensing(8, 2, 400, outliers=0.3, outlier_scale=5.0, generator=3)
    s = P.y - clean.y
    assert torch.equal(s[~P.outlier_mask], torch.zeros_like(s[~P.outlier_mask]))
    bound = 5.0 * float(clean.y.std())
    assert float(s.abs().max()) <= bound
    assert float(s.abs().max()) >= 0.9 * bound  # ~120 uniform draws on [-1, 1] reach the edge
