import hypothesis.strategies as st
import pytest
import torch
from hypothesis import given, settings

from overparam.backend import linalg
from overparam.testing import assert_orthonormal, ill_conditioned


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 40), st.integers(0, 3), st.integers(0, 10_000))
def test_tridiag_eigh_matches_eigvalsh(k, batch, seed):
    g = torch.Generator().manual_seed(seed)
    lead = (batch,) if batch else ()
    a = torch.randn(*lead, k, generator=g, dtype=torch.float64)
    b = torch.randn(*lead, k - 1, generator=g, dtype=torch.float64)
    T = linalg.tridiag_matrix(a, b)
    theta, S = linalg.tridiag_eigh(a, b)
    torch.testing.assert_close(theta, torch.linalg.eigvalsh(T), rtol=0, atol=1e-12)
    torch.testing.assert_close(S @ torch.diag_embed(theta) @ S.mT, T, rtol=0, atol=1e-12)
    only, none = linalg.tridiag_eigh(a, b, eigenvectors=False)
    assert none is None
    torch.testing.assert_close(only, theta, rtol=0, atol=1e-12)


def test_tridiag_matrix_structure_and_shape_errors():
    T = linalg.tridiag_matrix(torch.tensor([1.0, 2.0, 3.0]), torch.tensor([4.0, 5.0]))
    assert torch.equal(T, torch.tensor([[1.0, 4, 0], [4, 2, 5], [0, 5, 3]]))
    with pytest.raises(ValueError, match="beta must have shape"):
        linalg.tridiag_matrix(torch.ones(3), torch.ones(3))


def _orthonormalize(V, passes):
    """Column by column with :func:`linalg.orthogonalize`, as Lanczos builds its basis."""
    Q = V[:, :0]
    for j in range(V.shape[1]):
        w, _ = linalg.orthogonalize(V[:, j], Q, passes=passes)
        Q = torch.cat([Q, (w / w.norm()).unsqueeze(1)], dim=1)
    return Q


def test_cgs2_stays_orthonormal_where_classical_fails():
    V = ill_conditioned(200, 40, 1e10, generator=0)
    assert_orthonormal(_orthonormalize(V, passes=2), atol=1e-12)
    Q1 = _orthonormalize(V, passes=1)
    loss = float((Q1.T @ Q1 - torch.eye(40, dtype=V.dtype)).abs().max())
    assert loss > 1e-3, f"classical GS unexpectedly stayed orthonormal ({loss:.1e}); the test input is too easy"


def test_orthogonalize_vector_and_block():
    g = torch.Generator().manual_seed(1)
    Q, _ = torch.linalg.qr(torch.randn(30, 6, generator=g, dtype=torch.float64))
    v = torch.randn(30, generator=g, dtype=torch.float64)
    w, c = linalg.orthogonalize(v, Q)
    assert float((Q.T @ w).abs().max()) < 1e-14
    torch.testing.assert_close(w + Q @ c, v, rtol=0, atol=1e-13)
    B = torch.randn(30, 4, generator=g, dtype=torch.float64)
    W, C = linalg.orthogonalize(B, Q)
    assert W.shape == (30, 4) and C.shape == (6, 4)
    assert float((Q.T @ W).abs().max()) < 1e-14
    w0, c0 = linalg.orthogonalize(v, Q[:, :0])
    assert torch.equal(w0, v) and c0.shape == (0,)


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 6), st.integers(1, 10), st.sampled_from([0.0, 1e-3, 1.0]), st.integers(0, 10_000))
def test_gram_solve_matches_dense_inverse(r, extra, lam, seed):
    g = torch.Generator().manual_seed(seed)
    R = torch.randn(r + extra, r, generator=g, dtype=torch.float64)
    B = torch.randn(7, r, generator=g, dtype=torch.float64)
    expected = B @ torch.linalg.inv(R.T @ R + lam * torch.eye(r, dtype=R.dtype))
    torch.testing.assert_close(linalg.gram_solve(R, B, damping=lam), expected, rtol=1e-9, atol=1e-10)


def test_gram_solve_batched_and_errors():
    g = torch.Generator().manual_seed(0)
    R = torch.randn(3, 8, 2, generator=g, dtype=torch.float64)
    B = torch.randn(3, 5, 2, generator=g, dtype=torch.float64)
    out = linalg.gram_solve(R, B)
    for i in range(3):
        torch.testing.assert_close(out[i], B[i] @ torch.linalg.inv(R[i].T @ R[i]), rtol=1e-10, atol=1e-12)
    singular = torch.zeros(6, 3, dtype=torch.float64)
    singular[:, 0] = 1.0
    with pytest.raises(linalg.NotPositiveDefiniteError, match="damping > 0"):
        linalg.gram_solve(singular, torch.ones(4, 3, dtype=torch.float64))
    assert isinstance(linalg.NotPositiveDefiniteError("x"), ValueError)
    ok = linalg.gram_solve(singular, torch.ones(4, 3, dtype=torch.float64), damping=1e-3)
    assert torch.isfinite(ok).all()
    with pytest.raises(ValueError, match="damping must be >= 0"):
        linalg.gram_solve(R[0], B[0], damping=-1.0)
    with pytest.raises(ValueError, match="rank 2 but B has 3"):
        linalg.gram_solve(R[0], torch.ones(4, 3, dtype=torch.float64))


def test_spd_solve_is_gram_solve_kernel_and_checks_shapes():
    g = torch.Generator().manual_seed(3)
    R = torch.randn(9, 3, generator=g, dtype=torch.float64)
    B = torch.randn(4, 3, generator=g, dtype=torch.float64)
    torch.testing.assert_close(linalg.spd_solve(R.T @ R, B, damping=0.5), linalg.gram_solve(R, B, damping=0.5),
                               rtol=0, atol=0)
    with pytest.raises(ValueError, match="G must be square"):
        linalg.spd_solve(torch.ones(3, 2, dtype=torch.float64), B)
    with pytest.raises(ValueError, match=r"B must have shape \(..., n, 3\)"):
        linalg.spd_solve(R.T @ R, torch.ones(4, 2, dtype=torch.float64))
    with pytest.raises(linalg.NotPositiveDefiniteError):
        linalg.spd_solve(-torch.eye(3, dtype=torch.float64), B)


def _decaying(n=256, seed=1):
    g = torch.Generator().manual_seed(seed)
    U, _ = torch.linalg.qr(torch.randn(n, n, dtype=torch.float64, generator=g))
    V, _ = torch.linalg.qr(torch.randn(n, n, dtype=torch.float64, generator=g))
    s = 0.85 ** torch.arange(n, dtype=torch.float64)
    return (U * s) @ V.T, s


def test_randomized_svd_matches_exact_on_decaying_spectrum():
    W, s = _decaying()
    for k in (8, 64):
        exact = linalg.top_svd(W, k)
        r = linalg.top_svd(W, k, method="randomized", generator=0)  # defaults: niter=4, oversample=8
        torch.testing.assert_close(r.product(), exact.product(), rtol=0, atol=1e-5)
        torch.testing.assert_close(r.S, s[:k], rtol=1e-8, atol=0)
        torch.testing.assert_close(exact.S, s[:k], rtol=1e-10, atol=0)
        assert_orthonormal(r.U, atol=1e-12)
        assert_orthonormal(r.Vh.mT, atol=1e-12)


def test_svd_variants_are_the_registered_implementations():
    from overparam.backend import dispatch

    assert [i.name for i in dispatch.implementations("top_svd")] == ["svd", "randomized"]
    assert dispatch.choose("top_svd", "reference") is linalg.exact_svd
    W = torch.randn(7, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    a = linalg.randomized_svd(W, 3, generator=4)
    b = dispatch.call("top_svd", W, 3, impl="randomized", generator=4)
    assert torch.equal(a.U, b.U) and torch.equal(a.S, b.S)
    # rank + oversample >= min(m, n): exact to rounding
    torch.testing.assert_close(a.product(), linalg.exact_svd(W, 3).product(), rtol=0, atol=1e-12)


def test_svd_bad_arguments_name_them():
    with pytest.raises(TypeError, match="W"):
        linalg.top_svd(torch.ones(3, 3, dtype=torch.long), 2)
    with pytest.raises(ValueError, match="rank"):
        linalg.top_svd(torch.ones(3, 2), 3)
    with pytest.raises(ValueError, match="W must be a matrix"):
        linalg.top_svd(torch.ones(3), 1)
    with pytest.raises(ValueError, match="method"):
        linalg.top_svd(torch.ones(3, 3), 1, method="lanczos")
    with pytest.raises(ValueError, match="niter"):
        linalg.randomized_svd(torch.ones(3, 3), 1, niter=-1)


@pytest.mark.parametrize("m,q,batch", [(40, 6, ()), (9, 9, ()), (30, 4, (3,))])
def test_cholesky_qr2_is_a_thin_qr(m, q, batch):
    Y = torch.randn(*batch, m, q, dtype=torch.float64, generator=torch.Generator().manual_seed(m + q))
    Q, R = linalg.cholesky_qr2(Y)
    torch.testing.assert_close(Q @ R, Y, rtol=0, atol=1e-12)
    torch.testing.assert_close(Q.mT @ Q, torch.eye(q, dtype=torch.float64).expand(*batch, q, q), rtol=0, atol=1e-13)
    torch.testing.assert_close(torch.triu(R), R, rtol=0, atol=0)
    # the same factorization as Householder QR up to column signs
    Qh, Rh = torch.linalg.qr(Y)
    sign = torch.sign(torch.diagonal(Rh, dim1=-2, dim2=-1)).unsqueeze(-2)
    torch.testing.assert_close(Q, Qh * sign, rtol=0, atol=1e-10)


def test_cholesky_qr2_falls_back_on_rank_deficient_input():
    Y = torch.ones(6, 3, dtype=torch.float64)  # rank 1: the Gram matrix is singular
    Q, R = linalg.cholesky_qr2(Y)
    torch.testing.assert_close(Q @ R, Y, rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="tall"):
        linalg.cholesky_qr2(torch.ones(2, 3))


def test_spd_solve_ex_per_system_damping_and_failures():
    from overparam.backend.linalg import spd_solve_ex

    g = torch.Generator().manual_seed(0)
    R = torch.randn(4, 6, 3, generator=g, dtype=torch.float64)
    Bm = torch.randn(4, 5, 3, generator=g, dtype=torch.float64)
    G = R.mT @ R
    lam = torch.tensor([0.0, 0.1, 1.0, 10.0], dtype=torch.float64)
    X, ok = spd_solve_ex(G, Bm, damping=lam)
    assert ok.all()
    for b in range(4):
        ref = torch.linalg.solve(G[b] + lam[b] * torch.eye(3, dtype=torch.float64), Bm[b].mT).mT
        assert torch.allclose(X[b], ref, rtol=1e-12, atol=1e-13)
    G2 = G.clone()
    G2[1] = -torch.eye(3, dtype=torch.float64)      # not PD
    G2[2, 0, 0] = float("nan")                      # not finite
    X2, ok2 = spd_solve_ex(G2, Bm)
    assert ok2.tolist() == [True, False, False, True]
    assert torch.isfinite(X2).all() and (X2[1] == 0).all() and (X2[2] == 0).all()
    assert torch.equal(X2[0], spd_solve_ex(G[:1], Bm[:1])[0][0])
    with pytest.raises(ValueError, match="damping must be a number or have shape"):
        spd_solve_ex(G, Bm, damping=torch.zeros(3, dtype=torch.float64))
    with pytest.raises(ValueError, match="damping must be >= 0"):
        spd_solve_ex(G, Bm, damping=-lam - 1)
