import csv

import pytest
import torch

from overparam.experiments import get
from overparam.experiments._runner import run_experiment


@pytest.mark.slow
def test_depth_transfer_quick_reproduces_claim(tmp_path):
    state = torch.random.get_rng_state()
    res = run_experiment(get("depth-transfer"), out=tmp_path, quick=True, seed=0, progress=False)
    assert torch.equal(torch.random.get_rng_state(), state)
    m = res["measured"]
    assert res["claim_holds"], res["summary"]
    assert m["shift"]["depth-mup"] <= 1 and m["shift"]["completep"] <= 1 and m["drift"]["mup"] <= -2
    # at the base depth the three plans are the same model and optimizer
    assert m["loss"]["mup"][0] == m["loss"]["depth-mup"][0] == m["loss"]["completep"][0]
    assert (tmp_path / "result.json").exists() and (tmp_path / "report.md").exists()
    rows = list(csv.DictReader((tmp_path / "sweep.csv").open()))          # the sweep's table: one row per run
    assert len(rows) == 3 * len(m["depths"]) * len(m["log2_lr"])
    r = next(r for r in rows if r["param"] == "completep" and int(r["depth"]) == m["depths"][-1])
    assert float(r["loss"]) == m["loss"]["completep"][-1][m["log2_lr"].index(int(r["log2_lr"]))]   # one seed: the mean
