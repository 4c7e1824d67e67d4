import csv

import torch

from overparam.experiments import get
from overparam.experiments._runner import run_experiment


def test_mu_transfer_quick_reproduces_claim(tmp_path):
    state = torch.random.get_rng_state()
    res = run_experiment(get("mu-transfer"), out=tmp_path, quick=True, seed=0, progress=False)
    assert torch.equal(torch.random.get_rng_state(), state)
    m = res["measured"]
    assert res["claim_holds"], res["summary"]
    assert abs(m["mup_shift"]) <= 1 and m["sp_shift"] <= -2 and m["mup_wider_is_better"]
    # at the narrowest (base) width both parameterizations are the same model and optimizer
    assert m["loss"]["sp"][0] == m["loss"]["mup"][0]
    assert (tmp_path / "result.json").exists() and (tmp_path / "report.md").exists()
    rows = list(csv.DictReader((tmp_path / "sweep.csv").open()))          # the sweep's table: one row per run
    assert len(rows) == 2 * len(m["widths"]) * len(m["log2_lr"])
    r = next(r for r in rows if r["param"] == "sp" and int(r["width"]) == m["widths"][-1])
    assert float(r["loss"]) == m["loss"]["sp"][-1][m["log2_lr"].index(int(r["log2_lr"]))]   # one seed: the mean
