from dataclasses import replace

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
