"""PrunedMultiheadAttention: with every head kept it is nn.MultiheadAttention (masks, both layouts);
with heads dropped it is the heads it keeps."""

import pytest
import torch
from torch import nn

from overparam.prune import PrunedMultiheadAttention


def test_pruned_multihead_attention_matches_torch_with_masks():
    g = torch.Generator().manual_seed(14)
    mha = nn.MultiheadAttention(8, 2, batch_first=False).eval()
    pm = PrunedMultiheadAttention(mha, torch.tensor([True, True]))
    q = torch.randn(5, 3, 8, generator=g)
    kp = torch.zeros(3, 5, dtype=torch.bool)
    kp[1, 3:] = True
    am = torch.triu(torch.ones(5, 5, dtype=torch.bool), 1)
    a, wa = mha(q, q, q, key_padding_mask=kp, attn_mask=am)
    b, wb = pm(q, q, q, key_padding_mask=kp, attn_mask=am)
    torch.testing.assert_close(b, a, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(wb, wa, atol=1e-6, rtol=1e-5)
    with pytest.raises(ValueError, match="keep"):
        PrunedMultiheadAttention(mha, torch.tensor([False, False]))


@pytest.mark.parametrize("batch_first", [True, False])
def test_dropped_heads_are_the_kept_heads_of_the_original(batch_first):
    g = torch.Generator().manual_seed(15)
    mha = nn.MultiheadAttention(12, 3, batch_first=batch_first).eval()
    with torch.no_grad():
        for p in mha.parameters():
            p.copy_(torch.randn(p.shape, generator=g))
        w = mha.in_proj_weight.view(3, 3, 4, 12)
        w[:, 1] = 0                                       # head 1: q, k, v rows zero ...
        mha.in_proj_bias.view(3, 3, 4)[:, 1] = 0          # ... and biases: its output is zero
    pm = PrunedMultiheadAttention(mha, torch.tensor([True, False, True]))
    q = torch.randn(2, 5, 12, generator=g)
    q = q if batch_first else q.transpose(0, 1)
    am = torch.randn(2 * 3, 5, 5, generator=g)            # per-head float mask: heads 0 and 2 are taken
    a, _ = mha(q, q, q, attn_mask=am, need_weights=False)
    b, none = pm(q, q, q, attn_mask=am, need_weights=False)
    assert none is None and pm.heads == 2
    torch.testing.assert_close(b, a, atol=1e-5, rtol=1e-5)
    with pytest.raises(TypeError, match="mha"):
        PrunedMultiheadAttention(nn.Linear(2, 2), torch.tensor([True]))
