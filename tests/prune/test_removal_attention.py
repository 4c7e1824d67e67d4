"""Structural removal of attention heads: hand-written (explicit, SDPA, fused q/k/v with a causal mask)
and nn.MultiheadAttention blocks; the smaller model equals the masked one (fp32, 1e-6)."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from overparam.prune import ln_structured
from overparam.prune.removal import PrunedMultiheadAttention, remove_pruned
from test_removal import _assert_same, _gen, _masked, _randomize, _rows


class Attention(nn.Module):
    def __init__(self, d=16, h=4, sdpa=False):
        super().__init__()
        self.q, self.k, self.v, self.o = (nn.Linear(d, d) for _ in range(4))
        self.h, self.dh, self.sdpa = h, d // h, sdpa

    def forward(self, x):
        B, T, C = x.shape
        q, k, v = (f(x).view(B, T, self.h, self.dh).transpose(1, 2) for f in (self.q, self.k, self.v))
        if self.sdpa:
            y = F.scaled_dot_product_attention(q, k, v)
        else:
            y = torch.softmax((q @ k.transpose(-2, -1)) * self.dh ** -0.5, dim=-1) @ v
        return self.o(y.transpose(1, 2).reshape(B, T, C))


class TransformerBlock(nn.Module):
    def __init__(self, d=16, h=4, sdpa=False, mha=False):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.attn = nn.MultiheadAttention(d, h, batch_first=True) if mha else Attention(d, h, sdpa)
        self.fc1, self.fc2 = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)
        self.mha = mha

    def forward(self, x):
        a = self.ln1(x)
        x = x + (self.attn(a, a, a, need_weights=False)[0] if self.mha else self.attn(a))
        return x + self.fc2(F.gelu(self.fc1(self.ln2(x))))


def _head_rows(d, h, heads):
    dh = d // h
    return [r for i in heads for r in range(i * dh, (i + 1) * dh)]


@pytest.mark.parametrize("sdpa", [False, True])
def test_transformer_block_heads_and_mlp_units_removed(sdpa):
    net = _randomize(TransformerBlock(sdpa=sdpa))
    rows = _head_rows(16, 4, [1, 3])
    masks = {f"attn.{p}.weight": _rows((16, 16), rows) for p in "qkv"}
    masks["fc1.weight"] = ln_structured(net.fc1.weight, 0.25, dim=0)
    x = torch.randn(3, 5, 16, generator=_gen(10))
    small = remove_pruned(net, masks, (x,))
    assert (small.attn.q.out_features, small.attn.o.in_features, small.fc2.in_features) == (8, 8, 48)
    _assert_same(small, net, masks, torch.randn(2, 7, 16, generator=_gen(11)))   # other batch and length


def test_multihead_attention_heads_removed():
    net = _randomize(TransformerBlock(mha=True))
    qkv = torch.ones(48, 16, dtype=torch.bool)
    for block in range(3):
        qkv[[block * 16 + r for r in _head_rows(16, 4, [0, 2])]] = False
    out = torch.ones(16, 16, dtype=torch.bool)
    out[:, _head_rows(16, 4, [3])] = False                                  # a head removed by its output columns
    masks = {"attn.in_proj_weight": qkv, "attn.out_proj.weight": out}
    x = torch.randn(3, 5, 16, generator=_gen(12))
    small = remove_pruned(net, masks, (x,))
    assert isinstance(small.attn, PrunedMultiheadAttention) and small.attn.heads == 1
    assert small.attn.in_proj_weight.shape == (12, 16)
    _assert_same(small, net, masks, torch.randn(2, 6, 16, generator=_gen(13)))
    partial = dict(masks, **{"attn.in_proj_weight": qkv.clone()})
    partial["attn.in_proj_weight"][16] = True                               # one k row of head 0 kept
    with pytest.raises(ValueError, match="head 0 .* partly masked"):
        remove_pruned(net, partial, (x,))


class Fused(nn.Module):
    """nanoGPT-style: one Linear for q, k and v, split; a causal mask from a buffer."""

    def __init__(self, d=16, h=4, chunk=False):
        super().__init__()
        self.qkv, self.o, self.h, self.chunk = nn.Linear(d, 3 * d), nn.Linear(d, d), h, chunk
        self.register_buffer("causal", torch.tril(torch.ones(6, 6)).view(1, 1, 6, 6))   # fx: a fixed length

    def forward(self, x):
        B, T, C = x.size()
        q, k, v = self.qkv(x).chunk(3, dim=-1) if self.chunk else self.qkv(x).split(C, dim=2)
        q, k, v = (t.view(B, T, self.h, C // self.h).transpose(1, 2) for t in (q, k, v))
        att = (q @ k.transpose(-2, -1)) * (1.0 / (k.size(-1) ** 0.5))
        att = F.softmax(att.masked_fill(self.causal == 0, float("-inf")), dim=-1)
        return x + self.o((att @ v).transpose(1, 2).contiguous().view(B, T, C))


@pytest.mark.parametrize("chunk", [False, True])
def test_fused_qkv_split_heads_removed(chunk):
    net = _randomize(Fused(chunk=chunk))
    rows = [p * 16 + r for p in range(3) for r in _head_rows(16, 4, [0, 3])]
    masks = {"qkv.weight": _rows((48, 16), rows)}
    x = torch.randn(2, 6, 16, generator=_gen(21))
    small = remove_pruned(net, masks, (x,))
    assert (small.qkv.out_features, small.o.in_features) == (24, 8)
    _assert_same(small, net, masks, torch.randn(3, 6, 16, generator=_gen(22)))
    with pytest.raises(ValueError, match=r"qkv.weight rows 16:32, .* are coupled"):
        remove_pruned(net, {"qkv.weight": _rows((48, 16), _head_rows(16, 4, [0]))}, (x,))
    cols = torch.ones(16, 16, dtype=torch.bool)
    cols[:, 4:7] = False                        # 3 of head 1's 4 o-columns: the head still counts, not removable
    with pytest.raises(ValueError, match="whole input channels"):
        remove_pruned(net, {"o.weight": cols}, (x,))


def _o_columns(d, h, heads, rows=None):
    m = torch.ones(d, d, dtype=torch.bool)
    m[:, _head_rows(d, h, heads)] = False
    if rows is not None:
        m[rows] = False
    return m


@pytest.mark.parametrize("kind", ["explicit", "sdpa", "fused"])
def test_heads_removed_by_out_projection_columns_alone(kind):
    """A head whose o-columns are all masked contributes nothing: its q, k and v rows go too (exact)."""
    net = _randomize(Fused() if kind == "fused" else Attention(sdpa=kind == "sdpa"), seed=3)
    masks = {"o.weight": _o_columns(16, 4, [0, 2])}
    x = torch.randn(2, 6, 16, generator=_gen(23))
    small = remove_pruned(net, masks, (x,))
    if kind == "fused":
        assert (small.qkv.out_features, small.o.in_features) == (24, 8)
        assert torch.equal(small.qkv.weight[:4], net.qkv.weight[4:8])          # q rows of head 1 first
        assert torch.equal(small.qkv.weight[8:12], net.qkv.weight[20:24])      # then k rows of head 1
    else:
        assert (small.q.out_features, small.k.out_features, small.v.out_features, small.o.in_features) == (8, 8, 8, 8)
        assert torch.equal(small.q.weight, net.q.weight[_head_rows(16, 4, [1, 3])])
    assert sum(p.numel() for p in small.parameters()) < sum(p.numel() for p in net.parameters())
    _assert_same(small, net, masks, torch.randn(3, 6, 16, generator=_gen(24)))


def test_heads_removed_by_columns_mixed_with_rows():
    """Head 0 by its q/k/v rows, head 3 by its o-columns, in one call; a transformer block around it."""
    net = _randomize(TransformerBlock(), seed=4)
    masks = {f"attn.{p}.weight": _rows((16, 16), _head_rows(16, 4, [0])) for p in "qkv"}
    masks["attn.o.weight"] = _o_columns(16, 4, [3])
    x = torch.randn(2, 5, 16, generator=_gen(25))
    small = remove_pruned(net, masks, (x,))
    assert (small.attn.q.out_features, small.attn.o.in_features) == (8, 8)
    _assert_same(small, net, masks, torch.randn(3, 7, 16, generator=_gen(26)))
    masks["attn.o.weight"] = _o_columns(16, 4, [3], rows=[5])     # an o row masked too: the residual add couples it
    with pytest.raises(ValueError, match=r"channels \[5\] of attn.o.weight, fc2.weight are coupled"):
        remove_pruned(net, masks, (x,))


class CrossKV(nn.Module):
    """Cross-attention with ``kdim``/``vdim`` (separate q/k/v weights), on a residual stream."""

    def __init__(self, batch_first=True, **kw):
        super().__init__()
        self.attn = nn.MultiheadAttention(16, 4, kdim=6, vdim=10, batch_first=batch_first, **kw)
        self.fc = nn.Linear(16, 16)

    def forward(self, x, k, v):
        return self.fc(x + self.attn(x, k, v, need_weights=False)[0])


def _cross_inputs(seed, batch_first=True, B=2, L=5, S=7):
    g = _gen(seed)
    x, k, v = torch.randn(B, L, 16, generator=g), torch.randn(B, S, 6, generator=g), torch.randn(B, S, 10, generator=g)
    return (x, k, v) if batch_first else tuple(t.transpose(0, 1).contiguous() for t in (x, k, v))


@pytest.mark.parametrize("batch_first", [True, False])
def test_multihead_attention_with_kdim_vdim_heads_removed(batch_first):
    net = _randomize(CrossKV(batch_first), seed=5)
    masks = {f"attn.{p}_proj_weight": _rows(getattr(net.attn, f"{p}_proj_weight").shape, _head_rows(16, 4, [1]))
             for p in "qkv"}
    masks["attn.out_proj.weight"] = _o_columns(16, 4, [3])
    small = remove_pruned(net, masks, _cross_inputs(27, batch_first))
    a = small.attn
    assert isinstance(a, PrunedMultiheadAttention) and a.heads == 2 and a.in_proj_bias.shape == (24,)
    assert (a.q_proj_weight.shape, a.k_proj_weight.shape, a.v_proj_weight.shape) == ((8, 16), (8, 6), (8, 10))
    assert torch.equal(a.k_proj_weight, net.attn.k_proj_weight[_head_rows(16, 4, [0, 2])])
    assert a.out_proj.weight.shape == (16, 8)
    ref, inputs = _masked(net, masks).eval(), _cross_inputs(28, batch_first, B=3, L=4, S=9)
    with torch.no_grad():
        got, want = small.eval()(*inputs), ref(*inputs)
    assert float((got - want).abs().max()) <= 1e-6 * max(1.0, float(want.abs().max()))
    partial = dict(masks)
    partial["attn.k_proj_weight"] = _rows((16, 6), _head_rows(16, 4, [1])[1:])   # one k row of head 1 kept
    with pytest.raises(ValueError, match="head 1 of MultiheadAttention 'attn' is partly masked .* k_proj_weight"):
        remove_pruned(net, partial, _cross_inputs(27, batch_first))

def _mha_masks(net, by_rows, by_cols):
    qkv = torch.ones(net.attn.in_proj_weight.shape, dtype=torch.bool)
    for block in range(3):
        qkv[[block * 16 + r for r in _head_rows(16, 4, by_rows)]] = False
    return {"attn.in_proj_weight": qkv, "attn.out_proj.weight": _o_columns(16, 4, by_cols)}


class SelfKV(nn.Module):
    def __init__(self, batch_first=True, **kw):
        super().__init__()
        self.attn = nn.MultiheadAttention(16, 4, batch_first=batch_first, **kw)
        self.fc = nn.Linear(16, 16)

    def forward(self, x, pad):
        return self.fc(x + self.attn(x, x, x, key_padding_mask=pad, need_weights=False)[0])


def _self_inputs(seed, B=3, T=6, batch_first=True):
    x = torch.randn(B, T, 16, generator=_gen(seed))
    pad = torch.zeros(B, T, dtype=torch.bool)
    pad[0, -2:] = True                                              # padded keys: the masks are padded too
    return (x if batch_first else x.transpose(0, 1).contiguous(), pad)


def _same_outputs(small, net, masks, inputs):
    ref = _masked(net, masks).eval()
    with torch.no_grad():
        got, want = small.eval()(*inputs), ref(*inputs)
    assert float((got - want).abs().max()) <= 1e-6 * max(1.0, float(want.abs().max()))


@pytest.mark.parametrize("kw", [{"add_bias_kv": True}, {"add_zero_attn": True}, {"add_bias_kv": True, "add_zero_attn": True},
                                {"add_bias_kv": True, "batch_first": False}, {"add_bias_kv": True, "bias": False}])
def test_multihead_attention_add_bias_kv_and_zero_attn_heads_removed(kw):
    """bias_k / bias_v lose the removed heads' slices; the extra (and zero) key column is kept, masks padded."""
    bf = kw.pop("batch_first", True)
    net = _randomize(SelfKV(bf, **kw), seed=7)
    masks = _mha_masks(net, [], [0, 2])                   # heads 0 and 2 by their out_proj columns: exact
    small = remove_pruned(net, masks, _self_inputs(30, batch_first=bf))
    a = small.attn
    assert isinstance(a, PrunedMultiheadAttention) and a.heads == 2 and a.add_zero_attn == kw.get("add_zero_attn", False)
    if kw.get("add_bias_kv"):
        assert a.bias_k.shape == a.bias_v.shape == (1, 1, 8)
        assert torch.equal(a.bias_v.flatten(), net.attn.bias_v.flatten()[_head_rows(16, 4, [1, 3])])
    _same_outputs(small, net, masks, _self_inputs(31, B=2, T=5, batch_first=bf))


def test_multihead_attention_bias_kv_head_removed_by_rows_only_if_its_values_agree():
    """A head without q/k/v weights averages its value bias, its bias_v slice and the zero attention with
    input-dependent weights: removable by rows when those are equal (here: all masked to 0), else refused."""
    net = _randomize(SelfKV(add_bias_kv=True, add_zero_attn=True), seed=8)
    masks = _mha_masks(net, [1], [])
    with pytest.raises(ValueError, match="head 1 of MultiheadAttention 'attn', removed by its q, k and v rows, still"):
        remove_pruned(net, masks, _self_inputs(32))
    vec = torch.ones(16, dtype=torch.bool)
    vec[_head_rows(16, 4, [1])] = False
    masks["attn.bias_v"] = vec.reshape(1, 1, 16)
    masks["attn.in_proj_bias"] = torch.cat([torch.ones(32, dtype=torch.bool), vec])
    small = remove_pruned(net, masks, _self_inputs(32))
    assert small.attn.heads == 3 and small.attn.in_proj_weight.shape == (36, 16)
    _same_outputs(small, net, masks, _self_inputs(33, B=4, T=3))
    net2 = _randomize(SelfKV(add_bias_kv=True), seed=9)          # bias_v slice equal to the value bias: constant
    with torch.no_grad():
        net2.attn.bias_v.view(16)[4:8] = net2.attn.in_proj_bias[32 + 4:32 + 8]
    masks = _mha_masks(net2, [1], [])
    small = remove_pruned(net2, masks, _self_inputs(34))
    _same_outputs(small, net2, masks, _self_inputs(35, B=2, T=7))
