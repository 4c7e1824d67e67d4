"""overparam.hessian.solve: CG, Neumann and inverse operators against dense fp64 solves."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import overparam.hessian as oh
from overparam.backend import vec
from overparam.backend.linalg import NotPositiveDefiniteError
from overparam.backend.random import gaussian
from overparam.testing import dense_hessian, max_rel_error, symmetric_with_spectrum, tanh_mlp
from overparam.testing.hessian_oracles import curvature_case

D = torch.float64


@pytest.fixture(scope="module")
def damped_ggn():
    c = curvature_case("small_cnn", batch_size=16, generator=0)
    G = oh.ggn(c.model, c.loss, c.batch)
    J = oh.jacobian(c.model, c.batch)              # dense Jᵀ ∇²ℓ J from the (tested) dense Jacobian, in one pass
    Jd, p = J.to_dense(chunk=J.m), torch.softmax(J.outputs(), dim=-1)
    HL = torch.block_diag(*[torch.diag(q) - torch.outer(q, q) for q in p]) / p.shape[0]
    Gd = Jd.T @ HL @ Jd
    V = gaussian((G.n, 2), generator=9, dtype=D)
    assert max_rel_error(G @ V, Gd @ V) < 1e-12
    return G, Gd, 1e-3


def true_residual(Ad, lam, x, b):
    return float(torch.linalg.vector_norm(b - Ad @ x - lam * x, dim=0).max() / torch.linalg.vector_norm(b, dim=0).min())


def test_cg_reaches_1e_8_on_a_damped_ggn(damped_ggn):
    G, Gd, lam = damped_ggn
    b = gaussian((G.n,), generator=0, dtype=D)
    res = oh.cg(G, b, damping=lam, tol=1e-8)
    assert res.converged and res.residuals[-1] <= 1e-8
    assert true_residual(Gd, lam, res.x, b) <= 1e-8
    assert res.residuals[0] == 1.0 and res.residuals.shape == (res.n_matvecs,)   # x0 = 0; one replacement product
    exact = torch.linalg.solve(Gd + lam * torch.eye(G.n, dtype=D), b)
    cond = float(torch.linalg.cond(Gd + lam * torch.eye(G.n, dtype=D)))
    assert max_rel_error(res.x, exact) < 1e-8 * cond


def test_cg_block_tuple_and_warm_start(damped_ggn):
    G, Gd, lam = damped_ggn
    B = gaussian((G.n, 3), generator=1, dtype=D)
    res = oh.cg(G, B, damping=lam, tol=1e-9)
    assert res.residuals.shape[1] == 3 and true_residual(Gd, lam, res.x, B) <= 1e-9
    bt = vec.unflatten(B[:, 0], G.like)
    rt = oh.cg(G, bt, damping=lam, tol=1e-9)
    assert vec.shapes(rt.x) == tuple(G.like)
    assert max_rel_error(vec.flatten(rt.x), res.x[:, 0]) < 1e-7
    warm = oh.cg(G, B[:, 0], damping=lam, tol=1e-9, x0=res.x[:, 0])
    assert warm.n_matvecs <= 2 and warm.converged


def test_preconditioner_hook(damped_ggn):
    G, Gd, lam = damped_ggn
    b = gaussian((G.n,), generator=2, dtype=D)
    d = torch.diagonal(Gd) + lam
    plain = oh.cg(G, b, damping=lam, tol=1e-10)
    for M in (lambda r: r / d, torch.diag(1 / d), oh.DenseOperator(torch.diag(1 / d))):
        pre = oh.cg(G, b, damping=lam, tol=1e-10, preconditioner=M)
        assert pre.converged and true_residual(Gd, lam, pre.x, b) <= 1e-10
    shaped = oh.cg(G, vec.unflatten(b, G.like), damping=lam, tol=1e-10, preconditioner=lambda r: r / d)
    assert max_rel_error(vec.flatten(shaped.x), pre.x) < 1e-8       # a parameter-shaped b: M still gets (n,)
    exact = oh.inverse(Gd, damping=lam, method="cholesky")      # the exact inverse: one step
    one = oh.cg(G, b, damping=lam, tol=1e-10, preconditioner=exact)
    assert one.n_matvecs <= 3 < plain.n_matvecs


@settings(max_examples=15, deadline=None)
@given(n=st.integers(2, 30), logcond=st.floats(0, 6), seed=st.integers(0, 2**16))
def test_cg_on_random_spd(n, logcond, seed):
    w = torch.logspace(0, logcond, n, dtype=D)
    A = symmetric_with_spectrum(w, generator=seed)
    b = gaussian((n,), generator=seed, dtype=D)
    res = oh.cg(A, b, tol=1e-10, max_iters=10 * n)
    assert res.converged and true_residual(A, 0.0, res.x, b) <= 1e-10


def test_cg_refuses_indefinite_and_warns_when_out_of_budget():
    A = symmetric_with_spectrum([3.0, 1.0, -2.0, 0.5], generator=0)
    with pytest.raises(NotPositiveDefiniteError, match="damping"):
        oh.cg(A, torch.ones(4, dtype=D))
    assert oh.cg(A, torch.ones(4, dtype=D), damping=2.5).converged
    B = symmetric_with_spectrum(torch.logspace(0, 4, 20, dtype=D), generator=1)
    with pytest.warns(RuntimeWarning, match="did not reach"):
        res = oh.cg(B, torch.ones(20, dtype=D), max_iters=2)
    assert not res.converged and res.residuals.shape == (3,)
    with pytest.raises(ValueError, match="b must have shape"):
        oh.cg(B, torch.ones(3, dtype=D))
    with pytest.raises(ValueError, match="damping"):
        oh.cg(B, torch.ones(20, dtype=D), damping=-1.0)
    with pytest.raises(ValueError, match="b holds NaN"):
        oh.cg(B, torch.full((20,), float("nan"), dtype=D))


def test_neumann_matches_the_dense_solve():
    A = symmetric_with_spectrum([4.0, 2.0, 1.0, 0.5, 0.25], generator=3)
    b = gaussian((5,), generator=4, dtype=D)
    res = oh.neumann(A, b, damping=0.5, tol=1e-10, generator=0)
    exact = torch.linalg.solve(A + 0.5 * torch.eye(5, dtype=D), b)
    assert res.converged and max_rel_error(res.x, exact) < 1e-9
    r = res.residuals
    assert bool((r[1:] <= r[:-1] + 1e-15).all())       # α = 1/λ_max: the residual never grows (SPD, symmetric)
    fixed = oh.neumann(A, b, damping=0.5, scale=0.2, tol=1e-10)
    assert max_rel_error(fixed.x, exact) < 1e-9
    with pytest.raises(ValueError, match="diverges"):
        oh.neumann(A, b, scale=1.0, max_iters=200)    # α > 2/λ_max = 0.5
    with pytest.raises(NotPositiveDefiniteError):
        oh.neumann(-A, b, generator=0)


@pytest.mark.parametrize("method", ["cholesky", "eigh", "cg", "neumann"])
def test_inverse_operators(method, damped_ggn):
    G, Gd, _ = damped_ggn
    lam = 0.1
    inv = torch.linalg.inv(Gd + lam * torch.eye(G.n, dtype=D))
    opts = {"tol": 1e-11} if method in ("cg", "neumann") else {}
    if method == "neumann":
        opts["max_iters"] = 5000
    Ainv = oh.inverse(G, damping=lam, method=method, **opts)
    V = gaussian((G.n, 2), generator=5, dtype=D)
    assert max_rel_error(Ainv @ V, inv @ V) < (1e-12 if method in ("cholesky", "eigh") else 1e-8)
    assert (Ainv.last is None) == (method in ("cholesky", "eigh"))
    if method == "eigh":      # composes with the solvers: the smallest eigenvalue of G + λI is 1/λ_max(inverse)
        top = oh.lanczos(Ainv, k=1, generator=0, tol=1e-10).values[0]
        assert abs(float(1 / top) - float(torch.linalg.eigvalsh(Gd)[0] + lam)) < 1e-10


def test_inverse_refuses_what_it_cannot_invert():
    A = symmetric_with_spectrum([3.0, 1.0, -2.0, 0.0], generator=0)
    with pytest.raises(NotPositiveDefiniteError, match="eigh"):
        oh.inverse(A, method="cholesky")
    with pytest.raises(ValueError, match="singular"):
        oh.inverse(A, method="eigh")
    assert max_rel_error(oh.inverse(A, damping=0.5, method="eigh").to_dense(),
                         torch.linalg.inv(A + 0.5 * torch.eye(4, dtype=D))) < 1e-12
    with pytest.raises(ValueError, match="method"):
        oh.inverse(A, method="lu")
    with pytest.raises(TypeError, match="scale"):
        oh.inverse(A, method="cg", scale=0.1)


def test_cg_takes_the_gradient_dict(damped_ggn):
    G, Gd, lam = damped_ggn
    b = gaussian((G.n,), generator=6, dtype=D)
    keyed = dict(zip(G.names, vec.unflatten(b, G.like)))
    res = oh.cg(G, keyed, damping=lam, tol=1e-10)
    assert list(res.x) == G.names
    assert max_rel_error(vec.flatten(res.x.values()), oh.cg(G, b, damping=lam, tol=1e-10).x) < 1e-8


def test_inverse_composes_with_a_hessian_operator():
    net = tanh_mlp([3, 5, 2], generator=3)
    g = torch.Generator().manual_seed(4)
    x, y = torch.randn(10, 3, generator=g, dtype=D), torch.randn(10, 2, generator=g, dtype=D)
    H = oh.hessian(net, torch.nn.functional.mse_loss, (x, y))
    Hd = dense_hessian(net, torch.nn.functional.mse_loss, (x, y))
    lam = 1.0 - float(torch.linalg.eigvalsh(Hd)[0])          # H + λI has smallest eigenvalue 1
    v = gaussian((H.n,), generator=7, dtype=D)
    want = torch.linalg.solve(Hd + lam * torch.eye(H.n, dtype=D), v)
    for method in ("cg", "eigh"):
        assert max_rel_error(oh.inverse(H, damping=lam, method=method, **({"tol": 1e-12} if method == "cg" else {})) @ v,
                             want) < 1e-9
