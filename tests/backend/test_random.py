import pytest
import torch

from overparam.backend import random as oprandom
from overparam.backend import vec
from overparam.testing import assert_no_side_effects


def test_same_seed_same_numbers_and_generator_advances():
    with assert_no_side_effects():
        a = oprandom.gaussian((5, 3), generator=11, dtype=torch.float64)
        b = oprandom.gaussian((5, 3), generator=11, dtype=torch.float64)
        g = torch.Generator().manual_seed(11)
        c = oprandom.gaussian((5, 3), generator=g, dtype=torch.float64)
        d = oprandom.gaussian((5, 3), generator=g, dtype=torch.float64)
    assert torch.equal(a, b) and torch.equal(a, c) and not torch.equal(c, d)


def test_independent_of_global_rng():
    torch.manual_seed(0)
    a = oprandom.rademacher((100,), generator=3)
    torch.manual_seed(12345)
    _ = torch.randn(10)
    b = oprandom.rademacher((100,), generator=3)
    assert torch.equal(a, b)


def test_none_generator_leaves_global_state_alone():
    with assert_no_side_effects():
        x = oprandom.gaussian((4,), generator=None)
        y = oprandom.gaussian((4,), generator=None)
        probes = oprandom.probes_like([torch.zeros(3)], generator=None)
    assert not torch.equal(x, y) and probes[0].shape == (3,)


def test_rademacher_values_and_moments():
    r = oprandom.rademacher((200_000,), generator=0, dtype=torch.float64)
    assert set(r.unique().tolist()) == {-1.0, 1.0}
    assert abs(float(r.mean())) < 5 / 200_000**0.5  # 5 sigma


def test_gaussian_moments():
    x = oprandom.gaussian((200_000,), generator=1, dtype=torch.float64)
    assert abs(float(x.mean())) < 5 / 200_000**0.5
    assert abs(float(x.var()) - 1) < 5 * (2 / 200_000) ** 0.5


def test_probes_like_shapes_dtypes_and_layout_independence():
    like = [torch.zeros(2, 3, dtype=torch.float64), torch.zeros((), dtype=torch.float64), torch.zeros(4, dtype=torch.float64)]
    one = oprandom.probes_like(like, generator=5)
    assert [t.shape for t in one] == [t.shape for t in like]
    many = oprandom.probes_like(like, n=3, kind="gaussian", generator=5)
    assert [tuple(t.shape) for t in many] == [(3, 2, 3), (3,), (3, 4)]
    # the same numbers whatever the chunking of parameters into tensors
    alt = oprandom.probes_like([torch.zeros(11, dtype=torch.float64)], n=3, kind="gaussian", generator=5)
    assert torch.equal(vec.flatten(many, batch=True), alt[0])
    assert set(torch.cat([t.reshape(-1) for t in one]).unique().tolist()) <= {-1.0, 1.0}


def test_bad_arguments():
    with pytest.raises(TypeError, match="generator"):
        oprandom.gaussian((2,), generator="seed")
    with pytest.raises(ValueError, match="seed must be >= 0"):
        oprandom.gaussian((2,), generator=-1)
    with pytest.raises(ValueError, match="kind"):
        oprandom.probes_like([torch.zeros(2)], kind="uniform")
    with pytest.raises(ValueError, match="n must be"):
        oprandom.probes_like([torch.zeros(2)], n=0)
    with pytest.raises(TypeError, match="floating-point"):
        oprandom.gaussian((2,), generator=0, dtype=torch.int64)


def test_uniform_range_moments_and_affine_map():
    u = oprandom.uniform((200_000,), generator=2, dtype=torch.float64)
    assert float(u.min()) >= 0 and float(u.max()) < 1
    assert abs(float(u.mean()) - 0.5) < 5 * (1 / 12 / 200_000) ** 0.5
    assert abs(float(u.var()) - 1 / 12) < 1e-3
    v = oprandom.uniform((200_000,), low=-3.0, high=5.0, generator=2, dtype=torch.float64)
    assert torch.equal(v, u * 8 + -3)  # the same draw, mapped affinely
    assert float(v.min()) >= -3 and float(v.max()) < 5
    # [-1, 1) is bit-for-bit the hand-written ``2 u - 1`` it replaces
    g = torch.Generator().manual_seed(4)
    ref = 2 * torch.rand(7, 3, generator=g, dtype=torch.float32) - 1
    assert torch.equal(oprandom.uniform((7, 3), low=-1.0, high=1.0, generator=4, dtype=torch.float32), ref)


def test_uniform_bad_arguments():
    with pytest.raises(ValueError, match="low must be < high"):
        oprandom.uniform((2,), low=1.0, high=1.0)
    with pytest.raises(ValueError, match="high must be a finite"):
        oprandom.uniform((2,), high=float("inf"))
    with pytest.raises(TypeError, match="floating-point"):
        oprandom.uniform((2,), dtype=torch.int32)


@pytest.mark.parametrize("kind", oprandom.PROBE_KINDS)
def test_probe_is_the_named_kind(kind):
    got = oprandom.probe(kind, (4, 6), generator=9, dtype=torch.float64)
    want = getattr(oprandom, kind)((4, 6), generator=9, dtype=torch.float64)
    assert torch.equal(got, want)


def test_probe_unknown_kind_names_the_valid_ones():
    with pytest.raises(ValueError, match="'rademacher' or 'gaussian'"):
        oprandom.probe("uniform", (2,))


@pytest.mark.parametrize("n,k", [(1, 1), (5, 1), (6, 4), (7, 7)])
def test_orthonormal_is_orthonormal_with_positive_r_diagonal(n, k):
    Q = oprandom.orthonormal(n, k, generator=3, dtype=torch.float64)
    assert Q.shape == (n, k)
    assert torch.allclose(Q.mT @ Q, torch.eye(k, dtype=torch.float64), atol=1e-13)
    # Q is the Q of the same Gaussian's QR with diag(R) > 0: R = QᵀG is upper triangular, positive diagonal
    G = oprandom.gaussian((n, k), generator=3, dtype=torch.float64)
    R = Q.mT @ G
    assert torch.allclose(torch.tril(R, -1), torch.zeros_like(R), atol=1e-12)
    assert bool((torch.diagonal(R) > 0).all())
    assert torch.allclose(Q @ R, G, atol=1e-12)


def test_orthonormal_is_haar_first_moments():
    """Haar on the Stiefel manifold: E[Q_ij] = 0 and E[Q_ij²] = 1/n for every entry; the
    unsigned QR fails the first (its diagonal is biased negative in LAPACK's convention)."""
    n, k, trials = 4, 2, 4000
    g = torch.Generator().manual_seed(0)
    Qs = torch.stack([oprandom.orthonormal(n, k, generator=g, dtype=torch.float64) for _ in range(trials)])
    sigma = (1 / n / trials) ** 0.5
    assert float(Qs.mean(0).abs().max()) < 5 * sigma
    assert float((Qs.square().mean(0) - 1 / n).abs().max()) < 0.03
    raw = torch.stack([torch.linalg.qr(oprandom.gaussian((n, k), generator=g, dtype=torch.float64))[0]
                       for _ in range(trials)])
    assert float(raw.mean(0).abs().max()) > 5 * sigma


def test_orthonormal_bad_arguments():
    with pytest.raises(ValueError, match="k <= n"):
        oprandom.orthonormal(3, 4)
    with pytest.raises(ValueError, match="1 <= k"):
        oprandom.orthonormal(3, 0)
    with pytest.raises(TypeError, match="n must be an int"):
        oprandom.orthonormal(3.0, 2)
