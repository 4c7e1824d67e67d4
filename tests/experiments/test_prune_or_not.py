import pytest
import torch

from overparam.experiments import Context, get


def _ctx(tmp_path, **over):
    exp = get("prune-or-not")
    return exp, Context(out=tmp_path, seed=0, device=torch.device("cpu"), quick=True, params={**exp.params_for(True), **over})


def test_prune_or_not_claim_small(tmp_path):
    """Reduced run (two budgets, fewer steps, no large-dense reference): large-sparse beats
    small-dense at equal non-zeros by at least 20% in test MSE, with non-zero counts exact."""
    exp, ctx = _ctx(tmp_path, small_widths=[8, 16], steps=900, dense_reference=False)
    res = exp.run(ctx)
    assert res["claim_holds"], "\n".join(res["summary"])
    assert res["nnz_exact"] and res["budgets"] == [8 * 34, 16 * 34]
    assert all(r <= 0.8 for r in res["ratio"])
    assert all(0.0 < v < 1.0 for v in res["large_sparse_mse"] + res["small_dense_mse"])


def test_prune_or_not_bad_params(tmp_path):
    exp, ctx = _ctx(tmp_path, small_widths=[256])
    with pytest.raises(ValueError, match="small_widths"):
        exp.run(ctx)
    exp, ctx = _ctx(tmp_path, scorer="movement")
    with pytest.raises(ValueError, match="scorer"):
        exp.run(ctx)
