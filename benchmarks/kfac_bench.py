"""Benchmark overparam.hessian.kfac / ekfac against curvlinops' KFACLinearOperator / EKFACLinearOperator.

The 282k-parameter CNN of ``hessian_bench.py`` (CIFAR-shaped input 3x32x32, fixed random batch
of 256, float32, cross-entropy) on the CPU. One measurement is **construction + one damped
inverse-vector product** ``(K + λI)⁻¹ v`` (λ = 1e-3), both sides with the exact damping (the
eigendecompositions of the factors; curvlinops' ``use_exact_damping=True``), weight and bias as
one block (``separate_weight_and_bias=False``) and no determinism check on either side (ours
``check=False``, theirs ``check_deterministic=False``). Rounds are interleaved (ours, theirs,
...), median of ``--repeats``; the two results are compared (relative difference of the
solutions; MC draws differ between the libraries, so only type-2 and empirical are compared).

Run from the repository root, in an environment with curvlinops-for-pytorch installed:
    overparam bench kfac [-- --repeats 3]
It prints a markdown table (also written to benchmarks/results/kfac.md unless --no-write).
"""

from __future__ import annotations

import argparse
import copy
import os
import platform
import statistics
from pathlib import Path

import torch
from _rows import Rows
from _timing import interleaved
from hessian_bench import cnn
from torch import nn

import overparam.hessian as oh
from overparam.backend import vec
from overparam.backend.random import construction_generator, gaussian

F = nn.functional
DAMPING = 1e-3


def ours(model, x, y, fisher: str, v, ekfac: bool = False):
    build = oh.ekfac if ekfac else oh.kfac
    K = build(model, F.cross_entropy, (x, y), fisher_type=fisher, generator=0, check=False)
    return K.inverse(damping=DAMPING) @ v


def theirs(model, x, y, fisher: str, v, ekfac: bool = False, exact: bool = True):
    import curvlinops
    from curvlinops import KFACInverseLinearOperator

    cls = curvlinops.EKFACLinearOperator if ekfac else curvlinops.KFACLinearOperator
    params = list(model.parameters())
    K = cls(model, nn.CrossEntropyLoss(), params, [(x, y)], fisher_type=fisher, check_deterministic=False,
            separate_weight_and_bias=False)
    return KFACInverseLinearOperator(K, damping=DAMPING, use_exact_damping=exact) @ v


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--cases", nargs="+", default=None,
                    help="a subset of: type-2 mc empirical ekfac type-2-factor-damping")
    ap.add_argument("--no-write", action="store_true")
    ap.add_argument("--accuracy", action="store_true", help="only: both float32 type-2 solutions vs our float64 one")
    args = ap.parse_args()
    g = construction_generator(0)
    model = cnn()
    x = gaussian((256, 3, 32, 32), generator=g)
    y = torch.randint(0, 10, (256,), generator=g)
    n = sum(p.numel() for p in model.parameters())
    v = vec.flatten([gaussian(p.shape, generator=g) for p in model.parameters()])
    load0 = os.getloadavg()[0]
    print(f"CNN with {n} parameters, batch 256, torch {torch.__version__}, {torch.get_num_threads()} threads", flush=True)
    if args.accuracy:
        ref = ours(copy.deepcopy(model).double(), x.double(), y, "type-2", v.double())
        for name, r in (("overparam", ours(model, x, y, "type-2", v)), ("curvlinops", theirs(model, x, y, "type-2", v))):
            print(f"type-2 float32 solution of {name}: relative error {float((r.double() - ref).norm() / ref.norm()):.1e} "
                  "against overparam's float64 solution", flush=True)
        return
    rows, rec = [], Rows(anchors=("curvlinops",))
    cases = {"type-2": ("K-FAC type-2", "type-2", False, True), "mc": ("K-FAC mc (1 sample)", "mc", False, True),
             "empirical": ("K-FAC empirical", "empirical", False, True), "ekfac": ("EK-FAC type-2", "type-2", True, True),
             "type-2-factor-damping": ("K-FAC type-2; curvlinops' default inverse (λ added to each factor, "
                                       "Cholesky: another operator)", "type-2", False, False)}
    cases = [cases[c] for c in (args.cases or cases)]
    for case, fisher, ek, exact in cases:
        runs = interleaved({"ours": lambda: ours(model, x, y, fisher, v, ek),
                            "theirs": lambda: theirs(model, x, y, fisher, v, ek, exact)}, repeats=args.repeats)
        (t_o, r_o), (t_t, r_t) = runs["ours"], runs["theirs"]
        a, b = statistics.median(t_o), statistics.median(t_t)
        diff = "—" if fisher == "mc" or not exact else f"{float((r_o[-1] - r_t[-1]).norm() / r_t[-1].norm()):.1e}"
        rows.append(f"| {case} | {a:.3f} s | {b:.3f} s | **{a / b:.2f}×** | {diff} |")
        anchor = (f"curvlinops `{'EKFAC' if ek else 'KFAC'}LinearOperator` + `KFACInverseLinearOperator"
                  f"({'use_exact_damping=True' if exact else 'damping=1e-3'})`")
        rec.add("hessian", f"{case}: construction + one `(K + {DAMPING:g} I)⁻¹ v`, {n / 1e3:.0f}k-parameter CNN, "
                f"batch 256", anchor, ours=a, theirs=b, target=0.7 if (fisher, ek, exact) == ("type-2", False, True)
                else None, notes=f"rel. diff. of the solutions {diff}")
        print(rows[-1], f"(rounds ours {[round(t, 3) for t in t_o]}, theirs {[round(t, 3) for t in t_t]})", flush=True)
    head = [f"CNN ({n} parameters), batch 256, float32, cross-entropy; construction + one `(K + {DAMPING:g} I)⁻¹ v`; "
            f"median of {args.repeats} interleaved rounds; torch {torch.__version__}, {platform.machine()}, "
            f"{torch.get_num_threads()} threads, load average {load0:.1f} → {os.getloadavg()[0]:.1f}.", "",
            "| case | overparam | curvlinops | ratio | rel. diff. of the solutions |", "| --- | --- | --- | --- | --- |"]
    table = "\n".join(head + rows)
    print(table)
    if not args.no_write:
        rec.write()
    if not args.no_write:
        out = Path(__file__).resolve().parent / "results" / "kfac.md"
        out.write_text("# K-FAC / EK-FAC vs curvlinops (`kfac_bench.py`)\n\n" + table + "\n")


if __name__ == "__main__":
    main()
