import itertools

import pytest
import torch
from hypothesis import given, settings, strategies as st

from overparam.prune import structured as S


@settings(max_examples=25, deadline=None)
@given(dim=st.integers(0, 3), s=st.floats(0, 0.95), p=st.sampled_from([1.0, 2.0, float("inf")]), seed=st.integers(0, 99))
def test_ln_structured_oracle(dim, s, p, seed):
    w = torch.randn(4, 6, 3, 2, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    mask = S.ln_structured(w, s, dim=dim, p=p)
    size = w.shape[dim]
    norms = [float(torch.linalg.vector_norm(w.select(dim, i).reshape(-1), ord=p)) for i in range(size)]
    k = int(s * size + 0.5)
    pruned = sorted(range(size), key=lambda i: norms[i])[:k]
    for i in range(size):
        sl = mask.select(dim, i)
        assert bool(sl.all()) if i not in pruned else not bool(sl.any())


def test_heads_groups():
    w = torch.zeros(6, 4)
    w[2:4] = 1.0  # head 1 of 3 (d_head 2) is the only non-zero head
    m = S.ln_structured(w, 0.6, dim=0, groups=3)  # prune 2 of 3 heads
    assert m[2:4].all() and not m[:2].any() and not m[4:].any()
    with pytest.raises(ValueError, match="groups"):
        S.ln_structured(w, 0.5, dim=0, groups=4)


def test_block_mask_oracle():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(8, 4, 3, generator=g, dtype=torch.float64)  # viewed as (8, 12)
    m = S.block_mask(w, 0.5, block=(2, 3))
    w2, m2 = w.reshape(8, 12), m.reshape(8, 12)
    norms = {(a, b): float(w2[2 * a:2 * a + 2, 3 * b:3 * b + 3].norm()) for a, b in itertools.product(range(4), range(4))}
    kept = sorted(norms, key=norms.get)[8:]
    for (a, b) in norms:
        tile = m2[2 * a:2 * a + 2, 3 * b:3 * b + 3]
        assert bool(tile.all()) if (a, b) in kept else not bool(tile.any())
    with pytest.raises(ValueError, match="does not tile"):
        S.block_mask(w, 0.5, block=(3, 3))
    with pytest.raises(ValueError, match="sparsity"):
        S.block_mask(w, 1.0, block=(2, 3))


@pytest.mark.parametrize("dim", [2, 3, -3])
def test_out_of_range_dim_refused(dim):
    """Issue 20: ln_structured(w, .5, dim=3) on a 2-D weight used to prune dim 1."""
    w = torch.rand(4, 6)
    with pytest.raises(ValueError, match=f"dim={dim} is out of range"):
        S.ln_structured(w, 0.5, dim=dim)
    with pytest.raises(ValueError, match=f"dim={dim} is out of range"):
        S.slice_norms(w, dim)
    assert torch.equal(S.ln_structured(w, 0.5, dim=-1), S.ln_structured(w, 0.5, dim=1))


def test_nan_weight_and_nan_p_are_refused_by_name():
    """Issue 20: a NaN in w (or p = NaN) used to surface as 'scores contain NaN'."""
    w = torch.rand(4, 6, dtype=torch.float64)
    bad = w.clone()
    bad[1, 2] = float("nan")
    for call in (lambda x, p: S.ln_structured(x, 0.5, dim=0, p=p), lambda x, p: S.block_mask(x, 0.5, block=(2, 2), p=p)):
        with pytest.raises(ValueError, match="w holds NaN"):
            call(bad, 2.0)
        with pytest.raises(ValueError, match="p must be a real number"):
            call(w, float("nan"))
        with pytest.raises(ValueError, match="w must have at least one dimension and one entry"):
            call(torch.zeros(0, 0), 2.0)
    assert torch.isnan(S.slice_norms(bad, 0)[1])  # the norms themselves propagate the NaN, as torch does
