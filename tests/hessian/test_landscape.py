"""overparam.hessian.landscape: slices against direct loss evaluations of the flat-parameter oracle."""

import sys
import warnings

import pytest
import torch
from torch import nn

import overparam.hessian as oh
from overparam.backend import vec
from overparam.hessian.landscape import filter_normalize
from overparam.testing import assert_no_side_effects, dense_hessian, max_rel_error, tanh_mlp
from overparam.testing.hessian_oracles import curvature_case
from overparam.testing.oracles import loss_of_flat

D = torch.float64
F = nn.functional


@pytest.fixture(scope="module")
def case():
    net = tanh_mlp([3, 5, 2], generator=0)
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(12, 3, generator=g, dtype=D), torch.randn(12, 2, generator=g, dtype=D)
    return net, (x, y)


def test_hessian_directions_and_values(case):
    net, data = case
    f, theta = loss_of_flat(net, F.mse_loss, data)
    w, Q = torch.linalg.eigh(dense_hessian(net, F.mse_loss, data))
    before = {k: v.clone() for k, v in net.state_dict().items()}
    with assert_no_side_effects(net):
        ls = oh.loss_landscape(net, F.mse_loss, data, dims=2, steps=5, span=(-0.2, 0.4), generator=0)
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())      # bitwise
    assert ls.kind == "hessian" and max_rel_error(ls.eigenvalues, w.flip(0)[:2]) < 1e-8
    d1, d2 = (vec.flatten(d) for d in ls.directions)
    assert abs(abs(float(d1 @ Q[:, -1])) - 1) < 1e-8 and abs(abs(float(d2 @ Q[:, -2])) - 1) < 1e-8
    assert torch.equal(ls.alphas, torch.linspace(-0.2, 0.4, 5, dtype=D))
    with torch.no_grad():
        ref = torch.stack([torch.stack([f(theta + a * d1 + b * d2) for b in ls.betas]) for a in ls.alphas])
    assert max_rel_error(ls.values, ref) < 1e-12
    assert float(ls.center) == pytest.approx(float(f(theta)), rel=1e-14)


def test_curvature_along_the_top_eigenvector(case):
    net, data = case
    h = 1e-3
    ls = oh.loss_landscape(net, F.mse_loss, data, steps=3, span=h, generator=0)
    second = (ls.values[0] - 2 * ls.values[1] + ls.values[2]) / h**2       # d²L/dα² = vᵀHv = λ_max
    assert ls.betas is None and ls.values.shape == (3,)
    assert abs(float(second - ls.eigenvalues[0])) < 1e-5 * float(ls.eigenvalues[0])


def test_random_filter_normalised_directions_and_given_ones():
    c = curvature_case("small_cnn", batch_size=6, generator=2)
    f, theta = loss_of_flat(c.model, c.loss_fn, c.batch)
    rng = torch.random.get_rng_state()
    ls = oh.loss_landscape(c.model, c.loss_fn, c.batch, directions="random", normalize="filter", steps=3, generator=None)
    assert torch.equal(rng, torch.random.get_rng_state())
    params = [p.detach() for p in c.model.parameters()]
    for d, p in zip(ls.directions[0], params):
        if p.ndim < 2:
            assert not d.any()
        else:
            assert max_rel_error(d.reshape(len(d), -1).norm(dim=1), p.reshape(len(p), -1).norm(dim=1)) < 1e-12
    again = oh.loss_landscape(c.model, c.loss_fn, c.batch, directions=[ls.directions[0]], steps=3)
    assert again.kind == "given" and torch.equal(again.values, ls.values)
    flat = oh.loss_landscape(c.model, c.loss_fn, c.batch, directions=[vec.flatten(ls.directions[0])], steps=3)
    assert torch.equal(flat.values, ls.values)
    d = vec.flatten(ls.directions[0])
    with torch.no_grad():
        assert max_rel_error(ls.values, torch.stack([f(theta + a * d) for a in ls.alphas])) < 1e-12
    sub = oh.loss_landscape(c.model, c.loss_fn, c.batch, params="4", directions="random", steps=3, generator=0)
    assert sub.names == ["4.weight", "4.bias"]


def test_filter_normalize_scales_each_filter():
    d = filter_normalize([torch.ones(2, 3, dtype=D), torch.zeros(2, 2, dtype=D), torch.ones(4, dtype=D)],
                         [torch.tensor([[3.0, 4.0, 0.0], [0.0, 0.0, 2.0]], dtype=D), torch.ones(2, 2, dtype=D),
                          torch.ones(4, dtype=D)])
    assert torch.allclose(d[0].norm(dim=1), torch.tensor([5.0, 2.0], dtype=D))
    assert not d[1].any() and not d[2].any()


def test_bad_arguments(case):
    net, data = case
    with pytest.raises(ValueError, match="dims"):
        oh.loss_landscape(net, F.mse_loss, data, dims=3)
    with pytest.raises(ValueError, match="span"):
        oh.loss_landscape(net, F.mse_loss, data, span=(1.0, -1.0))
    with pytest.raises(ValueError, match="normalize"):
        oh.loss_landscape(net, F.mse_loss, data, normalize="layer")
    with pytest.raises(ValueError, match="directions"):
        oh.loss_landscape(net, F.mse_loss, data, directions="pca")
    with pytest.raises(ValueError, match=r"directions\[0\]"):
        oh.loss_landscape(net, F.mse_loss, data, directions=[(torch.ones(3, dtype=D),)])


def test_plot_landscape(case, monkeypatch):
    pytest.importorskip("matplotlib")
    import matplotlib
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    net, data = case
    for dims in (1, 2):
        ls = oh.loss_landscape(net, F.mse_loss, data, dims=dims, steps=3, directions="random", generator=0)
        ax = oh.plot_landscape(ls)
        assert ax is not None and ax.get_xlabel() == "α"
        plt.close("all")
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", None)          # as without matplotlib
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        assert oh.plot_landscape(ls) is None
    assert any("matplotlib" in str(x.message) for x in w)
