import copy

import pytest
import torch
from torch import nn

import overparam as op
from overparam.factor import (FactorizedLayer, LayerWrapper, LoRALayer, SparseLowRank, adapter_state_dict, hadamard_,
                              load_adapter_state_dict, lora_, lowrank_, merge_, pairs, unmerge_)
from overparam.testing import assert_no_side_effects

D = torch.float64


class Net(nn.Module):
    def __init__(self, seed=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.emb = nn.Embedding(10, 6)
        self.conv = nn.Conv1d(6, 6, 3, padding=1)
        self.block = nn.Sequential(nn.Linear(6, 5), nn.Tanh(), nn.Linear(5, 4))
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g))
        self.double()

    def forward(self, idx):
        h = self.emb(idx)                      # (B, T, 6)
        h = self.conv(h.transpose(1, 2)).transpose(1, 2)
        return self.block(h)


IDX = torch.tensor([[1, 2, 3, 4], [5, 6, 7, 9]])
ALL = [nn.Linear, nn.Conv1d, nn.Embedding]


def _apply(kind, net, **kw):
    if kind == "lowrank":
        return lowrank_(net, ALL, rank=4, init="svd", **kw)
    if kind in ("product", "difference", "loha", "lokr"):
        return hadamard_(net, ALL, kind=kind, rank=2 if kind in ("loha", "lokr") else None, generator=0, **kw)
    targets = ALL if kind != "dora" else [nn.Linear, nn.Conv1d]   # DoRA is not defined for Embedding
    return lora_(net, targets, rank=2, generator=0, dora=kind == "dora", **kw)


@pytest.mark.parametrize("kind", ["product", "difference", "loha", "lokr", "lora", "dora"])
def test_wrapping_keeps_output_and_has_no_side_effects(kind):
    net = Net()
    y = net(IDX)
    net.eval()
    with assert_no_side_effects():
        names = _apply(kind, net)
    assert names == ["emb", "conv", "block.0", "block.2"] or kind == "dora"
    assert not net.training and all(not m.training for m in net.modules())
    torch.testing.assert_close(net(IDX), y, rtol=0, atol=1e-12)


def test_lowrank_full_rank_svd_is_exact_and_keys_documented():
    net = Net()
    y = net(IDX)
    lowrank_(net, ["block.0"], rank=5, init="svd")
    lowrank_(net, "conv", rank=6, init="randomized", generator=0)
    torch.testing.assert_close(net(IDX), y, rtol=0, atol=1e-12)
    keys = set(net.state_dict())
    assert {"block.0.base.bias", "block.0.param.left", "block.0.param.right", "conv.base.bias"} <= keys
    assert "block.0.base.weight" not in keys
    assert net.block[0].param.left.shape == (5, 5) and net.conv.param.right.shape == (18, 6)
    assert len(list(pairs(net))) == 2


@pytest.mark.parametrize("kind", ["lowrank", "lora", "dora", "loha"])
def test_state_dict_round_trip_deepcopy_and_compile(kind):
    net = Net()
    idx = IDX
    _apply(kind, net)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.01)
    y = net(idx)
    other = Net(seed=1)
    _apply(kind, other)
    other.load_state_dict(net.state_dict())
    torch.testing.assert_close(other(idx), y, rtol=0, atol=0)
    clone = copy.deepcopy(net)
    torch.testing.assert_close(clone(idx), y, rtol=0, atol=0)
    torch._dynamo.reset()
    compiled = torch.compile(net, backend="eager", fullgraph=True)   # fullgraph: a graph break raises
    torch.testing.assert_close(compiled(idx), y, rtol=0, atol=1e-12)


def test_merge_returns_plain_model_with_same_output():
    for kind in ("lowrank", "lora", "loha", "product"):
        net = Net()
        _apply(kind, net)
        with torch.no_grad():
            for p in net.parameters():
                p.add_(0.01)
        y = net(IDX)
        assert merge_(net) == 4
        assert type(net.block[0]) is nn.Linear and type(net.conv) is nn.Conv1d and type(net.emb) is nn.Embedding
        torch.testing.assert_close(net(IDX), y, rtol=0, atol=1e-12)
        assert not any(isinstance(m, (LoRALayer, FactorizedLayer)) for m in net.modules())
        assert set(net.state_dict()) == set(Net().state_dict())


def test_merge_in_place_and_unmerge_round_trip():
    net = Net()
    W0 = {k: v.clone() for k, v in net.state_dict().items()}
    lora_(net, ALL, rank=2, generator=0)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, LoRALayer):
                m.lora_up.normal_(generator=torch.Generator().manual_seed(0))
    y = net(IDX)
    merge_(net, unload=False)
    torch.testing.assert_close(net(IDX), y, rtol=0, atol=1e-12)
    assert unmerge_(net) == 4
    for k, v in W0.items():
        key = k.replace("weight", "base.weight").replace("bias", "base.bias")
        torch.testing.assert_close(net.state_dict()[key], v, rtol=0, atol=1e-12)


def test_adapter_state_dict_save_and_load():
    net = Net()
    lora_(net, ["block.0", "block.2"], rank=2, dora=True, generator=0)
    with torch.no_grad():
        for k, p in net.named_parameters():
            if "lora" in k:
                p.add_(0.1)
    sd = adapter_state_dict(net)
    assert set(sd) == {f"block.{i}.lora_{n}" for i in (0, 2) for n in ("down", "up", "magnitude")}
    fresh = Net()
    lora_(fresh, ["block.0", "block.2"], rank=2, dora=True, generator=5)
    load_adapter_state_dict(fresh, sd)
    torch.testing.assert_close(fresh(IDX), net(IDX), rtol=0, atol=0)
    with pytest.raises(ValueError, match="missing"):
        load_adapter_state_dict(fresh, {k: v for k, v in sd.items() if "up" not in k})


def test_target_errors():
    net = Net()
    with pytest.raises(ValueError, match="targets"):
        lora_(net, ["nothing_here"], rank=2)
    with pytest.raises(ValueError, match="targets"):
        lora_(net, "block.1", rank=2)          # a Tanh
    lora_(net, "block.0", rank=2, generator=0)
    with pytest.raises(ValueError, match="targets.*already wrapped"):
        lora_(net, "block.0", rank=2)
    with pytest.raises(ValueError, match="targets.*already wrapped"):
        lowrank_(net, nn.Linear, rank=2)
    with pytest.raises(ValueError, match="rank"):
        lowrank_(Net(), "block.0", rank=7, init="svd")
    with pytest.raises(ValueError, match="rank"):
        lora_(Net(), "block.0", rank=0)
    with pytest.raises(TypeError, match="targets"):
        lora_(Net(), [3], rank=1)


def test_targets_are_selection_specs():
    assert lora_(Net(), "block.*", rank=1, generator=0) == ["block.0", "block.2"]       # glob
    assert lora_(Net(), "block", rank=1, generator=0) == ["block.0", "block.2"]         # a container
    assert lowrank_(Net(), "block.2", rank=2, init="small", generator=0) == ["block.2"]  # a name
    with pytest.raises(ValueError, match="targets: .2. matches no"):                      # an index path is rooted
        lowrank_(Net(), "2", rank=2, init="small", generator=0)
    assert lora_(Net(), rank=1, generator=0) == ["emb", "conv", "block.0", "block.2"]   # None: every layer
    assert lora_(Net(), exclude=["emb", "block.2"], rank=1, generator=0) == ["conv", "block.0"]
    assert hadamard_(Net(), lambda n, m: n.endswith("0"), generator=0) == ["block.0"]  # a predicate
    assert lora_(Net(), nn.Linear, exclude="block.0", rank=1, generator=0) == ["block.2"]


def test_an_item_selecting_no_supported_layer_is_an_error_naming_it():
    with pytest.raises(ValueError, match="targets: 'block.1' matches no Linear, ConvNd, Embedding or Conv1D"):
        lora_(Net(), ["block.0", "block.1"], rank=1)
    with pytest.raises(ValueError, match="targets: 'blok.*'"):
        lowrank_(Net(), "blok.*", rank=1)
    with pytest.raises(ValueError, match="exclude: 'nope'"):
        lora_(Net(), exclude="nope", rank=1)
    net = nn.Linear(3, 3)
    with pytest.raises(ValueError, match="targets: the model itself"):
        lora_(net, nn.Linear, rank=1)
    assert type(net) is nn.Linear and "weight" in dict(net.named_parameters())


KINDS = ["lowrank", "product", "difference", "loha", "lokr", "lora", "dora", "pissa"]


def _apply_any(kind, net):
    if kind == "pissa":
        return lora_(net, ALL, rank=2, init="pissa")
    return _apply(kind, net)


@pytest.mark.parametrize("kind", KINDS)
def test_wrap_and_merge_restore_parameter_order_and_optimizer_state(kind):
    net = Net()
    net.block[2].bias.requires_grad_(False)
    names, keys = [n for n, _ in net.named_parameters()], list(net.state_dict())
    flags = {n: p.requires_grad for n, p in net.named_parameters()}
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    net(IDX).square().sum().backward()
    opt.step()
    saved = {n: opt.state[p]["exp_avg"].clone() for n, p in net.named_parameters() if p in opt.state}
    sd = opt.state_dict()
    _apply_any(kind, net)
    merge_(net)
    assert [n for n, _ in net.named_parameters()] == names
    assert list(net.state_dict()) == keys
    assert {n: p.requires_grad for n, p in net.named_parameters()} == flags
    fresh = torch.optim.Adam(net.parameters(), lr=1e-3)
    fresh.load_state_dict(sd)
    for n, p in net.named_parameters():
        if n in saved:
            torch.testing.assert_close(fresh.state[p]["exp_avg"], saved[n], rtol=0, atol=0)


@pytest.mark.parametrize("kind", ["lora", "dora", "loha", "lokr"])
def test_merge_in_place_round_trip_keeps_parameter_order(kind):
    net = Net()
    _apply(kind, net)
    names = [n for n, _ in net.named_parameters()]
    with torch.no_grad():
        for n, p in net.named_parameters():
            if "base" not in n:
                p.add_(0.05)
    y = net(IDX)
    merge_(net, unload=False)
    torch.testing.assert_close(net(IDX), y, rtol=0, atol=1e-10)
    unmerge_(net)
    torch.testing.assert_close(net(IDX), y, rtol=0, atol=1e-10)
    assert [n for n, _ in net.named_parameters()] == names


def test_lora_validates_its_arguments_once(monkeypatch):
    import overparam.factor.adapters as adapters
    calls = []
    real = adapters.check_rank
    monkeypatch.setattr(adapters, "check_rank", lambda *a, **k: calls.append(a) or real(*a, **k))
    lora_(Net(), ALL, rank=2, alpha=4, generator=0)
    assert len(calls) == 1
    with pytest.raises(TypeError, match="unexpected keyword arguments \\['ranks'\\]"):
        lora_(Net(), ALL, rank=2, ranks=3)


class _Scaled(LayerWrapper):
    """A wrapper the library has never seen: ``W = base.weight + c · 1``."""

    def __init__(self, base):
        super().__init__(base, residual=True)
        base.weight.requires_grad_(False)
        self.c = nn.Parameter(torch.tensor(0.5, dtype=base.weight.dtype))

    def update(self):
        return self.c * torch.ones(self.weight_shape, dtype=self.c.dtype)


def test_the_wrapper_protocol_is_all_that_merge_and_adapter_io_use():
    net = Net()
    y0 = net(IDX)
    net.block[0] = _Scaled(net.block[0])
    y = net(IDX)
    assert list(adapter_state_dict(net)) == ["block.0.c"]
    assert merge_(net, unload=False) == 1
    torch.testing.assert_close(net(IDX), y, rtol=0, atol=1e-12)
    assert unmerge_(net) == 1 and merge_(net) == 1
    torch.testing.assert_close(net(IDX), y, rtol=0, atol=1e-12)
    assert type(net.block[0]) is nn.Linear and list(net.state_dict()) == list(Net().state_dict())
    assert not torch.allclose(net(IDX), y0)


def test_sparse_lowrank_wrapper_is_exact_and_unwraps_in_order():
    lin = nn.Linear(5, 4).double()
    W = lin.weight.detach().clone()
    layer = FactorizedLayer(lin, SparseLowRank((4, 5), 2, mask=torch.ones(4, 5, dtype=torch.bool), weight=W))
    x = torch.randn(3, 5, dtype=D)
    torch.testing.assert_close(layer(x), x @ W.T + lin.bias, rtol=0, atol=1e-12)
    assert len(list(pairs(layer))) == 1
    base = layer.unwrap()
    assert [n for n, _ in base.named_parameters()] == ["weight", "bias"]
    torch.testing.assert_close(base.weight, W, rtol=0, atol=1e-12)


def _snapshot(net):
    return ([type(m) for m in net.modules()], {k: v.clone() for k, v in net.state_dict().items()},
            {k: p.requires_grad for k, p in net.named_parameters()})


@pytest.mark.parametrize("apply", [
    lambda net: lora_(net, ALL, rank=5, init="pissa"),                 # block.2 is (4, 5): rank 5 too large
    lambda net: lowrank_(net, ALL, rank=5, init="svd"),
    lambda net: lora_(net, ALL, rank=2, dropout=0.1),                  # dropout is not defined for emb
    lambda net: lowrank_(net, ALL, rank=2, init="small", symmetric=True),   # non-square weights
    lambda net: hadamard_(net, ALL, kind="product", rank=2),               # no rank for an element-wise kind
])
def test_failed_application_leaves_the_model_untouched(apply):
    net = Net()
    before = _snapshot(net)
    with pytest.raises(ValueError, match="rank|dropout|symmetric"):
        apply(net)
    types, sd, flags = _snapshot(net)
    assert types == before[0] and flags == before[2] and sd.keys() == before[1].keys()
    assert all(torch.equal(sd[k], v) for k, v in before[1].items())


def test_symmetric_lowrank_wrapper_matches_dense_oracle():
    lin = nn.Linear(5, 5).double()
    net = nn.Sequential(lin)
    lowrank_(net, "0", rank=7, init="small", scale=0.5, symmetric=True, generator=0)
    U = net[0].param.left.detach()
    x = torch.randn(3, 5, dtype=D)
    torch.testing.assert_close(net(x), x @ (U @ U.T).T + lin.bias, rtol=0, atol=1e-12)
    (L, R), = pairs(net)
    assert L is R


def test_adapter_loading_errors():
    with pytest.raises(ValueError, match="adapter"):
        load_adapter_state_dict(Net(), {})
    net = Net()
    lora_(net, "block.0", rank=2, generator=0)
    sd = adapter_state_dict(net)
    sd["block.0.lora_up"] = torch.zeros(5, 3, dtype=D)
    with pytest.raises(ValueError, match="shape"):
        load_adapter_state_dict(net, sd)


def test_model_level_functions_refuse_a_non_module_by_name():
    for fn in (merge_, unmerge_, adapter_state_dict, lambda m: load_adapter_state_dict(m, {})):
        with pytest.raises(TypeError, match="model must be an nn.Module"):
            fn("not a model")
    with pytest.raises(ValueError, match="scale"):              # checked even where kind="product" ignores it
        hadamard_(Net(), "block.0", scale=float("nan"))


def test_default_targets_refuse_to_skip_a_weight_bearing_layer_silently():
    """targets=None on a model with a layer factor cannot wrap (MultiheadAttention's packed projection)
    raises naming it; exclude= or explicit targets go through."""
    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.attn, self.mlp = nn.MultiheadAttention(8, 2), nn.Linear(8, 8)

    m = Block()
    with pytest.raises(ValueError, match=r"attn \(torch.nn.modules.activation.MultiheadAttention: no factor support\)"):
        op.factor.lora_(m, rank=2)
    op.factor.lora_(m, rank=2, exclude="attn")             # excluded: wraps the rest (out_proj is excluded too)
    assert isinstance(m.mlp, op.factor.LoRALayer) and not isinstance(m.attn.out_proj, op.factor.LoRALayer)
    m2 = Block()
    op.factor.lora_(m2, "mlp", rank=2)                     # named targets: no check
    assert isinstance(m2.mlp, op.factor.LoRALayer)
