import math

import pytest
import torch

from overparam.experiments import Table, grid_points, heatmap, sweep


def test_sweep_unbatched_and_batched_give_the_same_table():
    f = lambda a, b, seed: {"y": a * 10 + b + 0.1 * seed}
    t1 = sweep(f, {"a": [1, 2], "b": [3, 4, 5]}, seeds=[0, 1])
    t2 = sweep(lambda pts: [f(**p) for p in pts], {"a": [1, 2], "b": [3, 4, 5]}, seeds=[0, 1], batch=True)
    assert t1.rows == t2.rows and len(t1) == 12 and t1.columns == ["a", "b", "seed", "y"]
    xs, ys, g = t1.pivot("a", "b", "y")
    assert xs == [1, 2] and ys == [3, 4, 5]
    assert torch.allclose(g, torch.tensor([[13.05, 14.05, 15.05], [23.05, 24.05, 25.05]], dtype=torch.float64))
    _, _, gmax = t1.pivot("a", "b", "y", agg=max)
    assert gmax[0, 0] == 13.1
    assert len(t1.where(a=1, seed=0)) == 3


def test_checkpoints_become_rows_and_missing_cells_are_nan(tmp_path):
    t = sweep(lambda k, seed: [{"step": s, "err": k / (s + 1)} for s in range(3)] if k != 2 else [],
              {"k": [1, 2]}, seeds=[0])
    assert [r["step"] for r in t.rows] == [0, 1, 2] and set(t.column("k")) == {1}
    xs, ys, g = Table(t.rows + [{"k": 2, "seed": 0, "step": 0, "err": 1.0}]).pivot("k", "step", "err")
    assert math.isnan(float(g[1, 1])) and float(g[1, 0]) == 1.0
    path = t.to_csv(tmp_path / "t.csv")
    assert path.read_text().splitlines()[0] == "k,seed,step,err"


def test_heatmap_draws(tmp_path):
    pytest.importorskip("matplotlib")
    t = sweep(lambda a, b, seed: {"v": a * b}, {"a": [1, 2], "b": [1, 2, 3]}, seeds=[0])
    ax = heatmap(t, "a", "b", "v")
    assert ax is not None and len(ax.texts) == 6
    ax.figure.savefig(tmp_path / "h.png")


def test_bad_sweeps():
    with pytest.raises(ValueError, match="axes"):
        grid_points({}, [0])
    with pytest.raises(ValueError, match="'seed'"):
        grid_points({"seed": [1]}, [0])
    with pytest.raises(ValueError, match="axis 'a'"):
        grid_points({"a": "xy"}, [0])
    with pytest.raises(ValueError, match="seeds"):
        grid_points({"a": [1]}, [])
    with pytest.raises(ValueError, match="one per point"):
        sweep(lambda pts: [], {"a": [1]}, seeds=[0], batch=True)
    with pytest.raises(ValueError, match="collide"):
        sweep(lambda a, seed: {"a": 1}, {"a": [1]}, seeds=[0])
    with pytest.raises(TypeError, match="dict"):
        sweep(lambda a, seed: 3, {"a": [1]}, seeds=[0])
    with pytest.raises(ValueError, match="same keys"):
        sweep(lambda a, seed: {"x": 1} if a == 1 else {"y": 1}, {"a": [1, 2]}, seeds=[0])
    with pytest.raises(KeyError, match="no column 'z'"):
        sweep(lambda a, seed: {"x": 1}, {"a": [1]}, seeds=[0]).column("z")
