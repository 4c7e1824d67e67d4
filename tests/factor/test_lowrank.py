import pytest
import torch

from overparam.factor import LowRank, LowRankLinear
from overparam.testing.factor_oracles import lowrank_grads, symmetric_grads

D = torch.float64


def _dense_grad(W, G0):
    # loss(W) = <G0, W> + ½‖W‖²  =>  ∂loss/∂W = G0 + W
    return G0 + W.detach()


def _loss(W, G0):
    return (G0 * W).sum() + 0.5 * W.square().sum()


def test_lowrank_linear_forward_and_grads_match_dense():
    layer = LowRankLinear(7, 5, rank=9, init="small", scale=0.3, generator=0, dtype=D)
    x = torch.randn(4, 7, dtype=D)
    W = layer.left @ layer.right.T
    torch.testing.assert_close(layer(x), x @ W.T + layer.bias, rtol=0, atol=1e-12)
    G0 = torch.randn(5, 7, dtype=D)
    _loss(layer.weight, G0).backward()
    gL, gR = lowrank_grads(layer.left.detach(), layer.right.detach(), _dense_grad(W, G0))
    torch.testing.assert_close(layer.left.grad, gL, rtol=0, atol=1e-10)
    torch.testing.assert_close(layer.right.grad, gR, rtol=0, atol=1e-10)


def test_symmetric_pair_and_grads():
    m = LowRank((6, 6), rank=3, symmetric=True, init="small", scale=0.5, generator=1, dtype=D)
    assert set(dict(m.named_parameters())) == {"left"}
    (L, R), = m.factor_pairs()
    assert L is R
    U = m.left.detach()
    torch.testing.assert_close(m(), U @ U.T, rtol=0, atol=1e-12)
    G0 = torch.randn(6, 6, dtype=D)
    _loss(m(), G0).backward()
    torch.testing.assert_close(m.left.grad, symmetric_grads(U, _dense_grad(U @ U.T, G0)), rtol=0, atol=1e-10)


def test_state_dict_keys_and_svd_init():
    W = torch.randn(5, 4, dtype=D)
    layer = LowRankLinear(4, 5, rank=4, init="svd", weight=W)
    assert list(layer.state_dict()) == ["left", "right", "bias"]
    torch.testing.assert_close(layer.weight, W, rtol=0, atol=1e-12)
    x = torch.randn(3, 4, dtype=D)
    torch.testing.assert_close(layer(x), x @ W.T, rtol=0, atol=1e-12)


def test_global_rng_only_for_generator_none():
    state = torch.get_rng_state()
    LowRankLinear(4, 5, rank=2, generator=0)
    assert torch.equal(state, torch.get_rng_state())
    torch.manual_seed(0)  # construction rule: None draws from (and advances) torch's default generator
    seeded = torch.get_rng_state()
    a = LowRank((3, 3), 2, init="balanced", generator=None)()
    assert not torch.equal(seeded, torch.get_rng_state())
    torch.manual_seed(0)
    assert torch.equal(a, LowRank((3, 3), 2, init="balanced")())


@pytest.mark.parametrize("kwargs,name", [({"in_features": 0}, "in_features"), ({"in_features": 2.5}, "in_features"),
                                         ({"out_features": -3}, "out_features"), ({"out_features": "3"}, "out_features")])
def test_lowrank_linear_names_the_bad_feature_count(kwargs, name):
    with pytest.raises((ValueError, TypeError), match=name):
        LowRankLinear(**{"in_features": 4, "out_features": 3, "rank": 2, **kwargs})
