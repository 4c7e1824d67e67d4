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


def test_construction_none_is_torchs_default_generator():
    """generator=None in a draw primitive is torch's own call: the same numbers as torch.randn /
    torch.rand / torch.randint after the same torch.manual_seed, and the stream advanced as far."""
    assert oprandom.construction_generator(None) is torch.default_generator
    torch.manual_seed(3)
    got = (oprandom.gaussian((4, 3), dtype=torch.float64), oprandom.uniform((5,), low=-1.0, high=1.0),
           oprandom.rademacher((6,)))
    after = torch.get_rng_state()
    torch.manual_seed(3)
    want = (torch.randn(4, 3, dtype=torch.float64), 2 * torch.rand(5) - 1,
            (torch.randint(0, 2, (6,), dtype=torch.int8) * 2 - 1).float())
    assert all(torch.equal(a, b) for a, b in zip(got, want))
    assert torch.equal(after, torch.get_rng_state())


def test_fan_in_normal_none_draws_like_torch_randn_in_parameter_order():
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 2)).double()
    torch.manual_seed(5)
    oprandom.fan_in_normal_(net, std=2.0, bias_std=0.5)
    after = torch.get_rng_state()
    torch.manual_seed(5)
    for p in net.parameters():
        want = torch.randn(p.shape, dtype=torch.float64) * (2.0 / p.shape[1] ** 0.5 if p.ndim > 1 else 0.5)
        assert torch.equal(p.detach(), want)
    assert torch.equal(after, torch.get_rng_state())


def test_measurement_none_follows_manual_seed_and_leaves_the_stream_alone():
    like = [torch.zeros(3, 2, dtype=torch.float64), torch.zeros(4, dtype=torch.float64)]
    torch.manual_seed(0)
    with assert_no_side_effects():  # the global CPU state is bitwise unchanged
        a = oprandom.probes_like(like, n=2, kind="gaussian", generator=oprandom.measurement_generator(None))
        b = oprandom.probes_like(like, n=2, kind="gaussian", generator=oprandom.measurement_generator(None))
    assert all(torch.equal(x, y) for x, y in zip(a, b))  # no draw in between: the same probes
    nxt = torch.randn(2, 10, dtype=torch.float64)  # not the numbers the training stream draws next
    assert not torch.equal(vec.flatten(a, batch=True), nxt)
    c = oprandom.probes_like(like, n=2, kind="gaussian", generator=oprandom.measurement_generator(None))
    assert not torch.equal(a[0], c[0])  # the stream moved: new probes
    torch.manual_seed(0)
    d = oprandom.probes_like(like, n=2, kind="gaussian", generator=oprandom.measurement_generator(None))
    assert all(torch.equal(x, y) for x, y in zip(a, d))
    torch.manual_seed(1)
    e = oprandom.probes_like(like, n=2, kind="gaussian", generator=oprandom.measurement_generator(None))
    assert not torch.equal(a[0], e[0])


@pytest.mark.parametrize("convert", [oprandom.construction_generator, oprandom.measurement_generator])
def test_converters_explicit_generators_and_bad_input(convert):
    g = torch.Generator().manual_seed(2)
    assert convert(g) is g
    h = convert(9)
    assert isinstance(h, torch.Generator) and h.initial_seed() == 9 and h is not torch.default_generator
    with assert_no_side_effects():
        convert(9)
    with pytest.raises(TypeError, match="generator must be"):
        convert("0")
    with pytest.raises(TypeError, match="generator must be"):
        convert(True)
    with pytest.raises(ValueError, match="seed must be >= 0"):
        convert(-1)


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
