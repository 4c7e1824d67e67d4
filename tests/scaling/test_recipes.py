"""Transformer recipes: the tied read-out hook trains exactly like the explicit MuSharedReadout
forward (logits = h Eᵀ / m), leaves the model as it was once removed; attention_scale_ closed forms."""

import math

import pytest
import torch
from torch import nn

import overparam as op


class LM(nn.Module):
    def __init__(self, w, explicit_m=None):
        super().__init__()
        self.emb, self.mix, self.head = nn.Embedding(12, w), nn.Linear(w, w), nn.Linear(w, 12, bias=False)
        self.head.weight = self.emb.weight
        self.explicit_m = explicit_m

    def forward(self, ids):
        h = torch.tanh(self.mix(self.emb(ids)))
        if self.explicit_m is not None:  # mup's MuSharedReadout, written out
            return h @ self.emb.weight.T / self.explicit_m
        return self.head(h)


def test_shared_readout_equals_the_explicit_multiplier_and_is_removable():
    torch.manual_seed(0)
    w, bw = 64, 16
    a = LM(w).double()
    p = op.scaling.plan(a, "mup", base=LM(bw), roles={"emb": "input"})
    p.init_(a, generator=0)
    b = LM(w, explicit_m=w / bw).double()
    b.load_state_dict(a.state_dict())
    keys = list(a.state_dict())
    ids, y = torch.randint(0, 12, (40,)), torch.randint(0, 12, (40,))
    opt_a = torch.optim.AdamW(p.param_groups(a, lr=1e-2, weight_decay=0.1, eps=1e-8))
    opt_b = torch.optim.AdamW(p.param_groups(b, lr=1e-2, weight_decay=0.1, eps=1e-8))
    with op.scaling.shared_readout(a, p, "head") as h:
        assert h.multiplier == pytest.approx(bw / w) and "active=True" in repr(h)
        for _ in range(4):
            for net, opt in ((a, opt_a), (b, opt_b)):
                opt.zero_grad()
                nn.functional.cross_entropy(net(ids), y).backward()
                opt.step()
            torch.testing.assert_close(a(ids), b(ids), rtol=1e-12, atol=1e-14)
    assert not a.head._forward_hooks and list(a.state_dict()) == keys
    torch.testing.assert_close(a(ids), b(ids) * (w / bw), rtol=1e-12, atol=1e-12)  # the hook is gone


def test_shared_readout_bad_input():
    m = LM(32)
    p = op.scaling.plan(m, "mup", base=LM(16), roles={"emb": "input"})
    frozen = LM(32)
    frozen.mix.weight.requires_grad_(False)
    pf = op.scaling.plan(frozen, "mup", base=LM(16), roles={"emb": "input"})
    with pytest.raises(ValueError, match="selects no module whose weight"):
        op.scaling.shared_readout(frozen, pf, "mix")
    with pytest.raises(ValueError, match="has the role 'hidden'"):
        op.scaling.shared_readout(m, p, "mix")
    with pytest.raises(ValueError, match="matches no module"):
        op.scaling.shared_readout(m, p, "lm_head")
    untied = nn.Sequential(nn.Linear(4, 32), nn.Tanh(), nn.Linear(32, 3))
    q = op.scaling.plan(untied, "mup", base=nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3)))
    with pytest.raises(ValueError, match="has the role 'output'"):
        op.scaling.shared_readout(untied, q, "2")
    with pytest.raises(TypeError, match="plan"):
        op.scaling.shared_readout(m, {}, "head")
    with pytest.raises(ValueError, match="multiplier"):
        op.scaling.SharedReadout({"head": m.head}, 0.0)


class Attn(nn.Module):
    def __init__(self, heads, d_head):
        super().__init__()
        self.qkv = nn.Linear(heads * d_head, 3 * heads * d_head)
        self.heads, self.scaling = heads, d_head ** -0.5


class Net(nn.Module):
    def __init__(self, heads, d_head, blocks=2):
        super().__init__()
        self.blocks = nn.ModuleList(Attn(heads, d_head) for _ in range(blocks))


def test_attention_scale_closed_forms():
    m = Net(2, 64)
    out = op.scaling.attention_scale_(m, Net(2, 16))
    assert list(out) == ["blocks.0", "blocks.1"]
    for k, (old, new) in out.items():
        assert old == pytest.approx(1 / 8) and new == pytest.approx(math.sqrt(16) / 64)  # 1/d_head, base constant
    same = Net(2, 16)
    assert op.scaling.attention_scale_(same, Net(2, 16))["blocks.0"] == (0.25, 0.25)  # at the base head size
    heads = Net(8, 16)
    op.scaling.attention_scale_(heads, Net(2, 16))
    assert heads.blocks[0].scaling == 0.25  # width through the number of heads: nothing to do
    with pytest.raises(ValueError, match="base has no attention module"):
        op.scaling.attention_scale_(Net(2, 64, blocks=3), Net(2, 16))
    with pytest.raises(ValueError, match="no module with a float attribute"):
        op.scaling.attention_scale_(nn.Linear(2, 2), Net(2, 16))
    with pytest.raises(TypeError, match="base"):
        op.scaling.attention_scale_(m, "base")
