"""hessian.distributed in one process: the wrapper is the local operator (the 2-process checks are
in tests/distributed/test_dist_hessian.py)."""

import pytest
import torch

from overparam import hessian as H
from overparam.testing import dense_hessian, tanh_mlp

mse = torch.nn.functional.mse_loss


def _case():
    net = tanh_mlp([3, 4, 1], generator=0)
    g = torch.Generator().manual_seed(0)
    return net, torch.randn(9, 3, generator=g, dtype=torch.float64), torch.randn(9, 1, generator=g, dtype=torch.float64)


def test_one_process_equals_the_dense_hessian_and_the_local_operator():
    net, x, y = _case()
    Hd = H.distributed_hessian(net, mse, [(x[:4], y[:4]), (x[4:], y[4:])])
    assert Hd.weight == 1.0 and Hd.names == H.hessian(net, mse, (x, y)).names
    torch.testing.assert_close(Hd.to_dense(), dense_hessian(net, mse, (x, y)), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(Hd.gradient(), H.hessian(net, mse, (x, y)).gradient(), rtol=1e-12, atol=1e-14)
    G = H.distributed_ggn(net, mse, (x, y), samples=[9])
    torch.testing.assert_close(G.to_dense(), H.ggn(net, mse, (x, y)).to_dense(), rtol=0, atol=0)


def test_sum_losses_have_weight_one_and_refuse_declared_counts():
    net, x, y = _case()
    local = H.hessian(net, lambda o, t: (o - t).square().sum(), (x, y), reduction="sum")
    assert H.DistributedOperator(local).weight == 1.0
    with pytest.raises(ValueError, match="sum"):
        H.DistributedOperator(local, samples=[9])


def test_bad_declarations_are_clear_errors():
    net, x, y = _case()
    with pytest.raises(ValueError, match=r"samples\[0\] = 8 but rank 0 holds 9"):
        H.distributed_hessian(net, mse, (x, y), samples=[8])
    with pytest.raises(ValueError, match="one count per rank"):
        H.distributed_hessian(net, mse, (x, y), samples=[9, 3])
    with pytest.raises(TypeError, match="samples must be a list"):
        H.distributed_hessian(net, mse, (x, y), samples=9)
    with pytest.raises(TypeError, match="local must be an overparam Operator"):
        H.DistributedOperator(torch.eye(3))
    dense = H.as_operator(torch.eye(3, dtype=torch.float64))
    with pytest.raises(TypeError, match="pass samples="):
        H.DistributedOperator(dense)
    assert H.DistributedOperator(dense, samples=[4]).weight == 1.0
