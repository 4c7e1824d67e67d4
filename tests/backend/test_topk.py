import math

import pytest
import torch
from hypothesis import given, settings, strategies as st

from overparam.backend.topk import fraction_count, topk_mask


def _oracle(values: list[float], k: int, largest: bool, ties: str) -> list[bool]:
    """Brute force: rank every entry by (value, index) and take the first k; "keep" also takes
    every entry equal to the k-th."""
    order = sorted(range(len(values)), key=lambda i: ((-values[i] if largest else values[i]), i))
    chosen = set(order[:k])
    if ties == "keep" and k:
        kth = values[order[k - 1]]
        chosen |= {i for i, v in enumerate(values) if v == kth}
    return [i in chosen for i in range(len(values))]


values_st = st.lists(st.sampled_from([-math.inf, -2.0, -0.5, 0.0, 0.0, 1.0, 1.0, 3.0, math.inf]), min_size=1, max_size=12)


@settings(max_examples=200, deadline=None)
@given(values=values_st, data=st.data(), largest=st.booleans(), ties=st.sampled_from(["index", "keep"]),
       dtype=st.sampled_from([torch.float64, torch.float32, torch.float16, torch.bfloat16]))
def test_flat_selection_matches_brute_force_with_ties(values, data, largest, ties, dtype):
    k = data.draw(st.integers(0, len(values)))
    got = topk_mask(torch.tensor(values, dtype=dtype), k, largest=largest, ties=ties)
    assert got.tolist() == _oracle(values, k, largest, ties)
    if ties == "index":
        assert int(got.sum()) == k


@settings(max_examples=100, deadline=None)
@given(rows=st.integers(1, 4), cols=st.integers(1, 5), data=st.data(), largest=st.booleans(),
       ties=st.sampled_from(["index", "keep"]), dim=st.sampled_from([0, 1, -1]))
def test_per_slice_selection_matches_brute_force(rows, cols, data, largest, ties, dim):
    vals = data.draw(st.lists(st.sampled_from([0.0, 1.0, 2.0, -1.0]), min_size=rows * cols, max_size=rows * cols))
    s = torch.tensor(vals, dtype=torch.float64).reshape(rows, cols)
    size = s.shape[dim]
    k = data.draw(st.integers(0, size))
    got = topk_mask(s, k, largest=largest, dim=dim, ties=ties)
    moved, got_moved = s.movedim(dim, -1), got.movedim(dim, -1)
    for r in range(moved.shape[0]):
        assert got_moved[r].tolist() == _oracle(moved[r].tolist(), k, largest, ties)


def test_shape_is_kept_and_selection_is_over_all_entries():
    s = torch.tensor([[5., 1.], [5., 5.]])
    assert topk_mask(s, 2).tolist() == [[True, False], [True, False]]  # ties by row-major index


@pytest.mark.parametrize("frac,n,want", [(0.5, 5, 3), (0.2, 10, 2), (0.25, 2, 1), (0.0, 7, 0), (1.0, 7, 7),
                                         (0.15, 60, 9), (0.5, 1, 1), (0.49, 1, 0)])
def test_fraction_count_rounds_half_up(frac, n, want):
    assert fraction_count(frac, n) == want


def test_large_input_uses_the_bracket_and_stays_exact():
    g = torch.Generator().manual_seed(0)
    s = torch.randint(0, 1000, (1 << 20,), generator=g).double()  # many ties, past the bracketing size
    k = 300_001
    got = topk_mask(s, k, largest=False)
    assert int(got.sum()) == k
    t = torch.kthvalue(s, k).values
    assert bool((s[got] <= t).all()) and bool((s[~got] >= t).all())
    tied = (s == t).nonzero().squeeze(1)
    chosen_ties = got[tied]
    assert bool((chosen_ties[:-1].int() >= chosen_ties[1:].int()).all())  # the tied ones chosen are the first


def test_bad_arguments_name_the_problem():
    with pytest.raises(ValueError, match="NaN"):
        topk_mask(torch.tensor([1.0, float("nan")]), 1)
    with pytest.raises(ValueError, match="NaN"):
        topk_mask(torch.tensor([[1.0, float("nan")]]), 1, dim=1)
    with pytest.raises(ValueError, match=r"k must be in \[0, 2\]"):
        topk_mask(torch.ones(2), 3)
    with pytest.raises(TypeError, match="k must be an int"):
        topk_mask(torch.ones(2), 1.0)
    with pytest.raises(TypeError, match="scores must be a floating-point"):
        topk_mask(torch.ones(2, dtype=torch.int64), 1)
    with pytest.raises(ValueError, match="ties must be"):
        topk_mask(torch.ones(2), 1, ties="random")
    with pytest.raises(ValueError, match="dim must be"):
        topk_mask(torch.ones(2), 1, dim=1)
    with pytest.raises(ValueError, match="fraction must be in"):
        fraction_count(1.5, 3)
