import pytest
import torch

from overparam import testing
from overparam.testing.hessian_oracles import (CURVATURE_MODELS, attention_net, curvature_case, dense_ggn, embedding_net,
                                               ln_gelu_mlp)

STEP = 1e-5


def _fd_jacobian(fn, theta):
    """Central differences of ``fn`` (any output shape) at ``theta``: ``(m, n)``."""
    eye = torch.eye(theta.numel(), dtype=theta.dtype)
    return torch.stack([((fn(theta + STEP * e) - fn(theta - STEP * e)) / (2 * STEP)).reshape(-1) for e in eye], dim=1)


@pytest.mark.parametrize("name", CURVATURE_MODELS)
def test_dense_ggn_matches_central_differences(name):
    # J from central differences of the outputs, ∇²ℓ from central differences of the loss gradient
    case = curvature_case(name, batch_size=5, generator=20)
    x, y = case.batch
    with testing.assert_no_side_effects(case.model):
        G = dense_ggn(case.model, case.loss, case.batch)
    out_of, theta = testing.outputs_of_flat(case.model, x)
    with torch.no_grad():
        out = out_of(theta)
        J = _fd_jacobian(out_of, theta)
    HL = testing.fd_hessian_of(lambda o: case.loss_fn(o.reshape(out.shape), y), out.reshape(-1), step=STEP)
    assert testing.max_rel_error(G, J.mT @ HL @ J) < 1e-7
    torch.testing.assert_close(G, G.mT, rtol=0, atol=1e-13 * float(G.abs().max()))


def test_dense_ggn_is_the_hessian_of_a_linear_model_with_mse():
    net = testing.tanh_mlp([4, 3], generator=0)
    g = torch.Generator().manual_seed(1)
    batch = (torch.randn(7, 4, generator=g, dtype=torch.float64), torch.randn(7, 3, generator=g, dtype=torch.float64))
    torch.testing.assert_close(dense_ggn(net, "mse", batch), testing.dense_hessian(net, torch.nn.functional.mse_loss, batch),
                               rtol=1e-13, atol=1e-15)


def test_dense_ggn_refuses_bad_arguments():
    net = testing.tanh_mlp([2, 1], generator=0)
    batch = (torch.zeros(3, 2, dtype=torch.float64), torch.zeros(3, 1, dtype=torch.float64))
    with pytest.raises(ValueError, match="loss_fn must be one of"):
        dense_ggn(net, "l1", batch)
    with pytest.raises(ValueError, match="data must be one"):
        dense_ggn(net, "mse", batch[0])


@pytest.mark.parametrize("name", CURVATURE_MODELS)
def test_curvature_cases_are_seeded_fp64_and_leave_the_global_rng_alone(name):
    with testing.assert_no_side_effects():
        a = curvature_case(name, batch_size=4, generator=3)
    b = curvature_case(name, batch_size=4, generator=3)
    c = curvature_case(name, batch_size=4, generator=4)
    sa, sb, sc = a.model.state_dict(), b.model.state_dict(), c.model.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa) and all(torch.equal(u, v) for u, v in zip(a.batch, b.batch))
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)
    assert all(p.dtype == torch.float64 for p in a.model.parameters())
    assert a.batch[0].shape[0] == 4 and a.loss in ("mse", "cross_entropy")
    assert torch.isfinite(a.loss_fn(a.model(a.batch[0]), a.batch[1]))
    assert not any(m.training for m in a.model.modules()) if name == "bn_net" else a.model.training


def test_curvature_case_refuses_bad_arguments():
    with pytest.raises(ValueError, match="name must be one of"):
        curvature_case("resnet", generator=0)
    for bad in (0, -1, 2.0, True):
        with pytest.raises(ValueError, match="batch_size"):
            curvature_case("tanh_mlp", batch_size=bad, generator=0)
    with pytest.raises(ValueError, match="heads"):
        attention_net(width=4, heads=3, generator=0)


def test_layer_norm_gains_are_near_one():
    net = ln_gelu_mlp(generator=0)
    gains = torch.cat([m.weight.detach() for m in net.modules() if isinstance(m, torch.nn.LayerNorm)])
    assert gains.numel() == 8 and float((gains - 1).abs().max()) < 0.5 and float((gains - 1).abs().min()) > 0


def test_attention_is_causal_and_uses_every_position():
    net = attention_net(generator=0)
    x = torch.randn(2, 4, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    x2 = x.clone()
    x2[:, -1] += 1.0  # change only the last position
    block = net[:2]  # input projection and the residual attention block: (N, seq, width)
    with torch.no_grad():
        a, b = block(x), block(x2)
        plain = net[0](x)
    torch.testing.assert_close(a[:, :-1], b[:, :-1], rtol=0, atol=0)  # earlier positions never see it
    assert not torch.allclose(a[:, -1], b[:, -1])
    assert float((a - plain)[:, 1:].abs().min()) > 0  # attention contributes at every position


def test_embedding_net_reads_the_token_rows():
    net = embedding_net(generator=0)
    tokens = torch.tensor([[0, 1, 2], [0, 1, 3]])
    with torch.no_grad():
        out = net(tokens)
    assert out.shape == (2, 3) and not torch.equal(out[0], out[1])
    with pytest.raises(IndexError):
        net(torch.tensor([[0, 1, 7]]))  # vocab is 7
