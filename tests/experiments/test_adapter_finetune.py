import json
from dataclasses import replace

import torch
from torch import nn

from overparam.experiments import get
from overparam.experiments._runner import run_experiment
from overparam.experiments.adapter_finetune import _shifted_target
from overparam.experiments.harness import mlp

SMALL = {"sizes": [16, 32, 32, 8], "rank": 2, "shift_rank": 2, "n": 256, "steps": 150, "digits": False, "extra_seeds": [1],
         "lrs": {"lora_adamw": [3e-2, 1e-1], "lora_precond": [3e-2, 1e-1], "loraplus": [3e-3, 1e-2],
                 "galore": [3e-2, 1e-1], "full": [3e-3, 1e-2]}}


def test_the_shift_has_the_asked_rank_and_spectrum():
    """Closed form: each weight moves by size·‖W‖₂·U diag(1 … 1/κ) Vᵀ with orthonormal U, V."""
    net = mlp([6, 10, 4], activation=nn.GELU, generator=0, dtype=torch.float64)
    tgt = _shifted_target(net, 3, 100.0, 0.5, torch.Generator().manual_seed(1))
    for a, b in ((net[0], tgt[0]), (net[2], tgt[2])):
        s = torch.linalg.svdvals((b.weight - a.weight).detach())
        want = 0.5 * torch.linalg.matrix_norm(a.weight.detach(), 2) * torch.tensor([1.0, 0.1, 0.01], dtype=torch.float64)
        torch.testing.assert_close(s[:3], want, rtol=1e-12, atol=0)
        assert float(s[3:].max()) < 1e-13
        assert torch.equal(a.bias.detach(), b.bias.detach())


def test_adapter_finetune_reduced(tmp_path):
    """The machinery at reduced size: the verdict is the median per-seed ratio, state memory as expected.

    The claim itself is NOT asserted here: the per-seed ratio is widely spread (at this size,
    seed 0: plain LoRA + AdamW wins 19×), see the module docstring; the quick run is the reproduction."""
    exp = get("adapter-finetune")
    small = replace(exp, quick=SMALL)
    res = run_experiment(small, out=tmp_path, quick=True, progress=False)
    m = res["measured"]
    syn = m["synthetic"]
    by_seed = m["precond_over_plain_by_seed"]
    assert set(by_seed) == {"0", "1"}
    assert by_seed["0"] == syn["lora_precond"]["final"] / syn["lora_adamw"]["final"]
    assert m["precond_over_plain"] == (by_seed["0"] + by_seed["1"]) / 2
    assert res["claim_holds"] == (m["precond_over_plain"] < 0.5)
    for v in syn.values():
        assert len(v["curve"]) == 151 and abs(v["curve"][0] - 1.0) < 1e-12 and v["final"] < 0.1
    # state memory: the LoRA runs share one size, far below full AdamW; GaLore below full AdamW
    full = syn["full"]["state_bytes"]
    assert syn["lora_adamw"]["state_bytes"] == syn["lora_precond"]["state_bytes"] < 0.5 * full
    assert syn["galore"]["state_bytes"] < full
    assert m["digits"] is None
    saved = json.loads((tmp_path / "result.json").read_text())
    assert saved["experiment"] == "adapter-finetune" and saved["claim_holds"] == res["claim_holds"]
