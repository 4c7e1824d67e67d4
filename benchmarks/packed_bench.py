"""Benchmark: packed masked optimizers vs dense masked and unmasked AdamW / SGD.

An 8M-weight MLP (1024 → 2048 → 2048 → 1024, fp32), magnitude masks at 80% sparsity, one whole
training step (forward, backward, optimizer step) on a batch of 64:

* ``unmasked``: ``torch.optim.AdamW`` (default foreach path) on the dense model — the target;
* ``dense masked``: the same optimizer under ``op.prune.masked`` (dense state, zeroed entries);
* ``packed``: ``op.prune.PackedAdamW`` (state holds only the kept entries).

Also the optimizer-state bytes of each after one step, and the same for SGD with momentum.
Run from the repository root: ``overparam bench packed [-- --threads N]``.
"""

from __future__ import annotations

import argparse
import copy

import torch
from _rows import Rows
from _timing import interleaved
from torch import nn

import overparam as op


def _mlp(widths):
    torch.manual_seed(0)
    layers = []
    for a, b in zip(widths[:-1], widths[1:]):
        layers += [nn.Linear(a, b), nn.ReLU()]
    return nn.Sequential(*layers[:-1])


def main(argv=None) -> str:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--widths", type=int, nargs="+", default=[1024, 2048, 2048, 1024])
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--sparsity", type=float, default=0.8)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--inner", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    a = ap.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    rows = Rows()
    base = _mlp(a.widths)
    n_w = sum(m.weight.numel() for m in base if isinstance(m, nn.Linear))
    masks = op.prune.magnitude(base, a.sparsity)
    x = torch.randn(a.batch, a.widths[0])
    y = torch.randn(a.batch, a.widths[-1])
    lines = [f"MLP {a.widths} ({n_w / 1e6:.1f}M weights), sparsity {a.sparsity}, batch {a.batch}, "
             f"{torch.get_num_threads()} thread(s), whole step (fwd+bwd+opt), median of {a.repeats} x {a.inner} steps:",
             "| optimizer | unmasked | dense masked | packed | packed / unmasked | state: dense masked | state: packed | packed / dense | + index cache |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name, dense_cls, packed_cls, kw in (
            ("AdamW", torch.optim.AdamW, op.prune.PackedAdamW, dict(lr=1e-3, weight_decay=1e-2)),
            ("SGD momentum", torch.optim.SGD, op.prune.PackedSGD, dict(lr=1e-2, momentum=0.9))):
        nets = {k: copy.deepcopy(base) for k in ("unmasked", "masked", "packed")}
        opts = {"unmasked": dense_cls(nets["unmasked"].parameters(), **kw),
                "masked": dense_cls(nets["masked"].parameters(), **kw),
                "packed": packed_cls(nets["packed"].named_parameters(), masks, **kw)}
        handle = op.prune.masked(nets["masked"], masks, optimizer=opts["masked"])

        def step(k):
            def run():
                for _ in range(a.inner):
                    opts[k].zero_grad()
                    ((nets[k](x) - y) ** 2).mean().backward()
                    opts[k].step()
            return run

        res = interleaved({k: step(k) for k in nets}, repeats=a.repeats)
        med = {k: sorted(v[0])[len(v[0]) // 2] / a.inner for k, v in res.items()}
        handle.remove()
        sb = {k: op.optim.optimizer_state_bytes(o) for k, o in opts.items()}
        lines.append(f"| {name} | {med['unmasked'] * 1e3:.1f} ms | {med['masked'] * 1e3:.1f} ms | {med['packed'] * 1e3:.1f} ms | "
                     f"{med['packed'] / med['unmasked']:.2f}x | {sb['masked'] / 2**20:.1f} MiB | {sb['packed'] / 2**20:.1f} MiB | "
                     f"{sb['packed'] / sb['masked']:.2f}x | {opts['packed'].index_bytes() / 2**20:.1f} MiB "
                     f"({(sb['packed'] + opts['packed'].index_bytes()) / sb['masked']:.2f}x with it) |")
        case = f"{name}, {n_w / 1e6:.1f}M-weight MLP at {a.sparsity:.0%} sparsity, batch {a.batch}"
        rows.add("prune", f"packed `Packed{name.split()[0]}` whole training step, {case}",
                 f"the unmasked foreach {name} step", ours=med["packed"], theirs=med["unmasked"], target=1.0,
                 notes=f"dense masked (`masked`): {med['masked'] * 1e3:.1f} ms")
        rows.add("prune", f"packed `Packed{name.split()[0]}` optimizer state, {case}", "dense masked state",
                 ours=sb["packed"] / 2**20, theirs=sb["masked"] / 2**20, unit="MiB",
                 target=0.25 if name == "AdamW" else None,
                 notes=f"with the index cache {(sb['packed'] + opts['packed'].index_bytes()) / sb['masked']:.2f}× "
                       "(derived from the masks, not saved)")
    text = "\n".join(lines)
    print(text)
    rows.write()
    return text


if __name__ == "__main__":
    main()
