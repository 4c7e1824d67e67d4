from dataclasses import replace

from overparam.experiments import get
from overparam.experiments._runner import run_experiment


def test_robust_recovery_reduced(tmp_path):
    exp = get("robust-recovery")
    small = replace(exp, quick={"n": 10, "m": 800, "noise_models": ["gaussian"], "init_scale": 1e-6, "lr0": 0.3,
                                "steps": 1600})
    res = run_experiment(small, out=tmp_path, quick=True, progress=False)
    assert res["claim_holds"], res["summary"]
    for key, v in res["measured"]["final_relative_error"].items():
        assert v["subgm_l1"] < 1e-6, key  # recovered with 20% and 40% outliers
        assert v["gd_l2"] > 1e-2, key  # the l2 loss fits the outliers
