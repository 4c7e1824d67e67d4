"""u-μP (op.scaling.unit_scale_ / plan(model, "umup")) on tiny Hugging Face models: what works, what is refused."""

import pytest
import torch
from _models import data, gpt2, llama
from torch import nn

import overparam as op


def _swap_act(model):
    for layer in model.model.layers:
        layer.mlp.act_fn = nn.SiLU()


def test_llama_refused_layers_are_named_then_wrapped_and_planned():
    m = llama(tie_word_embeddings=False).eval()
    with pytest.raises(ValueError, match=r"'model.layers.0.mlp.act_fn' \(SiLUActivation\)") as err:
        op.scaling.unit_scale_(m)
    assert "'model.norm' (LlamaRMSNorm)" in str(err.value)
    assert not any(isinstance(x, op.scaling.UnitModule) for x in m.modules())  # refused before any change
    _swap_act(m)
    keys = list(m.state_dict())
    norm = type(m.model.norm)
    names = op.scaling.unit_scale_(m, exclude=norm)
    assert "lm_head" in names and "model.layers.1.mlp.act_fn" in names and m.lm_head.readout
    assert list(m.state_dict()) == keys
    p = op.scaling.plan(m, "umup")
    types = op.scaling.umup_types(m)
    assert types["model.norm.weight"] == "norm" and types["lm_head.weight"] == "output"
    assert types["model.embed_tokens.weight"] == "weight"
    assert p.rules["model.layers.0.self_attn.q_proj.weight"].lr_scale == pytest.approx(32 ** -0.5)
    assert p.rules["model.embed_tokens.weight"].lr_scale == pytest.approx(32 ** -0.5)  # its dimension
    p.init_(m, generator=0)
    assert torch.equal(m.model.norm.weight, torch.ones(32))  # a norm gain is kept, not zeroed like a bias
    rms = {}
    hooks = [m.get_submodule(k).register_forward_hook(lambda mod, i, o, k=k: rms.__setitem__(k, float(o.detach().pow(2).mean().sqrt())))
             for k in ("model.layers.0.self_attn.q_proj", "model.layers.0.mlp.down_proj")]
    ids, labels = data("llama")
    out = m(input_ids=ids, labels=labels)
    out.loss.backward()
    for h in hooks:
        h.remove()
    assert all(0.5 <= v <= 2 for v in rms.values()), rms  # unit-scaled linears give unit outputs in the HF model
    assert torch.isfinite(out.loss) and m.lm_head.weight.grad is not None
    assert op.scaling.unwrap_units_(m) and type(m.lm_head) is nn.Linear


def test_tied_embedding_and_readout_need_a_role():
    m = llama(tie_word_embeddings=True)
    with pytest.raises(ValueError, match="'model.embed_tokens.weight' is tied to \\['lm_head.weight'\\]"):
        op.scaling.plan(m, "umup")
    types = op.scaling.umup_types(m, roles={"lm_head": "output"})
    assert types["model.embed_tokens.weight"] == "output"
    assert list(types.values()).count("output") == 1


def test_gpt2_conv1d_is_refused_by_name_the_plan_follows_its_fans():
    m = gpt2(tie_word_embeddings=False)
    with pytest.raises(ValueError, match=r"'transformer.h.0.attn.c_attn' \(Conv1D\)"):
        op.scaling.unit_scale_(m)
    p = op.scaling.plan(m, "umup")
    # Conv1D stores (in, out): fan-in 32 for c_attn (32 -> 96) and 128 for mlp.c_proj (128 -> 32)
    assert p.rules["transformer.h.0.attn.c_attn.weight"].lr_scale == pytest.approx(32 ** -0.5)
    assert p.rules["transformer.h.0.mlp.c_proj.weight"].lr_scale == pytest.approx(128 ** -0.5)
    assert p.rules["transformer.ln_f.weight"].init_std is None and p.rules["lm_head.weight"].shape.role == "output"
