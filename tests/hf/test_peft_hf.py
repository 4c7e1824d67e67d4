"""LoRA on GPT-2's Conv1D equals peft's LoRA on the same layers (issue 21's acceptance test).

peft's Conv1D LoRA (``fan_in_fan_out=True``) holds ``lora_A.weight (r, in)`` and
``lora_B.weight (out, r)``; ours holds ``lora_down (in, r) = Aᵀ`` and ``lora_up (out, r) = B``.
The two libraries draw their inits differently, so peft's A and B are copied into ours; then
3 AdamW steps must agree to 1e-6 in fp32, and merged weights to 1e-12 in fp64. Runs where peft
is installed (the ``bench`` extra).
"""

import copy

import pytest
import torch
import torch.nn.functional as F
from _models import data, gpt2

import overparam as op

peft = pytest.importorskip("peft")
TARGETS = ["c_attn", "mlp.c_proj"]
RANK, ALPHA = 4, 8


def _pair(dtype, seed=0):
    """(peft model, our model) on the same tiny GPT-2, our adapters holding peft's A and B."""
    torch.manual_seed(seed)
    base = gpt2().to(dtype).eval()
    ours = copy.deepcopy(base)
    cfg = peft.LoraConfig(r=RANK, lora_alpha=ALPHA, lora_dropout=0.0, target_modules=TARGETS, fan_in_fan_out=True)
    theirs = peft.get_peft_model(base, cfg).eval()
    names = op.factor.lora_(ours, TARGETS, rank=RANK, alpha=ALPHA, generator=0)
    for p in ours.parameters():
        p.requires_grad_(False)
    pairs = []
    for n in names:
        mine = ours.get_submodule(n)
        pl = theirs.base_model.model.get_submodule(n)
        A, B = pl.lora_A["default"].weight, pl.lora_B["default"].weight
        with torch.no_grad():
            mine.lora_down.copy_(A.T)
            mine.lora_up.copy_(B)
        mine.lora_down.requires_grad_(True)
        mine.lora_up.requires_grad_(True)
        assert mine.scaling == pl.scaling["default"]
        pairs.append((mine, A, B))
    return theirs, ours, pairs


def _lm_loss(logits, ids):
    return F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1))


def test_three_adamw_steps_match_peft_in_fp32():
    theirs, ours, pairs = _pair(torch.float32)
    ids, _ = data("gpt2")
    p_theirs = [p for p in theirs.parameters() if p.requires_grad]
    p_ours = [p for p in ours.parameters() if p.requires_grad]
    assert len(p_theirs) == len(p_ours) == 4 * 2                      # A, B for 2 targets × 2 layers
    opt_t = torch.optim.AdamW(p_theirs, lr=1e-2)
    opt_o = torch.optim.AdamW(p_ours, lr=1e-2)
    for _ in range(3):
        for model, opt in ((theirs, opt_t), (ours, opt_o)):
            opt.zero_grad()
            _lm_loss(model(ids).logits, ids).backward()
            opt.step()
    for mine, A, B in pairs:
        assert float(B.detach().abs().max()) > 0                                # the steps moved B off zero
        torch.testing.assert_close(mine.lora_down.detach(), A.detach().T, rtol=0, atol=1e-6)
        torch.testing.assert_close(mine.lora_up.detach(), B.detach(), rtol=0, atol=1e-6)
    torch.testing.assert_close(ours(ids).logits, theirs(ids).logits, rtol=0, atol=1e-6)


def test_merged_weights_match_peft_in_fp64():
    theirs, ours, pairs = _pair(torch.float64)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for mine, A, B in pairs:                                       # a non-zero update
            B.copy_(torch.randn(B.shape, generator=g, dtype=B.dtype))
            mine.lora_up.copy_(B)
    ids, _ = data("gpt2")
    torch.testing.assert_close(ours(ids).logits, theirs(ids).logits, rtol=0, atol=1e-12)
    merged = theirs.merge_and_unload()
    op.factor.merge_(ours)
    want = dict(merged.named_parameters())
    got = dict(ours.named_parameters())
    assert list(got) == list(want)
    for k in got:
        torch.testing.assert_close(got[k], want[k], rtol=0, atol=1e-12)
