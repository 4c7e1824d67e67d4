"""calibrated-pruning: the stdlib text split, a reduced run of the experiment, and the layer errors of
SparseGPT / Wanda / magnitude on its (briefly trained) transformer."""

import copy

import pytest
import torch

import overparam as op
from overparam.backend.random import construction_generator
from overparam.experiments import Context, get
from overparam.experiments.calibrated_pruning import CharTransformer, _fit, encode, stdlib_text, windows


def test_stdlib_split_is_fixed_and_disjoint():
    a_tr, a_te = stdlib_text(20_000, 5_000, seed=0)
    b_tr, b_te = stdlib_text(20_000, 5_000, seed=0)
    assert (a_tr, a_te) == (b_tr, b_te) and len(a_tr) == 20_000 and len(a_te) == 5_000
    assert a_te[:200] not in a_tr
    assert stdlib_text(20_000, 5_000, seed=1)[0] != a_tr
    ids = encode("ab?", "ab")
    assert ids.tolist() == [0, 1, 2]


@pytest.fixture(scope="module")
def small_lm():
    tr_t, te_t = stdlib_text(60_000, 8_000)
    vocab = "".join(sorted(set(tr_t)))
    tr, te = encode(tr_t, vocab), encode(te_t, vocab)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = CharTransformer(len(vocab) + 1, 32, 2, 2, 32)
    _fit(model, tr, {"context": 32, "batch": 32, "beta2": 0.95, "weight_decay": 0.1}, 150, 1e-2, 0)
    cal = [windows(tr, 32, 32, generator=construction_generator(1))]
    held = [windows(te, 32, 32, generator=construction_generator(2))]
    return model, cal, held


@pytest.mark.slow
@pytest.mark.parametrize("pattern", [{"sparsity": 0.5}, {"n": 2, "m": 4}], ids=["50%", "2:4"])
def test_transformer_layer_errors_sparsegpt_below_wanda_below_magnitude(small_lm, pattern):
    """On the small transformer the order holds (SparseGPT < Wanda < magnitude in mean layer error)
    but not the MLP's factors: measured 0.72x / 0.99x of magnitude at 50%, 0.63x / 0.93x at 2:4 (its
    RMSNorm'd inputs are nearly isotropic at this size; sequential and parallel calibration within 1%
    of each other either way round: docs/prune.md)."""
    model, cal, held = small_lm
    err = {}
    for meth in ("magnitude", "wanda", "sparsegpt"):
        p = copy.deepcopy(model)
        if meth == "magnitude":
            masks = (op.prune.nm_masks(p, 2, 4, targets="blocks") if "n" in pattern
                     else op.prune.magnitude(p, 0.5, targets="blocks", scope="layerwise"))
            op.prune.apply_masks_(p, masks)
        elif meth == "wanda":
            op.prune.apply_masks_(p, op.prune.wanda(p, cal, targets="blocks", blocks="blocks.*", **pattern))
        else:
            op.prune.sparsegpt_(p, cal, targets="blocks", blocks="blocks.*", **pattern)
        err[meth] = op.prune.reconstruction(model, p, held, targets="blocks").mean_error
    assert err["sparsegpt"] <= 0.8 * err["magnitude"], err
    assert err["sparsegpt"] < err["wanda"] < err["magnitude"], err


def test_reduced_run(tmp_path):
    exp = get("calibrated-pruning")
    p = {**exp.params_for(True), "train_chars": 40_000, "test_chars": 4_000, "width": 32, "context": 32,
         "steps": 60, "calibration": 8, "finetune_steps": 2}
    res = exp.run(Context(out=tmp_path, seed=0, device=torch.device("cpu"), quick=True, params=p))
    assert set(res["one_shot"]) == {"50%", "2:4"}
    for pat, row in res["one_shot"].items():
        assert set(row) == {"magnitude", "wanda", "sparsegpt"}
        assert all(res["dense"] - 0.05 < v < 10 for v in row.values())
        assert set(res["finetuned"][pat]) == set(row)
    assert res["claim_holds"] == all(res["claim_by_pattern"].values())
    for pat, err in res["layer_error"].items():   # mean per-layer error on held-out windows, and its ratios
        assert set(err) == set(res["one_shot"][pat]) and all(0 < e < 1.5 for e in err.values())
        assert res["layer_error_factors"][pat]["sparsegpt"] == pytest.approx(err["sparsegpt"] / err["magnitude"])
        per_layer = res["layers"][pat]["wanda"]
        assert [n for n, _ in per_layer][:2] == ["blocks.0.qkv", "blocks.0.proj"]
        assert err["wanda"] == pytest.approx(sum(e for _, e in per_layer) / len(per_layer))
