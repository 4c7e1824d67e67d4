"""overparam/backend/layers.py: the layer-kind registry, checked against each layer's own forward."""

from __future__ import annotations

import sys
import types

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from overparam.backend import layers as L
from overparam.backend.nm import nm_mask

D = torch.float64


class TransposedLinear(nn.Module):
    """A stand-in for transformers' Conv1D (weight stored (in, out), y = x @ w + b)."""

    def __init__(self, nf, nx):
        super().__init__()
        self.nf = nf
        self.weight = nn.Parameter(torch.randn(nx, nf, dtype=D))
        self.bias = nn.Parameter(torch.randn(nf, dtype=D))

    def forward(self, x):
        return torch.addmm(self.bias, x.view(-1, x.size(-1)), self.weight).view(*x.shape[:-1], self.nf)


@pytest.fixture
def fake_conv1d(monkeypatch):
    """TransposedLinear registered lazily under a dotted name of a module that is only "imported" here."""
    kind = L.LayerKind("fake_conv1d", ("fake_hf_pkg.utils.TransposedLinear",), {"weight": L.TRANSPOSED_LINEAR},
                       factor=True)
    L.register_layer(kind)
    yield monkeypatch
    L.unregister_layer("fake_conv1d")


def test_lazy_dotted_type_matches_only_once_its_module_is_imported(fake_conv1d):
    layer = TransposedLinear(3, 4)
    assert L.kind_of(layer) is None                     # fake_hf_pkg.utils not in sys.modules
    mod = types.ModuleType("fake_hf_pkg.utils")
    mod.TransposedLinear = TransposedLinear
    fake_conv1d.setitem(sys.modules, "fake_hf_pkg.utils", mod)
    assert L.kind_of(layer).name == "fake_conv1d"
    assert TransposedLinear in L.layer_types("factor") and TransposedLinear in L.layer_types("prune_default")


def _layers():
    torch.manual_seed(0)
    return [
        (nn.Linear(5, 3).double(), torch.randn(2, 4, 5, dtype=D)),
        (nn.Conv1d(4, 6, 3, groups=2).double(), torch.randn(2, 4, 7, dtype=D)),
        (nn.Conv2d(2, 3, (2, 3), padding=1).double(), torch.randn(2, 2, 5, 5, dtype=D)),
        (nn.Conv3d(2, 2, 2).double(), torch.randn(1, 2, 3, 3, 3, dtype=D)),
        (nn.Embedding(7, 3, padding_idx=1).double(), torch.tensor([[0, 1, 6], [2, 2, 5]])),
    ]


@pytest.mark.parametrize("i", range(5))
def test_call_equals_the_layers_forward_with_the_weight_swapped_in(i):
    layer, x = _layers()[i]
    layout = L.layout_of(layer)
    w2 = torch.randn_like(layer.weight)
    b2 = None if getattr(layer, "bias", None) is None else torch.randn_like(layer.bias)
    expected = torch.func.functional_call(layer, {"weight": w2, **({"bias": b2} if b2 is not None else {})}, (x,))
    torch.testing.assert_close(layout.call(layer, x, w2, b2), expected, rtol=0, atol=1e-12)


def test_transposed_linear_call_and_matrix_match_conv1d_forward(fake_conv1d):
    mod = types.ModuleType("fake_hf_pkg.utils")
    mod.TransposedLinear = TransposedLinear
    fake_conv1d.setitem(sys.modules, "fake_hf_pkg.utils", mod)
    torch.manual_seed(1)
    layer, x = TransposedLinear(4, 6), torch.randn(2, 3, 6, dtype=D)
    layout = L.layout_of(layer)
    assert layout.linear_like and layout.in_dim == 0 and layout.out_dim == 1
    torch.testing.assert_close(layout.call(layer, x, layer.weight, layer.bias), layer(x), rtol=0, atol=1e-12)
    # the matrix is (out, in): y = x Mᵀ + b, exactly as for a Linear
    M = layout.as_matrix(layer.weight)
    assert M.shape == (4, 6) and M.data_ptr() == layer.weight.data_ptr()     # a view of the storage
    torch.testing.assert_close(F.linear(x, M, layer.bias), layer(x), rtol=0, atol=1e-12)
    assert L.fans(layer) == (6, 4)
    # a write into the matrix view is a write into the weight
    with torch.no_grad():
        M[0, 1] = 123.0
    assert layer.weight[1, 0] == 123.0


def test_as_matrix_is_the_computations_matrix_for_linear_and_conv():
    torch.manual_seed(2)
    lin = nn.Linear(5, 3).double()
    x = torch.randn(4, 5, dtype=D)
    torch.testing.assert_close(x @ L.layout_of(lin).as_matrix(lin.weight).T + lin.bias, lin(x), rtol=0, atol=1e-12)
    conv = nn.Conv2d(2, 3, (2, 3), bias=False).double()
    x = torch.randn(1, 2, 4, 5, dtype=D)
    cols = F.unfold(x, (2, 3))                                          # (1, in·∏k, positions)
    out = (L.layout_of(conv).as_matrix(conv.weight) @ cols).reshape(1, 3, 3, 3)
    torch.testing.assert_close(out, conv(x), rtol=0, atol=1e-12)


@settings(max_examples=30, deadline=None)
@given(shape=st.lists(st.integers(1, 4), min_size=2, max_size=5),
       layout=st.sampled_from([L.LINEAR, L.TRANSPOSED_LINEAR, L.Layout(), L.Layout(transposed=True), L.Layout(table=True)]))
def test_from_matrix_inverts_as_matrix(shape, layout):
    w = torch.randn(*shape, dtype=D)
    M = layout.as_matrix(w)
    rows = shape[1] if layout.transposed else shape[0]
    assert M.shape == (rows, w.numel() // rows)
    assert torch.equal(layout.from_matrix(M, w), w)
    assert torch.equal(layout.from_matrix(M, w.shape), w)
    fi, fo = layout.fans(shape)
    if not layout.table:
        assert fi * fo == w.numel() * (w.numel() // (shape[0] * shape[1]))    # each fan carries ∏kernel once


def test_fans_agree_with_the_documented_counts():
    assert L.fans(nn.Linear(3, 4)) == (3, 4)
    assert L.fans(nn.Conv2d(3, 8, 3)) == (27, 72)
    assert L.fans(nn.Conv2d(4, 8, 3, groups=2)) == (18, 72)            # in/groups · k
    assert L.fans(nn.ConvTranspose2d(3, 8, 3)) == (27, 72)             # stored (in, out, k, k)
    assert L.fans(nn.Embedding(10, 5)) == (10, 5) and L.fans(nn.EmbeddingBag(10, 5)) == (10, 5)
    assert L.fans(nn.Linear(3, 4), "bias") == (1, 4)
    assert L.fans(None, shape=(4, 3, 2)) == (6, 8) and L.fans(None, shape=()) == (1, 1)
    assert L.fans(nn.Linear(3, 4), shape=(8, 6)) == (6, 8)             # another width of the same layer
    mha = nn.MultiheadAttention(8, 2)
    assert L.fans(mha, "in_proj_weight") == (8, 24)
    with pytest.raises(ValueError, match="module .*'nope'"):
        L.fans(nn.Linear(3, 4), "nope")


def test_nm_along_in_dim_of_a_transposed_weight_is_the_transposed_mask():
    torch.manual_seed(3)
    w = torch.randn(8, 6, dtype=D)                                     # (in, out) storage
    got = nm_mask(w.abs(), 2, 4, dim=L.TRANSPOSED_LINEAR.in_dim)
    want = nm_mask(w.T.abs(), 2, 4, dim=1).T                           # as the (out, in) Linear would be masked
    assert torch.equal(got, want)
    assert torch.equal(got.reshape(2, 4, 6).sum(1), torch.full((2, 6), 2))


def test_kinds_of_builtin_layers():
    expect = {nn.Linear(2, 2): "linear", nn.Conv1d(2, 2, 1): "conv", nn.ConvTranspose1d(2, 2, 1): "conv_transpose",
              nn.Embedding(3, 2): "embedding", nn.EmbeddingBag(3, 2): "embedding_bag",
              nn.MultiheadAttention(4, 2): "multihead_attention"}
    for m, name in expect.items():
        assert L.kind_of(m).name == name
    assert L.kind_of(nn.LayerNorm(2)) is None and L.kind_of(nn.Sequential()) is None
    assert L.layout_of(nn.Linear(2, 2), "bias") is None
    assert L.layout_of(nn.MultiheadAttention(4, 2), "in_proj_weight").forward is None
    assert nn.Embedding in L.layer_types("prunable") and nn.Embedding not in L.layer_types("prune_default")
    assert nn.ConvTranspose2d not in L.layer_types("prunable") and nn.ConvTranspose2d in L.layer_types()


def test_weights_of_resolves_tied_and_shared_layers():
    emb, lin = nn.Embedding(6, 4), nn.Linear(4, 6)
    lin.weight = emb.weight
    mha = nn.MultiheadAttention(4, 2)
    block = nn.Linear(4, 4)
    net = nn.ModuleDict({"emb": emb, "attn": mha, "a": block, "b": block, "norm": nn.LayerNorm(4), "head": lin})
    got = L.weights_of(net)
    assert list(got) == ["emb.weight", "attn.in_proj_weight", "attn.out_proj.weight", "a.weight"]
    assert list(got) == [n for n, p in net.named_parameters() if n in got]
    tied = got["emb.weight"]
    assert tied.module is emb and tied.kind.name == "embedding" and tied.param_name == "weight"
    assert [(n, k.name) for n, k in tied.owners] == [("emb", "embedding"), ("head", "linear")]
    assert [n for n, _ in got["a.weight"].owners] == ["a", "b"]          # a shared module: both names
    assert got["attn.in_proj_weight"].layout.in_dim == 1


def test_unknown_weight_layers_names_unregistered_weight_bearing_modules():
    class Mine(nn.Module):
        def __init__(self):
            super().__init__()
            self.weight = nn.Parameter(torch.zeros(3, 2))
            self.other = nn.Parameter(torch.zeros(3, 2))               # not called weight: not a layer

    class Vec(nn.Module):
        def __init__(self):
            super().__init__()
            self.weight = nn.Parameter(torch.zeros(3))                 # 1-D: a scale, not a layer

    net = nn.Sequential(nn.Linear(2, 3), Mine(), Vec(), nn.LayerNorm(3), nn.Bilinear(2, 2, 2))
    assert L.unknown_weight_layers(net) == {"1": Mine, "4": nn.Bilinear}
    L.register_layer(L.LayerKind("mine", (Mine,), {"weight": L.Layout()}))
    try:
        assert L.unknown_weight_layers(net) == {"4": nn.Bilinear}
    finally:
        L.unregister_layer("mine")


def test_register_layer_precedence_replacement_and_errors():
    class Special(nn.Linear):
        pass

    first = L.register_layer(L.LayerKind("special", (Special,), {"weight": L.LINEAR}, prune_default=False))
    try:
        assert L.kind_of(Special(2, 2)) is first                       # before the built-in linear
        assert L.kinds()[0] is first and L.kind_of(nn.Linear(2, 2)).name == "linear"
        second = L.register_layer(L.LayerKind("special", (Special,), {"weight": L.LINEAR}))
        assert L.kind_of(Special(2, 2)) is second and sum(k.name == "special" for k in L.kinds()) == 1
    finally:
        L.unregister_layer("special")
    assert L.kind_of(Special(2, 2)).name == "linear"
    with pytest.raises(ValueError, match="built-in"):
        L.register_layer(L.LayerKind("linear", (Special,), {"weight": L.LINEAR}))
    with pytest.raises(ValueError, match="name"):
        L.unregister_layer("special")
    with pytest.raises(TypeError, match="kind"):
        L.register_layer("linear")


def test_descriptions_refuse_bad_fields():
    with pytest.raises(TypeError, match="types"):
        L.LayerKind("k", (int,), {"weight": L.LINEAR})
    with pytest.raises(TypeError, match="weights"):
        L.LayerKind("k", (nn.Linear,), {"weight": "rows"})
    with pytest.raises(ValueError, match="factor"):
        L.LayerKind("k", (nn.Linear,), {"weight": L.Layout()}, factor=True)
    with pytest.raises(TypeError, match="transposed"):
        L.Layout(transposed=1)
    with pytest.raises(ValueError, match="table"):
        L.Layout(transposed=True, table=True)
    with pytest.raises(TypeError, match="w"):
        L.LINEAR.as_matrix(torch.zeros(3))
    with pytest.raises(TypeError, match="forward|swapped"):
        L.Layout().call(nn.Linear(2, 2), torch.zeros(2), torch.zeros(2, 2), None)


def _block():
    return nn.Sequential(nn.Linear(2, 2), nn.ReLU())


def test_repeated_blocks_is_the_longest_container_of_same_class_blocks():
    net = nn.ModuleDict({"pre": nn.ModuleList([_block(), _block()]),
                         "h": nn.ModuleList([_block(), _block(), _block()]),
                         "mixed": nn.ModuleList([_block(), nn.Linear(2, 2), _block(), _block()]),
                         "acts": nn.ModuleList([nn.ReLU() for _ in range(5)])})
    name, blocks = L.repeated_blocks(net)
    assert name == "h" and blocks is net["h"]
    tie = nn.ModuleDict({"a": nn.ModuleList([_block(), _block()]), "b": nn.ModuleList([_block(), _block()])})
    assert L.repeated_blocks(tie)[0] == "a"
    with pytest.raises(ValueError, match="model"):
        L.repeated_blocks(nn.Sequential(nn.Linear(2, 2), nn.ReLU()))
