"""Benchmark overparam.factor against peft (anchor) and a hand-written module.

1. forward + backward of a rank-64 LoRA adapter on a frozen 1024x1024 Linear, batch 256 (fp32):
   overparam ``LoRALayer`` vs ``peft.tuners.lora.Linear`` vs a hand-written
   ``base(x) + x @ A.T @ B.T`` module (and dense full-rank training for reference).
2. PiSSA init of a 4096x4096 weight at rank 64: overparam ``LoRALayer(init="pissa",
   svd="randomized")`` vs peft ``init_lora_weights="pissa_niter_4"``, with the reconstruction
   error ``‖W − s·B A‖_F`` of the rank-64 part (lower is better; the optimum is the tail energy).
3. The adapter inits from the weight and from data on two 1024×1024 Linear layers, rank 16,
   calibration 8 batches of 256 rows: ``lora_(init="olora" | "corda" | "eva" | "lora_ga")`` vs
   peft's ``olora``, ``preprocess_corda`` + ``corda``, ``get_eva_state_dict`` (incremental PCA,
   until converged) and ``preprocess_loraga`` + ``lora_ga``, each from a fresh copy of the model.

Ratios are measured in one run, median of 3 repeats. Run from the repository root with peft
installed: ``overparam bench factor [-- --skip-pissa ...]``.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch
from _rows import Rows
from _timing import median_time
from torch import nn

from overparam.factor import LoRALayer


class HandLoRA(nn.Module):
    def __init__(self, base: nn.Linear, r: int):
        super().__init__()
        self.base = base
        self.A = nn.Parameter(torch.randn(r, base.in_features) / base.in_features**0.5)
        self.B = nn.Parameter(torch.zeros(base.out_features, r))

    def forward(self, x):
        return self.base(x) + x @ self.A.T @ self.B.T


def bench_adapter(n: int = 1024, r: int = 64, batch: int = 256, inner: int = 5, rounds: int = 60,
                  only: tuple[str, ...] | None = None) -> dict:
    from peft import LoraConfig
    from peft.tuners.lora import Linear as PeftLinear

    torch.manual_seed(0)
    base = nn.Linear(n, n)
    for p in base.parameters():
        p.requires_grad_(False)
    mods = {
        "overparam LoRALayer": LoRALayer(copy.deepcopy(base), r, alpha=r, generator=0),
        "peft lora.Linear": PeftLinear(copy.deepcopy(base), "default", LoraConfig(r=r, lora_alpha=r), r=r,
                                       lora_alpha=r),
        "hand-written base(x) + x@A.T@B.T": HandLoRA(copy.deepcopy(base), r),
    }
    dense = nn.Linear(n, n)
    mods["dense full-rank training"] = dense
    for m in mods.values():                      # non-zero up-projection so no path is trivially zero
        for k, p in m.named_parameters():
            if p.requires_grad:
                with torch.no_grad():
                    p.normal_(std=0.02)
    x = torch.randn(batch, n)

    def step(m):
        def f():
            out = m(x)
            out.sum().backward()
        return f

    names = [k for k in mods if only is None or k in only]
    for k in names:                              # warm-up
        for _ in range(3):
            step(mods[k])()
    times: dict[str, list[float]] = {k: [] for k in names}
    for i in range(rounds):                      # interleave the variants, rotating their order each round
        for k in names[i % len(names):] + names[:i % len(names)]:  # (what follows the dense step pays for its
            times[k].append(median_time(step(mods[k]), repeats=1, warmup=0, inner=inner))  # cache traffic)
    return times


def _weight(kind: str, n: int, g: torch.Generator) -> torch.Tensor:
    W = torch.randn(n, n, generator=g) / n**0.5
    if kind == "spiked":
        k = 128
        U = torch.randn(n, k, generator=g) / n**0.5
        V = torch.randn(n, k, generator=g) / n**0.5
        s = 4.0 * 0.97 ** torch.arange(k, dtype=torch.float32)
        W = W + (U * s) @ V.T
    return W


def bench_pissa(n: int = 4096, r: int = 64, niter: int = 4, oversample: int = 8, kinds=("spiked", "gaussian")) -> dict:
    from peft import LoraConfig
    from peft.tuners.lora import Linear as PeftLinear

    g = torch.Generator().manual_seed(0)
    out = {}
    for kind in kinds:
        W0 = _weight(kind, n, g)
        base = nn.Linear(n, n, bias=False)
        results = {}

        def ours():
            layer = LoRALayer(base, r, alpha=r, init="pissa", svd="randomized", niter=niter, oversample=oversample,
                              generator=1)
            return layer.delta_weight()

        def peft():
            cfg = LoraConfig(r=r, lora_alpha=r, init_lora_weights="pissa_niter_4")
            layer = PeftLinear(base, "default", cfg, r=r, lora_alpha=r, init_lora_weights="pissa_niter_4")
            return layer.get_delta_weight("default")

        ts = {"overparam": [], "peft pissa_niter_4": []}
        deltas = {}
        for rep in range(6):                      # interleaved; the first round is a warm-up
            for name, fn in (("overparam", ours), ("peft pissa_niter_4", peft)):
                with torch.no_grad():
                    base.weight.copy_(W0)         # restore the weight outside the timed region
                t0 = time.perf_counter()
                deltas[name] = fn().detach()
                if rep:
                    ts[name].append(time.perf_counter() - t0)
        for name, delta in deltas.items():
            err = float(torch.linalg.matrix_norm(W0 - delta))
            results[name] = {"seconds": statistics.median(ts[name]), "error": err}
        out[kind] = results
    return out


def bench_inits(n: int = 1024, r: int = 16, batches: int = 8, rows: int = 256, only: list[str] | None = None,
                accuracy_only: bool = False) -> dict:
    import importlib.util
    import sys
    import types

    import peft
    import torch.nn.functional as F
    if importlib.util.find_spec("attr") is None:     # peft 0.21's corda.py imports attrs without declaring it
        sys.modules["attr"] = types.ModuleType("attr")
        sys.modules["attr"].dataclass = __import__("dataclasses").dataclass
    from peft.tuners.lora.config import CordaConfig
    from peft.tuners.lora.corda import preprocess_corda
    from peft.tuners.lora.eva import get_eva_state_dict
    from peft.tuners.lora.loraga import preprocess_loraga

    import overparam as op

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(n, n), nn.ReLU(), nn.Linear(n, n))
    g = torch.Generator().manual_seed(1)
    data = [(torch.randn(rows, n, generator=g).abs(), torch.randn(rows, n, generator=g)) for _ in range(batches)]
    targets = ["0", "2"]

    def cfg(init, **kw):
        return peft.LoraConfig(r=r, lora_alpha=2 * r, target_modules=targets, init_lora_weights=init, **kw)

    def peft_corda(m):
        c = cfg("corda", corda_config=CordaConfig(corda_method="ipm"))
        preprocess_corda(m, c, run_model=lambda: [m(x) for x, _ in data])
        peft.get_peft_model(m, c)

    def peft_loraga(m):
        c = cfg("lora_ga", lora_ga_config=peft.LoraGAConfig())
        preprocess_loraga(m, c, train_step=lambda: [F.mse_loss(m(x), y).backward() for x, y in data])
        peft.get_peft_model(m, c)

    cases = {
        "olora": (lambda m: op.factor.lora_(m, targets, rank=r, alpha=2 * r, init="olora"),
                  lambda m: peft.get_peft_model(m, cfg("olora"))),
        "corda (ipm)": (lambda m: op.factor.lora_(m, targets, rank=r, alpha=2 * r, init="corda", data=data),
                        peft_corda),
        "lora_ga": (lambda m: op.factor.lora_(m, targets, rank=r, alpha=2 * r, init="lora_ga",
                                              loss_fn=F.mse_loss, data=data), peft_loraga),
        "lora_ga (ga_svd='svd', exact)": (lambda m: op.factor.lora_(m, targets, rank=r, alpha=2 * r, init="lora_ga",
                                                                    loss_fn=F.mse_loss, data=data, ga_svd="svd"),
                                          peft_loraga),
        "eva (rho=2)": (lambda m: op.factor.lora_(m, targets, rank=r, alpha=2 * r, init="eva", data=data),
                        lambda m: get_eva_state_dict(m, [x for x, _ in data], peft_config=cfg("eva"),
                                                     forward_fn=lambda mm, x: mm(x), prepare_model_inputs_fn=None,
                                                     prepare_layer_inputs_fn=None, show_progress_bar=False)),
    }
    if accuracy_only:
        loraga_accuracy(model, data, targets, r)
        return {}
    print("\n| init, two 1024x1024 Linear, rank 16, 8 x 256 calibration rows | overparam s | peft s | ratio |")
    print("|---|---|---|---|", flush=True)
    out = {}
    for name, (ours, theirs) in cases.items():
        if only and name.split(" ")[0] not in only:
            continue
        threads = torch.get_num_threads()
        if name.startswith("lora_ga"):
            # one thread: on a loaded 2-core machine (load average 16), 2 threads made each small op of the
            # randomized SVDs (a 40x1024 @ 1024x40 Gram, a 40-column triangular solve) ~500x slower than 1 thread,
            # and ours runs more of them than peft's svd_lowrank (2.3-4.3x recorded at 2 threads, 1.1-1.4x at 1)
            torch.set_num_threads(1)
            name += ", 1 thread"
        t = {who: median_time(fn, repeats=3, setup=lambda: copy.deepcopy(model))
             for who, fn in (("overparam", ours), ("peft", theirs))}
        torch.set_num_threads(threads)
        print(f"| {name} | {t['overparam']:.3f} | {t['peft']:.3f} | {t['overparam'] / t['peft']:.3f} |", flush=True)
        out[name] = t
    if not only or "lora_ga" in only:
        loraga_accuracy(model, data, targets, r)
    return out


def loraga_accuracy(model: nn.Module, data: list, targets: list[str], r: int) -> None:
    """The default randomized top-2r SVD of each layer's LoRA-GA gradient (niter=4, oversample=8)
    and peft's (``torch.svd_lowrank``, q = 4r, niter=4) against the exact one: the largest relative
    error of the top-2r singular values, and the rank-2r approximation error ``‖G − G̃_2r‖_F`` over
    the optimal ``‖G − G_2r‖_F`` (1 = as good as the exact SVD)."""
    import torch.nn.functional as F

    from overparam.backend.linalg import top_svd
    from overparam.hessian import gradient
    g = gradient(model, F.mse_loss, data,
                 params=lambda name, _p: name.rsplit(".", 1)[0] in targets and name.endswith("weight"))
    print(f"\n| LoRA-GA gradient, top {2 * r} | overparam default: max rel. error of S | overparam: approx. error "
          "/ optimal | peft svd_lowrank: max rel. error of S | peft: approx. error / optimal |")
    print("|---|---|---|---|---|")
    for name, G in g.items():
        ex = top_svd(G, 2 * r, method="svd")
        best = torch.linalg.matrix_norm(G - (ex.U * ex.S) @ ex.Vh)
        rnd = top_svd(G, 2 * r, method="randomized")
        U, S, V = torch.svd_lowrank(G, q=4 * r, niter=4)
        cells = []
        for u, s_, vh in ((rnd.U, rnd.S, rnd.Vh), (U[:, :2 * r], S[:2 * r], V[:, :2 * r].T)):
            cells += [f"{float(((s_ - ex.S).abs() / ex.S).max()):.2e}",
                      f"{float(torch.linalg.matrix_norm(G - (u * s_) @ vh) / best):.5f}"]
        print(f"| {name} | " + " | ".join(cells) + " |", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--niter", type=int, default=4)
    ap.add_argument("--oversample", type=int, default=8)
    ap.add_argument("--skip-adapter", action="store_true")
    ap.add_argument("--skip-pissa", action="store_true")
    ap.add_argument("--skip-inits", action="store_true")
    ap.add_argument("--inits", nargs="*", help="only these init rows (olora corda lora_ga eva)")
    ap.add_argument("--loraga-accuracy", action="store_true", help="only the LoRA-GA SVD accuracy table")
    ap.add_argument("--ab-hand", action="store_true", help="also a two-way A/B of our layer vs the hand-written one")
    args = ap.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    rec = Rows(anchors=("peft",))
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}")
    if not args.skip_adapter:
        threads = torch.get_num_threads()
        torch.set_num_threads(1)                 # one thread: less exposed to other jobs on a shared machine
        t = bench_adapter()
        torch.set_num_threads(threads)
        stats = {k: (min(v), statistics.median(v)) for k, v in t.items()}
        pk, hk = "peft lora.Linear", "hand-written base(x) + x@A.T@B.T"
        print("\n| fwd+bwd, rank-64 adapter, 1024x1024 Linear, batch 256, 1 thread | min ms | median ms "
              "| vs peft (min / median) | vs hand-written (min / median) |")
        print("|---|---|---|---|---|")
        for k, (mn, md) in stats.items():
            print(f"| {k} | {1e3 * mn:.2f} | {1e3 * md:.2f} | {mn / stats[pk][0]:.3f} / {md / stats[pk][1]:.3f} | "
                  f"{mn / stats[hk][0]:.3f} / {md / stats[hk][1]:.3f} |")
        what = "forward + backward, rank-64 adapter on a 1024² Linear, batch 256, 1 thread (median)"
        rec.add("factor", f"`LoRALayer` {what}", "peft `lora.Linear`", ours=stats["overparam LoRALayer"][1],
                theirs=stats[pk][1], target=1.0)
        rec.add("factor", f"`LoRALayer` {what}", "hand-written `base(x) + x@A.T@B.T`",
                ours=stats["overparam LoRALayer"][1], theirs=stats[hk][1], target=1.02)
    if args.ab_hand:                             # the two alone, alternating: the tightest comparison
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        ours, hand = "overparam LoRALayer", "hand-written base(x) + x@A.T@B.T"
        t = bench_adapter(rounds=120, only=(ours, hand))
        torch.set_num_threads(threads)
        pair = statistics.median(a / b for a, b in zip(t[ours], t[hand]))
        print(f"\nA/B, 120 alternating rounds, 1 thread: overparam / hand-written = "
              f"{statistics.median(t[ours]) / statistics.median(t[hand]):.3f} (medians), {pair:.3f} (median of "
              f"per-round ratios), {min(t[ours]) / min(t[hand]):.3f} (minima)")
    if not args.skip_pissa:
        res = bench_pissa(niter=args.niter, oversample=args.oversample)
        print(f"\n| PiSSA init 4096x4096, rank 64 (overparam niter={args.niter}, oversample={args.oversample}) "
              "| weight | s | time vs peft | ‖W − ΔW‖_F | error vs peft |")
        print("|---|---|---|---|---|---|")
        for kind, rr in res.items():
            p = rr["peft pissa_niter_4"]
            for name, v in rr.items():
                print(f"| {name} | {kind} | {v['seconds']:.3f} | {v['seconds'] / p['seconds']:.3f} | "
                      f"{v['error']:.4f} | {v['error'] / p['error']:.5f} |")
            rec.add("factor", f"PiSSA init, 4096² {kind} weight, rank 64 (niter {args.niter}, oversample "
                    f"{args.oversample})", "peft `pissa_niter_4`", ours=rr["overparam"]["seconds"],
                    theirs=p["seconds"], target=1.0,
                    notes=f"‖W − ΔW‖_F ratio to peft's {rr['overparam']['error'] / p['error']:.5f}")

    if args.loraga_accuracy:
        bench_inits(only=["lora_ga"], accuracy_only=True)
    elif not args.skip_inits:
        for name, t in bench_inits(only=args.inits).items():     # prints its rows as they are measured
            rec.add("factor", f"{name} adapter init, two 1024² Linear, rank 16, 8 × 256 calibration rows",
                    "peft (the same init)", ours=t["overparam"], theirs=t["peft"])
    rec.write()

if __name__ == "__main__":
    main()
