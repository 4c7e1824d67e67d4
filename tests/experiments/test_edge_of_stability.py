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
        assert r["loss_keeps_decreasing"] and r["loss"][-1] < r["loss"][r["edge_step"]]
        assert r["loss_increases_after_edge"] > 0  # non-monotone at the edge, as the paper describes


def test_keeps_decreasing_is_the_long_time_scale_trend():
    import numpy as np

    from overparam.experiments.edge_of_stability import _keeps_decreasing

    t = np.arange(400)
    trend = np.exp(-t / 200)
    spiky = trend * (1 + 0.5 * (t % 7 == 0))                      # rises every 7th step, falls over blocks
    assert _keeps_decreasing(trend, 0)[0] and _keeps_decreasing(spiky, 0)[0]
    assert (np.diff(spiky) > 0).sum() > 50
    ok, med = _keeps_decreasing(spiky, 100)
    assert ok and len(med) == 4 and med == sorted(med, reverse=True)
    assert not _keeps_decreasing(np.ones(400), 0)[0]                                 # a plateau
    assert not _keeps_decreasing(np.r_[trend[:300], np.full(100, trend[299])], 0)[0]  # stalls in the last block
    assert not _keeps_decreasing(trend[::-1], 0)[0]                                  # rises
    assert not _keeps_decreasing(np.r_[trend[:399], np.inf], 0)[0]                   # diverges at the end
    assert not _keeps_decreasing(trend, 395)[0]                                      # too short to judge
