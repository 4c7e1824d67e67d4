"""Every script in examples/ runs with ``--quick`` in a fresh interpreter, exits 0 and writes what
its docstring promises into ``--out`` (the Hugging Face examples, which need transformers, are run
by tests/hf/test_example_lora_llama.py and tests/hf/test_hessian_hf.py)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
TESTED_IN_HF = {"hf_gpt2_spectrum.py", "hf_lora_llama.py"}

# script -> (files it must write into --out, a check of its JSON output)
PROMISES = {
    "hessian_spectrum_training.py": (["spectrum.json", "top_eigenvalues.png", "density_step00000.png",
                                      "density_step00060.png"], "spectrum.json"),
    "lottery_ticket_digits.py": (["lottery.json", "accuracy_vs_density.png"], "lottery.json"),
    "mup_width_sweep.py": (["sweep.json", "lr_sweep.png"], "sweep.json"),
    "optim_lora_scaledgd.py": (["lora.json", "loss_curves.png"], "lora.json"),
    "prune_calibration.py": (["pruning.json", "reconstruction.png"], "pruning.json"),
    "sparse24_handoff.py": (["handoff.json", "weights.png"], "handoff.json"),
    "distributed_hessian.py": (["hessian.json", "eigenvalues.png"], "hessian.json"),
}


# optional packages a script needs besides matplotlib (the `digits` extra); without them it is skipped
NEEDS = {"hessian_spectrum_training.py": ["sklearn"], "lottery_ticket_digits.py": ["sklearn"],
         "prune_calibration.py": ["sklearn"]}


def run_example(script: str, out: Path, *launcher: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, MPLBACKEND="Agg", OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join([str(ROOT)] + ([os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else [])))
    env.pop("RANK", None)
    cmd = [sys.executable, *launcher, str(EXAMPLES / script), "--quick", "--out", str(out)]
    return subprocess.run(cmd, cwd=out.parent, env=env, capture_output=True, text=True, timeout=300)


def test_every_example_is_run_somewhere():
    scripts = {p.name for p in EXAMPLES.glob("*.py")}
    assert scripts == set(PROMISES) | TESTED_IN_HF


def test_every_example_says_how_to_run_it():
    for script in PROMISES:
        head = (EXAMPLES / script).read_text().split('"""')[1]
        assert "--out" in head and ("Run:" in head or "Launch" in head), script
        assert "import overparam as op" in (EXAMPLES / script).read_text(), script


def check(script: str, out: Path, proc: subprocess.CompletedProcess) -> dict:
    assert proc.returncode == 0, f"{script} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    files, js = PROMISES[script]
    for f in files:
        assert (out / f).is_file() and (out / f).stat().st_size > 0, f"{script} did not write {f}"
    return json.loads((out / js).read_text())


@pytest.mark.slow
@pytest.mark.parametrize("script", sorted(set(PROMISES) - {"distributed_hessian.py"}))
def test_example_runs_quick(script, tmp_path):
    for module in ["matplotlib", *NEEDS.get(script, [])]:
        pytest.importorskip(module)
    out = tmp_path / "out"
    res = check(script, out, run_example(script, out))
    if script == "hessian_spectrum_training.py":
        assert [r["step"] for r in res] == [0, 30, 60] and all(len(r["top"]) == 12 for r in res)
        assert res[-1]["loss"] < res[0]["loss"]
    elif script == "lottery_ticket_digits.py":
        dens = [r["density"] for r in res["rounds"]]
        assert dens == sorted(dens, reverse=True) and abs(dens[0] - 0.4) < 0.01
    elif script == "mup_width_sweep.py":
        assert set(res["best_log2_lr"]) == {"sp", "mup"} and len(res["best_log2_lr"]["mup"]) == 3
    elif script == "prune_calibration.py":
        assert len(res["test_accuracy"]) == 7 and res["test_accuracy"]["dense"] > 0.8
    elif script == "sparse24_handoff.py":
        assert res["within_tolerance"] and res["path"].startswith("cuda" if "cuda" in res["path"] else "cpu")
        assert all(v["values_bytes"] * 2 == v["dense_bytes"] for v in res["layers"].values())


@pytest.mark.slow
@pytest.mark.dist
def test_distributed_hessian_example_under_torchrun_with_two_gloo_processes(tmp_path):
    pytest.importorskip("matplotlib")
    out = tmp_path / "out"
    res = check("distributed_hessian.py", out,
                run_example("distributed_hessian.py", out, "-m", "torch.distributed.run", "--nproc-per-node", "2"))
    assert res["world_size"] == 2 and res["relative_gap"] < 1e-10 and res["relative_gap_fsdp"] < 1e-10
