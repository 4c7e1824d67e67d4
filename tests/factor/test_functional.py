import pytest
import torch
from hypothesis import given, settings, strategies as st

from overparam.factor import functional as Fn
from overparam.testing.factor_oracles import dense_top_svd

D = torch.float64


@settings(max_examples=25, deadline=None)
@given(n1=st.integers(1, 7), n2=st.integers(1, 7), k=st.integers(1, 9), seed=st.integers(0, 100))
def test_balance_keeps_product_and_balances(n1, n2, k, seed):
    f = Fn.init_small((n1, n2), k, scale=1.0, generator=seed, dtype=D)
    b = Fn.balance(f.left, f.right)
    assert b.left.shape == (n1, k) and b.right.shape == (n2, k)
    torch.testing.assert_close(b.product(), f.product(), rtol=0, atol=1e-12)
    torch.testing.assert_close(b.left.T @ b.left, b.right.T @ b.right, rtol=0, atol=1e-10)


def test_init_balanced_is_balanced_and_random_init_reproducible():
    f = Fn.init_balanced((30, 20), 8, scale=0.5, generator=3, dtype=D)
    assert float((f.left.T @ f.left - f.right.T @ f.right).abs().max()) < 1e-10
    g = Fn.init_balanced((30, 20), 8, scale=0.5, generator=3, dtype=D)
    assert torch.equal(f.left, g.left)
    s = Fn.init_small((30, 20), 8, scale=1e-3, generator=0, dtype=D)
    assert 0.5e-3 < float(s.left.std()) < 2e-3


def test_product_chain_order_and_shape_errors():
    A, B, C = torch.randn(3, 2, dtype=D), torch.randn(4, 3, dtype=D), torch.randn(5, 4, dtype=D)
    torch.testing.assert_close(Fn.product([A, B, C]), C @ B @ A, rtol=0, atol=1e-14)
    with pytest.raises(ValueError, match="factors"):
        Fn.product([A, C])
    L, R = torch.randn(5, 2, dtype=D), torch.randn(4, 2, dtype=D)
    torch.testing.assert_close(Fn.product([R.T, L]), Fn.lowrank_product(L, R))


@pytest.mark.parametrize("symmetric", [False, True])
def test_spectral_init_is_best_rank_k(symmetric):
    g = torch.Generator().manual_seed(0)
    W = torch.randn(9, 9, dtype=D, generator=g)
    if symmetric:
        W = W @ W.T
    f = Fn.init_spectral(W, 4, symmetric=symmetric)
    torch.testing.assert_close(f.product(), dense_top_svd(W, 4), rtol=0, atol=1e-10)
    torch.testing.assert_close(f.left.T @ f.left, f.right.T @ f.right, rtol=0, atol=1e-10)


def test_orthogonal_init_spectrum():
    f = Fn.init_orthogonal((7, 5), 3, scale=2.0, generator=0, dtype=D)
    torch.testing.assert_close(torch.linalg.svdvals(f.product())[:3], torch.full((3,), 2.0, dtype=D))


@pytest.mark.parametrize("bad", [0, -1])
def test_rank_must_be_positive(bad):
    with pytest.raises(ValueError, match="rank"):
        Fn.init_small((3, 3), bad)
    with pytest.raises(ValueError, match="rank"):
        Fn.init_spectral(torch.eye(3), bad)


def test_svd_rank_above_min_dim_is_an_error_but_small_allows_overparameterization():
    with pytest.raises(ValueError, match="rank"):
        Fn.init_spectral(torch.randn(5, 3), 4)
    with pytest.raises(ValueError, match="rank"):
        Fn.init_factors("svd", (5, 3), 4, weight=torch.randn(5, 3))
    assert Fn.init_factors("small", (5, 3), 10, generator=0).left.shape == (5, 10)
    with pytest.raises(TypeError, match="rank"):
        Fn.check_rank(2.0)
    with pytest.raises(ValueError, match="init"):
        Fn.init_factors("nope", (3, 3), 2)


def test_user_supplied_pair_is_validated_and_copied():
    L, R = torch.ones(4, 2), torch.ones(3, 2)
    f = Fn.init_factors((L, R), (4, 3), 2)
    assert torch.equal(f.product(), L @ R.T) and f.left is not L
    with pytest.raises(ValueError, match="init pair"):
        Fn.init_factors((L, R), (4, 3), 3)


def test_dtype_and_shape_errors_name_the_argument():
    with pytest.raises(TypeError, match="W"):
        Fn.init_spectral(torch.ones(3, 3, dtype=torch.long), 2, symmetric=True)
    with pytest.raises(ValueError, match="weight"):
        Fn.init_factors("svd", (3, 4), 2, weight=torch.ones(4, 3))
    from overparam.factor import LowRank
    with pytest.raises(ValueError, match="shape"):
        LowRank((3.5, 4), 2)


def test_pair_functions_refuse_non_tensors_mixed_dtypes_and_non_finite_factors():
    L, R = torch.randn(4, 2, dtype=D), torch.randn(3, 2, dtype=D)
    for fn in (Fn.lowrank_product, Fn.balance):
        with pytest.raises(TypeError, match="right"):
            fn(L, "R")
        with pytest.raises(TypeError, match="left and right must have the same dtype"):
            fn(L.float(), R)
    bad = L.clone()
    bad[1, 0] = float("nan")
    with pytest.raises(ValueError, match="left holds NaN or inf"):       # the SVD would fail cryptically
        Fn.balance(bad, R)
    for W, match in [(torch.zeros(0, 0, dtype=D), "W must be non-empty"), (bad, "W holds NaN or inf")]:
        with pytest.raises(ValueError, match=match):
            Fn.init_spectral(W, 1)


@pytest.mark.parametrize("scale", [float("nan"), float("inf"), 0.0, -1.0])
def test_scale_must_be_finite_and_positive_for_every_init(scale):
    W = torch.randn(4, 3, dtype=D)
    for init in ("small", "svd"):                                          # svd ignores scale but still checks it
        with pytest.raises(ValueError, match="scale"):
            Fn.init_factors(init, (4, 3), 2, weight=W, scale=scale)
    with pytest.raises(ValueError, match="init must be one of"):
        Fn.init_factors("no_such_init", (4, 3), 2)
