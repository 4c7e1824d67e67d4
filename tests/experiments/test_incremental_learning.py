from pathlib import Path

import torch

from overparam.experiments import Context, get
from overparam.experiments._runner import run_experiment


def test_incremental_learning_quick_reproduces_claim(tmp_path):
    res = run_experiment(get("incremental-learning"), out=tmp_path, quick=True, seed=0, progress=False)
    assert res["claim_holds"], res["summary"]
    m = res["measured"]
    t = m["half_crossing_steps"]
    assert t[0] < t[1] < t[2]
    assert all(lag < 0.2 for lag in m["lag_at_crossing"])


def test_claim_fails_from_a_large_init(tmp_path: Path):
    # negative control: from a large init all components are fitted at once, not one at a time
    exp = get("incremental-learning")
    params = {**exp.params_for(True), "init_scale": 0.15}
    res = exp.run(Context(out=tmp_path, seed=0, device=torch.device("cpu"), quick=True, params=params))
    assert not res["claim_holds"], res["summary"]
