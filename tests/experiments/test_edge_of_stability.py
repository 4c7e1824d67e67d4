import pytest

from overparam.experiments import get
from overparam.experiments._runner import run_experiment


def test_edge_of_stability_quick(tmp_path):
    pytest.importorskip("sklearn")
    exp = get("edge-of-stability")
    res = run_experiment(exp, out=tmp_path, quick=True, progress=False)
    assert res["claim_holds"], res["summary"]
    for r in res["measured"]["runs"].values():
        assert r["initial_ratio"] < 0.75 and 0.9 <= r["late_median_ratio"] <= 1.2
