"""examples/hf_lora_llama.py runs end to end (a smoke run with few steps) and both stages lower the held-out loss."""

import importlib.util
from pathlib import Path

import torch

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "hf_lora_llama.py"


def _load():
    spec = importlib.util.spec_from_file_location("hf_lora_llama", EXAMPLE)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_lora_scaledgd_on_stdlib_bytes_smoke():
    ex = _load()
    train, held = ex.stdlib_bytes()
    assert train.dtype == torch.long and 0 <= int(train.min()) and int(train.max()) < 256
    again = ex.stdlib_bytes()
    assert torch.equal(again[0], train) and torch.equal(again[1], held)        # a fixed seeded split
    state = torch.random.get_rng_state()
    lines = []
    out = ex.main(pretrain_steps=40, lora_steps=30, batch=8, seq=32, log=lines.append)
    torch.random.set_rng_state(state)
    assert out["before"] < out["init"] - 1.0                                   # pre-training learns byte statistics
    assert out["after"] < out["before"]                                        # LoRA + ScaledGD(λ) improves on it
    assert "after LoRA + ScaledGD" in lines[-1]
