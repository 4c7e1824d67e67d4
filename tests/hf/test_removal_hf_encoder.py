"""Structural removal of Hugging Face encoder blocks (BERT, RoBERTa, ViT) and of GPT-2 cross-attention, from
the module structure: heads and MLP units removed, the smaller model equals the masked one (fp32, 1e-6, eager and
sdpa attention), the parameter count drops by exactly the removed rows and columns, the input model is untouched;
``channel_groups`` lists the blocks' MLP units and attention channels without a trace."""

import copy

import pytest
import torch
import transformers as T

from overparam.prune import apply_masks_, channel_groups, ln_structured, remove_pruned
from _models import VOCAB
from test_removal_hf import _gpt2, _ids, _llama, _nparams, _ones, _random

E, H, D, FF = 32, 4, 8, 64            # width, heads, head size, MLP units of every tiny model here
HEAD = 3 * (D * E + D) + E * D         # parameters of one removed head: q, k, v rows with their biases, o columns
UNIT = (E + 1) + E                     # of one removed MLP unit: its first-layer row and bias, its second-layer column


def _same(small, net, masks, *inputs, **kw):
    """``small`` computes what ``net`` with ``masks`` applied computes (eval mode, every output tensor)."""
    ref = copy.deepcopy(net)
    apply_masks_(ref, masks)
    with torch.no_grad():
        a, b = small.eval()(*inputs, **kw), ref.eval()(*inputs, **kw)
    a, b = (a,) if torch.is_tensor(a) else a.to_tuple(), (b,) if torch.is_tensor(b) else b.to_tuple()
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x.shape == y.shape and float((x - y).abs().max()) <= 1e-6 * max(1.0, float(y.abs().max()))


def _remove_checked(net, masks, inputs):
    """remove_pruned on ``net`` in train mode: its state_dict and flags untouched, the result's flags the same."""
    net.train()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    small = remove_pruned(net, masks, inputs)
    after = net.state_dict()
    assert list(after) == list(before) and all(torch.equal(after[k], v) for k, v in before.items())
    assert [m.training for m in small.modules()] == [m.training for m in net.modules()] and small.training
    return small


def _heads_of(masks, prefix, paths, heads, rows=True):
    """Mask ``heads`` of the projections ``paths`` under ``prefix`` (rows of q/k/v, or columns of o)."""
    for p in paths:
        m = masks[f"{prefix}{p}.weight"]
        for h in heads:
            (m[h * D:(h + 1) * D] if rows else m[:, h * D:(h + 1) * D]).fill_(False)


def _bert(kind, attn):
    Cfg, Model = {"bert": (T.BertConfig, T.BertModel), "roberta": (T.RobertaConfig, T.RobertaModel)}[kind]
    cfg = Cfg(hidden_size=E, intermediate_size=FF, num_hidden_layers=2, num_attention_heads=H, vocab_size=VOCAB,
              max_position_embeddings=20, attn_implementation=attn)
    return _random(Model(cfg))


def _bert_masks(net, qkv=((), ()), o=((), ()), units=((), ()), down=((), ())):
    """Per layer: heads by their query/key/value rows, heads by their output.dense columns, MLP units by their
    intermediate.dense rows, by their output.dense columns."""
    masks = {n: _ones(p) for n, p in net.named_parameters() if n.endswith("weight") and p.dim() == 2
             and ".layer." in n}
    for i in range(2):
        p = f"encoder.layer.{i}."
        _heads_of(masks, p + "attention.self.", ("query", "key", "value"), qkv[i])
        _heads_of(masks, p + "attention.", ("output.dense",), o[i], rows=False)
        masks[p + "intermediate.dense.weight"][list(units[i])] = False
        masks[p + "output.dense.weight"][:, list(down[i])] = False
    return masks


def _text(seed):
    ids = torch.randint(2, VOCAB, (2, 8), generator=torch.Generator().manual_seed(seed))
    att = torch.ones(2, 8, dtype=torch.long)
    att[1, 6:] = 0                                                     # padding in the second sequence
    return ids, att


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
@pytest.mark.parametrize("kind", ["bert", "roberta"])
def test_bert_heads_and_units_removed(kind, attn):
    net = _bert(kind, attn)
    masks = _bert_masks(net, qkv=([1], [0]), o=([3], [1, 2]), units=([0, 5, 17], [2]), down=([40, 63], [5, 9, 63]))
    small = _remove_checked(net, masks, _text(0))
    s0, s1 = small.encoder.layer[0].attention.self, small.encoder.layer[1].attention.self
    assert (s0.num_attention_heads, s0.all_head_size, s0.query.out_features) == (2, 16, 16)
    assert (s1.num_attention_heads, s1.all_head_size, s1.key.out_features) == (1, 8, 8)      # all heads but one gone
    assert torch.equal(s1.value.weight, net.encoder.layer[1].attention.self.value.weight[24:])
    assert small.encoder.layer[0].intermediate.dense.out_features == small.encoder.layer[0].output.dense.in_features == 59
    assert _nparams(net) - _nparams(small) == 5 * HEAD + 9 * UNIT
    _same(small, net, masks, *_text(1))


def test_bert_value_bias_of_removed_head_folded():
    """Oracle: a head whose q, k, v rows are masked outputs its value bias b_v (its attention rows sum to 1), so
    output.dense's bias becomes b + W_o[:, head] b_v; without that fold the output would differ."""
    net = _bert("bert", "eager")
    att = net.encoder.layer[0].attention
    masks = _bert_masks(net, qkv=([2], []))
    small = _remove_checked(net, masks, _text(0))
    cols = slice(2 * D, 3 * D)
    want = att.output.dense.bias + att.output.dense.weight[:, cols] @ att.self.value.bias[cols]
    assert torch.allclose(small.encoder.layer[0].attention.output.dense.bias, want, atol=1e-6, rtol=0)
    _same(small, net, masks, *_text(1))
    silent = _bert_masks(net, qkv=([2], []), o=([2], []))               # the head's o columns masked too: no b_v
    a, b = copy.deepcopy(net).eval(), copy.deepcopy(net).eval()
    apply_masks_(a, masks), apply_masks_(b, silent)
    with torch.no_grad():
        assert float((a(*_text(1)).last_hidden_state - b(*_text(1)).last_hidden_state).abs().max()) > 1e-2


def test_bert_refusals():
    net = _bert("bert", "eager")
    with pytest.raises(ValueError, match="every head of 'encoder.layer.0.attention' is masked"):
        remove_pruned(net, _bert_masks(net, qkv=([0, 1], []), o=([2, 3], [])), _text(0))
    partly = _bert_masks(net)
    partly["encoder.layer.1.attention.self.query.weight"][2 * D:3 * D] = False   # q rows of head 2 alone
    with pytest.raises(ValueError, match="head 2 of 'encoder.layer.1.attention' is partly masked"):
        remove_pruned(net, partly, _text(0))
    with pytest.raises(ValueError, match="every hidden unit of 'encoder.layer.0' is masked"):
        remove_pruned(net, _bert_masks(net, units=(range(FF), [])), _text(0))


class _Decoder(torch.nn.Module):
    """A language model with cross-attention as a module of positional inputs (token ids, encoder states) → logits."""

    def __init__(self, lm):
        super().__init__()
        self.lm = lm

    def forward(self, ids, enc):
        return self.lm(input_ids=ids, encoder_hidden_states=enc).logits


def test_bert_decoder_cross_attention_heads_removed():
    cfg = T.BertConfig(hidden_size=E, intermediate_size=FF, num_hidden_layers=2, num_attention_heads=H, vocab_size=VOCAB,
                       max_position_embeddings=20, is_decoder=True, add_cross_attention=True)
    net = _Decoder(_random(T.BertLMHeadModel(cfg)))
    masks = {n: _ones(p) for n, p in net.named_parameters() if ".crossattention." in n and n.endswith("weight")
             and p.dim() == 2}
    _heads_of(masks, "lm.bert.encoder.layer.0.crossattention.self.", ("query", "key", "value"), [0, 2])
    _heads_of(masks, "lm.bert.encoder.layer.1.crossattention.", ("output.dense",), [1, 2, 3], rows=False)
    gen = torch.Generator().manual_seed(0)
    ids, enc = torch.randint(2, VOCAB, (2, 7), generator=gen), torch.randn(2, 5, E, generator=gen)
    small = _remove_checked(net, masks, (ids, enc))
    c0, c1 = (small.lm.bert.encoder.layer[i].crossattention.self for i in range(2))
    assert (c0.num_attention_heads, c0.key.out_features, c1.num_attention_heads, c1.value.out_features) == (2, 16, 1, 8)
    assert _nparams(net) - _nparams(small) == 5 * HEAD
    _same(small, net, masks, torch.randint(2, VOCAB, (3, 6), generator=gen), torch.randn(3, 4, E, generator=gen))


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_vit_heads_and_units_removed(attn):
    cfg = T.ViTConfig(hidden_size=E, intermediate_size=FF, num_hidden_layers=2, num_attention_heads=H, image_size=16,
                      patch_size=4, num_channels=3, attn_implementation=attn)
    net = _random(T.ViTModel(cfg))
    masks = {n: _ones(p) for n, p in net.named_parameters() if n.endswith(("proj.weight", "fc1.weight", "fc2.weight"))}
    o0 = net.layers[0].attention.o_proj.weight
    masks["layers.0.attention.o_proj.weight"] = ln_structured(o0, 0.5, dim=1, groups=H)   # 2 heads by their o norms
    _heads_of(masks, "layers.1.attention.", ("q_proj", "k_proj", "v_proj"), [0, 3])
    _heads_of(masks, "layers.1.attention.", ("o_proj",), [1], rows=False)             # all heads but head 2 gone
    masks["layers.0.mlp.fc1.weight"][[3, 4]] = False
    masks["layers.1.mlp.fc2.weight"][:, [0, 10, 20]] = False
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    small = _remove_checked(net, masks, (x,))
    a1 = small.layers[1].attention
    assert (a1.num_attention_heads, a1.q_proj.out_features, a1.o_proj.in_features) == (1, 8, 8)
    assert not hasattr(a1, "num_key_value_groups")
    assert small.layers[0].mlp.fc1.out_features == small.layers[0].mlp.fc2.in_features == 62
    assert _nparams(net) - _nparams(small) == 5 * HEAD + 5 * UNIT
    _same(small, net, masks, torch.randn(3, 3, 16, 16, generator=torch.Generator().manual_seed(1)))


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_gpt2_cross_attention_heads_removed(attn):
    cfg = T.GPT2Config(n_layer=2, n_embd=E, n_head=H, vocab_size=VOCAB, n_positions=16, bos_token_id=0,
                       eos_token_id=0, add_cross_attention=True, attn_implementation=attn)
    net = _Decoder(_random(T.GPT2LMHeadModel(cfg)))
    masks = {n: _ones(p) for n, p in net.named_parameters() if n.endswith(("attn.weight", "c_proj.weight"))}
    p0, p1 = "lm.transformer.h.0.crossattention.", "lm.transformer.h.1.crossattention."
    for p, qkv, o in ((p0, [1], [3]), (p1, [0, 2], [3])):          # layer 1: all cross heads but head 1 gone
        for h in qkv:
            masks[p + "q_attn.weight"][:, h * D:(h + 1) * D] = False
            masks[p + "c_attn.weight"][:, h * D:(h + 1) * D] = masks[p + "c_attn.weight"][:, E + h * D:E + (h + 1) * D] = False
        for h in o:
            masks[p + "c_proj.weight"][h * D:(h + 1) * D] = False
    masks["lm.transformer.h.0.attn.c_proj.weight"][0:D] = False    # and self-attention head 0 of layer 0
    gen = torch.Generator().manual_seed(0)
    ids, enc = torch.randint(0, VOCAB, (2, 7), generator=gen), torch.randn(2, 5, E, generator=gen)
    small = _remove_checked(net, masks, (ids, enc))
    c1 = small.lm.transformer.h[1].crossattention
    assert (c1.num_heads, c1.split_size, c1.q_attn.weight.shape, c1.c_attn.weight.shape) == (1, 8, (E, 8), (E, 16))
    orig = net.lm.transformer.h[1].crossattention.c_attn.weight
    assert torch.equal(c1.c_attn.weight, torch.cat([orig[:, D:2 * D], orig[:, E + D:E + 2 * D]], 1))   # k | v of head 1
    assert small.lm.transformer.h[0].attn.num_heads == 3
    assert _nparams(net) - _nparams(small) == 6 * HEAD
    _same(small, net, masks, torch.randint(0, VOCAB, (3, 9), generator=gen), torch.randn(3, 4, E, generator=gen))
    bad = {k: v.clone() for k, v in masks.items()}
    bad[p0 + "q_attn.weight"][:, 0] = False                              # one query column of cross head 0
    with pytest.raises(ValueError, match="head 0 of 'lm.transformer.h.0.crossattention' is partly masked"):
        remove_pruned(net, bad, (ids, enc))


def test_channel_groups_without_a_trace_build_masks_remove_pruned_accepts():
    net = _bert("bert", "eager")
    groups = channel_groups(net, _text(0))
    by = {g.producers[0]: g for g in groups}
    assert len(groups) == 4 and all(g.fixed is None for g in groups)      # per layer: MLP units, attention channels
    mlp, att = by["encoder.layer.1.intermediate.dense.weight"], by["encoder.layer.1.attention.self.query.weight"]
    assert mlp.size == FF and ("encoder.layer.1.output.dense.weight", 1) in mlp.params
    assert att.size == E and att.producers[1:] == ["encoder.layer.1.attention.self.key.weight",
                                                   "encoder.layer.1.attention.self.value.weight"]
    masks = {p: _ones(net.get_parameter(p)) for g in (mlp, att) for p in g.producers}
    for p in att.producers:
        masks[p][D:3 * D] = False                                          # heads 1 and 2: same rows in each producer
    masks[mlp.producers[0]][[7, 8]] = False
    small = remove_pruned(net, masks, _text(0))
    assert small.encoder.layer[1].attention.self.num_attention_heads == 2
    assert _nparams(net) - _nparams(small) == 2 * HEAD + 2 * UNIT
    _same(small, net, masks, *_text(2))
    gpt2 = channel_groups(_gpt2(), (_ids(0),))
    assert gpt2[0].producers == [f"transformer.h.0.attn.c_attn.weight rows {a}:{a + 32}" for a in (0, 32, 64)]
    assert gpt2[0].params[0] == ("transformer.h.0.attn.c_attn.weight", 1)   # Conv1D (in, out): its columns
    assert [g.producers for g in channel_groups(_llama(), (_ids(0),))] == \
        [["model.layers.0.mlp.gate_proj.weight", "model.layers.0.mlp.up_proj.weight"],
         ["model.layers.1.mlp.gate_proj.weight", "model.layers.1.mlp.up_proj.weight"]]   # GQA heads: not listed

    class Untraceable(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(3, 3)

        def forward(self, x):
            return self.lin(x) if bool(x.sum() > 0) else x

    with pytest.raises(ValueError, match="cannot be traced by torch.fx"):
        channel_groups(Untraceable(), (torch.ones(2, 3),))
