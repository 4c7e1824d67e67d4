import warnings

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import overparam.hessian as oh
from overparam.backend.random import construction_generator, gaussian
from overparam.testing import assert_no_side_effects, assert_orthonormal, dense_hessian, symmetric_with_spectrum, tanh_mlp

F = torch.nn.functional


@pytest.fixture(scope="module")
def mlp_4k():
    g = construction_generator(0)
    net = tanh_mlp([20, 60, 40, 10], generator=1)  # 1260 + 2440 + 410 = 4110 parameters
    x = gaussian((64, 20), generator=g, dtype=torch.float64)
    y = torch.randint(0, 10, (64,), generator=g)
    return net, (x, y)


@pytest.mark.slow
def test_top10_matches_eigvalsh_on_4k_mlp(mlp_4k):
    net, batch = mlp_4k
    H = oh.hessian(net, F.cross_entropy, batch)
    assert H.n > 4000
    exact = torch.linalg.eigvalsh(dense_hessian(net, F.cross_entropy, batch)).flip(0)[:10]
    with assert_no_side_effects(net):
        eig = oh.lanczos(H, k=10, which="LA", tol=1e-9, generator=0)
    assert eig.converged
    assert float(((eig.values - exact).abs() / exact.abs()).max()) < 1e-8
    X = eig.matrix()
    true_res = torch.linalg.vector_norm(H @ X - X * eig.values, dim=0)
    assert bool((true_res <= 1e-8 * eig.values.abs()).all()), true_res
    assert bool((eig.residuals <= 1e-8 * eig.values.abs()).all())
    assert_orthonormal(X, atol=1e-10)
    assert eig.vectors[0].shape == (10, 60, 20)  # parameter-shaped
    # warm start from the previous vectors: far fewer products
    again = oh.lanczos(H, k=10, tol=1e-9, v0=eig, generator=1)
    assert again.n_matvecs < eig.n_matvecs
    torch.testing.assert_close(again.values, eig.values, rtol=1e-8, atol=0)


def test_which_with_dominant_negative_eigenvalue():
    lam = torch.cat([torch.tensor([-50.0, 9.0, 8.5]), torch.linspace(-5, 5, 197)])
    A = symmetric_with_spectrum(lam, generator=3)
    srt = torch.sort(lam).values.double()
    cases = {"LA": srt.flip(0)[:4], "SA": srt[:4], "LM": srt[torch.argsort(srt.abs(), descending=True)][:4]}
    for which, expect in cases.items():
        eig = oh.lanczos(A, k=4, which=which, tol=1e-10, generator=0)
        torch.testing.assert_close(eig.values, expect, rtol=1e-9, atol=1e-9)
        X = eig.matrix()
        assert float(torch.linalg.vector_norm(A @ X - X * eig.values, dim=0).max()) < 1e-8 * 50


@settings(max_examples=15, deadline=None)
@given(n=st.integers(2, 40), k=st.integers(1, 5), seed=st.integers(0, 2**16), which=st.sampled_from(["LA", "SA", "LM"]))
def test_random_spectra(n, k, seed, which):
    k = min(k, n)
    lam = torch.linspace(-1, 2, n, dtype=torch.float64) + gaussian((n,), generator=seed, dtype=torch.float64) * 0.01
    A = symmetric_with_spectrum(lam, generator=seed + 1)
    ev = torch.linalg.eigvalsh(A)
    key = {"LA": -ev, "SA": ev, "LM": -ev.abs()}[which]
    expect = ev[torch.argsort(key, stable=True)][:k]
    eig = oh.lanczos(A, k=k, which=which, tol=1e-10, generator=seed)
    torch.testing.assert_close(eig.values, expect, rtol=1e-8, atol=1e-8)
    assert_orthonormal(eig.matrix(), atol=1e-10)


def test_low_rank_and_errors():
    A = symmetric_with_spectrum([3.0, 2.0] + [0.0] * 28, generator=0)  # invariant subspace of size 2
    eig = oh.lanczos(A, k=2, generator=0)
    torch.testing.assert_close(eig.values, torch.tensor([3.0, 2.0], dtype=torch.float64), rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="which"):
        oh.lanczos(A, k=2, which="BE")
    with pytest.raises(ValueError, match="k must"):
        oh.lanczos(A, k=31)
    with pytest.raises(ValueError, match="v0"):
        oh.lanczos(A, k=2, v0=torch.zeros(30, dtype=torch.float64))
    with pytest.warns(RuntimeWarning, match="did not converge"):
        out = oh.lanczos(symmetric_with_spectrum(torch.linspace(0, 1, 200), generator=1), k=5, ncv=8, max_matvecs=20,
                         tol=1e-12, generator=0)
    assert not out.converged


@pytest.mark.parametrize("which", ["LA", "SA"])
@pytest.mark.parametrize("tol", [1e-4, 1e-8])
def test_value_criterion_meets_eigenvalue_tolerance_with_fewer_products(which, tol):
    # outliers plus a bulk, like a trained network's Hessian; eigenvalue errors are what is asked for
    lam = torch.cat([torch.tensor([40.0, 25.0, 18.0, 12.0, 9.0, 7.5]), torch.linspace(-1.0, 3.0, 394)])
    lam = lam if which == "LA" else -lam
    A = symmetric_with_spectrum(lam, generator=5)
    srt = torch.sort(lam.double(), descending=which == "LA").values[:6]
    by_value = oh.lanczos(A, k=6, which=which, tol=tol, criterion="value", generator=0)
    by_res = oh.lanczos(A, k=6, which=which, tol=tol, generator=0)
    assert by_value.converged and by_res.converged
    err = ((by_value.values - srt).abs() / srt.abs()).max()
    assert float(err) <= tol, (float(err), tol)
    assert by_value.n_matvecs < by_res.n_matvecs
    # the reported residuals stay true residuals
    X = by_value.matrix()
    torch.testing.assert_close(torch.linalg.vector_norm(A @ X - X * by_value.values, dim=0), by_value.residuals,
                               rtol=1e-6, atol=1e-10)
    with pytest.raises(ValueError, match="criterion"):
        oh.lanczos(A, k=2, criterion="values")


def test_value_criterion_with_repeated_eigenvalues_and_invariant_subspace():
    # restarts after an invariant subspace can bring a second copy of an eigenvalue: gap 0 must not give NaN
    A = symmetric_with_spectrum([3.0, 3.0, 2.0] + [0.0] * 27, generator=0)
    eig = oh.lanczos(A, k=3, tol=1e-10, criterion="value", generator=0)
    assert eig.converged
    torch.testing.assert_close(eig.values, torch.tensor([3.0, 3.0, 2.0], dtype=torch.float64), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("case", ["scaled_identity", "repeated", "outliers", "k1"])
def test_value_criterion_never_needs_more_products_than_residual(case):
    # the value estimate is min(‖r‖, ...) <= ‖r‖ and both runs follow the same Krylov sequence, so "value"
    # stops no later than "residual"; a scaled identity (pure weight decay) has θ repeated with ‖r‖ = 0
    lam, k = {"scaled_identity": ([0.5] * 30, 2), "repeated": ([3.0, 3.0, 2.0, 2.0] + [0.0] * 26, 3),
              "outliers": ([9.0, 5.0] + torch.linspace(-1, 1, 58).tolist(), 2),
              "k1": ([4.0] + torch.linspace(0, 1, 59).tolist(), 1)}[case]
    A = symmetric_with_spectrum(lam, generator=3) if case != "scaled_identity" else 0.5 * torch.eye(30, dtype=torch.float64)
    by_value = oh.lanczos(A, k=k, tol=1e-10, criterion="value", generator=0)
    by_res = oh.lanczos(A, k=k, tol=1e-10, generator=0)
    assert by_value.converged and by_value.n_matvecs <= by_res.n_matvecs
    top = torch.sort(torch.tensor(lam, dtype=torch.float64), descending=True).values[:k]
    torch.testing.assert_close(by_value.values, top, rtol=1e-10, atol=1e-12)


def test_value_criterion_is_scale_invariant():
    # ‖r‖²/δ has the units of an eigenvalue: scaling A by a power of two (exact in floating point) must
    # change neither the stopping point nor the relative accuracy of the values
    lam = torch.cat([torch.tensor([40.0, 25.0, 18.0]), torch.linspace(-1.0, 3.0, 197)])
    A = symmetric_with_spectrum(lam, generator=5)
    runs = {c: oh.lanczos(c * A, k=3, tol=1e-6, criterion="value", generator=0) for c in (2.0**-12, 1.0, 2.0**12)}
    assert len({r.n_matvecs for r in runs.values()}) == 1, {c: r.n_matvecs for c, r in runs.items()}
    for c, r in runs.items():
        assert float(((r.values / c - lam[:3].double()).abs() / lam[:3]).max()) <= 1e-6


def test_value_criterion_close_pair_resolved_when_k_covers_it():
    # documented limit: with k=1 an unresolved top pair (gap 1e-3) can be mixed; k=2 covers the pair
    lam = torch.cat([torch.tensor([1.0, 1.0 - 1e-3]), torch.linspace(0.0, 0.5, 198)])
    A = symmetric_with_spectrum(lam, generator=0)
    eig = oh.lanczos(A, k=2, tol=1e-6, criterion="value", generator=0)
    assert eig.converged
    assert float(((eig.values - lam[:2].double()).abs() / lam[:2]).max()) <= 1e-6


def test_gradient_start_vector():
    from torch.utils.data import DataLoader, TensorDataset

    g = construction_generator(0)
    net = tanh_mlp([6, 12, 4], generator=1)
    x, y = gaussian((40, 6), generator=g, dtype=torch.float64), torch.randint(0, 4, (40,), generator=g)
    H = oh.hessian(net, F.cross_entropy, (x, y))
    params = dict(net.named_parameters())
    expect = torch.cat([t.flatten() for t in torch.autograd.grad(F.cross_entropy(net(x), y), list(params.values()))])
    torch.testing.assert_close(H.gradient(), expect, rtol=1e-12, atol=1e-14)
    loader = DataLoader(TensorDataset(x, y), batch_size=16)  # ragged, no kept graph: computed on demand
    torch.testing.assert_close(oh.hessian(net, F.cross_entropy, loader, retain_graph=False).gradient(), expect,
                               rtol=1e-12, atol=1e-14)
    exact = torch.linalg.eigvalsh(dense_hessian(net, F.cross_entropy, (x, y))).flip(0)[:4]
    with assert_no_side_effects(net):
        eig = oh.lanczos(H, k=4, tol=1e-10, v0="gradient", generator=0)
    torch.testing.assert_close(eig.values, exact, rtol=1e-8, atol=1e-10)
    from overparam.hessian.lanczos import start_vector

    r = gaussian((H.n,), generator=construction_generator(0), dtype=torch.float64)
    v = r / r.norm() + expect / expect.norm()
    torch.testing.assert_close(start_vector(H, "gradient", 0), v / v.norm(), rtol=1e-12, atol=1e-15)
    with pytest.raises(ValueError, match="v0"):
        oh.lanczos(H, k=2, v0="grad")
    with pytest.raises(TypeError, match="gradient"):
        oh.lanczos(torch.eye(5, dtype=torch.float64), k=2, v0="gradient")


def test_max_matvecs_is_validated_and_never_exceeded():
    # issue 20: max_matvecs=0 and negative budgets ran 22 products anyway
    A = symmetric_with_spectrum(torch.linspace(0, 1, 200), generator=1)
    for bad in (0, -5, 2, 3.5, True):
        with pytest.raises(ValueError, match="max_matvecs"):
            oh.lanczos(A, k=3, max_matvecs=bad)
    for budget in (3, 7, 21, 30, 45):  # inside the first fill, at its end, and inside a restart (ncv = 23)
        with pytest.warns(RuntimeWarning, match="did not converge"):
            out = oh.lanczos(A, k=3, max_matvecs=budget, tol=1e-12, generator=0)
        assert out.n_matvecs == budget and not out.converged and out.values.shape == (3,)


def test_non_finite_products_are_refused():
    with pytest.raises(ValueError, match="not finite"):
        oh.lanczos(oh.as_operator(lambda v: v * float("inf"), n=10), k=1, generator=0)


def test_thick_restart_keeps_enough_ritz_vectors():
    # a problem that forces restarts (k=5 of a flat spectrum, ncv=12): keeping p = k + (m−k)//2 Ritz vectors
    # converges in ≈ 275–295 products; restarting from only the k wanted ones needs 420–490
    A = symmetric_with_spectrum(torch.linspace(0, 1, 400), generator=3)
    ref = torch.linspace(0, 1, 400, dtype=torch.float64).flip(0)[:5]
    for seed in range(3):
        eig = oh.lanczos(A, k=5, ncv=12, generator=seed)
        assert eig.converged and eig.n_matvecs <= 340, eig.n_matvecs
        torch.testing.assert_close(eig.values, ref, rtol=1e-7, atol=0)


def test_convergence_floor_lets_near_zero_eigenvalues_converge():
    # which="SA" with eigenvalues 0, 1e-9, 1e-7 below a bulk up to 10: the residual test is relative to
    # max(|θ|, √eps·‖A‖) and converges in ≈ 200 products; with eps·‖A‖ instead it stops at the budget (1150, a warning)
    lam = torch.cat([torch.tensor([0.0, 1e-9, 1e-7]), torch.linspace(0.1, 10, 197)])
    A = symmetric_with_spectrum(lam, generator=5)
    for seed in range(3):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            eig = oh.lanczos(A, k=3, which="SA", generator=seed)
        assert eig.converged and eig.n_matvecs <= 260, eig.n_matvecs
        torch.testing.assert_close(eig.values, lam[:3].double(), rtol=0, atol=1e-12)
