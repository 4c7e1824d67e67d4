"""OWL: sparsities centred on the target with exactly the target's parameter-weighted mean; outlier-rich
layers pruned less; the spread bounded by 2λ; blocks share one sparsity."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import overparam as op
from overparam.prune.owl import owl_sparsities


@settings(max_examples=40, deadline=None)
@given(ratios=st.lists(st.floats(0, 0.2), min_size=1, max_size=6), sizes=st.lists(st.integers(1, 10**6), min_size=6,
       max_size=6), s=st.floats(0.2, 0.8), lam=st.floats(0, 0.09))
def test_weighted_mean_is_exact_and_order_reversed(ratios, sizes, s, lam):
    keys = [f"l{i}" for i in range(len(ratios))]
    out = owl_sparsities(dict(zip(keys, ratios)), dict(zip(keys, sizes)), s, lam=lam)
    N = sizes[: len(ratios)]
    mean = sum(n * out[k] for k, n in zip(keys, N)) / sum(N)
    assert mean == pytest.approx(s, abs=1e-12)
    vals = [out[k] for k in keys]
    assert max(vals) - min(vals) <= 2 * lam + 1e-12
    for i in range(len(keys)):
        for j in range(len(keys)):
            if ratios[i] > ratios[j]:
                assert vals[i] < vals[j] + 1e-15            # more outliers: pruned less


def test_a_subnormal_spread_of_ratios_is_no_nan():
    """Found by hypothesis in CI: ratios 0 and 5e-324 once gave 0 * inf = NaN sparsities."""
    out = owl_sparsities({"a": 0.0, "b": 5e-324}, {"a": 1, "b": 1}, 0.5, lam=0.0625)
    assert out == pytest.approx({"a": 0.5625, "b": 0.4375}, abs=1e-12)


def test_the_spread_is_two_lambda_and_bad_lam_is_refused():
    out = owl_sparsities({"a": 0.0, "b": 0.1, "c": 0.05}, {"a": 1, "b": 1, "c": 1}, 0.5, lam=0.1)
    assert out == pytest.approx({"a": 0.6, "b": 0.4, "c": 0.5}, abs=1e-12)
    with pytest.raises(ValueError, match="lam"):
        owl_sparsities({"a": 0.0, "b": 0.1}, {"a": 1, "b": 1}, 0.9, lam=0.2)
    with pytest.raises(ValueError, match="sizes"):
        owl_sparsities({"a": 0.0}, {"b": 1}, 0.5)


def test_model_level_owl_feeds_wanda():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Sequential(nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 16)), nn.Linear(16, 8)).double()
    x = torch.randn(64, 16, dtype=torch.float64) * torch.exp(2 * torch.randn(16, dtype=torch.float64))
    sp = op.prune.owl(net, (x, None), 0.5, threshold=3.0, lam=0.1)
    sizes = {n: p.numel() for n, p in op.prune.targets(net).items()}
    assert sum(sp[k] * sizes[k] for k in sp) / sum(sizes.values()) == pytest.approx(0.5, abs=1e-12)
    assert len(set(sp.values())) > 1
    blk = op.prune.owl(net, (x, None), 0.5, threshold=3.0, lam=0.1, blocks="0")
    assert blk["0.0.weight"] == blk["0.2.weight"]
    masks = op.prune.wanda(net, (x, None), overrides=sp)
    for k, m in masks.items():
        assert int((~m).sum()) == m.shape[0] * op.prune.n_pruned(sp[k], m.shape[1])
    with pytest.raises(ValueError, match="threshold"):
        op.prune.owl(net, (x, None), 0.5, threshold=0.0)
