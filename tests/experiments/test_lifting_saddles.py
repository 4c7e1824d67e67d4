import torch

from overparam.experiments import get
from overparam.experiments._runner import run_experiment
from overparam.experiments.lifting_saddles import _derivatives
from overparam.problems import sensing


def test_closed_form_derivatives_match_autograd():
    P = sensing(n=4, r=1, m=7, generator=3, dtype=torch.float64)
    S = (P.A + P.A.mT) / 2
    x = torch.randn(5, 4, dtype=torch.float64)
    f, g, H = _derivatives(S, P.y, x)
    for k in range(5):
        def loss(v):
            return P.loss(v.reshape(4, 1))
        torch.testing.assert_close(f[k], loss(x[k]), rtol=1e-12, atol=0)
        torch.testing.assert_close(g[k], torch.func.grad(loss)(x[k]), rtol=1e-11, atol=1e-13)
        torch.testing.assert_close(H[k], torch.func.hessian(loss)(x[k]), rtol=1e-11, atol=1e-13)


def test_lifting_saddles_quick_reproduces_claim(tmp_path):
    res = run_experiment(get("lifting-saddles"), out=tmp_path, quick=True, progress=False)
    assert res["claim_holds"], res["summary"]
    m = res["measured"]
    assert m["n_points"] >= 3
    assert max(max(row) for row in m["lifted_grad_norm"]) < 1e-9  # stationary through the hierarchy
    fr = [m["strict_saddle_fraction"][f"l={l}, s=1"] for l in (1, 2, 3, 4)]
    assert fr[0] == 0.0 and fr[-1] >= 0.8 and fr == sorted(fr)
    assert (tmp_path / "lifting_saddles.png").exists()


def test_claim_is_computed_from_the_measurements(tmp_path, monkeypatch):
    # a small search (seed 5: two spurious minima, both strict saddles at l=2): the claim follows the bar
    from overparam.experiments import Context

    monkeypatch.setattr(Context, "pyplot", lambda self: None)  # no figure: keeps the test fast
    exp = get("lifting-saddles")
    for bar, expect in ((1.0, True), (1.01, False)):
        params = {**exp.params_for(True), "instances": 2, "starts": 16, "gd_steps": 500, "orders": [1, 2],
                  "min_fraction": bar}
        res = exp.run(Context(out=tmp_path, seed=5, device=torch.device("cpu"), quick=True, params=params))
        assert res["n_points"] >= 1 and res["strict_saddle_fraction"]["l=1, s=1"] == 0.0
        assert res["claim_holds"] is expect, (bar, res["summary"])
