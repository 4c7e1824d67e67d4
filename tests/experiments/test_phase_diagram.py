import csv
from dataclasses import replace

import overparam as op
from overparam.experiments import get
from overparam.experiments._runner import run_experiment


def test_phase_diagram_reduced(tmp_path):
    exp = get("phase-diagram")
    small = replace(exp, quick={"n": 10, "m": 200, "ranks": [2, 4], "kappas": [1, 100], "seeds": 2, "steps": 300})
    res = run_experiment(small, out=tmp_path, quick=True, progress=False)
    m = res["measured"]
    assert res["claim_holds"], res["summary"]
    assert m["ranks"] == [2, 4] and m["kappas"] == [1, 100]
    # GD: recovers at kappa 1, never at kappa 100; ScaledGD(lambda) everywhere, and faster than GD where both do
    assert m["recovery_probability"]["gd"] == [[1.0, 0.0], [1.0, 0.0]]
    assert m["recovery_probability"]["scaledgd"] == [[1.0, 1.0], [1.0, 1.0]]
    assert all(s < g for s, g in zip(m["mean_steps"]["scaledgd"][0], m["mean_steps"]["gd"][0]))
    rows = list(csv.DictReader((tmp_path / "sweep_gd.csv").open()))
    assert len(rows) == 2 * 2 * 2 and set(rows[0]) == {"k", "kappa", "seed", "recovered", "steps", "final_error"}


def test_a_sweep_cell_equals_its_single_instance_run():
    """The experiment's batched cell (k, kappa, seed) is the single-instance ScaledGD(lambda) run."""
    ctx_seed, n, r, m, k = 0, 10, 2, 200, 4
    P = op.problems.shared_sensing(n, r, m, seeds=[ctx_seed + 1], kappa=[10.0], measurement_seed=ctx_seed + 10_000)
    X0 = P.init("small", rank=k, scale=1e-3, generators=[ctx_seed + 20_000 + 1])
    res = op.optim.run_batched(P, X0, method="scaledgd", steps=60, lr=0.5, damping=1e-2)
    X = X0[0].clone().requires_grad_()
    opt = op.optim.ScaledGD([X], lr=0.5, damping=1e-2)
    for _ in range(60):
        opt.zero_grad(); P.problems[0].loss(X).backward(); opt.step()
    assert float((X.detach() - res.X[0]).abs().max()) < 1e-12
