"""Structural removal: the smaller model equals the masked one (fp32, 1e-6) and refuses what it cannot remove."""

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from overparam.prune import apply_masks_, ln_structured
from overparam.prune.removal import channel_groups, remove_pruned


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def _randomize(net, seed=0):
    """Random weights, biases and BatchNorm statistics (so that every constant is nonzero)."""
    g = _gen(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.5)
        for name, b in net.named_buffers():
            if name.endswith("running_mean"):
                b.copy_(torch.randn(b.shape, generator=g) * 0.3)
            elif name.endswith("running_var"):
                b.copy_(torch.rand(b.shape, generator=g) + 0.5)
    return net.eval()


def _rows(shape, gone):
    m = torch.ones(shape, dtype=torch.bool)
    m[list(gone)] = False
    return m


def _masked(net, masks):
    ref = copy.deepcopy(net)
    apply_masks_(ref, masks)
    return ref


def _nparams(net):
    return sum(p.numel() for p in net.parameters())


def _assert_same(small, net, masks, x, atol=1e-6):
    ref = _masked(net, masks).eval()
    with torch.no_grad():
        a, b = small.eval()(x), ref(x)
    a, b = (a[0], b[0]) if isinstance(a, tuple) else (a, b)
    assert a.shape == b.shape
    assert float((a - b).abs().max()) <= atol * max(1.0, float(b.abs().max())), float((a - b).abs().max())


# ---------------------------------------------------------------------------------------- MLP
def test_mlp_hidden_units_removed_and_constants_folded():
    net = _randomize(nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 12, bias=False), nn.Tanh(),
                                   nn.Linear(12, 3, bias=False)))
    masks = {"0.weight": _rows((16, 6), [1, 4, 5, 9]), "2.weight": _rows((12, 16), [0, 7])}
    x = torch.randn(32, 6, generator=_gen(1))
    small = remove_pruned(net, masks, (x,))
    s0, s2, s4 = (small.get_submodule(i) for i in "024")
    assert (s0.out_features, s2.in_features, s2.out_features, s4.in_features) == (12, 12, 10, 10)
    assert s2.bias is not None and s4.bias is None   # relu(b) folds into layer 2 (a bias added); tanh(0) = 0 into 4
    _assert_same(small, net, masks, torch.randn(64, 6, generator=_gen(2)))   # other inputs than the traced ones
    assert _nparams(small) < _nparams(net)
    assert torch.equal(net[0].weight, _randomize(nn.Sequential(nn.Linear(6, 16)))[0].weight)   # untouched


def test_gated_mlp_units_removed_jointly():
    class Gated(nn.Module):
        def __init__(self):
            super().__init__()
            self.gate, self.up, self.down = nn.Linear(8, 12), nn.Linear(8, 12), nn.Linear(12, 8)

        def forward(self, x):
            return self.down(F.silu(self.gate(x)) * self.up(x))

    net = _randomize(Gated())
    gone = [2, 3, 11]
    masks = {"gate.weight": _rows((12, 8), gone), "up.weight": _rows((12, 8), gone)}
    x = torch.randn(16, 8, generator=_gen(3))
    small = remove_pruned(net, masks, (x,))
    assert small.down.in_features == 9
    _assert_same(small, net, masks, x)
    with pytest.raises(ValueError, match="coupled"):
        remove_pruned(net, {"gate.weight": _rows((12, 8), gone)}, (x,))


# ---------------------------------------------------------------------------------------- CNN
class Block(nn.Module):
    def __init__(self, c, h):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(c, h, 3, padding=1, bias=False), nn.BatchNorm2d(h)
        self.conv2, self.bn2 = nn.Conv2d(h, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)

    def forward(self, x):
        return F.relu(x + self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x))))))


class ResNet(nn.Module):
    def __init__(self, c=8, h=12):
        super().__init__()
        self.stem, self.bn = nn.Conv2d(3, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)
        self.b1, self.b2 = Block(c, h), Block(c, h)
        self.head = nn.Linear(c, 5)

    def forward(self, x):
        x = self.b2(self.b1(F.relu(self.bn(self.stem(x)))))
        return self.head(F.adaptive_avg_pool2d(x, 1).flatten(1))


def _channel_masks(net, layer, bn, gone):
    """Conv filters plus their BatchNorm's weight and bias: the removed channels are exactly zero."""
    w = net.get_submodule(layer).weight
    return {f"{layer}.weight": _rows(w.shape, gone), f"{bn}.weight": _rows((w.shape[0],), gone),
            f"{bn}.bias": _rows((w.shape[0],), gone)}


def test_resnet_hidden_channels_and_residual_stream_removed():
    net = _randomize(ResNet())
    masks = {**_channel_masks(net, "b1.conv1", "b1.bn1", [0, 5, 6]), **_channel_masks(net, "b2.conv1", "b2.bn1", [11])}
    for layer, bn in (("stem", "bn"), ("b1.conv2", "b1.bn2"), ("b2.conv2", "b2.bn2")):   # coupled by the adds
        masks.update(_channel_masks(net, layer, bn, [2, 7]))
    x = torch.randn(4, 3, 8, 8, generator=_gen(4))
    small = remove_pruned(net, masks, (x,))
    assert (small.b1.conv1.out_channels, small.b1.bn1.num_features, small.b2.conv2.in_channels) == (9, 9, 11)
    assert (small.stem.out_channels, small.b1.conv1.in_channels, small.head.in_features) == (6, 6, 6)
    _assert_same(small, net, masks, torch.randn(3, 3, 8, 8, generator=_gen(5)))
    ratio = _nparams(small) / _nparams(net)
    assert 0.5 < ratio < 0.8


def test_channel_groups_name_the_coupled_layers_and_build_masks_remove_pruned_accepts():
    net = _randomize(ResNet())
    x = torch.randn(2, 3, 8, 8, generator=_gen(19))
    groups = channel_groups(net, (x,))
    by = {tuple(gr.producers): gr for gr in groups}
    stream = by[("stem.weight", "b1.conv2.weight", "b2.conv2.weight")]            # joined by the residual adds
    assert stream.size == 8 and stream.fixed is None
    assert {("bn.weight", 0), ("b1.bn2.running_var", 0), ("b1.conv1.weight", 1), ("head.weight", 1)} <= set(stream.params)
    assert by[("head.weight",)].fixed == "it reaches the model's output"
    assert by[("b1.conv1.weight",)].size == 12
    gone = [1, 6]
    masks = {}
    for name, dim in stream.params:   # the producers' rows and the BatchNorm affine: removed channels are zero
        p = net.get_parameter(name) if name.endswith(("weight", "bias")) else None
        if p is not None and dim == 0 and (name in stream.producers or p.dim() == 1):
            masks[name] = _rows(p.shape, gone)
    small = remove_pruned(net, masks, (x,))
    assert small.stem.out_channels == 6 and small.head.in_features == 6
    _assert_same(small, net, masks, x)


def test_resnet_residual_channels_removed_in_one_conv_only_are_refused():
    net = _randomize(ResNet())
    x = torch.randn(2, 3, 8, 8, generator=_gen(6))
    with pytest.raises(ValueError, match=r"coupled .*remove them jointly"):
        remove_pruned(net, _channel_masks(net, "b1.conv2", "b1.bn2", [3]), (x,))


def test_nonzero_constant_channel_into_padded_conv_is_refused_and_unpadded_conv_folds():
    net = _randomize(ResNet())
    x = torch.randn(2, 3, 8, 8, generator=_gen(7))
    only_filters = {"b1.conv1.weight": _rows((12, 8, 3, 3), [1])}
    with torch.no_grad():
        net.b1.bn1.bias[1] = 3.0                         # relu(BN(0)) > 0: a nonzero constant channel
    with pytest.raises(ValueError, match="zero padding"):
        remove_pruned(net, only_filters, (x,))
    net2 = _randomize(nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 4, 3, stride=2),
                                    nn.ReLU(), nn.Flatten(), nn.Linear(4 * 2 * 2, 3)))
    masks = {"0.weight": _rows((8, 3, 3, 3), [0, 3]), "3.weight": _rows((4, 8, 3, 3), [1])}
    x = torch.randn(5, 3, 8, 8, generator=_gen(8))
    small = remove_pruned(net2, masks, (x,))
    assert (small.get_submodule("3").in_channels, small.get_submodule("6").in_features) == (6, 12)   # 4 per channel
    _assert_same(small, net2, masks, x)


def test_depthwise_conv_follows_its_input_channels():
    net = _randomize(nn.Sequential(nn.Conv2d(3, 8, 1), nn.ReLU(), nn.Conv2d(8, 8, 3, groups=8), nn.BatchNorm2d(8),
                                   nn.Conv2d(8, 2, 1)))
    masks = {"0.weight": _rows((8, 3, 1, 1), [4, 6])}
    x = torch.randn(2, 3, 6, 6, generator=_gen(9))
    small = remove_pruned(net, masks, (x,))
    assert tuple(getattr(small.get_submodule(i), a) for i, a in zip("234", ("groups", "num_features", "in_channels"))
                 ) == (6, 6, 6)
    _assert_same(small, net, masks, x)


# ---------------------------------------------------------------------------------------- refusals
def test_partly_masked_row_is_not_structured():
    net = _randomize(nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2)))
    m = _rows((8, 4), [2])
    m[5, 1] = False
    with pytest.raises(ValueError, match=r"masks\['0.weight'\] is not structured: output channel 5"):
        remove_pruned(net, {"0.weight": m}, (torch.randn(3, 4),))


def test_channels_no_layer_reads_are_removed_and_a_column_masked_in_one_reader_only_is_refused():
    net = _randomize(nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2)))
    cols = torch.ones(2, 8, dtype=torch.bool)
    cols[:, 3] = False                                  # an input-channel mask on the last layer: unit 3 is dead
    x = torch.randn(5, 4, generator=_gen(23))
    small = remove_pruned(net, {"2.weight": cols}, (x,))
    assert small.get_submodule("0").out_features == 7
    _assert_same(small, net, {"2.weight": cols}, x)
    cnn = _randomize(ResNet())
    masks = {"b1.conv2.weight": ln_structured(cnn.b1.conv2.weight, 0.25, dim=1)}   # input channels of conv2
    xi = torch.randn(2, 3, 8, 8, generator=_gen(24))
    small = remove_pruned(cnn, masks, (xi,))
    assert (small.b1.conv1.out_channels, small.b1.bn1.num_features, small.b1.conv2.in_channels) == (9, 9, 9)
    _assert_same(small, cnn, masks, xi)

    class TwoReaders(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b, self.c = nn.Linear(4, 8), nn.Linear(8, 2), nn.Linear(8, 2)

        def forward(self, x):
            h = torch.relu(self.a(x))
            return self.b(h) + self.c(h)

    with pytest.raises(ValueError, match="whole input channels.*channel_groups"):
        remove_pruned(_randomize(TwoReaders()), {"b.weight": cols}, (x,))


class PreNorm(nn.Module):
    def __init__(self):
        super().__init__()
        self.inp, self.ln, self.a, self.b, self.out = (nn.Linear(4, 16), nn.LayerNorm(16), nn.Linear(16, 32),
                                                       nn.Linear(32, 16), nn.Linear(16, 2))

    def forward(self, x):
        x = self.inp(x)
        x = x + self.b(F.gelu(self.a(self.ln(x))))
        return self.out(self.ln(x))


def test_layernormed_residual_stream_output_and_unsupported_ops_are_refused():
    net = _randomize(PreNorm())
    x = torch.randn(2, 3, 4, generator=_gen(15))
    with pytest.raises(ValueError, match="cannot be removed: LayerNorm 'ln' normalizes over it"):
        remove_pruned(net, {"b.weight": _rows((16, 32), [0]), "inp.weight": _rows((16, 4), [0])}, (x,))
    out = _randomize(nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2)))
    with pytest.raises(ValueError, match="model's output"):
        remove_pruned(out, {"2.weight": _rows((2, 8), [1])}, (torch.randn(3, 4),))

    class Cum(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(4, 8), nn.Linear(8, 2)

        def forward(self, x):
            return self.b(torch.cumsum(self.a(x), dim=-1))

    with pytest.raises(ValueError, match="unsupported op 'cumsum'"):
        remove_pruned(_randomize(Cum()), {"a.weight": _rows((8, 4), [1])}, (torch.randn(3, 4),))
    remove_pruned(_randomize(Cum()), {"b.weight": torch.ones(2, 8, dtype=torch.bool)}, (torch.randn(3, 4),))  # nothing removed


def test_indexing_other_dims_is_followed_and_indexing_channels_is_refused():
    class Tokens(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(8, 16), nn.Linear(16, 3)

        def forward(self, x):
            h = F.relu(self.a(x))
            return self.b(h[:, 0] + h[..., -1, :] + h[:, None, 1].squeeze(1))   # first, last and second token

    net = _randomize(Tokens())
    masks = {"a.weight": _rows((16, 8), [3, 4, 9])}
    x = torch.randn(2, 5, 8, generator=_gen(17))
    small = remove_pruned(net, masks, (x,))
    assert small.b.in_features == 13
    _assert_same(small, net, masks, torch.randn(3, 4, 8, generator=_gen(18)))

    class Slice(Tokens):
        def forward(self, x):
            return self.b(torch.cat([self.a(x)[..., :8]] * 2, -1))

    with pytest.raises(ValueError, match="it is indexed"):
        remove_pruned(_randomize(Slice()), masks, (x,))


def test_dict_outputs_are_checked_and_the_final_check_catches_a_wrong_model(monkeypatch):
    class Dict(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(4, 8), nn.Linear(8, 2)

        def forward(self, x):
            h = torch.relu(self.a(x))
            return {"logits": self.b(h), "aux": [h.sum(-1, keepdim=True) * 0]}

    net = _randomize(Dict())
    with torch.no_grad():
        net.a.bias.fill_(1.0)                               # removed units are relu(1) = 1, not 0
    x = torch.randn(3, 4, generator=_gen(20))
    masks = {"a.weight": _rows((8, 4), [2])}
    with pytest.raises(ValueError, match="reduces over it"):   # the channel sum reads every channel
        remove_pruned(net, masks, (x,))

    class Logits(Dict):
        def forward(self, x):
            return {"logits": self.b(torch.relu(self.a(x)))}

    net = Logits()
    net.load_state_dict(_randomize(Dict()).state_dict())
    with torch.no_grad():
        net.a.bias.fill_(1.0)
    small = remove_pruned(net, masks, (x,))
    torch.testing.assert_close(small(x)["logits"], _masked(net, masks)(x)["logits"])
    import overparam.prune.removal as R
    monkeypatch.setattr(R, "_fold", lambda *a: None)       # a model that forgets the folded constants
    with pytest.raises(ValueError, match="differs from the masked one"):
        remove_pruned(net, masks, (x,))


def test_a_layer_called_twice_is_refused():
    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(4, 4), nn.Linear(4, 2)

        def forward(self, x):
            return self.b(self.a(torch.relu(self.a(x))))

    with pytest.raises(ValueError, match="called more than once"):
        remove_pruned(_randomize(Twice()), {"a.weight": _rows((4, 4), [0])}, (torch.randn(3, 4),))


def test_untraceable_model_and_bad_arguments():
    class Branchy(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(4, 4)

        def forward(self, x):
            return self.a(x) if x.sum() > 0 else x

    with pytest.raises(ValueError, match="torch.fx"):
        remove_pruned(Branchy(), {"a.weight": _rows((4, 4), [0])}, (torch.randn(2, 4),))
    net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    with pytest.raises(TypeError, match="example_inputs"):
        remove_pruned(net, {"0.weight": _rows((8, 4), [0])}, torch.randn(2, 4))
    with pytest.raises(ValueError, match="every output channel"):
        remove_pruned(net, {"0.weight": torch.zeros(8, 4, dtype=torch.bool)}, (torch.randn(2, 4),))
    with pytest.raises(ValueError, match="masks"):
        remove_pruned(net, {"nope.weight": _rows((8, 4), [0])}, (torch.randn(2, 4),))


def test_flags_and_the_users_model_are_kept():
    net = _randomize(ResNet())
    net.b1.train()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    masks = _channel_masks(net, "b1.conv1", "b1.bn1", [0])
    small = remove_pruned(net, masks, (torch.randn(2, 3, 8, 8, generator=_gen(16)),))
    assert small.b1.training and not small.training and not small.b2.training
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    assert set(small.state_dict()) == set(net.state_dict())
