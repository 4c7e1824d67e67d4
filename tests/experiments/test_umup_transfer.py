import dataclasses

import pytest
import torch

from overparam.experiments import get
from overparam.experiments._runner import run_experiment
from overparam.experiments.umup_transfer import PARAMS, PRECISIONS, verdict


def _good():
    best = {("sp", "float32"): [-5, -7, -8], ("sp", "bfloat16"): [-5, -7, -8], ("mup", "float32"): [-5, -5, -5],
            ("mup", "bfloat16"): [-5, -5, -5], ("umup", "float32"): [-2, -2, -1], ("umup", "bfloat16"): [-2, -1, -1]}
    loss = {k: [2.0, 1.9, 1.8] for k in best}
    loss[("umup", "bfloat16")] = [2.1, 1.9, 1.7]
    return best, loss


def test_verdict_passes_and_each_check_can_fail():
    best, loss = _good()
    v = verdict(best, loss, tolerance=0.1)
    assert v["claim_holds"] and v["shift"][("sp", "float32")] == -3
    assert v["umup_bf16_cost"] == pytest.approx([0.05, 0.0, -1 / 18])
    for key, row, flag in [(("umup", "bfloat16"), [-2, -1, 0], "umup_stable"),       # u-muP drifts 2 steps in bf16
                           (("umup", "float32"), [-3, -3, -3], "umup_bf16_same_optimum"),  # bf16 optimum moved
                           (("sp", "float32"), [-5, -6, -6], "sp_drifts")]:          # the control sees no drift
        b = {**best, key: row}
        if flag == "umup_bf16_same_optimum":
            b[("umup", "bfloat16")] = [-1, -1, -1]
        v = verdict(b, loss, tolerance=0.1)
        assert not v[flag] and not v["claim_holds"], flag
    worse = {**loss, ("umup", "bfloat16"): [2.0, 2.2, 1.8]}  # bf16 costs 16% at width 2
    v = verdict(best, worse, tolerance=0.1)
    assert not v["umup_bf16_cheap"] and not v["claim_holds"]


def test_small_run_grid_and_artefacts(tmp_path):
    exp = get("umup-transfer")
    small = dataclasses.replace(exp, quick={"widths": [16, 32], "lrs": 2, "steps": 3, "batch": 8, "n_eval": 16,
                                            "log2_lr_lo": {"sp": -6, "mup": -6, "umup": -2}, "seeds": 1})
    state = torch.random.get_rng_state()
    res = run_experiment(small, out=tmp_path, quick=True, seed=0, progress=False)
    assert torch.equal(torch.random.get_rng_state(), state)
    m = res["measured"]
    assert set(m["loss"]) == {f"{a}/{b}" for a in PARAMS for b in PRECISIONS}
    assert all(len(g) == 2 and len(g[0]) == 2 for g in m["loss"].values())
    # at the narrowest (base) width SP and muP are the same model and optimizer
    assert m["loss"]["sp/float32"][0] == m["loss"]["mup/float32"][0]
    # bf16 really trains in bf16: its losses differ from the fp32 ones
    assert m["loss"]["umup/bfloat16"] != m["loss"]["umup/float32"]
    assert m["best_log2_lr"]["umup/float32"][0] in (-2, -1)
    lines = (tmp_path / "sweep.csv").read_text().splitlines()
    assert lines[0] == "param,precision,width,step,seed,log2_lr,loss" and len(lines) == 1 + 3 * 2 * 2 * 2
    assert (tmp_path / "result.json").exists() and (tmp_path / "report.md").exists()


@pytest.mark.slow
def test_umup_transfer_quick_reproduces_claim(tmp_path):
    res = run_experiment(get("umup-transfer"), out=tmp_path, quick=True, seed=0, progress=False)
    m = res["measured"]
    assert res["claim_holds"], res["summary"]
    assert abs(m["shift"]["umup/bfloat16"]) <= 1 and m["shift"]["sp/float32"] <= -2
