import torch
import pytest

from overparam.testing import tanh_mlp
from overparam.testing.hessian_oracles import bn_net, small_cnn
from overparam.backend.random import gaussian, make_generator

F = torch.nn.functional


def _data(shape, out, seed, classes=None):
    g = make_generator(seed)
    x = gaussian((12, *shape), generator=g, dtype=torch.float64)
    if classes:
        y = torch.randint(0, classes, (12,), generator=g)
    else:
        y = gaussian((12, out), generator=g, dtype=torch.float64)
    return x, y


@pytest.fixture(params=["mlp", "cnn", "bn"])
def model_case(request):
    """(model, loss_fn, batch) in float64 for the three acceptance models."""
    if request.param == "mlp":
        return tanh_mlp([3, 5, 4, 2], generator=1), F.mse_loss, _data((3,), 2, 2)
    if request.param == "cnn":
        return small_cnn(generator=3), F.cross_entropy, _data((1, 8, 8), None, 4, classes=3)
    return bn_net(generator=5), F.mse_loss, _data((4,), 1, 6)
