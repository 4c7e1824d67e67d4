"""Calibration pruning on tiny Hugging Face models: GPT-2 (transformers' Conv1D, ``(in, out)`` storage)
and LLaMA; the blocks (``transformer.h`` / ``model.layers``) are found without user code."""

import copy

import pytest
import torch

import overparam as op
from overparam.prune.calibrate import block_of

from _models import data, gpt2, llama

MAKERS = {"gpt2": gpt2, "llama": llama}
BLOCKS = {"gpt2": "transformer.h", "llama": "model.layers"}


def _model(kind):
    torch.manual_seed(0)
    return MAKERS[kind]().eval()


@pytest.mark.parametrize("kind", ["gpt2", "llama"])
def test_blocks_are_found_and_sparsegpt_prunes_every_target(kind):
    model = _model(kind)
    dense = copy.deepcopy(model)
    calib = [data(kind, seed=s) for s in range(24)]            # 384 tokens: more rows than any layer has inputs
    targets = op.prune.targets(model)
    owners = block_of(model, targets, None)
    assert {o for o in owners.values() if o.startswith(BLOCKS[kind])} == {f"{BLOCKS[kind]}.0", f"{BLOCKS[kind]}.1"}
    masks = op.prune.sparsegpt_(model, calib, 0.5)
    assert list(masks) == list(targets)
    params = dict(model.named_parameters())
    for name, m in masks.items():
        assert m.shape == params[name].shape and int((~m).sum()) == op.prune.n_pruned(0.5, m.numel())
        assert bool((params[name][~m] == 0).all())
    if kind == "gpt2":                                # Conv1D (in, out): N:M and masks in storage shape
        assert masks["transformer.h.0.attn.c_attn.weight"].shape == (32, 96)
    held = [data(kind, seed=100 + s) for s in range(4)]
    rep = op.prune.reconstruction(dense, model, held)
    mag = copy.deepcopy(dense)
    op.prune.apply_masks_(mag, op.prune.magnitude(mag, 0.5, scope="layerwise"))
    assert rep.mean_error < op.prune.reconstruction(dense, mag, held).mean_error
    with torch.no_grad():
        assert torch.isfinite(model(held[0][0]).logits).all()


@pytest.mark.parametrize("kind", ["gpt2", "llama"])
def test_wanda_nm_on_hf_models_leaves_the_model_unchanged(kind):
    model = _model(kind)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    masks = op.prune.wanda(model, [data(kind)], n=2, m=4)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    weights = op.backend.layers.weights_of(model)
    for name, m in masks.items():
        assert op.prune.is_nm(m, 2, 4, dim=weights[name].layout.in_dim)


@pytest.mark.parametrize("kind", ["gpt2", "llama"])
def test_reconstruct_lowers_wanda_error_on_hf_models(kind):
    """Least-squares weights on Wanda's 2:4 masks, through Conv1D (GPT-2) and Linear (LLaMA) layers."""
    model = _model(kind)
    calib = [data(kind, seed=s) for s in range(24)]
    held = [data(kind, seed=100 + s) for s in range(4)]
    masks = op.prune.wanda(model, calib, n=2, m=4)
    alone = copy.deepcopy(model)
    op.prune.apply_masks_(alone, masks)
    rec = copy.deepcopy(model)
    assert list(op.prune.reconstruct_(rec, calib, masks)) == list(masks)
    params = dict(rec.named_parameters())
    assert all(bool((params[k][~m] == 0).all()) for k, m in masks.items())
    assert op.prune.reconstruction(model, rec, held).mean_error < op.prune.reconstruction(model, alone, held).mean_error
