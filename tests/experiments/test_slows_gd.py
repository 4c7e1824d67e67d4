import json

from overparam.experiments import get
from overparam.experiments._runner import run_experiment


def test_slows_gd_quick_reproduces_claim(tmp_path):
    res = run_experiment(get("slows-gd"), out=tmp_path, quick=True, seed=0, progress=False)
    assert res["claim_holds"], res["summary"]
    m = res["measured"]
    assert m["linear_rate_exact_rank"] < 0.95
    assert all(1.4 <= p <= 2.6 for p in m["squared_error_exponent"].values())
    saved = json.loads((tmp_path / "result.json").read_text())
    assert saved["claim_holds"] and saved["experiment"] == "slows-gd"
    assert (tmp_path / "report.md").exists()
