"""benchmarks/RESULTS.md is built from the rows the scripts emit, by one command (no benchmark runs here).

* ``_rows.status`` computes met / missed from the judged figure and the target, never from text;
* ``Rows`` writes one JSON file per run with the machine, versions, threads, dates and load;
* ``_page.page`` puts every row with a target in the summary, marks a run without JSON or with a
  failure record as such (and shows none of its numbers), and GPU rows as not measured;
* ``regenerate.settle`` replaces the JSON of a failed run by a failure record;
* every ``benchmarks/*_bench.py`` has a run in ``regenerate.RUNS``, and the committed RESULTS.md is
  exactly what ``--gather`` builds from the committed JSON files (nobody edits it by hand).
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"


def _load(name: str):
    if str(BENCH) not in sys.path:
        sys.path.insert(0, str(BENCH))
    spec = importlib.util.spec_from_file_location(f"_bench_{name}", BENCH / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


regen, rows_mod, page_mod = _load("regenerate"), _load("_rows"), _load("_page")


def _row(**kw):
    rows = rows_mod.Rows("t")
    return rows.add("prune", "case", "anchor", **kw)


@pytest.mark.parametrize("kw, expected", [
    (dict(ours=0.2, theirs=1.0, target=0.25), "met"),
    (dict(ours=0.3, theirs=1.0, target=0.25), "missed"),
    (dict(ours=0.25, theirs=1.0, target=0.25), "met"),                       # the bound itself is met
    (dict(ours=1.0, theirs=20.0, target=0.05, compare=">="), "met"),
    (dict(ours=1.0, theirs=50.0, target=0.05, compare=">="), "missed"),
    (dict(ours=0.09, theirs=1.0, target=0.1, judged="ours"), "met"),         # absolute target on our figure
    (dict(ours=0.11, theirs=10.0, target=0.1, judged="ours"), "missed"),     # ratio 0.011 is not what is judged
    (dict(ours=0.2, theirs=1.0), "no target"),
    (dict(ratio=float("nan"), target=0.05), "not measured"),
])
def test_status_is_computed_from_the_figure_and_the_target(kw, expected):
    assert rows_mod.status(_row(**kw)) == expected


def test_rows_compute_the_ratio_and_refuse_unknown_comparisons():
    assert _row(ours=3.0, theirs=4.0)["ratio"] == pytest.approx(0.75)
    assert _row(ratio=0.5, ours=3.0, theirs=4.0)["ratio"] == 0.5             # a given ratio is kept
    with pytest.raises(ValueError, match="compare"):
        _row(ours=1.0, theirs=1.0, compare="<")
    with pytest.raises(ValueError, match="judged"):
        _row(ours=1.0, theirs=1.0, judged="theirs")
    rows = rows_mod.Rows("t")
    gpu = rows.gpu("prune", "2:4 on the GPU", "torch.sparse", target=0.5)
    import torch
    assert (rows_mod.status(gpu) == "not measured (no GPU)") == (not torch.cuda.is_available())
    assert gpu["ratio"] is None and gpu["ours"] is None


def test_rows_write_one_json_with_machine_versions_and_load(tmp_path):
    rows = rows_mod.Rows("demo", anchors=("curvlinops",))
    rows.add("hessian", "one product", "curvlinops", ours=1.0, theirs=2.0, target=1.0)
    path = rows.write(tmp_path)
    rec = json.loads(path.read_text())
    assert path.name == "demo.json" and rec["name"] == "demo" and len(rec["rows"]) == 1
    env = rec["environment"]
    assert {"machine", "cpu", "cores", "gpu", "threads", "versions"} <= set(env)
    assert set(env["versions"]) == {"torch", "curvlinops"} and "cores" in env["machine"]
    assert set(rec["load"]) == {"start", "end"} and rec["date"].endswith("UTC")


def _record(name, rows, **extra):
    return {"name": name, "script": f"{name}_bench.py", "argv": [], "date": "2026-11-29 21:00 UTC",
            "environment": {"machine": "cpu (2 cores), no GPU", "threads": 1, "versions": {"torch": "2.13.0"}},
            "load": {"start": [9.0, 1, 1], "end": [3.0, 1, 1]}, "rows": rows, **extra}


def test_page_summarises_targets_and_marks_missing_and_failed_runs():
    ok = _row(ours=0.2, theirs=1.0, target=0.25)
    bad = _row(ours=0.5, theirs=1.0, target=0.25)
    info = _row(ours=0.7, theirs=1.0)
    gpu = dict(_row(target=0.02), reason="no GPU")
    records = {"prune": _record("prune", [ok, bad, info, gpu]),
               "hessian": _record("hessian", [], failed="exit 1", output_tail="Traceback ... boom")}
    text = page_mod.page(records, ["prune", "hessian", "kfac"], scripts={"kfac": "kfac_bench.py"})
    summary = text.split("## Summary against the targets")[1].split("## Runs")[0]
    lines = [ln for ln in summary.splitlines() if ln.startswith("| prune")]
    assert [ln.split(" | ")[5] for ln in lines] == ["met", "missed", "not measured (no GPU)"]   # no target: not here
    assert "| 0.2× | ≤ 0.25× | met |" in summary and "| 0.5× | ≤ 0.25× | missed |" in summary
    absolute = page_mod.page({"s": _record("s", [_row(ours=0.2, theirs=0.1, target=0.1, judged="ours")])}, ["s"])
    assert "| 200 ms | ≤ 100 ms | missed |" in absolute                    # the judged figure is ours, not the ratio
    assert "failed: exit 1" in summary and "no JSON" in summary.split("kfac_bench.py")[1].splitlines()[0]
    assert "## Run: kfac" in text and "## Run: hessian" in text and "boom" in text.split("## Run: hessian")[1]
    assert "(results/history.md)" in text and "cpu (2 cores), no GPU" in text and "9.0 → 3.0" in text
    assert text.count("| prune | case |") == 4 + 3                                 # section: all four; summary: three


def test_settle_replaces_the_json_of_a_failed_run(tmp_path):
    env = {"machine": "m", "threads": 1, "versions": {}}
    (tmp_path / "prune.json").write_text(json.dumps(_record("prune", [_row(ours=1.0, theirs=9.0, target=0.25)])))
    rec = regen.settle("prune", 1, 3.0, "line\nTraceback: boom", env, tmp_path)
    assert rec["rows"] == [] and rec["failed"] == "exit 1" and rec["run"]["exit"] == 1
    assert json.loads((tmp_path / "prune.json").read_text())["rows"] == []    # the old figure is gone
    rec = regen.settle("kfac", 0, 1.0, "printed", env, tmp_path)             # exit 0, no JSON written
    assert rec["failed"].startswith("exit 0 but no rows")
    rec = regen.settle("calib", "timeout", 1200.0, "partial", env, tmp_path)
    assert rec["failed"] == "timed out after 1200 s" and rec["run"]["exit"] == "timeout"
    (tmp_path / "umup.json").write_text(json.dumps(_record("umup", [_row(ours=1.0, theirs=2.0)])))
    printed = "| a | b |\n```x```"
    rec = regen.settle("umup", 0, 5.0, printed, env, tmp_path)
    assert not rec.get("failed") and rec["run"] == {"exit": 0, "wall_s": 5.0, "output": printed}
    out = tmp_path / "RESULTS.md"
    regen.gather(tmp_path, out)
    assert "failed: exit 1" in out.read_text()
    latest = (tmp_path / "latest.md").read_text().split("## Output of umup")[1]
    assert latest.count("```") == 2 and "```text\n| a | b |\n'''x'''\n```" in latest   # output cannot close its fence


def test_every_bench_script_has_a_run_and_only_selects_known_ones():
    scripts = {script for script, _ in regen.RUNS.values()}
    assert scripts == {p.name for p in BENCH.glob("*_bench.py")}
    assert regen.scripts(["optim"]) == ["optim", "optim_adapters"]
    assert regen.scripts(["hessian_bench", "optim_adapters"]) == ["hessian", "optim_adapters"]
    with pytest.raises(SystemExit, match="no-such"):
        regen.scripts(["no-such"])


def test_committed_results_page_is_what_gather_builds():
    records = page_mod.read(rows_mod.RESULTS)
    built = page_mod.page(records, list(regen.RUNS), scripts={k: regen.command(k) for k in regen.RUNS})
    assert (BENCH / "RESULTS.md").read_text() == built, "run `python benchmarks/regenerate.py --gather`"
