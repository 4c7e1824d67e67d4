import copy

import pytest
from hypothesis import given, settings, strategies as st
import torch
from torch import nn

from overparam.factor import LoRALayer, lora_scaling, relora_restart_, pairs
from overparam.testing.factor_oracles import dense_top_svd

D = torch.float64


def _linear(i=8, o=6, seed=0, bias=True):
    torch.manual_seed(seed)  # test-only; the library never touches the global RNG
    return nn.Linear(i, o, bias=bias).double()


@pytest.mark.parametrize("init", ["gaussian", "kaiming"])
@pytest.mark.parametrize("dora", [False, True])
def test_lora_and_dora_at_init_are_bit_identical(init, dora):
    base = _linear()
    ref = copy.deepcopy(base)
    layer = LoRALayer(base, rank=3, alpha=6, init=init, dora=dora, generator=0)
    x = torch.randn(5, 8, dtype=D)
    assert torch.equal(layer(x), ref(x))
    assert float(layer.lora_down.abs().max()) > 0 and float(layer.lora_up.abs().max()) == 0
    conv = nn.Conv2d(3, 4, 3).double()
    cref = copy.deepcopy(conv)
    xc = torch.randn(2, 3, 6, 6, dtype=D)
    assert torch.equal(LoRALayer(conv, rank=2, init=init, dora=dora, generator=0)(xc), cref(xc))


def test_lora_forward_and_grads_match_dense_oracle():
    base = _linear()
    layer = LoRALayer(base, rank=3, alpha=12, rslora=True, generator=0)
    assert layer.scaling == lora_scaling(12, 3, rslora=True) == 12 / 3 ** 0.5
    with torch.no_grad():
        layer.lora_up.normal_(generator=torch.Generator().manual_seed(1))
    s, A, B = layer.scaling, layer.lora_down.detach(), layer.lora_up.detach()
    W = base.weight.detach() + s * B @ A.T
    x = torch.randn(5, 8, dtype=D)
    torch.testing.assert_close(layer(x), x @ W.T + base.bias, rtol=0, atol=1e-12)
    layer(x).square().sum().backward()
    G = 2 * (x @ W.T + base.bias).T @ x          # dense gradient w.r.t. W
    torch.testing.assert_close(layer.lora_up.grad, s * G @ A, rtol=0, atol=1e-10)
    torch.testing.assert_close(layer.lora_down.grad, s * G.T @ B, rtol=0, atol=1e-10)
    assert base.weight.grad is None and not base.weight.requires_grad


@pytest.mark.parametrize("detach_norm", [False, True])
def test_dora_forward_and_grads(detach_norm):
    base = _linear(bias=True)
    layer = LoRALayer(base, rank=2, dora=True, detach_norm=detach_norm, generator=0)
    with torch.no_grad():
        layer.lora_up.normal_(generator=torch.Generator().manual_seed(2))
        layer.lora_magnitude.mul_(1.5)
    x = torch.randn(4, 8, dtype=D)
    up, down, mag = (p.detach().clone().requires_grad_() for p in (layer.lora_up, layer.lora_down, layer.lora_magnitude))
    V = base.weight.detach() + layer.scaling * up @ down.T
    n = V.norm(dim=1, keepdim=True)
    Wd = mag[:, None] * V / (n.detach() if detach_norm else n)
    ref = x @ Wd.T + base.bias
    out = layer(x)
    torch.testing.assert_close(out, ref.detach(), rtol=0, atol=1e-12)
    out.sum().backward()
    ref.sum().backward()
    for p, q in ((layer.lora_up, up), (layer.lora_down, down), (layer.lora_magnitude, mag)):
        torch.testing.assert_close(p.grad, q.grad, rtol=0, atol=1e-10)


def test_pissa_residual_plus_product_is_the_weight():
    base = nn.Linear(20, 16, bias=False).double()
    W0 = base.weight.detach().clone()
    layer = LoRALayer(base, rank=5, alpha=10, init="pissa")
    torch.testing.assert_close(base.weight + layer.delta_weight(), W0, rtol=0, atol=1e-10)
    torch.testing.assert_close(layer.delta_weight(), dense_top_svd(W0, 5), rtol=0, atol=1e-10)
    x = torch.randn(3, 20, dtype=D)
    torch.testing.assert_close(layer(x), x @ W0.T, rtol=0, atol=1e-12)


def test_randomized_pissa_on_decaying_spectrum():
    g = torch.Generator().manual_seed(0)
    U, _ = torch.linalg.qr(torch.randn(256, 256, dtype=D, generator=g))
    V, _ = torch.linalg.qr(torch.randn(256, 256, dtype=D, generator=g))
    W0 = (U * 0.85 ** torch.arange(256, dtype=D)) @ V.T
    base = nn.Linear(256, 256, bias=False).double()
    with torch.no_grad():
        base.weight.copy_(W0)
    layer = LoRALayer(base, rank=64, init="pissa", svd="randomized", generator=0)
    torch.testing.assert_close(base.weight + layer.delta_weight(), W0, rtol=0, atol=1e-10)
    torch.testing.assert_close(layer.delta_weight(), dense_top_svd(W0, 64), rtol=0, atol=1e-5)


@pytest.mark.parametrize("dora", [False, True])
def test_merge_unmerge_round_trip(dora):
    base = _linear()
    W0 = base.weight.detach().clone()
    layer = LoRALayer(base, rank=3, dora=dora, generator=0)
    with torch.no_grad():
        layer.lora_up.normal_(generator=torch.Generator().manual_seed(3))
    x = torch.randn(4, 8, dtype=D)
    y = layer(x).detach()
    layer.merge_()
    torch.testing.assert_close(layer(x), y, rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="merged"):
        layer.merge_()
    layer.unmerge_()
    torch.testing.assert_close(base.weight.detach(), W0, rtol=0, atol=1e-12)


def test_relora_accumulates_rank_above_r():
    base = _linear(12, 12)
    W0 = base.weight.detach().clone()
    net = nn.Sequential(LoRALayer(base, rank=2, generator=0))
    opt = torch.optim.Adam([p for p in net.parameters() if p.requires_grad], lr=1e-2)
    x, y = torch.randn(64, 12, dtype=D), torch.randn(64, 12, dtype=D)
    for cycle in range(4):
        for _ in range(5):
            opt.zero_grad()
            (net(x) - y).square().mean().backward()
            opt.step()
        out = net(x).detach()
        relora_restart_(net, opt, generator=cycle)
        torch.testing.assert_close(net(x), out, rtol=0, atol=1e-12)
        assert net[0].lora_down not in opt.state
    rank = int(torch.linalg.matrix_rank(base.weight.detach() - W0))
    assert rank > 2


def test_pairs_orientation_and_bad_input():
    layer = LoRALayer(_linear(), rank=3, generator=0)
    (L, R), = list(pairs(layer))
    assert L is layer.lora_up and R is layer.lora_down and L.shape == (6, 3) and R.shape == (8, 3)
    torch.testing.assert_close(layer.scaling * L @ R.T, layer.delta_weight())
    with pytest.raises(ValueError, match="rank"):
        LoRALayer(_linear(), rank=0)
    with pytest.raises(ValueError, match="rank"):
        LoRALayer(_linear(), rank=7, init="pissa")
    with pytest.raises(TypeError, match="base"):
        LoRALayer(nn.ReLU(), rank=1)
    with pytest.raises(ValueError, match="dropout"):
        LoRALayer(nn.Embedding(5, 4), rank=1, dropout=0.1)
    with pytest.raises(ValueError, match="init"):
        LoRALayer(_linear(), rank=1, init="nope")


def test_dropout_applies_to_the_adapter_input_only():
    base = _linear()
    layer = LoRALayer(base, rank=2, dropout=0.5, generator=0)
    with torch.no_grad():
        layer.lora_up.normal_(generator=torch.Generator().manual_seed(4))
    x = torch.randn(6, 8, dtype=D)
    s, A, B = layer.scaling, layer.lora_down.detach(), layer.lora_up.detach()
    layer.eval()
    torch.testing.assert_close(layer(x), base(x) + s * x @ A @ B.T, rtol=0, atol=1e-12)
    layer.train()
    torch.manual_seed(11)        # training-time dropout draws from the global RNG, as nn.Dropout does
    out = layer(x)
    torch.manual_seed(11)
    xd = torch.nn.functional.dropout(x, 0.5, training=True)
    torch.testing.assert_close(out, base(x) + s * xd @ A @ B.T, rtol=0, atol=1e-12)


@settings(max_examples=15, deadline=None)
@given(rows=st.integers(1, 9), cols=st.integers(1, 9), rank=st.integers(1, 5), seed=st.integers(0, 99))
def test_random_shapes_bit_identical_at_init_and_merge_round_trip(rows, cols, rank, seed):
    base = nn.Linear(cols, rows).double()
    with torch.no_grad():
        base.weight.copy_(torch.randn(rows, cols, dtype=D, generator=torch.Generator().manual_seed(seed)))
    W0 = base.weight.detach().clone()
    ref = copy.deepcopy(base)
    layer = LoRALayer(base, rank=rank, generator=seed)
    x = torch.randn(3, cols, dtype=D)
    assert torch.equal(layer(x), ref(x))
    with torch.no_grad():
        layer.lora_up.normal_(generator=torch.Generator().manual_seed(seed + 1))
    layer.merge_()
    layer.unmerge_()
    torch.testing.assert_close(base.weight.detach(), W0, rtol=0, atol=1e-12)


def test_failed_construction_and_restart_change_nothing():
    base = _linear()
    with pytest.raises(ValueError, match="init"):
        LoRALayer(base, rank=2, init="nope")
    with pytest.raises(ValueError, match="svd"):
        LoRALayer(base, rank=2, init="pissa", svd="nope")
    with pytest.raises(ValueError, match="alpha"):
        LoRALayer(base, rank=2, alpha=0, init="pissa")      # would divide by s = 0
    assert all(p.requires_grad for p in base.parameters())
    layer = LoRALayer(base, rank=2, generator=0)
    with torch.no_grad():
        layer.lora_up.normal_(generator=torch.Generator().manual_seed(5))
    W = base.weight.detach().clone()
    with pytest.raises(ValueError, match="init"):
        relora_restart_(nn.Sequential(layer), init="pissa")
    assert torch.equal(base.weight, W) and float(layer.lora_up.detach().abs().max()) > 0


def test_dora_on_conv_matches_dense_oracle():
    conv = nn.Conv1d(3, 4, 3, padding=1).double()
    layer = LoRALayer(conv, rank=2, dora=True, generator=0)
    with torch.no_grad():
        layer.lora_up.normal_(generator=torch.Generator().manual_seed(6))
        layer.lora_magnitude.mul_(0.7)
    V = conv.weight.detach().reshape(4, 9) + layer.scaling * layer.lora_up.detach() @ layer.lora_down.detach().T
    Wd = (layer.lora_magnitude.detach()[:, None] * V / V.norm(dim=1, keepdim=True)).reshape(4, 3, 3)
    x = torch.randn(2, 3, 7, dtype=D)
    expect = torch.nn.functional.conv1d(x, Wd, conv.bias, padding=1)
    torch.testing.assert_close(layer(x), expect, rtol=0, atol=1e-12)
    layer.merge_()
    torch.testing.assert_close(conv.weight.detach(), Wd, rtol=0, atol=1e-12)


@pytest.mark.parametrize("shape", [(2, 5, 8), (2, 3, 4, 8), (8,), (0, 8), "noncontiguous"])
def test_fused_forward_on_batched_1d_and_strided_inputs_matches_dense_oracle(shape):
    # the nn.Linear path flattens the leading axes into one addmm: every input layout must give x Wᵀ + b
    base = _linear()
    layer = LoRALayer(base, rank=3, alpha=5, generator=0)
    with torch.no_grad():
        layer.lora_up.normal_(generator=torch.Generator().manual_seed(1))
    g = torch.Generator().manual_seed(2)
    x = torch.randn(5, 2, 8, dtype=D, generator=g).transpose(0, 1) if shape == "noncontiguous" else \
        torch.randn(shape, dtype=D, generator=g)
    up, down = (p.detach().clone().requires_grad_() for p in (layer.lora_up, layer.lora_down))
    expect = x @ (base.weight.detach() + layer.scaling * up @ down.T).T + base.bias.detach()
    out = layer(x)
    assert out.shape == expect.shape
    torch.testing.assert_close(out, expect, rtol=0, atol=1e-12)
    w = torch.randn(expect.shape, dtype=D, generator=g)
    (out * w).sum().backward()
    (expect * w).sum().backward()
    torch.testing.assert_close(layer.lora_up.grad, up.grad, rtol=0, atol=1e-12)
    torch.testing.assert_close(layer.lora_down.grad, down.grad, rtol=0, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_fused_forward_in_low_precision_on_cpu(dtype):
    base = _linear()
    layer = LoRALayer(base, rank=3, alpha=5, generator=0)
    with torch.no_grad():
        layer.lora_up.normal_(generator=torch.Generator().manual_seed(1))
    W = base.weight.detach() + layer.scaling * layer.lora_up.detach() @ layer.lora_down.detach().T
    layer.to(dtype)
    x = torch.randn(2, 5, 8, dtype=D, generator=torch.Generator().manual_seed(2))
    out = layer(x.to(dtype))
    assert out.dtype == dtype
    expect = x @ W.T + base.bias.detach().double()
    torch.testing.assert_close(out.double(), expect, rtol=0, atol=30 * torch.finfo(dtype).eps * float(expect.abs().max()))


# --- the scale of the down-projection inits, against the closed form ------------------------------
# gaussian: down ~ N(0, 1/r²), so std = 1/r and kurtosis 3; kaiming: down ~ U(±1/√cols), so
# std = 1/√(3·cols), |down| <= 1/√cols and kurtosis 9/5. With >= 16k draws the sample std is
# within ~1% of the truth; a 1/√r scale (4x at r = 16) or a 1/cols bound (√cols x) is far outside 5%.

def _moments(t):
    t = t.detach().double().flatten()
    c = t - t.mean()
    var = c.pow(2).mean()
    return float(t.mean()), float(var.sqrt()), float(c.pow(4).mean() / var**2)


@pytest.mark.parametrize("make, cols", [(lambda: nn.Linear(1024, 4), 1024), (lambda: nn.Conv2d(64, 2, 3), 64 * 9)])
@pytest.mark.parametrize("rank", [16, 32])
def test_gaussian_and_kaiming_down_init_scale_is_the_closed_form(make, cols, rank):
    base = make().double()
    n = cols * rank
    g = LoRALayer(copy.deepcopy(base), rank=rank, init="gaussian", generator=1).lora_down
    assert g.shape == (cols, rank)
    mean, std, kurt = _moments(g)
    assert abs(std * rank - 1) < 0.05, f"gaussian std {std:.4g}, closed form 1/r = {1 / rank:.4g}"
    assert abs(mean) < 5 * std / n**0.5 and abs(kurt - 3) < 0.25
    k = LoRALayer(copy.deepcopy(base), rank=rank, init="kaiming", generator=2).lora_down.detach()
    bound = cols**-0.5
    mean, std, kurt = _moments(k)
    assert abs(std / (bound / 3**0.5) - 1) < 0.05, f"kaiming std {std:.4g}, closed form 1/√(3·cols) = {bound / 3**0.5:.4g}"
    assert abs(mean) < 5 * std / n**0.5 and abs(kurt - 1.8) < 0.1
    assert float(k.abs().max()) <= bound and float(k.abs().max()) > 0.99 * bound


@pytest.mark.parametrize("init, std", [("gaussian", 1 / 16), ("kaiming", 1 / (3 * 1024) ** 0.5)])
def test_relora_restart_redraws_at_the_same_scale(init, std):
    layer = LoRALayer(nn.Linear(1024, 4).double(), rank=16, init="gaussian", generator=0)
    layer.restart_(init=init, generator=3)
    assert abs(_moments(layer.lora_down)[1] / std - 1) < 0.05


def test_lora_options_and_restart_refuse_bad_input_before_touching_the_base():
    base = nn.Linear(4, 3).double()
    W0 = base.weight.detach().clone()
    for kwargs, name in [({"svd": "no_such"}, "svd"), ({"niter": -1}, "niter"), ({"oversample": 2.5}, "oversample")]:
        with pytest.raises(ValueError, match=name):             # checked for every init, not only pissa
            LoRALayer(base, rank=2, **kwargs)
    assert torch.equal(base.weight, W0) and base.weight.requires_grad
    with pytest.raises(TypeError, match="model must be an nn.Module"):
        relora_restart_("not a model")
    with pytest.raises(TypeError, match="model must be an nn.Module"):
        pairs("not a model")                                   # refused on the call, not on the first next()
