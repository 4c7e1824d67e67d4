"""Wanda: |W|·‖X‖ scores, per-row exact counts against a brute-force oracle, N:M, model left unchanged."""

import itertools

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import overparam as op
from overparam.prune.wanda import wanda_mask, wanda_scores

D = torch.float64


@settings(max_examples=20, deadline=None)
@given(r=st.integers(1, 4), d=st.integers(1, 7), sparsity=st.sampled_from([0.0, 0.25, 0.5, 0.6, 0.9]),
       seed=st.integers(0, 1000), ties=st.booleans())
def test_row_mask_is_the_best_subset_of_each_row(r, d, sparsity, seed, ties):
    """Per row, the kept set has exactly d − round(s·d) entries and the largest total score of all
    subsets of that size (exhaustive search); with ties, the lower index is kept... pruned first."""
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(r, d, generator=g, dtype=D)
    if ties:
        W = W.round()
    norms = torch.rand(d, generator=g, dtype=D) + 0.1
    mask = wanda_mask(W, norms, sparsity)
    s = W.abs() * norms
    keep = d - op.prune.n_pruned(sparsity, d)
    for i in range(r):
        assert int(mask[i].sum()) == keep
        best = max((float(s[i, list(c)].sum()) for c in itertools.combinations(range(d), keep)), default=0.0)
        assert float(s[i][mask[i]].sum()) == pytest.approx(best, rel=1e-12, abs=1e-12)


def test_nm_mask_uses_the_wanda_scores():
    g = torch.Generator().manual_seed(0)
    W = torch.randn(6, 16, generator=g, dtype=D)
    norms = torch.rand(16, generator=g, dtype=D)
    m = wanda_mask(W, norms, n=2, m=4)
    assert torch.equal(m, op.prune.nm_mask(W.abs() * norms, 2, 4))
    assert not torch.equal(m, op.prune.nm_mask(W.abs(), 2, 4))       # the norms matter here
    torch.testing.assert_close(wanda_scores(W, norms), W.abs() * norms)


def test_model_level_returns_masks_and_leaves_the_model_unchanged():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 4)).double()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    x = torch.randn(32, 8, dtype=D) * torch.logspace(-1, 1, 8, dtype=D)
    masks = op.prune.wanda(net, (x, None), 0.5)
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    h = torch.relu(net[0](x)).detach()
    assert torch.equal(masks["0.weight"], wanda_mask(net[0].weight.detach(), x.norm(dim=0), 0.5))
    # sequential: layer 2's norms come from the pruned first layer
    hp = torch.relu(nn.functional.linear(x, net[0].weight * masks["0.weight"], net[0].bias)).detach()
    assert torch.equal(masks["2.weight"], wanda_mask(net[2].weight.detach(), hp.norm(dim=0), 0.5))
    par = op.prune.wanda(net, (x, None), 0.5, sequential=False)
    assert torch.equal(par["2.weight"], wanda_mask(net[2].weight.detach(), h.norm(dim=0), 0.5))
    with pytest.raises(ValueError, match="n, m"):
        op.prune.wanda(net, (x, None), n=4, m=4)
    with pytest.raises(ValueError, match="m"):
        op.prune.wanda(net, (x, None), n=2, m=3)                     # 8 inputs are not divisible by 3
