import pytest
import torch
from hypothesis import given, settings, strategies as st

from overparam.prune import masks as M
from overparam.prune.targets import kept_fraction, targets


def _int_mlp(seed=0):
    g = torch.Generator().manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Linear(7, 13), torch.nn.ReLU(), torch.nn.Linear(13, 5))
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randint(-3, 4, p.shape, generator=g).float())
    return net


@settings(max_examples=30, deadline=None)
@given(s=st.floats(0, 0.99), seed=st.integers(0, 100), scope=st.sampled_from(["global", "layerwise"]))
def test_integer_weights_exact_count_and_threshold(s, seed, scope):
    net = _int_mlp(seed)
    masks = M.magnitude(net, s, scope=scope)
    ws = targets(net)
    if scope == "global":
        n = sum(w.numel() for w in ws.values())
        assert sum(int((~m).sum()) for m in masks.values()) == int(s * n + 0.5)
        kept = torch.cat([ws[k].detach().abs()[masks[k]] for k in ws])
        pruned = torch.cat([ws[k].detach().abs()[~masks[k]] for k in ws])
        if kept.numel() and pruned.numel():
            assert pruned.max() <= kept.min()
    else:
        for k, w in ws.items():
            assert int((~masks[k]).sum()) == int(s * w.numel() + 0.5)
            if masks[k].any() and (~masks[k]).any():
                assert w.detach().abs()[~masks[k]].max() <= w.detach().abs()[masks[k]].min()


def test_half_of_integer_weights_is_half():
    # the open_lth failure mode: a <= threshold prunes 72.5% for a 50% target
    w = torch.tensor([0.0] * 10 + [1.0] * 19 + [2.0] * 11)
    m = M.unstructured({"w": w}, 0.5)["w"]
    assert int((~m).sum()) == 20
    assert m[:10].sum() == 0 and m[10:20].sum() == 0 and m[20:].all()  # earlier ties pruned first


def test_deterministic_ties_and_dtypes():
    for dt in (torch.float16, torch.bfloat16, torch.float64):
        s = {"a": torch.ones(6, dtype=dt), "b": torch.ones(4, dtype=dt)}
        m = M.unstructured(s, 0.3)
        assert m["a"].tolist() == [False] * 3 + [True] * 3 and m["b"].all()


def test_iterative_rounds_monotone_density():
    net = _int_mlp(1)
    n = sum(p.numel() for p in targets(net).values())
    prev, p, T = None, 0.2, 6
    for t in range(1, T + 1):
        new = M.magnitude(net, 1 - (1 - p) ** t, previous=prev)
        if prev is not None:
            assert all(bool((new[k] <= prev[k]).all()) for k in new)  # monotone
        prev = new
    assert abs(kept_fraction(prev) - (1 - p) ** T) <= 1 / n


def test_overrides_and_skip():
    net = torch.nn.Sequential(torch.nn.Linear(10, 10), torch.nn.Linear(10, 10))
    m = M.magnitude(net, 0.5, overrides={"1": 0.9})
    assert int((~m["1.weight"]).sum()) == 90
    assert int((~m["0.weight"]).sum()) == 50
    assert set(M.magnitude(net, 0.5, exclude="0")) == {"1.weight"}


def test_previous_cannot_revive():
    net = torch.nn.Linear(10, 10)
    m = M.magnitude(net, 0.5)
    with pytest.raises(ValueError, match="already pruned"):
        M.magnitude(net, 0.2, previous=m)


@pytest.mark.parametrize("s", [-0.1, 1.0, 1.5])
def test_bad_sparsity(s):
    with pytest.raises(ValueError, match=r"sparsity must be in \[0, 1\)"):
        M.magnitude(torch.nn.Linear(3, 3), s)


def test_bad_mask_shape():
    net = torch.nn.Linear(4, 3)
    with pytest.raises(ValueError, match="has shape"):
        M.magnitude(net, 0.5, previous={"weight": torch.ones(3, 3, dtype=torch.bool)})
    with pytest.raises(TypeError, match="bool"):
        M.magnitude(net, 0.5, previous={"weight": torch.ones(3, 4)})


def test_bad_scope():
    with pytest.raises(ValueError, match="scope"):
        M.unstructured({"w": torch.ones(3)}, 0.5, scope="local")


def test_global_over_many_tensors_mixed_dtypes():
    g = torch.Generator().manual_seed(0)
    s = {f"l{i}": torch.randn(5 + i, generator=g).to(dt) for i, dt in enumerate([torch.float16, torch.float32, torch.float64, torch.bfloat16])}
    m = M.unstructured(s, 0.5)
    flat = torch.cat([v.double() for v in s.values()])
    keep = torch.cat([m[k] for k in s])
    assert int((~keep).sum()) == int(0.5 * flat.numel() + 0.5)
    assert flat[~keep].max() <= flat[keep].min()


@pytest.mark.parametrize("kind", ["gauss", "ints", "sorted", "inf"])
def test_large_input_bracketed_kth_is_exact(kind):
    # above 2**20 entries the k-th value comes from a sampled bracket: must equal torch.kthvalue
    g = torch.Generator().manual_seed(0)
    n = (1 << 20) + 12345
    x = {"gauss": lambda: torch.randn(n, generator=g),
         "ints": lambda: torch.randint(0, 5, (n,), generator=g).float(),
         "sorted": lambda: torch.sort(torch.randn(n, generator=g)).values,  # adversarial for a strided sample
         "inf": lambda: torch.randn(n, generator=g).masked_fill(torch.rand(n, generator=g) < 0.3, float("-inf"))}[kind]()
    for s in (0.01, 0.5, 0.93):
        k = int(s * n + 0.5)
        keep = M.prune_smallest(x, k)
        assert int((~keep).sum()) == k
        t = torch.kthvalue(x, k).values
        assert (x[~keep] <= t).all() and (x[keep] >= t).all()


def test_nan_scores_raise():
    with pytest.raises(ValueError, match="NaN"):
        M.unstructured({"w": torch.tensor([1.0, float("nan"), 2.0])}, 0.3)
    with pytest.raises(ValueError, match="NaN"):
        M.unstructured({"w": torch.tensor([1.0, float("nan"), 2.0])}, 0.0)


@pytest.mark.parametrize("scope", ["global", "layerwise"])
def test_previous_keeps_pruned_entries_pruned_even_with_high_scores(scope):
    # entries pruned in an earlier round now have the *highest* scores: they must stay pruned
    s = {"a": torch.arange(10.0), "b": torch.arange(10.0, 20.0)}
    prev = {"a": torch.arange(10) >= 2, "b": torch.arange(10) >= 2}
    hi = {k: v.masked_fill(~prev[k], 100.0) for k, v in s.items()}
    m = M.unstructured(hi, 0.5, scope=scope, previous=prev)
    for k in m:
        assert not m[k][~prev[k]].any()
        assert bool((m[k] <= prev[k]).all())
    assert sum(int((~v).sum()) for v in m.values()) == 10


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), scope=st.sampled_from(["global", "layerwise"]), s=st.floats(0.3, 0.9))
def test_previous_pruned_stays_pruned_with_signed_scores(seed, scope, s):
    """Signed scores (movement, GraSP): a previously pruned entry whose new score is positive must
    stay pruned. Filling pruned entries with 0 instead of -inf revives it (a mutant the suite missed)."""
    g = torch.Generator().manual_seed(seed)
    sc = {"a": torch.randn(6, 5, generator=g) - 2.0, "b": torch.randn(7, generator=g) - 2.0}  # mostly negative
    prev = {}
    for k, v in sc.items():
        keep = torch.ones(v.numel(), dtype=torch.bool)
        keep[torch.randperm(v.numel(), generator=g)[: max(1, int(0.2 * v.numel()))]] = False
        prev[k] = keep.reshape(v.shape)
        v[~prev[k]] = 5.0  # previously pruned, now scored above everything
    m = M.unstructured(sc, s, scope=scope, previous=prev)
    for k in sc:
        assert not bool((m[k] & ~prev[k]).any()), k
        if scope == "layerwise":
            assert int((~m[k]).sum()) == int(s * sc[k].numel() + 0.5)


def test_previous_pruned_stays_pruned_small_case():
    s = torch.tensor([-5.0, -3.0, 2.0, 4.0])
    prev = torch.tensor([True, True, False, True])
    m = M.unstructured({"w": s}, 0.5, previous={"w": prev})["w"]
    assert m.tolist() == [False, True, False, True]  # the 0-fill mutant gives [False, False, True, True]


def test_prune_smallest_names_flat_and_k():
    """Issue 20: a NaN or an empty flat used to be reported as 'scores' / a bare k range."""
    with pytest.raises(ValueError, match="flat contains NaN"):
        M.prune_smallest(torch.tensor([1.0, float("nan")]), 1)
    with pytest.raises(ValueError, match=r"k must be in \[0, 0\] \(the size of flat\)"):
        M.prune_smallest(torch.zeros(0), 1)
    with pytest.raises(TypeError, match="flat must be a torch.Tensor"):
        M.prune_smallest([1.0, 2.0], 1)
    assert M.prune_smallest(torch.tensor([2.0, 1.0]), 0).all()  # k = 0 prunes nothing
