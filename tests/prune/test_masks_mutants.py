"""Monotone masks at the exact boundary (mutation review): a global round whose ``k`` is one
less than the entries already pruned must refuse, not revive one; with exactly ``k`` it keeps
every earlier pruned entry pruned."""

import pytest
import torch

from overparam.prune import unstructured


def _previous():
    prev = {"a": torch.ones(6, dtype=torch.bool), "b": torch.ones(4, dtype=torch.bool)}
    prev["a"][[0, 3]] = False
    prev["b"][[1, 2]] = False  # 4 of 10 pruned
    return prev


def test_global_round_pruning_one_fewer_than_already_pruned_raises():
    scores = {"a": torch.arange(6.0), "b": torch.arange(4.0) + 10}
    with pytest.raises(ValueError, match="already pruned"):
        unstructured(scores, 0.3, previous=_previous())  # k = 3 < 4


def test_global_round_at_the_boundary_keeps_previous_pruned():
    scores = {"a": torch.arange(6.0), "b": torch.arange(4.0) + 10}
    prev = _previous()
    m = unstructured(scores, 0.4, previous=prev)  # k = 4 = already pruned
    for k in scores:
        assert torch.equal(m[k], prev[k])


def test_masks_come_back_in_the_order_of_the_scores_with_overrides():
    # an overridden tensor is handled before the global pool; the result must still follow the
    # scores' order (parameter order), as every caller keys masks by parameter name in order.
    scores = {"a": torch.arange(6.0), "b": torch.arange(4.0), "c": torch.arange(5.0)}
    for scope in ("global", "layerwise"):
        m = unstructured(scores, 0.5, scope=scope, overrides={"b": 0.25})
        assert list(m) == ["a", "b", "c"]
        assert int((~m["b"]).sum()) == 1
