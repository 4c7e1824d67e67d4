"""The ``overparam`` command line: list, run, report (gathering or running), bench."""

import json
import re
import subprocess
import sys
from pathlib import Path

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
    assert "toy" in report and "**FAIL**" in report and "PASS" in report
    if res["figures"]:
        assert "toy/line.png" in report and (tmp_path / "toy" / "line.png").exists()


def test_report_on_empty_folder(tmp_path, capsys):
    assert cli.main(["report", "--out", str(tmp_path)]) == 2


# --- overparam report --run --------------------------------------------------------------------

def _toys():
    def good(ctx):
        plt = ctx.pyplot()
        if plt is not None:
            fig = plt.figure()
            plt.plot([1, 2])
            ctx.savefig(fig, "good.png")
        return {"claim_holds": True, "summary": ["rate 0.884 per step"], "rate": 0.88412, "curve": list(range(50)),
                "steps": [1, 2, 3]}

    def bad(ctx):
        return {"claim_holds": ctx.params["n"] > 5, "summary": [f"n = {ctx.params['n']}"]}

    def broken(ctx):
        raise RuntimeError("boom in the experiment")

    return {"good": Experiment(name="good", paper="Good et al. 2020, A Good Paper", claim="good things happen",
                               run=good, setting="a toy setting, stated by the experiment"),
            "bad": Experiment(name="bad", paper="Bad 2021, Bad", claim="n exceeds five", run=bad, params={"n": 9},
                              quick={"n": 3}),
            "broken": Experiment(name="broken", paper="Broken 2022", claim="it runs", run=broken)}


def test_report_run_writes_one_page_with_claim_setting_figures_plot_verdict_and_time(tmp_path, monkeypatch, capsys):
    import overparam.experiments as ex

    monkeypatch.setattr(ex, "registry", _toys)
    page = tmp_path / "docs" / "report.md"
    out = tmp_path / "docs" / "report"
    assert cli.main(["report", "--run", "--quick", "--out", str(out), "--page", str(page)]) == 1  # bad and broken fail
    printed = capsys.readouterr().out
    assert "good" in printed and "FAIL" in printed
    text = page.read_text()
    sections = {s.split("\n", 1)[0]: s for s in text.split("\n## ")[1:]}
    assert set(sections) == {"good", "bad", "broken"}
    assert "--quick" in text and "1 of 3 claims reproduced" in text
    good, bad, broken = sections["good"], sections["bad"], sections["broken"]
    assert "**PASS**" in good and "Good et al. 2020, A Good Paper" in good and "good things happen" in good
    assert "a toy setting, stated by the experiment" in good and "rate 0.884 per step" in good
    assert "| `rate` | 0.8841 |" in good and "| `steps` | [1, 2, 3] |" in good and "`curve`" not in good  # long lists left out
    assert "**FAIL**" in bad and "`n=3`" in bad and "n = 3" in bad and "quick" in bad
    assert "*Setting:* The ``overparam`` command line: list, run" in bad   # the module docstring's first paragraph
    assert "**FAIL**" in broken and "RuntimeError: boom in the experiment" in broken
    assert "test_cli.py:" in broken and str(ROOT) not in text              # frames by file name, no machine paths
    for sec in sections.values():
        assert re.search(r"reproduced in \d+\.\d s .*\(quick, seed 0, cpu", sec)           # the time it took
    assert "s (CPU " in good and "s (CPU " in bad
    res = json.loads((out / "good" / "result.json").read_text())
    assert res["cpu_seconds"] >= 0 and res["setting"] == "a toy setting, stated by the experiment"
    if res["figures"]:
        assert "](report/good/good.png)" in good and (page.parent / "report/good/good.png").exists()
    # gathering the same folder again gives the same sections
    assert cli.main(["report", "--out", str(out), "--page", str(tmp_path / "again.md")]) == 0
    again = (tmp_path / "again.md").read_text()
    assert "Gathered" in again and "RuntimeError: boom" in again
    if res["figures"]:
        assert "](docs/report/good/good.png)" in again


def test_report_run_only_and_argument_errors(tmp_path, monkeypatch, capsys):
    import overparam.experiments as ex

    monkeypatch.setattr(ex, "registry", _toys)
    assert cli.main(["report", "--run", "--only", "good", "--out", str(tmp_path)]) == 0
    text = (tmp_path / "REPORT.md").read_text()
    assert "## good" in text and "## bad" not in text and "full sizes" in text
    assert cli.main(["report", "--run", "--only", "nope", "--out", str(tmp_path)]) == 2
    assert "available:" in capsys.readouterr().err
    assert cli.main(["report", "--quick", "--out", str(tmp_path)]) == 2
    assert "--quick only apply with --run" in capsys.readouterr().err
    assert cli.main(["report", "--run", "--threads", "0", "--out", str(tmp_path)]) == 2
    assert cli.main(["report", "--run", "--jobs", "0", "--out", str(tmp_path)]) == 2
    assert cli.main(["report", "--jobs", "2", "--out", str(tmp_path)]) == 2      # --jobs needs --run


@pytest.mark.slow
def test_report_run_jobs_runs_experiments_in_parallel_processes_and_keeps_their_order(tmp_path, capsys):
    names = ["phase-diagram", "incremental-learning"]
    assert cli.main(["report", "--run", "--quick", "--jobs", "2", "--only", *names, "--out", str(tmp_path)]) == 0
    text = (tmp_path / "REPORT.md").read_text()
    assert text.index("## phase-diagram") < text.index("## incremental-learning") and "--jobs 2" in text
    for name in names:
        res = json.loads((tmp_path / name / "result.json").read_text())
        assert res["claim_holds"] and res["quick"] and res["cpu_seconds"] > 0


def test_report_run_on_a_real_experiment(tmp_path, capsys):
    assert cli.main(["report", "--run", "--quick", "--only", "incremental-learning", "--out", str(tmp_path)]) == 0
    text = (tmp_path / "REPORT.md").read_text()
    assert "Jin, Li, Lyu, Du & Lee 2023" in text and "**PASS**" in text and "](incremental-learning/" in text
    exp = registry()["incremental-learning"]
    setting = " ".join(sys.modules[exp.run.__module__].__doc__.split("\n\n")[0].split())
    assert exp.claim in text and f"*Setting:* {setting}" in text
    detail = " ".join(sys.modules[exp.run.__module__].__doc__.split("\n\n")[1].split())
    assert "<details>" in text and detail in text                        # the rest of the documentation, folded


def test_quick_overrides_must_be_known_params():
    bad = Experiment(name="bad", paper="p", claim="c", run=lambda ctx: {}, params={"a": 1}, quick={"b": 2})
    with pytest.raises(ValueError, match="unknown parameters"):
        bad.params_for(True)


def test_python_dash_m_entry_point():
    out = subprocess.run([sys.executable, "-m", "overparam", "list"], capture_output=True, text=True)
    assert out.returncode == 0 and "slows-gd" in out.stdout


# --- overparam bench ---------------------------------------------------------------------------

ROOT = Path(__file__).resolve().parents[1]


def test_bench_lists_the_checkouts_scripts(capsys):
    assert cli.main(["bench", "--root", str(ROOT)]) == 0
    out = capsys.readouterr().out
    names = cli.benchmarks(ROOT)
    assert {"hessian", "prune", "scaling", "hessian_batched_hvp"} <= set(names)
    assert all(name in out for name in names) and "_timing" not in names


def test_bench_outside_a_checkout_and_unknown_names(tmp_path, capsys):
    assert cli.main(["bench", "--root", str(tmp_path)]) == 2
    assert "no benchmarks/ folder" in capsys.readouterr().err
    assert cli.main(["bench", "--root", str(ROOT), "no-such-bench"]) == 2
    assert "available:" in capsys.readouterr().err


def test_bench_runs_a_script_with_the_checkout_first_on_the_path(tmp_path, capfd):
    (tmp_path / "benchmarks").mkdir()
    (tmp_path / "benchmarks" / "_helper.py").write_text("VALUE = 42\n")
    (tmp_path / "benchmarks" / "toy_bench.py").write_text(
        '"""A toy benchmark."""\nimport os, sys\nfrom _helper import VALUE\n'
        'print(VALUE, sys.argv[1:], os.environ["PYTHONPATH"].split(os.pathsep)[0], os.getcwd())\nsys.exit(3)\n')
    assert cli.main(["bench", "--root", str(tmp_path), "toy", "--", "--x", "1"]) == 3
    out = capfd.readouterr().out
    assert f"42 ['--x', '1'] {tmp_path} {tmp_path}" in out
    assert cli.main(["bench", "--root", str(tmp_path)]) == 0
    listing = capfd.readouterr().out
    assert "toy" in listing and "A toy benchmark." in listing and "_helper" not in listing


@pytest.mark.parametrize("name", sorted(cli.benchmarks(ROOT)))
def test_every_benchmark_imports_and_shows_help_without_its_anchors(name, capfd):
    assert cli.main(["bench", "--root", str(ROOT), name, "--", "--help"]) == 0, capfd.readouterr().err
    assert capfd.readouterr().out.startswith("usage:")


# --- one-line errors for bad run arguments ------------------------------------------------------

@pytest.mark.parametrize("threads", ["0", "-3"])
def test_run_with_threads_below_one_is_a_one_line_error(threads, capsys):
    assert cli.main(["run", "slows-gd", "--quick", "--quiet", "--threads", threads]) == 2
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert err.startswith("overparam: ") and "threads" in err and f"got {threads}" in err
    assert "\n" not in err and "Traceback" not in err and "claim" not in captured.out


def test_run_on_cuda_without_cuda_is_a_one_line_error(monkeypatch, capsys):
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    assert cli.main(["run", "slows-gd", "--quick", "--quiet", "--device", "cuda"]) == 2
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert err.startswith("overparam: ") and "cuda" in err and "\n" not in err and "Traceback" not in err
    assert "claim" not in captured.out


def test_bad_run_arguments_exit_2_from_the_shell():
    out = subprocess.run([sys.executable, "-m", "overparam", "run", "slows-gd", "--quick", "--threads", "0"],
                         capture_output=True, text=True)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert out.stderr.strip().splitlines() == ["overparam: threads must be >= 1, got 0"]
