"""μP on tiny Hugging Face models (issue 21): a plan built from two configs on the meta device,
``to_empty`` + the model's own init + ``plan.init_``, param groups and a training step; Conv1D fans
counted on the computation; the tied read-out multiplier and the attention scale recipes."""

import math

import pytest
import torch

import overparam as op
from _models import MAKERS, data

ROLES = {"gpt2": {"transformer.wte": "input"}, "bert": {"bert.embeddings.word_embeddings": "input"}}
READOUT = {"gpt2": "lm_head", "bert": "cls.predictions.decoder"}


def _loss(kind, model, batch):
    x, y = batch
    out = model(x).logits
    return torch.nn.functional.cross_entropy(out.reshape(-1, out.shape[-1]), y.reshape(-1))


@pytest.mark.parametrize("kind", list(MAKERS))
def test_meta_plan_to_empty_init_and_groups(kind):
    make = MAKERS[kind]
    with torch.device("meta"):
        model, base = make(64), make(32)
    p = op.scaling.plan(model, "mup", base=base, roles=ROLES.get(kind))
    model.to_empty(device="cpu")
    model.init_weights()  # the model's own init for the vectors (biases, norm gains), then the plan's
    p.init_(model, generator=0)
    assert all(torch.isfinite(q).all() for q in model.parameters())
    if kind == "gpt2":  # the tie survives to_empty
        assert model.lm_head.weight is model.transformer.wte.weight
    roles = {r.shape.role for r in p.rules.values()}
    assert {"input", "hidden"} <= roles and (kind in ROLES or "output" in roles)
    groups = p.param_groups(model.eval(), lr=1e-3, weight_decay=0.1, eps=1e-8)
    assert sorted(id(q) for g in groups for q in g["params"]) == sorted(id(q) for q in model.parameters())
    opt = torch.optim.AdamW(groups)
    batch = data(kind)
    with op.scaling.shared_readout(model, p, READOUT[kind]) if kind in READOUT else _null():
        before = float(_loss(kind, model, batch).detach())
        for _ in range(3):
            opt.zero_grad()
            _loss(kind, model, batch).backward()
            opt.step()
        assert float(_loss(kind, model, batch).detach()) < before


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return None


def test_gpt2_conv1d_fans_follow_the_computation():
    """GPT-2's Conv1D stores (in, out): c_attn of width 64 is (64, 192), fan_in 64, fan_out 192."""
    with torch.device("meta"):
        model, base = MAKERS["gpt2"](64, tie_word_embeddings=False), MAKERS["gpt2"](32, tie_word_embeddings=False)
    p = op.scaling.plan(model, "mup", base=base)
    s = p.rules["transformer.h.0.attn.c_attn.weight"].shape
    assert (s.role, s.fan_in, s.fan_out, s.m_in, s.m_out) == ("hidden", 64, 192, 2.0, 2.0)
    s = p.rules["transformer.h.0.mlp.c_proj.weight"].shape
    assert (s.fan_in, s.fan_out) == (256, 64)
    assert p.rules["lm_head.weight"].shape.role == "output"
    assert p.rules["transformer.h.0.mlp.c_fc.weight"].init_std == pytest.approx(1 / math.sqrt(64))


def test_tied_readout_hook_and_attention_scale():
    make = MAKERS["gpt2"]
    torch.manual_seed(0)
    model = make(64).eval()
    with torch.device("meta"):
        base = make(32)
    with pytest.raises(ValueError, match="different roles"):
        op.scaling.plan(model, "mup", base=base)
    p = op.scaling.plan(model, "mup", base=base, roles=ROLES["gpt2"])
    ids = data("gpt2")[0]
    keys, plain = list(model.state_dict()), model(ids).logits
    h = op.scaling.shared_readout(model, p)
    assert h.multiplier == 0.5
    torch.testing.assert_close(model(ids).logits, plain / 2)
    h.remove()
    torch.testing.assert_close(model(ids).logits, plain)
    assert list(model.state_dict()) == keys
    with pytest.raises(ValueError, match="selects no module"):
        op.scaling.shared_readout(model, p, "transformer.h.0.ln_1")
    # attention: 1/sqrt(d_head) = 1/sqrt(32) -> sqrt(16)/32 (1/d_head, equal to the model's own at d_head 16)
    changed = op.scaling.attention_scale_(model, base)
    assert changed["transformer.h.0.attn"] == (pytest.approx(32 ** -0.5), pytest.approx(16 ** 0.5 / 32))
    assert model.transformer.h[1].attn.scaling == pytest.approx(4 / 32)
    assert not torch.allclose(model(ids).logits, plain)  # eager/SDPA paths read .scaling
    with torch.device("meta"):
        more_heads = MAKERS["llama"](64)
        more_heads_base = MAKERS["llama"](32)
    before = [m.scaling for m in more_heads.modules() if hasattr(m, "scaling")]
    op.scaling.attention_scale_(more_heads, more_heads_base)
    assert [m.scaling for m in more_heads.modules() if hasattr(m, "scaling")] != before
    with pytest.raises(ValueError, match="no module with a float attribute 'scaling'"):
        op.scaling.attention_scale_(torch.nn.Linear(2, 2), base)


@pytest.mark.parametrize("kind", ["gpt2", "llama"])
def test_muon_groups_take_every_hidden_matrix(kind):
    """Muon gets the attention and MLP matrices (GPT-2's Conv1D stored (in, out) included), AdamW the
    embeddings, read-out and vectors; one step of both runs."""
    torch.manual_seed(0)
    model = MAKERS[kind](64).eval()
    with torch.device("meta"):
        base = MAKERS[kind](32)
    p = op.scaling.plan(model, "mup", base=base, roles=ROLES.get(kind))
    muon, adamw = op.scaling.muon_param_groups(p, model, lr=0.02, adam_lr=1e-3)
    names = {id(q): k for k, q in model.named_parameters()}
    in_muon = {names[id(q)] for g in muon for q in g["params"]}
    blocks = {k for k, q in model.named_parameters() if q.ndim == 2 and (".h." in k or ".layers." in k)}
    assert in_muon == blocks
    assert all(g["lr"] == pytest.approx(0.02) for g in muon)  # square growth of every block matrix
    opts = torch.optim.Muon(muon), torch.optim.AdamW(adamw)
    _loss(kind, model, data(kind)).backward()
    for o in opts:
        o.step()
