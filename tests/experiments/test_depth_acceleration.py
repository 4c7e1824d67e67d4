from pathlib import Path

import torch

from overparam.experiments import Context, get
from overparam.experiments._runner import run_experiment


def test_depth_acceleration_quick_reproduces_claim(tmp_path):
    res = run_experiment(get("depth-acceleration"), out=tmp_path, quick=True, seed=0, progress=False)
    assert res["claim_holds"], res["summary"]
    steps = res["measured"]["steps_to_threshold"]
    assert steps["2"] is not None and steps["3"] is not None
    assert steps["1"] is None or steps["2"] < steps["1"]


def test_no_acceleration_with_depth_one_only_comparison(tmp_path: Path):
    # negative control: with an unreachable margin the measured step counts cannot satisfy the claim
    exp = get("depth-acceleration")
    params = {**exp.params_for(True), "steps": 600, "margin": 0.05}
    res = exp.run(Context(out=tmp_path, seed=0, device=torch.device("cpu"), quick=True, params=params))
    assert not res["claim_holds"], res["summary"]
