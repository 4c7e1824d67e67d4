"""The data-driven LoRA inits (LoRA-GA, EVA, CorDA) through ``lora_``: their statistics against
dense fp64 oracles (closed-form MSE gradient, stacked inputs, covariance), the model untouched
until the wrap, and merge/unmerge round trips to 1e-12."""

import copy

import pytest
import torch
import torch.nn.functional as F

import overparam as op
from overparam.factor import inits

D = torch.float64


def _net(seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.Tanh(), torch.nn.Linear(8, 6)).double()


def _data(n=32, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 8, dtype=D, generator=g), torch.randn(n, 6, dtype=D, generator=g)


def _round_trip(net, x, names):
    with torch.no_grad():
        for n in names:
            m = net.get_submodule(n)
            m.lora_up.add_(torch.randn(m.lora_up.shape, dtype=D, generator=torch.Generator().manual_seed(5)))
    ref = net(x)
    op.factor.merge_(net, unload=False)
    assert (net(x) - ref).abs().max() < 1e-12
    op.factor.unmerge_(net)
    assert (net(x) - ref).abs().max() < 1e-12


def test_lora_ga_uses_the_closed_form_gradient_of_the_last_layer():
    net, (x, y) = _net(), _data()
    h = torch.tanh(net[0](x))
    W = net[2].weight.detach().clone()
    G = 2 * (net[2](h) - y).mT @ h / y.numel()                     # d mean((hWᵀ + b − y)²) / dW
    y0 = net(x)
    names = op.factor.lora_(net, "2", rank=2, alpha=4.0, init="lora_ga", loss_fn=F.mse_loss, data=(x, y),
                            ga_scale="unit", ga_svd="svd")
    assert names == ["2"]
    expect = inits.lora_ga(G.detach(), W, 2, scaling=2.0, scale="unit", svd="svd")
    layer = net[2]
    assert torch.allclose(layer.lora_up.abs(), expect.up.abs(), atol=1e-10)
    assert torch.allclose(layer.lora_down.abs(), expect.down.abs(), atol=1e-10)
    assert (net(x) - y0).abs().max() < 1e-12                           # residual keeps the output
    _round_trip(net, x, names)


def test_lora_ga_svd_and_random_direction_options():
    net, (x, y) = _net(), _data()
    with pytest.raises(ValueError, match="ga_svd must be"):
        op.factor.lora_(net, rank=1, init="lora_ga", loss_fn=F.mse_loss, data=(x, y), ga_svd="exact")
    with pytest.raises(ValueError, match="svd: init='lora_ga'.*ga_svd"):
        op.factor.lora_(net, rank=1, init="lora_ga", loss_fn=F.mse_loss, data=(x, y), svd="randomized")
    a, b = _net(), _net()
    state = torch.random.get_rng_state()
    for m in (a, b):
        op.factor.lora_(m, "2", rank=1, init="lora_ga", loss_fn=F.mse_loss, data=(x, y), ga_direction="random",
                        generator=3)
    assert torch.equal(torch.random.get_rng_state(), state)        # an explicit generator leaves the global stream
    assert torch.equal(a[2].lora_up, b[2].lora_up) and torch.equal(a[2].lora_down, b[2].lora_down)


def test_lora_ga_averages_batches_per_sample():
    net, (x, y) = _net(), _data()
    one, two = _net(), _net()
    op.factor.lora_(one, rank=1, init="lora_ga", loss_fn=F.mse_loss, data=(x, y))
    op.factor.lora_(two, rank=1, init="lora_ga", loss_fn=F.mse_loss, data=[(x[:16], y[:16]), (x[16:], y[16:])])
    for a, b in zip(one.parameters(), two.parameters()):
        assert torch.allclose(a, b, atol=1e-12)


def test_eva_components_are_the_top_right_singular_vectors_of_the_stacked_inputs():
    net, (x, y) = _net(), _data()
    inputs0, inputs2 = x, torch.tanh(net[0](x)).detach()
    y0 = net(x)
    names = op.factor.lora_(net, rank=3, init="eva", data=[(x[:20], y[:20]), (x[20:], y[20:])], rho=1.0)
    assert names == ["0", "2"] and torch.equal(net(x), y0)
    for n, X in (("0", inputs0), ("2", inputs2)):
        Xc = X - X.mean(0)
        Vh = torch.linalg.svd(Xc, full_matrices=False)[2]
        down = net.get_submodule(n).lora_down
        assert torch.allclose((Vh[:3] @ down).abs(), torch.eye(3, dtype=D), atol=1e-10)
        assert torch.equal(net.get_submodule(n).lora_up, torch.zeros(net.get_submodule(n).lora_up.shape, dtype=D))


def test_eva_redistributes_the_rank_budget_and_skips_rank_zero_layers():
    net, (x, y) = _net(), _data()
    x = x * torch.tensor([10.0] + [1e-3] * 7, dtype=D)                 # layer 0's inputs: one dominant direction
    rank, rho = 2, 2.0
    ratios = {}
    for n, X in (("0", x), ("2", torch.tanh(net[0](x)).detach())):
        ratios[n] = inits.pca(X)[1]
    expect = inits.eva_ranks(ratios, rank * 2, {"0": 4, "2": 4})
    names = op.factor.lora_(net, rank=rank, alpha=4.0, init="eva", data=(x, y), rho=rho)
    got = {n: net.get_submodule(n).rank for n in names}
    assert sum(got.values()) == rank * 2 == sum(expect.values())
    assert got == {k: v for k, v in expect.items() if v}
    for n in names:                                                    # α scaled by r_layer / r: α/r kept
        assert net.get_submodule(n).scaling == pytest.approx(2.0)
    if expect["0"] == 0:
        assert isinstance(net[0], torch.nn.Linear)


def test_corda_uses_the_mean_normalized_input_covariance():
    net, (x, y) = _net(), _data()
    W = net[0].weight.detach().clone()
    batches = [(x[:10], y[:10]), (x[10:], y[10:])]
    C = sum((b / b.abs().max()).mT @ (b / b.abs().max()) for b, _ in batches) / 2
    y0 = net(x)
    for mode in ("ipm", "kpm"):
        m = _net()
        op.factor.lora_(m, "0", rank=3, alpha=6.0, init="corda", data=batches, corda_mode=mode)
        expect = inits.corda(W, C, 3, scaling=2.0, mode=mode)
        assert torch.allclose(m[0].lora_up, expect.up, atol=1e-10) and torch.allclose(m[0].lora_down, expect.down, atol=1e-10)
        assert (m(x) - y0).abs().max() < 1e-12
        _round_trip(m, x, ["0"])


def _patches(conv, x):
    """Oracle rows of a ConvNd: one input patch per output position, by explicit slicing (no unfold)."""
    nd = x.ndim - 2
    xp = torch.nn.functional.pad(x, conv._reversed_padding_repeated_twice)
    out = conv(x).shape[2:]
    rows = []
    for b in range(x.shape[0]):
        for pos in torch.cartesian_prod(*[torch.arange(L) for L in out]).reshape(-1, nd).tolist():
            idx = [slice(None), slice(None)]
            idx[0] = b
            idx += [slice(p * s, p * s + d * (k - 1) + 1, d) for p, s, d, k in
                    zip(pos, conv.stride, conv.dilation, conv.kernel_size)]
            rows.append(xp[tuple(idx)].reshape(-1))
    return torch.stack(rows)


@pytest.mark.parametrize("nd", [1, 2, 3])
def test_eva_and_corda_on_conv_layers_use_the_im2col_matrix_view(nd):
    conv_cls = {1: torch.nn.Conv1d, 2: torch.nn.Conv2d, 3: torch.nn.Conv3d}[nd]
    torch.manual_seed(0)
    conv = conv_cls(2, 4, 3, stride=2, padding=1, dilation=1 if nd == 3 else 2).double()
    net = torch.nn.Sequential(conv)
    x = torch.randn((3, 2) + (7,) * nd, dtype=D, generator=torch.Generator().manual_seed(1))
    X = _patches(conv, x)                                           # (3·∏L, 2·3^nd), columns (c, k)
    W = conv.weight.detach().reshape(4, -1)
    torch.testing.assert_close(X @ W.T + conv.bias.detach(),
                               conv(x).movedim(1, -1).reshape(-1, 4), rtol=1e-12, atol=1e-12)
    y0 = net(x)
    eva = copy.deepcopy(net)
    op.factor.lora_(eva, rank=2, init="eva", data=(x, None), rho=1.0)
    Vh = torch.linalg.svd(X - X.mean(0), full_matrices=False)[2]
    assert torch.allclose((Vh[:2] @ eva[0].lora_down).abs(), torch.eye(2, dtype=D), atol=1e-10)
    assert torch.equal(eva(x), y0)
    corda = copy.deepcopy(net)
    op.factor.lora_(corda, rank=2, alpha=4.0, init="corda", data=(x, None))
    Xn = X / X.abs().max()
    expect = inits.corda(W, Xn.mT @ Xn, 2, scaling=2.0)
    torch.testing.assert_close(corda[0].lora_up, expect.up, rtol=1e-9, atol=1e-10)
    torch.testing.assert_close(corda[0].lora_down, expect.down, rtol=1e-9, atol=1e-10)
    assert (corda(x) - y0).abs().max() < 1e-12
    _round_trip(corda, x, ["0"])


def test_activation_inits_refuse_grouped_conv_and_embedding_and_leave_the_model_unchanged():
    net = torch.nn.Sequential(torch.nn.Conv2d(2, 2, 3, groups=2), torch.nn.Flatten(), torch.nn.Linear(18, 3)).double()
    x = torch.randn(4, 2, 5, 5, dtype=D)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    for init in ("eva", "corda"):
        with pytest.raises(ValueError, match="groups=1"):
            op.factor.lora_(net, rank=1, init=init, data=(x, None))
        with pytest.raises(ValueError, match="Linear-like"):
            op.factor.lora_(torch.nn.Sequential(torch.nn.Embedding(5, 3)), rank=1, init=init,
                            data=(torch.tensor([[1, 2]]), None))
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    assert not any(m._forward_hooks for m in net.modules())
    names = op.factor.lora_(net, rank=1, init="lora_ga", loss_fn=lambda o, t: o.square().mean(), data=(x, x))
    assert names == ["0", "2"]
    _round_trip(net, x, names)


def test_eva_whiten_divides_the_components_by_the_root_singular_values():
    net, (x, y) = _net(), _data()
    plain, white = copy.deepcopy(net), copy.deepcopy(net)
    op.factor.lora_(plain, "0", rank=3, init="eva", data=(x, y), rho=1.0)
    op.factor.lora_(white, "0", rank=3, init="eva", data=(x, y), rho=1.0, eva_whiten=True)
    S = torch.linalg.svdvals(x - x.mean(0))[:3]
    torch.testing.assert_close(white[0].lora_down, plain[0].lora_down / S.sqrt(), rtol=1e-12, atol=0)
    with pytest.raises(TypeError, match="eva_whiten must be a bool"):
        op.factor.lora_(copy.deepcopy(net), rank=1, init="eva", data=(x, y), eva_whiten=1)


def test_eva_label_mask_leaves_out_the_masked_rows():
    """Token-level inputs ``(batch, T, 8)`` with labels ``(batch, T)``: rows labelled -100 are
    not in the PCA (oracle: the PCA of the kept rows); a mask that cannot align is refused."""
    net = _net()
    g = torch.Generator().manual_seed(2)
    x = torch.randn(4, 5, 8, dtype=D, generator=g)
    labels = torch.randint(0, 3, (4, 5), generator=g)
    labels[:, :2] = -100
    masked = copy.deepcopy(net)
    op.factor.lora_(masked, "0", rank=2, init="eva", data=(x, labels), rho=1.0, eva_label_mask=-100)
    X = x[labels != -100]
    Vh = torch.linalg.svd(X - X.mean(0), full_matrices=False)[2]
    assert torch.allclose((Vh[:2] @ masked[0].lora_down).abs(), torch.eye(2, dtype=D), atol=1e-10)
    unmasked = copy.deepcopy(net)
    op.factor.lora_(unmasked, "0", rank=2, init="eva", data=(x, labels), rho=1.0)
    assert not torch.allclose(unmasked[0].lora_down.abs(), masked[0].lora_down.abs(), atol=1e-3)
    with pytest.raises(ValueError, match="eva_label_mask.*one target per row"):
        op.factor.lora_(copy.deepcopy(net), "0", rank=2, init="eva", data=(x, labels[:, :3]), eva_label_mask=-100)
    with pytest.raises(ValueError, match="eva_label_mask: each batch needs a targets tensor"):
        op.factor.lora_(copy.deepcopy(net), "0", rank=2, init="eva", data=(x, None), eva_label_mask=-100)
    with pytest.raises(TypeError, match="eva_label_mask must be"):
        op.factor.lora_(copy.deepcopy(net), "0", rank=2, init="eva", data=(x, labels), eva_label_mask=-100.0)


def test_a_layer_the_data_never_reaches_is_refused():
    net = torch.nn.ModuleDict({"a": torch.nn.Linear(3, 3), "b": torch.nn.Linear(3, 3)})
    net.forward = lambda x: net["a"](x)
    with pytest.raises(ValueError, match=r"data: layers \['b'\] were not called"):
        op.factor.lora_(net, rank=1, init="eva", data=(torch.randn(8, 3), None))


WRAPS = {
    "olora": dict(init="olora"), "milora": dict(init="milora"),
    "lora_ga": dict(init="lora_ga", loss_fn=F.mse_loss), "eva": dict(init="eva"), "corda": dict(init="corda"),
}


@pytest.mark.parametrize("name", [*WRAPS, "hira", "shira"])
def test_wrap_then_unload_restores_the_models_state(name):
    net, (x, y) = _net(), _data()
    net[0].bias.requires_grad_(False)
    net[2].train(False)
    keys, flags = list(net.state_dict()), [p.requires_grad for p in net.parameters()]
    values = [v.clone() for v in net.state_dict().values()]
    modes = [m.training for m in net.modules()]
    if name in WRAPS:
        kw = dict(WRAPS[name])
        if kw["init"] in ("lora_ga", "eva", "corda"):
            kw["data"] = (x, y)
        op.factor.lora_(net, rank=2, **kw)
    else:
        op.factor.hadamard_(net, kind=name, rank=1, generator=0)
    op.factor.merge_(net)
    assert list(net.state_dict()) == keys and [p.requires_grad for p in net.parameters()] == flags
    assert [m.training for m in net.modules()] == modes
    assert all((a - b).abs().max() < 1e-12 for a, b in zip(net.state_dict().values(), values))
