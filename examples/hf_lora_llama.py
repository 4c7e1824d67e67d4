"""LoRA + ScaledGD(λ) on a tiny Hugging Face LLaMA, trained on the bytes of Python's own standard library.

A tiny ``LlamaForCausalLM`` is built from its config (random weights, nothing downloaded). Its
"pre-training" is brief: embeddings, norms and read-out only, AdamW, on bytes of one half of the
standard library's top-level modules. Then every attention and MLP projection gets a LoRA
adapter (``op.factor.lora_``), the rest stays frozen, and the adapters are fine-tuned with
ScaledGD(λ) (``op.optim.ScaledGD(op.factor.pairs(model), damping=λ)``): each factor of
``ΔW = s · up downᵀ`` is preconditioned by the other's damped Gram matrix; ``up`` starts at zero,
so the damping is what makes the first step well defined. The held-out loss (bits per byte, on
modules of the other half, a fixed seeded split) is printed before and after.

The text is read from the running interpreter's own ``sysconfig.get_paths()["stdlib"]``.
Run: ``python examples/hf_lora_llama.py`` (about 15 s of one CPU core).
"""

from __future__ import annotations

import argparse
import math
import sysconfig
from pathlib import Path

import torch
import torch.nn.functional as F
import transformers

import overparam as op

PROJECTIONS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def stdlib_bytes(n_files: int = 60, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``(train, held_out)`` byte streams ``(n,)`` int64 from the standard library's top-level
    modules: ``n_files`` of them drawn with ``seed``, the first half for training."""
    files = sorted(Path(sysconfig.get_paths()["stdlib"]).glob("*.py"))
    if len(files) < 2:
        raise RuntimeError("no standard-library sources found next to this interpreter")
    order = torch.randperm(len(files), generator=torch.Generator().manual_seed(seed)).tolist()
    chosen = [files[i] for i in order[:n_files]]
    half = len(chosen) // 2

    def read(paths):
        return torch.tensor(list(b"".join(p.read_bytes() for p in paths)), dtype=torch.long)

    return read(chosen[:half]), read(chosen[half:])


def tiny_llama(width: int = 64, seed: int = 0) -> transformers.LlamaForCausalLM:
    torch.manual_seed(seed)
    cfg = transformers.LlamaConfig(vocab_size=256, hidden_size=width, intermediate_size=2 * width,
                                   num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4,
                                   max_position_embeddings=128, attn_implementation="sdpa")
    return transformers.LlamaForCausalLM(cfg)


def batches(stream: torch.Tensor, batch: int, seq: int, gen: torch.Generator):
    """An endless supply of ``(batch, seq)`` windows at random offsets."""
    while True:
        start = torch.randint(0, len(stream) - seq, (batch,), generator=gen)
        yield torch.stack([stream[s:s + seq] for s in start.tolist()])


def lm_loss(model, ids: torch.Tensor) -> torch.Tensor:
    logits = model(ids).logits
    return F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1))


def fit(model, opt, steps: int, batches_) -> None:
    """``steps`` optimizer steps of the next-byte loss in train mode."""
    model.train()
    for _, ids in zip(range(steps), batches_):
        opt.zero_grad()
        lm_loss(model, ids).backward()
        opt.step()


@torch.no_grad()
def bits_per_byte(model, stream: torch.Tensor, seq: int = 64, windows: int = 64) -> float:
    """Mean held-out loss over ``windows`` fixed, evenly spaced windows, in bits per byte."""
    starts = torch.linspace(0, len(stream) - seq - 1, windows).long().tolist()
    ids = torch.stack([stream[s:s + seq] for s in starts])
    return float(lm_loss(model.eval(), ids)) / math.log(2)


def main(pretrain_steps: int = 150, lora_steps: int = 150, rank: int = 4, lr: float = 0.1, damping: float = 1e-2,
         batch: int = 16, seq: int = 64, seed: int = 0, log=print) -> dict[str, float]:
    train, held = stdlib_bytes(seed=seed)
    log(f"standard library bytes: {len(train):,} train, {len(held):,} held out")
    model = tiny_llama(seed=seed)
    stream = batches(train, batch, seq, torch.Generator().manual_seed(seed + 1))
    out = {"init": bits_per_byte(model, held)}

    # 1. brief "pre-training": embeddings, norms and the read-out (AdamW)
    for n, p in model.named_parameters():
        p.requires_grad_(not any(k in n for k in PROJECTIONS))
    fit(model, torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-3), pretrain_steps, stream)
    out["before"] = bits_per_byte(model, held)

    # 2. LoRA on every projection, the rest frozen, fine-tuned by ScaledGD(λ)
    for p in model.parameters():
        p.requires_grad_(False)
    op.factor.lora_(model, PROJECTIONS, rank=rank, generator=seed)   # up = 0: the model is unchanged
    fit(model, op.optim.ScaledGD(list(op.factor.pairs(model)), lr=lr, damping=damping), lora_steps, stream)
    out["after"] = bits_per_byte(model, held)
    log(f"held-out bits/byte: random init {out['init']:.3f}; after pre-training {out['before']:.3f}; "
        f"after LoRA + ScaledGD(λ={damping:g}) {out['after']:.3f}")
    return out


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pretrain-steps", type=int, default=150)
    ap.add_argument("--lora-steps", type=int, default=150)
    ap.add_argument("--rank", type=int, default=4)
    ap.add_argument("--lr", type=float, default=0.1)
    ap.add_argument("--damping", type=float, default=1e-2)
    args = ap.parse_args()
    torch.set_num_threads(1)
    main(args.pretrain_steps, args.lora_steps, args.rank, args.lr, args.damping)
