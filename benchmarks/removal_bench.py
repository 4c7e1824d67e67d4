"""Structural removal (``overparam.prune.remove_pruned``): parameter count and forward time of the
smaller model against the masked model it equals (same run, interleaved rounds, median of 3).

1. an MLP 1024-4096-1024 (batch 256) with half of its hidden units removed;
2. a ResNet-style CNN (stem 64 channels, 4 residual blocks with 128 hidden channels, batch 32 at
   32×32) with half the hidden channels of every block and a quarter of the residual channels
   (stem and every block's second conv jointly) removed;
3. a pre-norm transformer block (d = 512, 8 heads, MLP 2048; batch 8 × 256 tokens, hand-written
   attention with ``F.scaled_dot_product_attention``) with half the heads and half the MLP units removed;
4. the same block with half the heads removed by their out-projection columns alone (``o.weight``);
5. a decoder of strided ``ConvTranspose2d`` (256 → 128 → 64 channels, BatchNorm, batch 16 at 16×16 → 64×64,
   then a 1×1 Conv to 3) with half the channels of both transposed convs removed;
6. a decoder ``ConvTranspose2d`` 256 → 128, grouped ``ConvTranspose2d`` 128 → 128 (8 groups, stride 2),
   depthwise ``ConvTranspose2d`` 128, 1×1 Conv to 3 (BatchNorm after the first two; batch 16 at 16×16 → 64×64),
   half the channels of each group removed;
7. ``nn.MultiheadAttention`` (d = 512, 8 heads, ``add_bias_kv`` and ``add_zero_attn``) on a residual stream,
   batch 8 × 256 tokens, half the heads removed by their ``out_proj`` columns;
8. Hugging Face GPT-2 (4 layers, d = 512, 8 heads, from its config; batch 8 × 256 tokens), half the heads
   (by their ``c_proj`` rows) and half the MLP units (by their ``c_fc`` columns) of every layer removed;
9. Hugging Face LLaMA (4 layers, d = 512, 8 query / 4 key-value heads, MLP 1408), one query head of each
   key-value group (by its ``o_proj`` columns) and half the MLP units (``gate_proj`` and ``up_proj`` rows) removed.
10. Hugging Face BERT (masked LM, 4 layers, d = 512, 8 heads, MLP 2048; batch 8 × 256 tokens), half the heads (by
   their query, key and value rows) and half the MLP units (``intermediate.dense`` rows) of every layer removed;
11. Hugging Face ViT (classifier, 4 layers, d = 512, 8 heads, MLP 2048; batch 8 images 128×128, patches 8×8: 257
   tokens), half the heads (by their ``o_proj`` columns) and half the MLP units (``fc1`` rows) of every layer removed.
   (8 to 11 need transformers: ``PYTHONPATH=. python benchmarks/removal_bench.py`` in an environment with it.)

Eval mode, ``torch.no_grad``. Also the time of the ``remove_pruned`` call itself.
Run from the repository root: ``python benchmarks/removal_bench.py [--repeats 3 --threads N]``.
"""

from __future__ import annotations

import argparse
import copy
import time

import torch
import torch.nn.functional as F
from _rows import Rows
from _timing import interleaved
from torch import nn

import overparam as op


class _Res(nn.Module):
    def __init__(self, c: int, h: int) -> None:
        super().__init__()
        self.a, self.na = nn.Conv2d(c, h, 3, padding=1, bias=False), nn.BatchNorm2d(h)
        self.b, self.nb = nn.Conv2d(h, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)

    def forward(self, x):
        return F.relu(x + self.nb(self.b(F.relu(self.na(self.a(x))))))


class _CNN(nn.Module):
    def __init__(self, c: int = 64, h: int = 128, blocks: int = 4) -> None:
        super().__init__()
        self.stem, self.norm = nn.Conv2d(3, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)
        self.blocks = nn.Sequential(*[_Res(c, h) for _ in range(blocks)])
        self.fc = nn.Linear(c, 10)

    def forward(self, x):
        x = self.blocks(F.relu(self.norm(self.stem(x))))
        return self.fc(x.mean((2, 3)))


class _Decoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.up1, self.n1 = nn.ConvTranspose2d(256, 128, 4, stride=2, padding=1), nn.BatchNorm2d(128)
        self.up2, self.n2 = nn.ConvTranspose2d(128, 64, 4, stride=2, padding=1), nn.BatchNorm2d(64)
        self.head = nn.Conv2d(64, 3, 1)

    def forward(self, x):
        return self.head(F.relu(self.n2(self.up2(F.relu(self.n1(self.up1(x)))))))


class _Block(nn.Module):
    def __init__(self, d: int = 512, h: int = 8) -> None:
        super().__init__()
        self.n1, self.n2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.q, self.k, self.v, self.o = (nn.Linear(d, d) for _ in range(4))
        self.up, self.down = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)
        self.h, self.dh = h, d // h

    def forward(self, x):
        B, T, _ = x.shape
        a = self.n1(x)
        q, k, v = (f(a).view(B, T, self.h, self.dh).transpose(1, 2) for f in (self.q, self.k, self.v))
        x = x + self.o(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(B, T, self.h * self.dh))
        return x + self.down(F.gelu(self.up(self.n2(x))))


class _Grouped(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.up1, self.n1 = nn.ConvTranspose2d(256, 128, 4, stride=2, padding=1), nn.BatchNorm2d(128)
        self.up2, self.n2 = nn.ConvTranspose2d(128, 128, 4, stride=2, padding=1, groups=8), nn.BatchNorm2d(128)
        self.dw, self.head = nn.ConvTranspose2d(128, 128, 3, padding=1, groups=128), nn.Conv2d(128, 3, 1)

    def forward(self, x):
        return self.head(self.dw(F.relu(self.n2(self.up2(F.relu(self.n1(self.up1(x))))))))


class _MHA(nn.Module):
    def __init__(self, d: int = 512, h: int = 8) -> None:
        super().__init__()
        self.n = nn.LayerNorm(d)
        self.attn = nn.MultiheadAttention(d, h, batch_first=True, add_bias_kv=True, add_zero_attn=True)
        self.fc = nn.Linear(d, d)

    def forward(self, x):
        a = self.n(x)
        return self.fc(x + self.attn(a, a, a, need_weights=False)[0])


def _hf(kind: str):
    import transformers as T
    torch.manual_seed(0)
    if kind == "gpt2":
        cfg = T.GPT2Config(n_layer=4, n_embd=512, n_head=8, vocab_size=1000, n_positions=256, bos_token_id=0, eos_token_id=0)
        net = T.GPT2LMHeadModel(cfg).eval()
        masks = {}
        for i in range(4):
            p = f"transformer.h.{i}."
            masks[p + "attn.c_proj.weight"] = _drop((512, 512), slice(0, 256))      # heads 0..3 (rows: Conv1D)
            masks[p + "mlp.c_fc.weight"] = _drop((512, 2048), (slice(None), slice(0, 1024)))
        return net, masks
    if kind in ("bert", "vit"):
        shape = dict(hidden_size=512, intermediate_size=2048, num_hidden_layers=4, num_attention_heads=8)
        if kind == "bert":
            net = T.BertForMaskedLM(T.BertConfig(vocab_size=1000, max_position_embeddings=256, **shape)).eval()
            p, att = "bert.encoder.layer.{}.", {f"attention.self.{k}.weight": _drop((512, 512), slice(0, 256))
                                                for k in ("query", "key", "value")}
            mlp = {"intermediate.dense.weight": _drop((2048, 512), slice(0, 1024))}
        else:
            net = T.ViTForImageClassification(T.ViTConfig(image_size=128, patch_size=8, num_labels=10, **shape)).eval()
            p, att = "vit.layers.{}.", {"attention.o_proj.weight": _drop((512, 512), (slice(None), slice(0, 256)))}
            mlp = {"mlp.fc1.weight": _drop((2048, 512), slice(0, 1024))}
        return net, {p.format(i) + k: m for i in range(4) for k, m in {**att, **mlp}.items()}
    cfg = T.LlamaConfig(hidden_size=512, intermediate_size=1408, num_hidden_layers=4, num_attention_heads=8,
                        num_key_value_heads=4, vocab_size=1000, max_position_embeddings=256)
    net = T.LlamaForCausalLM(cfg).eval()
    odd = [c for h in (1, 3, 5, 7) for c in range(h * 64, (h + 1) * 64)]             # one query head per kv group
    masks = {}
    for i in range(4):
        p = f"model.layers.{i}."
        masks[p + "self_attn.o_proj.weight"] = _drop((512, 512), (slice(None), odd))
        masks.update({p + f"mlp.{k}.weight": _drop((1408, 512), slice(0, 704)) for k in ("gate_proj", "up_proj")})
    return net, masks


def _drop(shape, idx) -> torch.Tensor:
    m = torch.ones(shape, dtype=torch.bool)
    m[idx] = False
    return m


def _channels(net: nn.Module, conv: str, norm: str, idx) -> dict:
    w = net.get_submodule(conv).weight
    c = (w.shape[0],)
    return {f"{conv}.weight": _drop(w.shape, idx), f"{norm}.weight": _drop(c, idx), f"{norm}.bias": _drop(c, idx)}


def cases():
    torch.manual_seed(0)
    mlp = nn.Sequential(nn.Linear(1024, 4096), nn.GELU(), nn.Linear(4096, 1024)).eval()
    yield "MLP 1024-4096-1024, 50% hidden units", mlp, {"0.weight": _drop((4096, 1024), slice(0, 2048))}, \
        (torch.randn(256, 1024),)
    cnn = _CNN().eval()
    masks = _channels(cnn, "stem", "norm", slice(0, 16))
    for i in range(4):
        masks.update(_channels(cnn, f"blocks.{i}.a", f"blocks.{i}.na", slice(0, 64)))
        masks.update(_channels(cnn, f"blocks.{i}.b", f"blocks.{i}.nb", slice(0, 16)))
    yield "ResNet-style CNN, 50% hidden + 25% residual channels", cnn, masks, (torch.randn(32, 3, 32, 32),)
    blk = _Block().eval()
    heads = slice(0, 256)                                          # heads 0..3 of 8 (64 each)
    masks = {f"{p}.weight": _drop((512, 512), heads) for p in "qkv"}
    masks["up.weight"] = _drop((2048, 512), slice(0, 1024))
    yield "transformer block d=512, 50% heads + 50% MLP units", blk, masks, (torch.randn(8, 256, 512),)
    cols = torch.ones(512, 512, dtype=torch.bool)
    cols[:, heads] = False
    yield "transformer block d=512, 50% heads by o-columns only", blk, {"o.weight": cols}, (torch.randn(8, 256, 512),)
    dec = _Decoder().eval()
    masks = {}
    for conv, norm, c in (("up1", "n1", 128), ("up2", "n2", 64)):    # output channels: weight dim 1, bias, BatchNorm
        w = dec.get_submodule(conv).weight
        masks[f"{conv}.weight"] = _drop(w.shape, (slice(None), slice(0, c // 2)))
        masks.update({k: _drop((c,), slice(0, c // 2)) for k in (f"{conv}.bias", f"{norm}.weight", f"{norm}.bias")})
    yield "ConvTranspose2d decoder 256-128-64, 50% channels", dec, masks, (torch.randn(16, 256, 16, 16),)
    grp = _Grouped().eval()
    half = [c for c in range(128) if c % 16 < 8]                     # half of every group of 16 (balanced)
    masks = {"up1.weight": _drop(grp.up1.weight.shape, (slice(None), half)),
             "up2.weight": _drop(grp.up2.weight.shape, (slice(None), slice(0, 8)))}   # (in, out/8): 8 of 16 per group
    masks.update({k: _drop((128,), half) for k in ("up1.bias", "n1.weight", "n1.bias", "up2.bias", "n2.weight",
                                                   "n2.bias", "dw.bias")})
    yield "grouped + depthwise ConvTranspose2d decoder, 50% channels per group", grp, masks, (torch.randn(16, 256, 16, 16),)
    mha = _MHA().eval()
    cols = torch.ones(512, 512, dtype=torch.bool)
    cols[:, 256:] = False
    yield "MultiheadAttention d=512 add_bias_kv + add_zero_attn, 50% heads", mha, {"attn.out_proj.weight": cols}, \
        (torch.randn(8, 256, 512),)
    for kind in ("gpt2", "llama", "bert", "vit"):
        try:
            net, masks = _hf(kind)
        except ImportError:
            print(f"| HF {kind} | not measured (transformers not installed) | | | | |")
            continue
        gen = torch.Generator().manual_seed(0)
        x = torch.randn(8, 3, 128, 128, generator=gen) if kind == "vit" else torch.randint(0, 1000, (8, 256), generator=gen)
        yield f"HF {kind} 4 layers d=512, 50% heads + 50% MLP units", net, masks, (x,)


def _out(y):
    return getattr(y, "logits", y)        # a Hugging Face output


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--only", type=int, nargs="+", default=None, help="case numbers (1-based) to run")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    rec = Rows(anchors=("transformers",))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, median of {args.repeats}")
    print("| model | params masked → removed | forward masked | forward removed | time ratio | remove_pruned call |")
    print("| --- | --- | --- | --- | --- | --- |")
    for i, (name, net, masks, x) in enumerate(cases(), 1):
        if args.only and i not in args.only:
            continue
        t0 = time.perf_counter()
        small = op.prune.remove_pruned(net, masks, x)
        t_call = time.perf_counter() - t0
        ref = copy.deepcopy(net)
        op.prune.apply_masks_(ref, masks)
        small.eval()
        with torch.no_grad():
            err = float((_out(small(*x)) - _out(ref(*x))).abs().max())
            times = interleaved({"masked": lambda: ref(*x), "removed": lambda: small(*x)}, repeats=args.repeats)
        tm, tr = (sorted(times[k][0])[len(times[k][0]) // 2] for k in ("masked", "removed"))
        n0, n1 = (sum(p.numel() for p in m.parameters()) for m in (ref, small))
        print(f"| {name} | {n0 / 1e6:.2f}M → {n1 / 1e6:.2f}M ({n1 / n0:.2f}×) | {tm * 1e3:.1f} ms | {tr * 1e3:.1f} ms "
              f"| {tr / tm:.2f}× | {t_call:.2f} s (max error {err:.1e}) |")
        rec.add("prune", f"forward of the removed model: {name}", "the masked model's forward", ours=tr, theirs=tm,
                notes=f"parameters {n0 / 1e6:.2f}M → {n1 / 1e6:.2f}M; remove_pruned call {t_call:.2f} s; "
                      f"max |removed − masked| {err:.1e}; median of {args.repeats}")
    rec.write()


if __name__ == "__main__":
    main()
