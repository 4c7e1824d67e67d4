"""Structural removal through transposed convolutions (output channels are dim 1 of their weight):
the smaller model equals the masked one (fp32, 1e-6), folding is refused where it is not exact."""

import pytest
import torch
from torch import nn

from overparam.prune.removal import channel_groups, remove_pruned
from test_removal import _assert_same, _gen, _randomize


class Decoder(nn.Module):
    """ConvT (stride 2) → BN → ReLU → ConvT (stride 2) → BN → ReLU → 1×1 Conv."""

    def __init__(self, dims=2):
        super().__init__()
        convt, conv, bn = (getattr(nn, f"{k}{dims}d") for k in ("ConvTranspose", "Conv", "BatchNorm"))
        self.up1, self.bn1 = convt(8, 12, 3, stride=2, padding=1, output_padding=1), bn(12)
        self.up2, self.bn2 = convt(12, 6, 4, stride=2, padding=1), bn(6)
        self.head = conv(6, 3, 1)

    def forward(self, x):
        x = torch.relu(self.bn1(self.up1(x)))
        return self.head(torch.relu(self.bn2(self.up2(x))))


def _out_channels(net, name, gone, silence=False):
    """Masks removing output channels ``gone`` of ConvTranspose ``name`` (weight dim 1); with
    ``silence`` also its bias and the following BatchNorm's affine, so the removed channels are zero."""
    w = net.get_submodule(name).weight
    m = torch.ones(w.shape, dtype=torch.bool)
    m[:, gone] = False
    masks = {f"{name}.weight": m}
    if silence:
        vec = torch.ones(w.shape[1], dtype=torch.bool)
        vec[gone] = False
        bn = "bn" + name[-1]
        masks.update({f"{name}.bias": vec, f"{bn}.weight": vec, f"{bn}.bias": vec})
    return masks


def _x(dims, seed, batch=2):
    return torch.randn(batch, 8, *([5] * dims), generator=_gen(seed))


@pytest.mark.parametrize("dims", [1, 2])
def test_transposed_output_channels_removed(dims):
    net = _randomize(Decoder(dims))
    masks = {**_out_channels(net, "up1", [1, 4, 7], silence=True), **_out_channels(net, "up2", [0, 5])}
    small = remove_pruned(net, masks, (_x(dims, 30),))
    assert (small.up1.out_channels, small.up1.weight.shape[:2], small.bn1.num_features) == (9, (8, 9), 9)
    assert (small.up2.in_channels, small.up2.out_channels, small.up2.weight.shape[:2]) == (9, 4, (9, 4))
    assert small.head.in_channels == 4 and small.head.weight.shape[1] == 4
    assert torch.equal(small.up1.weight, net.up1.weight[:, [0, 2, 3, 5, 6, 8, 9, 10, 11]])
    _assert_same(small, net, masks, _x(dims, 31, batch=3))       # up2's removed channels folded into head's bias


def test_transposed_input_channels_removed_and_groups():
    net = _randomize(Decoder())
    m = torch.ones(net.up2.weight.shape, dtype=torch.bool)
    m[[2, 3]] = False                                  # up2's input channels (dim 0): nobody reads up1's 2, 3
    small = remove_pruned(net, {"up2.weight": m}, (_x(2, 32),))
    assert (small.up1.out_channels, small.up2.in_channels) == (10, 10)
    _assert_same(small, net, {"up2.weight": m}, _x(2, 33))
    g = channel_groups(net, (_x(2, 32),))[0]
    assert g.producers == ["up1.weight"] and g.params[0] == ("up1.weight", 1) and ("up2.weight", 0) in g.params


def test_transposed_refuses_inexact_folds_and_unstructured_masks():
    net = _randomize(Decoder())
    with torch.no_grad():
        net.bn1.bias.fill_(5.0)                                  # removed channels: positive constants after the ReLU
    with pytest.raises(ValueError, match="ConvTranspose 'up2' are the nonzero constants"):
        remove_pruned(net, _out_channels(net, "up1", [1, 4]), (_x(2, 34),))
    bad = torch.ones(net.up1.weight.shape, dtype=torch.bool)
    bad[0, 1] = False                                                      # one filter slice only
    with pytest.raises(ValueError, match=r"masks\['up1.weight'\] is not structured: output channel 1"):
        remove_pruned(net, {"up1.weight": bad}, (_x(2, 34),))


class Grouped(nn.Module):
    """ConvT → BN → ReLU → grouped ConvT (groups 4) → BN → ReLU → depthwise ConvT → Conv (``head_groups``)."""

    def __init__(self, dims=2, head_groups=2):
        super().__init__()
        convt, conv, bn = (getattr(nn, f"{k}{dims}d") for k in ("ConvTranspose", "Conv", "BatchNorm"))
        self.up1, self.bn1 = convt(8, 12, 3, stride=2, padding=1, output_padding=1), bn(12)
        self.up2, self.bn2 = convt(12, 8, 4, stride=2, padding=1, groups=4), bn(8)   # 3 in → 2 out per group
        self.dw = convt(8, 8, 3, padding=1, groups=8)
        self.head = conv(8, 4, 1, groups=head_groups)

    def forward(self, x):
        x = torch.relu(self.bn1(self.up1(x)))
        return self.head(self.dw(torch.relu(self.bn2(self.up2(x)))))


def _silenced(net, name, bn, gone, dw=False):
    """Output channels ``gone`` of ``name`` removed, with its bias, ``bn``'s affine (and the depthwise
    ConvT's bias) masked so the removed channels are zero where a transposed conv reads them."""
    mod = net.get_submodule(name)
    m = torch.ones(mod.weight.shape, dtype=torch.bool)       # (in, out/groups, k...): output c is column c % (out/g)
    rows, cols = mod.in_channels // mod.groups, mod.out_channels // mod.groups
    for c in gone:
        m[c // cols * rows:(c // cols + 1) * rows, c % cols] = False
    masks = {f"{name}.weight": m}
    vec = torch.ones(net.get_submodule(name).out_channels, dtype=torch.bool)
    vec[gone] = False
    masks.update({f"{name}.bias": vec, f"{bn}.weight": vec, f"{bn}.bias": vec} | ({"dw.bias": vec} if dw else {}))
    return masks


@pytest.mark.parametrize("dims", [1, 2])
def test_grouped_and_depthwise_transposed_channels_removed(dims):
    net = _randomize(Grouped(dims))
    masks = {**_silenced(net, "up1", "bn1", [1, 4, 7, 10]),            # one input channel of each group of up2
             **_silenced(net, "up2", "bn2", [1, 3, 5, 7], dw=True)}    # one output channel of each group of up2
    small = remove_pruned(net, masks, (_x(dims, 40),))
    assert (small.up2.groups, small.up2.in_channels, small.up2.out_channels, small.up2.weight.shape[:2]) == (4, 8, 4, (8, 1))
    assert (small.dw.groups, small.dw.weight.shape[:2], small.bn2.num_features) == (4, (4, 1), 4)
    assert (small.head.groups, small.head.in_channels, small.head.weight.shape[:2]) == (2, 4, (4, 2))
    assert torch.equal(small.up2.weight[2:4, 0], net.up2.weight[[3, 5], 0])      # group 1: inputs 3, 5 → output 2
    assert torch.equal(small.head.weight[:, :, 0], net.head.weight[:, [0, 2], 0])
    assert sum(p.numel() for p in small.parameters()) < sum(p.numel() for p in net.parameters())
    _assert_same(small, net, masks, _x(dims, 41, batch=3))


def test_grouped_transposed_whole_group_removed_and_unbalanced_refused():
    net = _randomize(Grouped(head_groups=1))
    masks = {**_silenced(net, "up1", "bn1", [9, 10, 11]), **_silenced(net, "up2", "bn2", [6, 7], dw=True)}
    small = remove_pruned(net, masks, (_x(2, 42),))                       # up2's last group goes: groups 4 → 3
    assert (small.up2.groups, small.up2.in_channels, small.up2.out_channels, small.dw.groups) == (3, 9, 6, 6)
    _assert_same(small, net, masks, _x(2, 43))
    with pytest.raises(ValueError, match=r"grouped ConvTranspose2d 'up2' \(groups=4\) would keep output channels "
                                         r"\[2, 1, 2, 2\] and input channels \[3, 3, 3, 3\]"):
        remove_pruned(net, _silenced(net, "up2", "bn2", [2], dw=True), (_x(2, 42),))
    bad = Grouped(head_groups=2)
    with pytest.raises(ValueError, match=r"grouped Conv2d 'head' \(groups=2\) would keep output channels \[2, 2\] "
                                         r"and input channels \[4, 2\]"):
        remove_pruned(_randomize(bad), _silenced(bad, "up2", "bn2", [6, 7], dw=True), (_x(2, 42),))
