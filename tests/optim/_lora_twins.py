"""The same LoRA model built by peft and by overparam, for the tests that compare against peft
(they skip where peft is not importable; peft lives in the anchor environment)."""

import copy

import pytest
import torch
from torch import nn

import overparam as op

D = torch.float64


def _rand(*shape, seed=0, dtype=D):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def trainable(net):
    return [p for p in net.parameters() if p.requires_grad]


def peft_twins(dtype=D, rank=4, embedding=False, biases=False):
    """The same LoRA model built by peft and by overparam (random A and B ≠ 0 copied), in ``dtype``.

    ``Linear(12, 10) → GELU → LayerNorm → Linear(10, 5)`` with LoRA on both Linears (``embedding``:
    an ``Embedding(9, 12)`` with LoRA in front). The LayerNorm is trainable in both (peft freezes it
    by default); ``biases``: the wrapped layers' biases too. Returns ``(peft_model, overparam_model)``.
    """
    peft = pytest.importorskip("peft")
    torch.manual_seed(0)
    layers = [nn.Linear(12, 10), nn.GELU(), nn.LayerNorm(10), nn.Linear(10, 5)]
    if embedding:
        layers.insert(0, nn.Embedding(9, 12))
    base = nn.Sequential(*layers).to(dtype)
    k = int(embedding)
    targets = [str(i) for i in ([0] if embedding else []) + [k, k + 3]]
    mine = copy.deepcopy(base)
    cfg = peft.LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=targets, lora_dropout=0.0)
    pm = peft.get_peft_model(copy.deepcopy(base), cfg)
    op.factor.lora_(mine, targets, rank=rank, alpha=2 * rank, generator=0)
    with torch.no_grad():
        for i, idx in enumerate(targets):
            lay, me = pm.base_model.model.get_submodule(idx), mine.get_submodule(idx)
            if isinstance(me.base, nn.Embedding):    # peft: ΔW = (B A)ᵀ, B (dim, r), A (r, num); here up (num, r)
                A, B = _rand(rank, 9, seed=20 + i, dtype=dtype), _rand(12, rank, seed=30 + i, dtype=dtype)
                lay.lora_embedding_A["default"].copy_(A); lay.lora_embedding_B["default"].copy_(B)
                me.lora_up.copy_(A.T); me.lora_down.copy_(B)
                continue
            A, B = _rand(rank, lay.in_features, seed=20 + i, dtype=dtype), _rand(lay.out_features, rank, seed=30 + i, dtype=dtype)
            lay.lora_A["default"].weight.copy_(A); lay.lora_B["default"].weight.copy_(B)
            me.lora_down.copy_(A.T); me.lora_up.copy_(B)
    for n, p in pm.named_parameters():
        if n.startswith(f"base_model.model.{k + 2}.") or (biases and n.endswith("base_layer.bias")):
            p.requires_grad_(True)
    if biases:
        for n, p in mine.named_parameters():
            if n.endswith("base.bias"):
                p.requires_grad_(True)
    assert sorted(peft_named(pm)[n] for n, p in pm.named_parameters() if p.requires_grad) == \
        sorted(n for n, p in mine.named_parameters() if p.requires_grad)
    return pm, mine


def peft_named(pm):
    """peft parameter name -> overparam name."""
    out = {}
    for n, _ in pm.named_parameters():
        m = n.removeprefix("base_model.model.")
        m = (m.replace("base_layer.", "base.").replace(".lora_A.default.weight", ".lora_down")
             .replace(".lora_B.default.weight", ".lora_up").replace(".lora_embedding_A.default", ".lora_up")
             .replace(".lora_embedding_B.default", ".lora_down"))
        out[n] = m
    return out


def assert_twins_close(pm, mine, *, atol):
    """Every parameter of the peft model equals its overparam twin (``lora_A`` = ``lora_downᵀ``) to ``atol``."""
    names, mp = peft_named(pm), dict(mine.named_parameters())
    for n, p in pm.named_parameters():
        q = mp[names[n]]
        q = q.T if n.endswith("lora_A.default.weight") else q
        torch.testing.assert_close(p.detach(), q.detach(), rtol=0, atol=atol)
