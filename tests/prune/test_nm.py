import pytest
import torch
from hypothesis import given, settings, strategies as st

from overparam.prune import nm as N


def test_model_level_and_skip():
    net = torch.nn.Sequential(torch.nn.Conv2d(8, 8, 3), torch.nn.Flatten(), torch.nn.Linear(8, 4))
    masks = N.nm_masks(net, 1, 2)
    assert set(masks) == {"0.weight", "2.weight"}
    assert all(N.is_nm(m, 1, 2) for m in masks.values())
    assert set(N.nm_masks(net, 1, 2, exclude=torch.nn.Linear)) == {"0.weight"}


def test_transposable_24_64x64_beats_greedy():
    w = torch.randn(64, 64, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    ex = N.transposable_nm_mask(w.abs(), 2, 4)
    gr = N.transposable_nm_mask(w.abs(), 2, 4, method="greedy")
    for mk in (ex, gr):
        assert N.is_nm(mk, 2, 4) and N.is_nm(mk.T, 2, 4)
    assert (w.abs() * ex).sum() >= (w.abs() * gr).sum()
    # exhaustive is the exact optimum: no block improves by any of the 90 patterns
    pats = N.transposable_patterns(2, 4)
    assert len(pats) == 90
    blocks = w.abs().reshape(16, 4, 16, 4).permute(0, 2, 1, 3).reshape(-1, 16)
    best = (blocks @ pats.reshape(90, 16).double().T).max(1).values
    kept = (blocks * ex.reshape(16, 4, 16, 4).permute(0, 2, 1, 3).reshape(-1, 16)).sum(1)
    assert torch.allclose(kept, best, rtol=1e-12)


@settings(max_examples=15, deadline=None)
@given(m=st.sampled_from([3, 5, 6, 8]), data=st.data(), seed=st.integers(0, 999), ties=st.booleans())
def test_transposable_greedy_always_valid(m, data, seed, ties):
    n = data.draw(st.integers(1, m - 1))
    g = torch.Generator().manual_seed(seed)
    s = torch.randint(0, 3, (2 * m, 2 * m), generator=g).float() if ties else torch.rand(2 * m, 2 * m, generator=g)
    mk = N.transposable_nm_mask(s, n, m, method="greedy")
    assert N.is_nm(mk, n, m) and N.is_nm(mk.T, n, m)


def test_augment_completes_stuck_greedy():
    # a partial 2-regular selection in a 4x4 block where row 3 / column 3 are stuck
    sel = torch.tensor([[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 1, 1], [0, 0, 1, 0]], dtype=torch.bool)
    N._augment(sel, 2)
    assert (sel.sum(0) == 2).all() and (sel.sum(1) == 2).all()
    sel = torch.tensor([[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]], dtype=torch.bool)
    N._augment(sel, 2)
    assert (sel.sum(0) == 2).all() and (sel.sum(1) == 2).all()
    sel = torch.tensor([[1, 1, 0], [1, 0, 1], [0, 0, 0]], dtype=torch.bool)  # n=2, m=3: row 2 needs cols 1 and 2
    sel2 = sel.clone()
    N._augment(sel2, 2)
    assert (sel2.sum(0) == 2).all() and (sel2.sum(1) == 2).all()


def test_transposable_bad_shape():
    with pytest.raises(ValueError, match="divisible"):
        N.transposable_nm_mask(torch.rand(8, 6), 2, 4)


def test_prune_nm_names_are_the_backend_ones():
    from overparam.backend import nm as backend_nm

    assert N.nm_mask is backend_nm.nm_mask and N.nm_groups is backend_nm.nm_groups and N.check_nm is backend_nm.check_nm


@pytest.mark.parametrize("shape,dim", [((4, 8), 2), ((4, 8), 5), ((4, 8), -3), ((2, 4, 8, 8), -7), ((8,), 1)])
def test_out_of_range_dim_refused(shape, dim):
    """Issue 20: dim used to wrap modulo ndim (dim=5 on a 2-D tensor grouped dim 1)."""
    w = torch.rand(shape)
    with pytest.raises(ValueError, match=f"dim={dim} is out of range"):
        N.nm_mask(w, 2, 4, dim=dim)
    with pytest.raises(ValueError, match=f"dim={dim} is out of range"):
        N.is_nm(w > 0.5, 2, 4, dim=dim)


def test_negative_and_default_dims():
    w = torch.rand(8, 4, generator=torch.Generator().manual_seed(0))
    assert torch.equal(N.nm_mask(w, 2, 4, dim=-1), N.nm_mask(w, 2, 4, dim=1))
    assert torch.equal(N.nm_mask(w, 2, 4, dim=-2), N.nm_mask(w.T, 2, 4).T)
    v = torch.rand(8, generator=torch.Generator().manual_seed(1))
    assert torch.equal(N.nm_mask(v, 2, 4), N.nm_mask(v, 2, 4, dim=0))  # 1-D: the only dim


def test_nm_masks_scores_must_name_the_targets():
    """Issue 20: an unknown key gave KeyError: '0.weight'."""
    net = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.Linear(8, 4))
    t = torch.rand(8, 8)
    with pytest.raises(ValueError, match=r"scores must hold exactly .*unknown \['bogus'\]"):
        N.nm_masks(net, 2, 4, scores={"bogus": t})
    with pytest.raises(ValueError, match=r"missing \['1.weight'\]"):
        N.nm_masks(net, 2, 4, scores={"0.weight": t})
    got = N.nm_masks(net, 2, 4, targets="0", scores={"0.weight": t})
    assert torch.equal(got["0.weight"], N.nm_mask(t, 2, 4))


# ------------------------------------------------------------------ layouts (issue 21)
def _gpt2_like():
    Conv1D = pytest.importorskip("transformers.pytorch_utils").Conv1D
    torch.manual_seed(0)
    return torch.nn.Sequential(Conv1D(12, 8), torch.nn.GELU(), Conv1D(8, 12), torch.nn.Linear(8, 4)).double()


def test_conv1d_groups_run_along_the_computations_input():
    net = _gpt2_like()
    masks = N.nm_masks(net, 2, 4)
    assert N.nm_dims(net, masks) == {"0.weight": 0, "2.weight": 0, "3.weight": 1}
    for k, mk in masks.items():
        w = dict(net.named_parameters())[k]
        M = w.T if k != "3.weight" else w                              # the (out, in) matrix of the computation
        Mk = mk.T if k != "3.weight" else mk
        assert torch.equal(Mk, N.nm_mask(M.detach().abs(), 2, 4))      # = the Linear rule on the matrix
        assert N.is_nm(mk, 2, 4, dim=N.nm_dims(net, [k])[k])
    # a Conv1D whose out (storage dim 1) is not divisible by 4 is fine: only in (dim 0) is grouped
    Conv1D = type(net[0])
    assert N.is_nm(N.nm_masks(Conv1D(6, 8), 2, 4)["weight"], 2, 4, dim=0)


def test_an_ungroupable_weight_is_named_with_the_exclude_hint():
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 4, stride=4), torch.nn.Flatten(), torch.nn.Linear(8, 4))
    with pytest.raises(ValueError, match=r"0\.weight: .*divisible.*exclude='0.weight'"):
        N.nm_masks(net, 2, 4)
    assert set(N.nm_masks(net, 2, 4, exclude="0")) == {"2.weight"}
    with pytest.raises(ValueError, match="masks"):
        N.nm_dims(net, ["0.bias"])


def test_learnable_nm_on_a_transposed_weight_groups_along_dim_0():
    from overparam.prune.learned import LearnableNM
    net = _gpt2_like()
    lnm = LearnableNM(net, 2, 4, generator=0)
    hard = lnm.masks()
    for k, mk in hard.items():
        assert N.is_nm(mk, 2, 4, dim=N.nm_dims(net, [k])[k])
    # the magnitude prior decodes to the magnitude N:M mask
    assert all(torch.equal(hard[k], v) for k, v in N.nm_masks(net, 2, 4).items())
    soft = lnm.soft_masks()
    assert all(soft[k].shape == p.shape for k, p in net.named_parameters() if k in soft)
