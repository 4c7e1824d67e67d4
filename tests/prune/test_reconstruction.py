"""Reconstruction report against hand-computed errors, and the acceptance comparisons at reduced size:
on a trained MLP (digits) at 50% and 2:4, SparseGPT ≤ 0.5× and Wanda ≤ 0.8× magnitude's mean layer
error; sequential ≤ parallel."""

import copy

import pytest
import torch
from torch import nn

import overparam as op
from overparam.prune.reconstruction import Reconstruction

D = torch.float64


def test_report_matches_hand_computed_errors():
    torch.manual_seed(0)
    dense = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3)).double()
    pruned = copy.deepcopy(dense)
    masks = op.prune.magnitude(pruned, 0.5, scope="layerwise")
    op.prune.apply_masks_(pruned, masks)
    xs = [torch.randn(7, 4, dtype=D), torch.randn(5, 4, dtype=D)]
    rep = op.prune.reconstruction(dense, pruned, [(x, None) for x in xs])
    X = torch.cat(xs)
    W0, W2 = dense[0].weight.detach(), dense[2].weight.detach()
    P0, P2 = pruned[0].weight.detach(), pruned[2].weight.detach()
    h, hp = torch.tanh(dense[0](X)).detach(), torch.tanh(pruned[0](X)).detach()
    rel = lambda a, b: float((a - b).norm() / b.norm())  # noqa: E731
    assert [r.name for r in rep.layers] == ["0", "2"]
    assert rep.layers[0].error == pytest.approx(rel(X @ P0.T, X @ W0.T), rel=1e-12)
    assert rep.layers[0].total_error == pytest.approx(rep.layers[0].error, rel=1e-12)
    assert rep.layers[1].error == pytest.approx(rel(hp @ P2.T, hp @ W2.T), rel=1e-12)
    assert rep.layers[1].total_error == pytest.approx(rel(hp @ P2.T, h @ W2.T), rel=1e-12)
    assert rep.layers[0].kept == pytest.approx(0.5)
    assert rep.mean_error == pytest.approx((rep.layers[0].error + rep.layers[1].error) / 2)
    assert "| mean |" in rep.table()
    with pytest.raises(ValueError, match="pruned"):
        op.prune.reconstruction(dense, nn.Sequential(nn.Linear(4, 6)), (xs[0], None))


def test_plot_draws_one_bar_group_per_layer():
    plt = pytest.importorskip("matplotlib.pyplot")
    rep = Reconstruction([op.prune.LayerError("a", 0.5, 0.1, 0.2), op.prune.LayerError("b", 0.5, 0.3, 0.4)])
    ax = op.prune.plot_reconstruction({"x": rep, "y": rep})
    assert len(ax.patches) == 4
    plt.close("all")
    with pytest.raises(TypeError, match="reports"):
        op.prune.plot_reconstruction({})


@pytest.mark.parametrize("pattern", [{"sparsity": 0.5}, {"n": 2, "m": 4}], ids=["50%", "2:4"])
def test_gains_over_magnitude_need_correlated_or_uneven_inputs(pattern):
    """One Linear(64, 32) on four input distributions: the error ratios to magnitude are ~1 on
    isotropic inputs (nothing to exploit) and fall with correlation (SparseGPT) and with a few
    high-norm outlier inputs (Wanda), the regime of LLM activations."""
    g = torch.Generator().manual_seed(0)
    net = nn.Linear(64, 32).double()
    with torch.no_grad():
        net.weight.copy_(torch.randn(32, 64, generator=g, dtype=D))
    z = torch.randn(1024, 64, generator=g, dtype=D)
    scale = torch.ones(64, dtype=D)
    scale[::16] = 20.0                                           # 4 outlier features
    mix = torch.randn(64, 64, generator=g, dtype=D) * torch.logspace(0, -4, 64, dtype=D)   # low effective rank
    inputs = {"isotropic": z, "outliers": z * scale, "correlated": z @ mix.T, "both": (z @ mix.T) * scale}
    ratio = {}
    for name, X in inputs.items():
        cal, held = (X[:512], None), (X[512:], None)
        err = {k: _mean_error(net, k, held, cal, **pattern).mean_error for k in ("magnitude", "wanda", "sparsegpt")}
        ratio[name] = (err["sparsegpt"] / err["magnitude"], err["wanda"] / err["magnitude"])
    assert 0.9 < ratio["isotropic"][0] < 1.1 and 0.9 < ratio["isotropic"][1] < 1.1, ratio
    assert ratio["correlated"][0] < 0.5 and ratio["both"][0] < 0.5, ratio
    assert ratio["outliers"][1] < 0.5 and ratio["both"][1] < 0.8, ratio


@pytest.fixture(scope="module")
def digits_mlp():
    from _digits import calibration_mlp
    return calibration_mlp()


def _mean_error(net, method, held, cal, **kw):
    p = copy.deepcopy(net)
    if method == "magnitude":
        op.prune.apply_masks_(p, op.prune.nm_masks(p, 2, 4) if "n" in kw else op.prune.magnitude(p, 0.5, scope="layerwise"))
    elif method == "wanda":
        op.prune.apply_masks_(p, op.prune.wanda(p, cal, **kw))
    else:
        op.prune.sparsegpt_(p, cal, **kw)
    return op.prune.reconstruction(net, p, held)


@pytest.mark.parametrize("pattern", [{"sparsity": 0.5}, {"n": 2, "m": 4}], ids=["50%", "2:4"])
def test_trained_mlp_sparsegpt_and_wanda_beat_magnitude(digits_mlp, pattern):
    net, cal, held = digits_mlp
    err = {k: _mean_error(net, k, held, cal, **pattern).mean_error for k in ("magnitude", "wanda", "sparsegpt")}
    assert err["sparsegpt"] <= 0.5 * err["magnitude"], err
    assert err["wanda"] <= 0.8 * err["magnitude"], err


@pytest.mark.parametrize("sparsity", [0.5, 0.7])
def test_sequential_is_no_worse_than_parallel(digits_mlp, sparsity):
    """SparseGPT fitted on the pruned model's own inputs (sequential) has the lower mean per-layer
    error ‖WX̂ − ŴX̂‖/‖WX̂‖ on held-out data. (The accumulated error ‖WX − ŴX̂‖ of these small MLPs
    was not lower: 2–10% higher on a 4-layer digits MLP, docs/prune.md.)"""
    net, cal, held = digits_mlp
    seq = _mean_error(net, "sparsegpt", held, cal, sparsity=sparsity)
    par = _mean_error(net, "sparsegpt", held, cal, sparsity=sparsity, sequential=False)
    assert seq.mean_error <= par.mean_error
