"""Benchmark overparam.hessian's Jacobian products (J V, Jᵀ U) against curvlinops'
``JacobianLinearOperator`` / ``TransposedJacobianLinearOperator``.

Two float32 models on the CPU: the ~282k-parameter CNN of ``hessian_bench.py`` (3x32x32 inputs,
10 logits) and a small pre-norm transformer block with LayerNorm and attention (inputs
``(N, 16, 64)``, 10 logits). For each: the construction (no determinism check on either side),
then ``J v`` / ``J V`` (8 columns) and ``Jᵀ u`` / ``Jᵀ U`` (8 columns) on flat tensors. Every
timing is the median of ``--repeats`` runs, interleaved (ours, curvlinops) so that a change of
machine load hits both; the ratio is ours / curvlinops from the same process. Both results are
compared (relative error) before timing.

overparam keeps one forward graph per batch and differentiates it (Jᵀ u by a vjp, J v by the
double-vjp trick); curvlinops re-runs the forward per product (``torch.func`` jvp / vjp, vmapped
over columns).

Run from the repository root in an environment with torch and curvlinops-for-pytorch:
    python benchmarks/jacobian_bench.py [--repeats 3 --batch 64]
It prints a markdown table (also written to benchmarks/results/jacobian.md unless --no-write).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import warnings
from pathlib import Path

import torch
from _rows import Rows
from _timing import interleaved
from hessian_bench import cnn  # the ~282k-parameter CNN
from torch import nn

import overparam.hessian as oh
from overparam.backend.random import construction_generator, fan_in_normal_, gaussian


class Block(nn.Module):
    """Pre-norm transformer block (LayerNorm, 4-head softmax attention written out, GELU MLP) and a
    mean-pooled head. The attention is explicit: curvlinops' forward-mode products have no rule for
    the fused kernels behind ``nn.MultiheadAttention`` / ``scaled_dot_product_attention`` on the CPU."""

    def __init__(self, d: int = 64, heads: int = 4, classes: int = 10):
        super().__init__()
        self.heads = heads
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv, self.out = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.mlp = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d))
        self.head = nn.Linear(d, classes)

    def forward(self, x):
        n, t, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).reshape(n, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        a = torch.softmax(q @ k.transpose(-1, -2) / (d // self.heads) ** 0.5, dim=-1) @ v
        x = x + self.out(a.transpose(1, 2).reshape(n, t, d))
        x = x + self.mlp(self.ln2(x))
        return self.head(x.mean(dim=1))


def transformer() -> nn.Module:
    net = Block()
    fan_in_normal_(net, generator=0)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.LayerNorm):
                m.weight.add_(1.0)
    return net.eval()


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def bench(name: str, model: nn.Module, x: torch.Tensor, repeats: int) -> list[tuple[str, float, float, float]]:
    import curvlinops

    params = [p for p in model.parameters() if p.requires_grad]
    data = [(x, torch.zeros(len(x)))]

    def ours_build():
        return oh.jacobian(model, data, check=False)

    def theirs_build():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return (curvlinops.JacobianLinearOperator(model, params, data, check_deterministic=False),
                    curvlinops.TransposedJacobianLinearOperator(model, params, data, check_deterministic=False))

    J, (CJ, CJT) = ours_build(), theirs_build()
    g = construction_generator(0)
    V8, U8 = gaussian((J.n, 8), generator=g), gaussian((J.m, 8), generator=g)
    v, u = V8[:, :1].clone(), U8[:, :1].clone()
    err = max(rel(J @ V8, CJ @ V8), rel(J.T @ U8, CJT @ U8))
    rows = []
    cases = {"build": (ours_build, theirs_build),
             "J v": (lambda: J @ v, lambda: CJ @ v), "J V (8 columns)": (lambda: J @ V8, lambda: CJ @ V8),
             "Jᵀ u": (lambda: J.T @ u, lambda: CJT @ u), "Jᵀ U (8 columns)": (lambda: J.T @ U8, lambda: CJT @ U8)}
    for case, (ours, theirs) in cases.items():
        runs = interleaved({"ours": ours, "theirs": theirs}, repeats=repeats)
        rows.append((f"{name}: {case}", statistics.median(runs["ours"][0]), statistics.median(runs["theirs"][0]), err))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    torch.manual_seed(0)
    rec = Rows(anchors=("curvlinops",))
    g = construction_generator(1)
    rows = bench("CNN 282k", cnn(), gaussian((args.batch, 3, 32, 32), generator=g), args.repeats)
    rows += bench("LN+attention block", transformer(), gaussian((args.batch, 16, 64), generator=g), args.repeats)
    out = [f"torch {torch.__version__}, {platform.machine()}, {torch.get_num_threads()} threads, batch {args.batch}, "
           f"float32, median of {args.repeats} interleaved runs", "",
           "| case | overparam | curvlinops | ratio | rel. difference |", "| --- | --- | --- | --- | --- |"]
    for case, a, b, e in rows:
        out.append(f"| {case} | {a * 1e3:.1f} ms | {b * 1e3:.1f} ms | {a / b:.2f}× | {e:.1e} |")
        anchor = "curvlinops `TransposedJacobianLinearOperator`" if "ᵀ" in case else "curvlinops `JacobianLinearOperator`"
        rec.add("hessian", f"Jacobian {case}, batch {args.batch}, fp32", anchor if "build" not in case else
                "curvlinops `JacobianLinearOperator` + `TransposedJacobianLinearOperator`", ours=a, theirs=b,
                notes=f"rel. difference {e:.1e}")
    if not args.no_write:
        rec.write()
    text = "\n".join(out)
    print(text)
    if not args.no_write:
        path = Path(__file__).resolve().parent / "results" / "jacobian.md"
        path.write_text("# Jacobian products vs curvlinops (`benchmarks/jacobian_bench.py`)\n\n" + text + "\n")


if __name__ == "__main__":
    main()
