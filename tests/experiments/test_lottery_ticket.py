import pytest

pytest.importorskip("sklearn")

from overparam.experiments import Context, get  # noqa: E402


def test_lottery_ticket_claim_small(tmp_path):
    exp = get("lottery-ticket")
    params = {**exp.params_for(True), "rounds": 5, "baselines": ["reinit", "snip"]}  # the quick run to 3.1%
    ctx = Context(out=tmp_path, seed=0, device=__import__("torch").device("cpu"), quick=True, params=params)
    res = exp.run(ctx)
    assert res["claim_holds"], "\n".join(res["summary"])
    assert len(res["density"]) == 5 and res["density"][-1] == pytest.approx(0.5**5, abs=1e-4)
    assert all(0.0 <= a <= 1.0 for v in res["accuracy"].values() for a in v)
