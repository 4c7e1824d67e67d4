import pytest
import torch

from overparam.problems import LiftedSensing, sensing

D = torch.float64


@pytest.fixture(scope="module")
def problem():
    return sensing(n=3, r=1, m=10, generator=0)


def test_order_one_is_the_original_loss(problem):
    lifted = LiftedSensing(problem, rank=2, order=1)
    X = torch.randn(3, 2, dtype=D)
    torch.testing.assert_close(lifted.loss(lifted.lift(X)), problem.loss(X), rtol=1e-12, atol=0)


def test_measure_matches_dense_kronecker_oracle(problem):
    lifted = LiftedSensing(problem, rank=2, order=2)
    T = torch.randn(lifted.shape, dtype=D)
    q = lifted.measure(T)
    eye = torch.eye(2, dtype=D)
    Ab = [torch.kron((a + a.T) / 2, eye) for a in problem.A]  # ⟨A, XXᵀ⟩ sees only sym(A)
    t = T.reshape(-1)
    for i in (0, 3, 9):
        for j in (0, 5):
            expect = t @ torch.kron(Ab[i], Ab[j]) @ t
            torch.testing.assert_close(q[i, j], expect, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("order", [2, 3])
def test_lift_of_factor_gives_product_loss_and_unlift_inverts(problem, order):
    lifted = LiftedSensing(problem, rank=2, order=order)
    X = torch.randn(3, 2, dtype=D)
    T = lifted.lift(X)
    q = problem.measure(X @ X.T)
    prod_q, prod_y = q, problem.y
    for _ in range(order - 1):
        prod_q, prod_y = prod_q.unsqueeze(-1) * q, prod_y.unsqueeze(-1) * problem.y
    torch.testing.assert_close(lifted.loss(T), 0.25 * (prod_q - prod_y).square().mean(), rtol=1e-10, atol=0)
    torch.testing.assert_close(lifted.product(T), X @ X.T, rtol=1e-9, atol=1e-10)


def test_lifted_loss_vanishes_at_ground_truth_and_is_larger_elsewhere(problem):
    lifted = LiftedSensing(problem, rank=1, order=2)
    evals, evecs = torch.linalg.eigh(problem.M_star)
    Xs = evecs[:, -1:] * evals[-1].sqrt()
    assert float(lifted.loss(lifted.lift(Xs))) < 1e-20
    assert float(lifted.loss(lifted.init(scale=0.1, generator=0))) > 1e-6
    with pytest.raises(ValueError, match="order"):
        LiftedSensing(problem, rank=1, order=0)
    with pytest.raises(ValueError, match="problem"):
        LiftedSensing(sensing(n=3, r=1, m=5, symmetric=False, generator=0), rank=1)


def test_bad_input_names_the_argument(problem):
    with pytest.raises(TypeError, match="problem"):
        LiftedSensing("not a problem", rank=1)
    lifted = LiftedSensing(problem, rank=1, order=2)
    with pytest.raises(ValueError, match="T must"):
        lifted.unlift(torch.ones(3, 2, dtype=D))
    with pytest.raises(ValueError, match="X must"):
        lifted.lift(torch.ones(3, 2, dtype=D))


def test_a_lift_too_large_is_refused_before_allocating(problem):
    m, n = problem.A.shape[0], problem.shape[0]
    # rank 10**5: the lifted A_i alone would be m·(n·10**5)² entries; refused at once, naming the size
    with pytest.raises(ValueError, match=r"rank=100000.*max_entries") as info:
        LiftedSensing(problem, rank=10**5, order=2)
    assert f"{max(m * (3 * 10**5) ** 2, (3 * 10**5) ** 2 * m**2):.3e}" in str(info.value)
    # the bound is max(m·d², s·d^l·m^l): exactly at it is accepted, one below it is refused
    d, l, s = n * 2, 3, 2
    need = max(m * d * d, s * d**l * m**l)
    assert LiftedSensing(problem, rank=2, order=l, search_rank=s, max_entries=need).shape == (d,) * l + (s,)
    with pytest.raises(ValueError, match="search_rank=2"):
        LiftedSensing(problem, rank=2, order=l, search_rank=s, max_entries=need - 1)
    with pytest.raises(ValueError, match="order=6"):   # the order alone can blow it up: (3·1)^6·m^6
        LiftedSensing(problem, rank=1, order=6, max_entries=10**6)
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="max_entries"):
            LiftedSensing(problem, rank=1, max_entries=bad)


def _spurious_local_min():
    """A spurious second-order critical point of a small symmetric sensing instance (n=3, m=5),
    polished by Newton from a point GD reached; the premises are checked, not assumed."""
    P = sensing(n=3, r=1, m=5, generator=5)

    def f(x):
        return P.loss(x.reshape(3, 1))
    x = torch.tensor([-0.2474, -0.2180, 0.9988], dtype=D)
    for _ in range(30):
        x = x - torch.linalg.solve(torch.func.hessian(f)(x), torch.func.grad(f)(x))
    assert float(torch.func.grad(f)(x).norm()) < 1e-13
    assert float(torch.linalg.eigvalsh(torch.func.hessian(f)(x))[0]) > 0.1  # a strict local minimum
    assert float(f(x)) > 1e-2 and float(P.relative_error(x.reshape(3, 1))) > 0.1  # ... and not a solution
    return P, x.reshape(3, 1)


def _grad_and_min_curvature(lifted, X):
    def h(t):
        return lifted.loss(t.reshape(lifted.shape))
    t = lifted.lift(X).reshape(-1)
    return float(torch.func.grad(h)(t).norm()), float(torch.linalg.eigvalsh(torch.func.hessian(h)(t))[0])


@pytest.mark.parametrize("order,search_rank", [(2, 1), (3, 1), (2, 2), (3, 2)])
def test_spurious_minimum_stays_stationary_and_becomes_strict_saddle(order, search_rank):
    # Ma, Molybog, Lavaei & Sojoudi (ICML 2023): stationary through the hierarchy, negative curvature once lifted
    P, X = _spurious_local_min()
    g, lam_min = _grad_and_min_curvature(LiftedSensing(P, rank=1, order=order, search_rank=search_rank), X)
    assert g < 1e-12
    assert lam_min < -1e-2


def test_search_rank_measure_is_a_sum_over_tensors_and_unlift_inverts(problem):
    lifted = LiftedSensing(problem, rank=2, order=2, search_rank=3)
    assert lifted.shape == (6, 6, 3)
    T = torch.randn(lifted.shape, dtype=D)
    single = LiftedSensing(problem, rank=2, order=2)
    torch.testing.assert_close(lifted.measure(T), sum(single.measure(T[..., j]) for j in range(3)), rtol=1e-12, atol=1e-12)
    X = torch.randn(3, 2, dtype=D)
    torch.testing.assert_close(lifted.loss(lifted.lift(X)), single.loss(single.lift(X)), rtol=1e-12, atol=0)
    torch.testing.assert_close(lifted.product(lifted.lift(X)), X @ X.T, rtol=1e-9, atol=1e-10)
    # the lifted matrix Σ_j 𝐰_j𝐰_jᵀ is what is measured: an orthogonal mix of the s tensors changes nothing
    Q = torch.linalg.qr(torch.randn(3, 3, dtype=D)).Q
    torch.testing.assert_close(lifted.measure(T @ Q), lifted.measure(T), rtol=1e-10, atol=1e-10)
    assert lifted.init(scale=0.1, generator=0).shape == (6, 6, 3)
    with pytest.raises(ValueError, match="search_rank"):
        LiftedSensing(problem, rank=1, search_rank=0)
    with pytest.raises(ValueError, match="T must"):
        lifted.measure(torch.ones(6, 6, dtype=D))


def test_lift_uses_symmetric_sensing_matrices(problem):
    # the problem's A_i are not symmetric; ⟨A_i, XXᵀ⟩ only sees sym(A_i), and so must the lift
    assert float((problem.A - problem.A.mT).abs().max()) > 0.1
    lifted = LiftedSensing(problem, rank=1, order=2)
    torch.testing.assert_close(lifted.lifted_A, lifted.lifted_A.mT, rtol=0, atol=0)


def _partial_trace_oracle(lifted, T):
    """``G = tr_{2..l}(Σ_j 𝐰_j 𝐰_jᵀ)`` from the dense ``d^l × d^l`` lifted matrix."""
    d, l = lifted.d, lifted.order
    cols = T.reshape(d**l, -1)
    W = cols @ cols.T
    return torch.einsum("aibi->ab", W.reshape(d, d ** (l - 1), d, d ** (l - 1)))


@pytest.mark.parametrize("order,search_rank", [(1, 3), (2, 1), (2, 3), (3, 2)])
def test_unlift_is_the_scaled_leading_eigenvector_of_the_partial_trace(problem, order, search_rank):
    # rank 2: vec(X) has d = 6 entries; every one of the s tensors counts, normalized by tr(G)^{(l-1)/l}
    lifted = LiftedSensing(problem, rank=2, order=order, search_rank=search_rank)
    T = torch.randn(lifted.shape, dtype=D, generator=torch.Generator().manual_seed(order + search_rank))
    G = _partial_trace_oracle(lifted, T)
    evals, evecs = torch.linalg.eigh(G)
    expect = evals[-1] * torch.outer(evecs[:, -1], evecs[:, -1]) / torch.trace(G) ** ((order - 1) / order)
    w = lifted.unlift(T).reshape(-1)
    torch.testing.assert_close(torch.outer(w, w), expect, rtol=1e-10, atol=1e-12)
    assert lifted.unlift(torch.zeros(lifted.shape, dtype=D)).abs().max() == 0  # no NaN at 0


@pytest.mark.parametrize("order", [1, 2, 3])
def test_search_rank_lift_is_one_tensor_and_unlift_sees_all_tensors(problem, order):
    lifted = LiftedSensing(problem, rank=2, order=order, search_rank=3)
    single = LiftedSensing(problem, rank=2, order=order)
    X = torch.randn(3, 2, dtype=D, generator=torch.Generator().manual_seed(7))
    T = lifted.lift(X)
    torch.testing.assert_close(T[..., 0], single.lift(X), rtol=0, atol=0)  # documented: first tensor, rest 0
    assert T[..., 1:].abs().max() == 0
    # an orthogonal mix of the s tensors is the same lifted matrix: same measurements, same X X^T
    Q = torch.linalg.qr(torch.randn(3, 3, dtype=D, generator=torch.Generator().manual_seed(8))).Q
    torch.testing.assert_close(lifted.measure(T @ Q), single.measure(single.lift(X)), rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(lifted.product(T @ Q), X @ X.T, rtol=1e-9, atol=1e-10)


def test_order_one_with_search_rank_is_the_wider_factorization(problem):
    # l = 1, rank 1, s columns: the variable is X (n, s) of the original problem, unlift its best rank-one part
    lifted = LiftedSensing(problem, rank=1, order=1, search_rank=2)
    T = torch.randn(3, 2, dtype=D, generator=torch.Generator().manual_seed(9))
    torch.testing.assert_close(lifted.loss(T), problem.loss(T), rtol=1e-12, atol=0)
    U, S, _ = torch.linalg.svd(T)
    torch.testing.assert_close(lifted.product(T), S[0] ** 2 * torch.outer(U[:, 0], U[:, 0]), rtol=1e-10, atol=1e-12)
