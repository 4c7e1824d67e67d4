import pytest
import torch
from torch import nn

import overparam.hessian as oh
from overparam.backend.random import construction_generator, gaussian
from overparam.testing import assert_no_side_effects, dense_hessian, max_rel_error, tanh_mlp
from overparam.testing.hessian_oracles import dense_ggn, small_cnn

F = nn.functional


@pytest.mark.parametrize("loss", ["mse", "cross_entropy"])
def test_ggn_matches_dense_jacobian_oracle(loss):
    g = construction_generator(0)
    net = tanh_mlp([4, 6, 3], generator=1)
    x = gaussian((10, 4), generator=g, dtype=torch.float64)
    y = gaussian((10, 3), generator=g, dtype=torch.float64) if loss == "mse" else torch.randint(0, 3, (10,), generator=g)
    Gd = dense_ggn(net, loss, (x, y))
    with assert_no_side_effects(net):
        G = oh.ggn(net, loss, (x, y))
        dense = G.to_dense()
    assert max_rel_error(dense, Gd) < 1e-12
    assert float(torch.linalg.eigvalsh(dense).min()) > -1e-12 * float(dense.abs().max())  # PSD


def test_ggn_loader_and_cnn():
    g = construction_generator(2)
    net = small_cnn(generator=3)
    x = gaussian((9, 1, 8, 8), generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (9,), generator=g)
    G = oh.ggn(net, F.cross_entropy, [(x[:5], y[:5]), (x[5:], y[5:])])
    assert max_rel_error(G.to_dense(), dense_ggn(net, "cross_entropy", (x, y))) < 1e-12


def test_ggn_equals_hessian_for_linear_model_mse():
    g = construction_generator(4)
    lin = tanh_mlp([5, 2], generator=5)  # a single Linear layer: outputs linear in θ
    x, y = gaussian((12, 5), generator=g, dtype=torch.float64), gaussian((12, 2), generator=g, dtype=torch.float64)
    G = oh.ggn(lin, nn.MSELoss(), (x, y)).to_dense()
    assert max_rel_error(G, dense_hessian(lin, F.mse_loss, (x, y))) < 1e-12


@pytest.mark.parametrize("bad", ["l1", F.l1_loss, nn.MSELoss(reduction="none"), nn.CrossEntropyLoss(label_smoothing=0.1),
                                 nn.CrossEntropyLoss(weight=torch.ones(2)), lambda o, t: F.mse_loss(o, t), 3])
def test_ggn_refuses_losses_without_a_closed_form_output_hessian(bad):
    lin = tanh_mlp([2, 1], generator=0)
    with pytest.raises(ValueError, match="loss_fn"):
        oh.ggn(lin, bad, (torch.zeros(2, 2, dtype=torch.float64), torch.zeros(2, 1, dtype=torch.float64)))


def test_ggn_loss_fn_spellings_agree_and_params_select():
    g = construction_generator(8)
    net = tanh_mlp([4, 5, 3], generator=9)
    x, y = gaussian((7, 4), generator=g, dtype=torch.float64), torch.randint(0, 3, (7,), generator=g)
    dense = {str(f): oh.ggn(net, f, (x, y)).to_dense() for f in ("cross_entropy", F.cross_entropy, nn.CrossEntropyLoss())}
    full = dense["cross_entropy"]
    assert max_rel_error(full, dense_ggn(net, "cross_entropy", (x, y))) < 1e-12
    assert all(torch.equal(d, full) for d in dense.values())
    last = oh.ggn(net, "cross_entropy", (x, y), params="2")  # the last layer: 5*3 + 3 trailing coordinates
    assert last.names == ["2.weight", "2.bias"]
    torch.testing.assert_close(last.to_dense(), full[-18:, -18:], rtol=1e-12, atol=1e-14)
    no_bias = oh.ggn(net, "cross_entropy", (x, y), exclude="bias")
    assert no_bias.names == ["0.weight", "2.weight"]
    with pytest.raises(ValueError, match="params: 'nope'"):
        oh.ggn(net, "cross_entropy", (x, y), params="nope")


def test_ggn_mse_on_ragged_loader_is_per_sample_mean():
    g = construction_generator(6)
    net = tanh_mlp([4, 5, 3], generator=7)
    x, y = gaussian((11, 4), generator=g, dtype=torch.float64), gaussian((11, 3), generator=g, dtype=torch.float64)
    loader = [(x[:4], y[:4]), (x[4:8], y[4:8]), (x[8:], y[8:])]  # sizes 4, 4, 3
    G = oh.ggn(net, F.mse_loss, loader)
    assert max_rel_error(G.to_dense(), dense_ggn(net, "mse", (x, y))) < 1e-12
