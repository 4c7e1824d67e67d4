import dataclasses

import pytest

from overparam.experiments import get
from overparam.experiments._runner import run_experiment


def test_hessian_outliers_quick(tmp_path):
    pytest.importorskip("sklearn")
    exp = get("hessian-outliers")
    # the quick configuration with one loss (the CLI's --quick runs both), to keep CI fast
    exp = dataclasses.replace(exp, quick={**exp.quick, "losses": ["cross_entropy"], "slq_probes": 2})
    res = run_experiment(exp, out=tmp_path, quick=True, progress=False)
    assert res["claim_holds"], res["summary"]
    runs = res["measured"]["runs"]
    assert {r["outliers"] for r in runs["cross_entropy"].values()} == {9}  # C - 1 for cross-entropy
