import csv
from dataclasses import replace

import pytest

from overparam.experiments import get
from overparam.experiments._runner import run_experiment


def test_kappa_independence_reduced(tmp_path):
    exp = get("kappa-independence")
    small = replace(exp, quick={"n": 10, "m": 500, "kappas": [1, 50], "tol": 1e-6, "max_iters": 6000})
    res = run_experiment(small, out=tmp_path, quick=True, progress=False)
    m = res["measured"]
    assert res["claim_holds"], res["summary"]
    s = list(m["iterations"]["scaledgd"].values())
    g = list(m["iterations"]["gd"].values())
    assert max(s) < 1.5 * min(s)  # ScaledGD flat over kappa
    assert g[-1] > 20 * g[0]  # GD grows with kappa (x50)
    rows = list(csv.DictReader((tmp_path / "sweep.csv").open()))          # the sweep's table: kappa x method
    assert [(r["kappa"], r["method"]) for r in rows] == [("1", "scaledgd"), ("1", "gd"), ("50", "scaledgd"), ("50", "gd")]
    assert [int(r["iterations"]) for r in rows[1::2]] == g


P = {"min_gd_growth_frac": 0.2, "max_gd_growth_frac": 5.0, "max_iters": 20000}


@pytest.mark.parametrize("gd,holds", [
    ([85, 624, 5571], True),       # the quick run: x7.3 and x66 for kappa x10 and x100
    ([10, 62, 5571], False),       # x557 for kappa x100: passed the old verdict (only > 0.2 x ratio), above 5 x
    ([85, 9000, 15000], False),    # x106 already at kappa x10: the old verdict checked only the last kappa
    ([85, 100, 1000], False),      # x1.2 at kappa x10: too slow (the old verdict missed the middle kappa too)
    ([30, 200, None], False),      # capped: at least x667, already above 5 x 100: refused
    ([850, 6240, None], False),    # capped: at least x23.5, lower bound met, upper bound unknown: refused
    ([None, 624, 5571], False),    # no baseline
])
def test_verdict_bounds_gd_growth_on_both_sides_and_treats_a_capped_run_as_at_least(gd, holds):
    from overparam.experiments.kappa_independence import _verdict
    ok, growth = _verdict([1, 10, 100], [85, 82, 82], gd, P)
    assert ok is holds
    if gd[0] is not None and gd[-1] is None:
        assert growth[-1].startswith(">=")
    # ScaledGD must stay flat and finish in every case
    assert _verdict([1, 10, 100], [85, 82, 130], [85, 624, 5571], P)[0] is False
    assert _verdict([1, 10, 100], [85, None, 82], [85, 624, 5571], P)[0] is False
