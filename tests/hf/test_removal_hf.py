"""Structural removal of Hugging Face GPT-2 and LLaMA blocks (torch.fx cannot trace them): MLP hidden
units and attention heads from the module structure; the smaller model equals the masked one (fp32, 1e-6)."""

import copy

import pytest
import torch
import transformers as T

from overparam.prune import apply_masks_, remove_pruned
from _models import VOCAB


def _random(net, seed=0):
    """Every weight and bias random (HF initialises biases to zero; nonzero ones test the folding)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    return net.eval()


def _ids(seed, B=2, T_=8):
    return torch.randint(0, VOCAB, (B, T_), generator=torch.Generator().manual_seed(seed))


def _check(small, net, masks, ids):
    ref = copy.deepcopy(net)
    apply_masks_(ref, masks)
    with torch.no_grad():
        a, b = small.eval()(ids).logits, ref.eval()(ids).logits
    assert a.shape == b.shape and float((a - b).abs().max()) <= 1e-6 * max(1.0, float(b.abs().max()))


def _nparams(net):
    return sum(p.numel() for p in net.parameters())


def _gpt2():
    cfg = T.GPT2Config(n_layer=2, n_embd=32, n_head=4, vocab_size=VOCAB, n_positions=16, bos_token_id=0, eos_token_id=0)
    return _random(T.GPT2LMHeadModel(cfg))


def _ones(p):
    return torch.ones(p.shape, dtype=torch.bool)


def test_gpt2_mlp_units_and_heads_removed():
    net = _gpt2()
    masks = {}
    for i, blk in enumerate(net.transformer.h):
        fc, proj = _ones(blk.mlp.c_fc.weight), _ones(blk.mlp.c_proj.weight)    # Conv1D weights are (in, out)
        fc[:, [1, 5, 9 + i]] = False                                           # units by their c_fc columns
        proj[[20, 30 + i]] = False                                             # units by their c_proj rows
        qkv, o = _ones(blk.attn.c_attn.weight), _ones(blk.attn.c_proj.weight)
        for part in range(3):
            qkv[:, part * 32 + 8:part * 32 + 16] = False                       # head 1 by its q, k, v columns
        o[24:32] = False                                                       # head 3 by its c_proj rows
        p = f"transformer.h.{i}."
        masks.update({p + "mlp.c_fc.weight": fc, p + "mlp.c_proj.weight": proj,
                      p + "attn.c_attn.weight": qkv, p + "attn.c_proj.weight": o})
    small = remove_pruned(net.train(), masks, (_ids(0),))          # checked in eval mode, flags kept
    assert type(small) is T.GPT2LMHeadModel and small.training and small.transformer.h[0].attn.training
    b = small.transformer.h[1]
    assert b.mlp.c_fc.weight.shape == (32, 123) and b.mlp.c_proj.weight.shape == (123, 32)
    assert b.attn.c_attn.weight.shape == (32, 48) and b.attn.c_proj.weight.shape == (16, 32) and b.attn.split_size == 16
    assert torch.equal(b.attn.c_attn.weight[:, 24:32], net.transformer.h[1].attn.c_attn.weight[:, 48:56])  # k of head 2
    assert _nparams(small) < _nparams(net)
    _check(small, net, masks, _ids(1, B=3, T_=11))
    bad = dict(masks)
    bad["transformer.h.0.attn.c_proj.weight"] = masks["transformer.h.0.attn.c_proj.weight"].clone()
    bad["transformer.h.0.attn.c_proj.weight"][0, 0] = False                    # one entry of head 0
    with pytest.raises(ValueError, match="head 0 of 'transformer.h.0.attn' is partly masked"):
        remove_pruned(net, bad, (_ids(0),))


def _llama(**kw):
    cfg = T.LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                        num_key_value_heads=2, vocab_size=VOCAB, max_position_embeddings=16, **kw)
    return _random(T.LlamaForCausalLM(cfg))


def _llama_masks(net, q_heads=(), kv_heads=(), o_heads=(), units=(), down=()):
    masks = {}
    for i, layer in enumerate(net.model.layers):
        a, m, p = layer.self_attn, layer.mlp, f"model.layers.{i}."
        mk = {n: _ones(getattr(a, n).weight) for n in ("q_proj", "k_proj", "v_proj", "o_proj")}
        for h in q_heads:
            mk["q_proj"][h * 8:(h + 1) * 8] = False
        for h in kv_heads:
            mk["k_proj"][h * 8:(h + 1) * 8] = mk["v_proj"][h * 8:(h + 1) * 8] = False
        for h in o_heads:
            mk["o_proj"][:, h * 8:(h + 1) * 8] = False
        masks.update({f"{p}self_attn.{n}.weight": v for n, v in mk.items()})
        g, u, d = _ones(m.gate_proj.weight), _ones(m.up_proj.weight), _ones(m.down_proj.weight)
        g[list(units)] = u[list(units)] = False
        d[:, list(down)] = False
        masks.update({f"{p}mlp.gate_proj.weight": g, f"{p}mlp.up_proj.weight": u, f"{p}mlp.down_proj.weight": d})
    return masks


@pytest.mark.parametrize("bias", [False, True])
def test_llama_gqa_heads_and_gated_units_removed(bias):
    net = _llama(attention_bias=bias, mlp_bias=bias)
    masks = _llama_masks(net, q_heads=[2, 3], kv_heads=[1], units=[0, 7, 40], down=[3, 63])   # a whole kv group
    small = remove_pruned(net, masks, (_ids(2),))
    a, m = small.model.layers[0].self_attn, small.model.layers[0].mlp
    assert (a.q_proj.out_features, a.k_proj.out_features, a.o_proj.in_features, a.num_key_value_groups) == (16, 8, 16, 2)
    assert (m.gate_proj.out_features, m.down_proj.in_features) == (59, 59)
    assert _nparams(small) < _nparams(net)
    _check(small, net, masks, _ids(3, B=3, T_=10))
    masks = _llama_masks(net, o_heads=[0, 3])                            # one query head of each kv group
    small = remove_pruned(net, masks, (_ids(2),))
    a = small.model.layers[1].self_attn
    assert (a.q_proj.out_features, a.k_proj.out_features, a.num_key_value_groups) == (16, 16, 1)
    _check(small, net, masks, _ids(4))
    with pytest.raises(ValueError, match=r"would keep \[1, 2\] query heads per key-value head"):
        remove_pruned(net, _llama_masks(net, o_heads=[0]), (_ids(2),))
    with pytest.raises(ValueError, match="head 2 of 'model.layers.0.self_attn' is partly masked"):
        remove_pruned(net, _llama_masks(net, kv_heads=[1]), (_ids(2),))   # k, v of group 1 alone: heads 2, 3 partial
    lm = _ones(net.lm_head.weight)
    lm[3] = False                                                      # a structured mask outside the blocks
    with pytest.raises(ValueError, match=r"masks\['lm_head.weight'\]: without a torch.fx trace only"):
        remove_pruned(net, {"lm_head.weight": lm}, (_ids(0),))
