import json
import subprocess
import sys

import pytest

from overparam import cli
from overparam.experiments import Experiment, registry


def test_list_shows_every_experiment(capsys):
    assert cli.main(["list"]) == 0
    out = capsys.readouterr().out
    for name in registry():
        assert name in out


def test_unknown_experiment_lists_valid_names(capsys):
    assert cli.main(["run", "no-such-thing"]) == 2
    assert "available:" in capsys.readouterr().err


def test_run_and_report(tmp_path, monkeypatch, capsys):
    import overparam.experiments as ex

    def run(ctx):
        plt = ctx.pyplot()
        if plt is not None:
            fig = plt.figure()
            plt.plot([1, 2, 3])
            ctx.savefig(fig, "line.png")
        return {"claim_holds": ctx.params["x"] == 2, "summary": [f"x = {ctx.params['x']}"], "value": 1.5}

    toy = Experiment(name="toy", paper="A paper", claim="x is two", run=run, params={"x": 1}, quick={"x": 2})
    monkeypatch.setattr(ex, "registry", lambda: {"toy": toy})
    assert cli.main(["run", "toy", "--quick", "--quiet", "--out", str(tmp_path / "toy")]) == 0
    res = json.loads((tmp_path / "toy" / "result.json").read_text())
    assert res["claim_holds"] and res["measured"] == {"value": 1.5} and res["params"] == {"x": 2}
    assert cli.main(["run", "toy", "--quiet", "--out", str(tmp_path / "toy-full")]) == 1  # claim fails at x = 1
    assert cli.main(["report", "--out", str(tmp_path)]) == 0
    report = (tmp_path / "REPORT.md").read_text()
    assert "toy" in report and "**no**" in report and "yes" in report
    if res["figures"]:
        assert "toy/line.png" in report and (tmp_path / "toy" / "line.png").exists()


def test_report_on_empty_folder(tmp_path, capsys):
    assert cli.main(["report", "--out", str(tmp_path)]) == 2


def test_quick_overrides_must_be_known_params():
    bad = Experiment(name="bad", paper="p", claim="c", run=lambda ctx: {}, params={"a": 1}, quick={"b": 2})
    with pytest.raises(ValueError, match="unknown parameters"):
        bad.params_for(True)


def test_python_dash_m_entry_point():
    out = subprocess.run([sys.executable, "-m", "overparam", "list"], capture_output=True, text=True)
    assert out.returncode == 0 and "slows-gd" in out.stdout
