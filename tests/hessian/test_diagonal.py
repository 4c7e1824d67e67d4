import pytest
import torch
from torch import nn

import overparam.hessian as oh
from overparam.backend.random import gaussian
from overparam.testing import dense_hessian, symmetric_with_spectrum, tanh_mlp


def test_exact_on_diagonal_matrix_with_one_probe():
    d = gaussian((30,), generator=0, dtype=torch.float64)
    est = oh.diagonal(torch.diag(d), probes=1, generator=1)
    torch.testing.assert_close(est.mean[0], d, rtol=1e-14, atol=1e-14)


def test_unbiased_within_standard_errors():
    A = symmetric_with_spectrum(torch.linspace(-1, 2, 25), generator=2)
    est = oh.diagonal(A, probes=4000, block=1000, generator=3)
    z = (est.mean[0] - torch.diagonal(A)) / est.stderr[0]
    assert float(z.abs().max()) < 4.5 and float(z.square().mean()) < 2.0


def test_parameter_shaped_on_model():
    net = tanh_mlp([3, 4, 2], generator=0)
    batch = (gaussian((8, 3), generator=1, dtype=torch.float64), gaussian((8, 2), generator=2, dtype=torch.float64))
    H = oh.hessian(net, nn.functional.mse_loss, batch, backend="jvp", block=500)  # probes vmapped in blocks
    est = oh.diagonal(H, probes=3000, block=1000, generator=4)
    assert [t.shape for t in est.mean] == [p.shape for p in net.parameters()]
    flat = torch.cat([t.reshape(-1) for t in est.mean])
    se = torch.cat([t.reshape(-1) for t in est.stderr])
    z = (flat - torch.diagonal(dense_hessian(net, nn.functional.mse_loss, batch))) / se.clamp(min=1e-12)
    assert float(z.abs().max()) < 4.5


def test_exact_diagonal_with_probes_none_in_uneven_blocks():
    net = tanh_mlp([3, 5, 2], generator=0)
    batch = (gaussian((8, 3), generator=1, dtype=torch.float64), gaussian((8, 2), generator=2, dtype=torch.float64))
    Hd = dense_hessian(net, nn.functional.mse_loss, batch)
    H = oh.hessian(net, nn.functional.mse_loss, batch)
    for block in (1, 7, 64):  # one row at a time, several uneven blocks, one block
        est = oh.diagonal(H, probes=None, block=block)
        assert [t.shape for t in est.mean] == [p.shape for p in net.parameters()]
        torch.testing.assert_close(torch.cat([t.reshape(-1) for t in est.mean]), torch.diagonal(Hd), rtol=1e-12, atol=1e-15)
        assert est.n_matvecs == H.n and est.samples is None and all(bool((s == 0).all()) for s in est.stderr)
    A = symmetric_with_spectrum(torch.linspace(-1, 2, 9), generator=2)
    torch.testing.assert_close(oh.diagonal(A, probes=None, block=4).mean[0], torch.diagonal(A), rtol=0, atol=1e-15)


def test_bad_probes_and_block():
    A = torch.eye(4, dtype=torch.float64)
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="probes"):
            oh.diagonal(A, probes=bad)
    for bad in (0, -3, 1.5):
        with pytest.raises(ValueError, match="block"):
            oh.diagonal(A, probes=None, block=bad)
