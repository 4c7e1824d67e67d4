import dataclasses

import pytest

from overparam.experiments import get
from overparam.experiments._runner import run_experiment


def test_hessian_outliers_quick_both_losses(tmp_path):
    pytest.importorskip("sklearn")
    exp = get("hessian-outliers")
    exp = dataclasses.replace(exp, quick={**exp.quick, "slq_probes": 2})  # the CLI's --quick, fewer SLQ probes
    res = run_experiment(exp, out=tmp_path, quick=True, progress=False)
    assert res["claim_holds"], res["summary"]
    runs = res["measured"]["runs"]
    assert {r["outliers"] for r in runs["cross_entropy"].values()} == {9}  # C - 1 for cross-entropy
    assert {r["outliers"] for r in runs["mse"].values()} == {10}           # C for MSE


@pytest.mark.parametrize("ce, mse, bulk, holds", [
    (9, 10, 0.99, True),
    (10, 10, 0.99, False),   # cross-entropy with C outliers: the old C-1 <= n <= C verdict passed it
    (9, 9, 0.99, False),     # MSE with C - 1 outliers: likewise
    (9, 11, 0.99, False),
    (9, 10, 0.85, False),    # no bulk at zero
])
def test_the_verdict_is_exact_per_loss(ce, mse, bulk, holds):
    from overparam.experiments.hessian_outliers import _verdict

    def runs(n):
        return {"32": {"outliers": n, "gap_ratio": 5.0}, "64": {"outliers": n, "gap_ratio": 5.0}}

    assert _verdict({"cross_entropy": runs(ce), "mse": runs(mse)}, bulk) is holds
    small_gap = {"cross_entropy": runs(9), "mse": {**runs(10), "64": {"outliers": 10, "gap_ratio": 1.5}}}
    assert _verdict(small_gap, 0.99) is False
