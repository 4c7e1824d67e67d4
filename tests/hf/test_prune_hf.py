"""prune on Hugging Face models: default targets cover every attention and MLP weight (GPT-2's
Conv1D included), 2:4 masks group along the computation's input, a masked AdamW step keeps the
pruned entries at zero.

Oracle for "every attention and MLP weight": each 2-D parameter inside the model's repeated
blocks, listed from ``named_parameters`` alone (no registry involved).
"""

import pytest
import torch
import torch.nn.functional as F
from _models import MAKERS, data

import overparam as op
from overparam.backend.layers import repeated_blocks

Conv1D = pytest.importorskip("transformers.pytorch_utils").Conv1D

BLOCKS = {"gpt2": "transformer.h", "llama": "model.layers", "bert": "bert.encoder.layer", "vit": "vit.layers"}
PER_BLOCK = {"gpt2": 4, "llama": 7, "bert": 6, "vit": 6}          # attention (q,k,v,o or fused) + MLP weights
EXCLUDE_NM = {"vit": "patch_embeddings"}                           # a 3-channel patch conv has no group of 4


def _block_weights(model, kind):
    return [n for n, p in model.named_parameters() if n.startswith(BLOCKS[kind] + ".") and p.ndim == 2]


def _loss(model, kind, x, y):
    out = model(x).logits
    if kind == "vit":
        return F.cross_entropy(out, y)
    return F.cross_entropy(out[:, :-1].reshape(-1, out.shape[-1]), y[:, 1:].reshape(-1))


@pytest.mark.parametrize("kind", sorted(MAKERS))
def test_repeated_blocks_are_the_transformer_layers(kind):
    model = MAKERS[kind]()
    name, blocks = repeated_blocks(model)
    assert name == BLOCKS[kind] and len(blocks) == 2


@pytest.mark.parametrize("kind", sorted(MAKERS))
def test_magnitude_and_24_masks_cover_every_attention_and_mlp_weight(kind):
    torch.manual_seed(0)
    model = MAKERS[kind]()
    want = _block_weights(model, kind)
    assert len(want) == 2 * PER_BLOCK[kind]
    masks = op.prune.magnitude(model, 0.5)
    assert set(want) <= set(masks)
    assert abs(op.prune.kept_fraction(masks) - 0.5) < 1e-3
    nm = op.prune.nm_masks(model, 2, 4, exclude=EXCLUDE_NM.get(kind))
    assert set(want) <= set(nm)
    dims = op.prune.nm.nm_dims(model, nm)
    params = dict(model.named_parameters())
    for k, mk in nm.items():
        owner = model.get_submodule(k.rpartition(".")[0])
        assert dims[k] == (0 if isinstance(owner, Conv1D) else 1)
        W = params[k].detach().abs()
        want_mask = op.prune.nm_mask(W.T, 2, 4).T if dims[k] == 0 else op.prune.nm_mask(W, 2, 4)
        assert torch.equal(mk, want_mask), k                        # the Linear rule on the (out, in) matrix


def test_gpt2_tied_head_stays_dense_by_default_and_untied_is_pruned():
    tied = MAKERS["gpt2"]()
    assert "lm_head.weight" not in dict(tied.named_parameters())      # the tied tensor is listed as wte
    names = list(op.prune.targets(tied))
    assert names == _block_weights(tied, "gpt2")                       # the 8 Conv1D weights, no embedding
    assert list(op.prune.targets(tied, "lm_head")) == ["transformer.wte.weight"]
    untied = MAKERS["gpt2"](tie_word_embeddings=False)
    assert list(op.prune.targets(untied)) == _block_weights(untied, "gpt2") + ["lm_head.weight"]


def test_bert_tied_decoder_follows_the_embedding_rule():
    model = MAKERS["bert"]()
    names = set(op.prune.targets(model))
    assert not any("embeddings" in n for n in names)
    assert "cls.predictions.transform.dense.weight" in names


def test_vit_patch_conv_is_named_in_the_nm_error():
    model = MAKERS["vit"]()
    with pytest.raises(ValueError, match=r"vit\.embeddings\.patch_embeddings\.projection\.weight: .*exclude="):
        op.prune.nm_masks(model, 2, 4)


@pytest.mark.parametrize("kind", sorted(MAKERS))
def test_masked_adamw_step_keeps_pruned_entries_zero_and_trains_the_rest(kind):
    torch.manual_seed(0)
    model = MAKERS[kind]().eval()
    x, y = data(kind)
    masks = op.prune.nm_masks(model, 2, 4, exclude=EXCLUDE_NM.get(kind))
    params = dict(model.named_parameters())
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    with op.prune.masked(model, masks, optimizer=opt):
        before = {k: params[k].detach().clone() for k in masks}
        for _ in range(2):
            opt.zero_grad()
            _loss(model, kind, x, y).backward()
            opt.step()
    for k, mk in masks.items():
        assert torch.all(params[k][~mk] == 0), k
        assert torch.all(params[k][mk] != before[k][mk]), k           # AdamW moves every kept entry
        state = opt.state[params[k]]
        assert torch.all(state["exp_avg"][~mk] == 0) and torch.all(state["exp_avg_sq"][~mk] == 0), k
