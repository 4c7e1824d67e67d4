"""u-μP (op.scaling.unit_scale_ / plan(model, "umup")) on tiny Hugging Face models: what works, what is refused."""

import pytest
import torch
from _models import data, gpt2, llama, vit
from torch import nn

import overparam as op
from overparam.scaling import unit_ops as U


def _rms_hooks(model, names):
    rms = {}
    hooks = [model.get_submodule(k).register_forward_hook(
        lambda mod, i, o, k=k: rms.__setitem__(k, float(o.detach().pow(2).mean().sqrt()))) for k in names]
    return rms, hooks


def _train_step(model, kind):
    ids, labels = data(kind)
    out = model(input_ids=ids, labels=labels)
    out.loss.backward()
    return out


def test_llama_is_wrapped_whole_and_planned():
    m = llama(tie_word_embeddings=False).eval()
    keys = list(m.state_dict())
    norm, act = m.model.norm, m.model.layers[0].mlp.act_fn
    names = op.scaling.unit_scale_(m)
    assert {"model.norm", "model.layers.0.mlp.act_fn", "model.layers.1.input_layernorm", "lm_head"} <= set(names)
    assert m.lm_head.readout and list(m.state_dict()) == keys
    x = torch.randn(2, 5, 32)
    torch.testing.assert_close(m.model.norm(x), norm(x), rtol=1e-6, atol=1e-6)   # LlamaRMSNorm: unit gain grad only
    torch.testing.assert_close(m.model.layers[0].mlp.act_fn(x), U.silu(x))
    assert torch.equal(act(x), torch.nn.functional.silu(x))
    p = op.scaling.plan(m, "umup")
    types = op.scaling.umup_types(m)
    assert types["model.norm.weight"] == "norm" and types["lm_head.weight"] == "output"
    assert p.rules["model.layers.0.self_attn.q_proj.weight"].lr_scale == pytest.approx(32 ** -0.5)
    assert p.rules["model.embed_tokens.weight"].lr_scale == pytest.approx(32 ** -0.5)  # its dimension
    p.init_(m, generator=0)
    assert torch.equal(m.model.norm.weight, torch.ones(32))  # a norm gain is kept, not zeroed like a bias
    rms, hooks = _rms_hooks(m, ["model.layers.0.self_attn.q_proj", "model.layers.0.mlp.down_proj"])
    out = _train_step(m, "llama")
    for h in hooks:
        h.remove()
    assert all(0.5 <= v <= 2 for v in rms.values()), rms  # unit-scaled linears give unit outputs in the HF model
    assert torch.isfinite(out.loss) and m.model.norm.weight.grad is not None
    assert len(op.scaling.unwrap_units_(m)) == len(names) and m.model.norm is norm


def test_gpt2_conv1d_and_new_gelu_are_wrapped():
    m = gpt2(tie_word_embeddings=False).eval()
    conv = m.transformer.h[0].attn.c_attn
    names = op.scaling.unit_scale_(m)
    assert {"transformer.h.0.attn.c_attn", "transformer.h.0.mlp.act", "transformer.h.1.mlp.c_proj"} <= set(names)
    x = torch.randn(3, 32)
    torch.testing.assert_close(m.transformer.h[0].attn.c_attn(x), U.linear(x, conv.weight.t(), conv.bias))
    torch.testing.assert_close(m.transformer.h[0].mlp.act(x), U.gelu(x, approximate="tanh"))
    p = op.scaling.plan(m, "umup")
    # Conv1D stores (in, out): fan-in 32 for c_attn (32 -> 96) and 128 for mlp.c_proj (128 -> 32)
    assert p.rules["transformer.h.0.attn.c_attn.weight"].lr_scale == pytest.approx(32 ** -0.5)
    assert p.rules["transformer.h.0.mlp.c_proj.weight"].lr_scale == pytest.approx(128 ** -0.5)
    assert p.rules["transformer.ln_f.weight"].init_std is None and p.rules["lm_head.weight"].shape.role == "output"
    p.init_(m, generator=0)
    rms, hooks = _rms_hooks(m, ["transformer.h.0.mlp.c_fc", "transformer.h.1.attn.c_attn"])
    out = _train_step(m, "gpt2")
    for h in hooks:
        h.remove()
    assert all(0.5 <= v <= 2 for v in rms.values()), rms
    assert torch.isfinite(out.loss) and conv.weight.grad is not None


def test_vit_patch_conv_and_embedding_parameters_are_refused_by_name():
    m = vit()
    with pytest.raises(ValueError, match=r"'vit.embeddings' \(ViTEmbeddings\), "
                                         r"'vit.embeddings.patch_embeddings.projection' \(Conv2d\)"):
        op.scaling.unit_scale_(m)
    assert not any(isinstance(x, op.scaling.UnitModule) for x in m.modules())  # refused before any change
    names = op.scaling.unit_scale_(m, exclude=["vit.embeddings"])
    assert "classifier" in names and not any(k.startswith("vit.embeddings") for k in names)


def test_tied_embedding_and_readout_need_a_role():
    m = llama(tie_word_embeddings=True)
    with pytest.raises(ValueError, match="'model.embed_tokens.weight' is tied to \\['lm_head.weight'\\]"):
        op.scaling.plan(m, "umup")
    types = op.scaling.umup_types(m, roles={"lm_head": "output"})
    assert types["model.embed_tokens.weight"] == "output"
    assert list(types.values()).count("output") == 1
