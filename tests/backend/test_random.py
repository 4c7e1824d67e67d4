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
