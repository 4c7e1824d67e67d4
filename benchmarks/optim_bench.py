"""Benchmarks for overparam.optim (ratios measured in one run; median of 3).

1. Cost of one ScaledGD step vs one GD step (``torch.optim.SGD``) on rank-10 factors with
   n = 1000 on CPU: (a) the whole step (loss, backward, update) on the full-observation
   sensing loss ``½‖LRᵀ − M*‖_F²`` (the m → ∞ limit of Gaussian sensing: a Gaussian
   operator at n = 1000 would need m·n² ≈ 10¹⁰ numbers), and (b) the update alone
   (``optimizer.step()`` with the gradients already there).
2. Iterations to relative error 1e-8 on symmetric Gaussian sensing with κ = 100 (n = 20,
   r = 3, m = 3000, small random init 1e-6): ScaledGD(λ) vs GD (best of a small lr grid).
3. ``--adapters`` (issue 15), fp32, interleaved rounds, median of 3:
   (a) one AdamW step with ScaledGD(λ) preconditioning (:class:`overparam.optim.Preconditioned`)
   vs plain AdamW on a rank-16 LoRA model (4 Linear 1024² layers, batch 64): the whole step
   (forward, backward, update) and the update alone; (b) where peft is importable, the same update
   against peft's ``create_riemannian_optimizer`` (AdamW) on the same weights; (c) one GaLore step
   (rank 128, projector refreshed every 200 steps: ``(refresh step + 199 plain steps)/200``, each
   timed) vs one AdamW step on a 4096×4096 weight, gradients given.

Run from the repository root: ``OMP_NUM_THREADS=1 overparam bench optim`` (prints a markdown table).
"""

from __future__ import annotations

import argparse
import statistics

import torch
from _rows import Rows
from _timing import median_time

import overparam as op


def _time_steps(opt_name: str, n: int, r: int, steps: int, step_only: bool, dtype) -> float:
    g = torch.Generator().manual_seed(0)
    M = torch.randn(n, r, generator=g, dtype=dtype) @ torch.randn(r, n, generator=g, dtype=dtype) / n**0.5
    L = torch.randn(n, r, generator=g, dtype=dtype).requires_grad_()
    R = torch.randn(n, r, generator=g, dtype=dtype).requires_grad_()
    opt = op.optim.ScaledGD([(L, R)], lr=1e-3) if opt_name == "scaledgd" else torch.optim.SGD([L, R], lr=1e-3)

    def grads():
        opt.zero_grad()
        (0.5 * (L @ R.T - M).square().sum()).backward()

    def step():
        if not step_only:
            grads()
        opt.step()

    grads()
    opt.step()
    grads()
    return median_time(step, repeats=1, warmup=0, inner=steps)


def step_ratio(step_only: bool, dtype=torch.float64, n: int = 1000, r: int = 10, steps: int = 20) -> dict:
    s, g = [], []
    for _ in range(3):
        s.append(_time_steps("scaledgd", n, r, steps, step_only, dtype))
        g.append(_time_steps("gd", n, r, steps, step_only, dtype))
    ms, mg = statistics.median(s), statistics.median(g)
    return {"scaledgd_ms": 1e3 * ms, "gd_ms": 1e3 * mg, "ratio": ms / mg}


def _iters(P, make, X0, cap: int, tol: float) -> int | None:
    X = X0.clone().requires_grad_()
    opt = make(X)
    for t in range(cap + 1):
        with torch.no_grad():
            e = float(P.relative_error(X))
        if e <= tol:
            return t
        if not e < 1e3:
            return None
        opt.zero_grad()
        P.loss(X).backward()
        opt.step()
    return None


def iteration_ratio(kappa: float = 100.0, tol: float = 1e-8, seeds=(0, 1, 2)) -> dict:
    out = []
    for seed in seeds:
        P = op.problems.sensing(n=20, r=3, m=3000, kappa=kappa, generator=seed)
        X0 = P.init("small", rank=3, scale=1e-6, generator=seed + 100)
        s = _iters(P, lambda X: op.optim.ScaledGD([X], lr=0.5, damping=3e-3), X0, 2000, tol)
        gds = {lr: _iters(P, lambda X: torch.optim.SGD([X], lr=lr), X0, 40000, tol) for lr in (0.2, 0.3)}
        best = min((v for v in gds.values() if v is not None), default=None)
        out.append({"seed": seed, "scaledgd_lambda": s, "gd_best": best, "gd_by_lr": gds,
                    "ratio": (s / best) if (s is not None and best) else float("nan")})
    return {"runs": out, "median_ratio": statistics.median(o["ratio"] for o in out)}


def _lora_model(width: int = 1024, depth: int = 4, rank: int = 16):
    torch.manual_seed(0)
    net = torch.nn.Sequential(*[torch.nn.Linear(width, width) for _ in range(depth)])
    op.factor.lora_(net, rank=rank, generator=0)
    with torch.no_grad():
        for B, _ in op.factor.pairs(net):
            B.normal_(0, 1e-2)                                 # B ≠ 0, as after some training
    return net


def _adamw_steps(net, opt, x, step_only: bool):
    def grads():
        opt.zero_grad()
        net(x).square().mean().backward()

    grads()

    def step():
        if not step_only:
            grads()
        opt.step()
    return step


def precond_ratio(step_only: bool, rounds: int = 3, inner: int = 10) -> dict:
    """Preconditioned AdamW vs plain AdamW on a rank-16 LoRA model; ms per step (median of ``rounds``)."""
    from _timing import interleaved

    x = torch.randn(64, 1024, generator=torch.Generator().manual_seed(1))
    fns = {}
    for name in ("plain", "precond"):
        net = _lora_model()
        inner_opt = torch.optim.AdamW([p for p in net.parameters() if p.requires_grad], lr=1e-4)
        opt = op.optim.Preconditioned(inner_opt, op.factor.pairs(net), damping=1e-2) if name == "precond" else inner_opt
        step = _adamw_steps(net, opt, x, step_only)
        step()
        fns[name] = (lambda s: lambda: [s() for _ in range(inner)])(step)
    res = interleaved(fns, repeats=rounds)
    med = {k: statistics.median(v[0]) / inner for k, v in res.items()}
    return {"plain_ms": 1e3 * med["plain"], "precond_ms": 1e3 * med["precond"], "ratio": med["precond"] / med["plain"]}


def peft_ratio(rounds: int = 3, inner: int = 10) -> dict | None:
    """The update alone (precondition + AdamW) vs peft's Riemannian AdamW on the same LoRA weights."""
    try:
        import peft
        from peft.optimizers import create_riemannian_optimizer
    except ImportError:
        return None
    from _timing import interleaved

    torch.manual_seed(0)
    base = torch.nn.Sequential(*[torch.nn.Linear(1024, 1024) for _ in range(4)])
    pm = peft.get_peft_model(base, peft.LoraConfig(r=16, lora_alpha=16, target_modules=["0", "1", "2", "3"]))
    mine = _lora_model()
    with torch.no_grad():
        for i, (B, A) in enumerate(op.factor.pairs(mine)):
            lay = pm.base_model.model.get_submodule(str(i))
            lay.lora_A["default"].weight.copy_(A.T); lay.lora_B["default"].weight.copy_(B)
    x = torch.randn(64, 1024, generator=torch.Generator().manual_seed(1))
    popt = create_riemannian_optimizer(pm, torch.optim.AdamW, lr=1e-4, reg=1e-2)
    opt = op.optim.Preconditioned(torch.optim.AdamW([p for p in mine.parameters() if p.requires_grad], lr=1e-4),
                                  op.factor.pairs(mine), damping=1e-2)
    steps = {"peft": _adamw_steps(pm, popt, x, True), "ours": _adamw_steps(mine, opt, x, True)}
    res = interleaved({k: (lambda s: lambda: [s() for _ in range(inner)])(s) for k, s in steps.items()}, repeats=rounds)
    med = {k: statistics.median(v[0]) / inner for k, v in res.items()}
    return {"ours_ms": 1e3 * med["ours"], "peft_ms": 1e3 * med["peft"], "ratio": med["ours"] / med["peft"],
            "peft": peft.__version__, "torch": torch.__version__}


def galore_ratio(n: int = 4096, rank: int = 128, every: int = 200, rounds: int = 3) -> dict:
    """GaLore (refresh amortised over ``every`` steps) vs AdamW on one ``n × n`` weight, gradients given."""
    from _timing import interleaved

    g = torch.Generator().manual_seed(0)
    W1, W2 = (torch.nn.Parameter(torch.randn(n, n, generator=g) / n**0.5) for _ in range(2))
    G = torch.randn(n, n, generator=g) / n
    W1.grad, W2.grad = G.clone(), G.clone()
    ga = op.optim.GaLore([W1], lr=1e-4, rank=rank, update_every=every, generator=0)
    ad = torch.optim.AdamW([W2], lr=1e-4)
    ga.step(); ad.step()                                           # state allocated, first projector taken

    def refresh():                                                 # the next step is a refresh step
        ga.state[W1]["step"] = every * (ga.state[W1]["step"] // every + 1)
        ga.step()

    res = interleaved({"adamw": ad.step, "galore": ga.step, "galore_refresh": refresh}, repeats=rounds)
    med = {k: statistics.median(v[0]) for k, v in res.items()}
    amortised = (med["galore_refresh"] + (every - 1) * med["galore"]) / every
    return {"adamw_ms": 1e3 * med["adamw"], "galore_ms": 1e3 * med["galore"],
            "refresh_ms": 1e3 * med["galore_refresh"], "amortised_ms": 1e3 * amortised,
            "ratio": amortised / med["adamw"],
            "state_ratio": op.optim.optimizer_state_bytes(ga) / op.optim.optimizer_state_bytes(ad)}


def adapters() -> None:
    rec = Rows("optim_adapters", anchors=("peft",))
    lora = "rank-16 LoRA, 4 × Linear(1024²), batch 64, fp32"
    print("| rank-16 LoRA, 4 × Linear(1024, 1024), batch 64, fp32 | preconditioned AdamW ms | AdamW ms | ratio |")
    print("|---|---|---|---|")
    for label, step_only in (("whole step (forward, backward, update)", False), ("update only", True)):
        r = precond_ratio(step_only)
        print(f"| {label} | {r['precond_ms']:.3f} | {r['plain_ms']:.3f} | {r['ratio']:.3f} |")
        rec.add("optim", f"preconditioned AdamW (`Preconditioned`, λ = 1e-2), {lora}: {label}", "plain AdamW",
                ours=r["precond_ms"] / 1e3, theirs=r["plain_ms"] / 1e3, target=None if step_only else 1.1)
    r = peft_ratio()
    update = f"the update alone (precondition + AdamW), {lora}"
    if r is None:
        print("\npeft is not importable here: the peft row was not measured")
        rec.not_measured("optim", update, "peft `create_riemannian_optimizer` (AdamW)", reason="peft not importable",
                         target=1.0)
    else:
        rec.add("optim", update, "peft `create_riemannian_optimizer` (AdamW)", ours=r["ours_ms"] / 1e3,
                theirs=r["peft_ms"] / 1e3, target=1.0, notes=f"peft {r['peft']}, torch {r['torch']}")
        print(f"\n| update only, same weights (peft {r['peft']}, torch {r['torch']}) | ours ms | peft "
              "create_riemannian_optimizer ms | ratio |\n|---|---|---|---|")
        print(f"| rank 16, reg = 1e-2 | {r['ours_ms']:.3f} | {r['peft_ms']:.3f} | {r['ratio']:.3f} |")
    r = galore_ratio()
    print("\n| 4096 × 4096, r = 128, T = 200, fp32 | GaLore step ms | refresh step ms | amortised ms | AdamW ms | "
          "ratio | state bytes ratio |\n|---|---|---|---|---|---|---|")
    print(f"| gradients given | {r['galore_ms']:.1f} | {r['refresh_ms']:.1f} | {r['amortised_ms']:.1f} | "
          f"{r['adamw_ms']:.1f} | {r['ratio']:.3f} | {r['state_ratio']:.4f} |")
    rec.add("optim", "GaLore step on a 4096² weight, r = 128, refresh every 200 steps amortised, gradients given, fp32",
            "AdamW step", ours=r["amortised_ms"] / 1e3, theirs=r["adamw_ms"] / 1e3, target=1.3,
            notes=f"state {r['state_ratio']:.3f}× AdamW's; refresh step {r['refresh_ms']:.0f} ms")
    rec.write()


def main() -> None:
    args = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    args.add_argument("--adapters", action="store_true", help="only the issue-15 rows (preconditioned AdamW, GaLore)")
    torch.set_num_threads(1)
    if args.parse_args().adapters:
        adapters()
        return
    rows, rec = [], Rows()
    for label, step_only in (("full step (loss + backward + update)", False), ("update only (optimizer.step)", True)):
        for dtype in (torch.float64, torch.float32):
            res = step_ratio(step_only, dtype)
            rec.add("optim", f"one ScaledGD step, rank 10, n = 1000, {label}, {str(dtype).replace('torch.', '')}",
                    "one `torch.optim.SGD` step", ours=res["scaledgd_ms"] / 1e3, theirs=res["gd_ms"] / 1e3,
                    target=None if step_only else 1.3)
            rows.append(f"| {label}, {str(dtype).replace('torch.', '')} | {res['scaledgd_ms']:.3f} | {res['gd_ms']:.3f} | "
                        f"{res['ratio']:.3f} |")
    print("| n = 1000, r = 10, CPU | ScaledGD ms/step | GD ms/step | ratio |")
    print("|---|---|---|---|")
    print("\n".join(rows))
    it = iteration_ratio()
    print("\n| seed | ScaledGD(λ) iterations | GD iterations (best lr) | ratio |")
    print("|---|---|---|---|")
    for o in it["runs"]:
        print(f"| {o['seed']} | {o['scaledgd_lambda']} | {o['gd_best']} (by lr: {o['gd_by_lr']}) | {o['ratio']:.4f} |")
    print(f"\nmedian iteration ratio ScaledGD(λ)/GD at κ = 100: {it['median_ratio']:.4f}")
    rec.add("optim", "iterations to relative error 1e-8, sensing n = 20, r = 3, κ = 100 (median over 3 seeds)",
            "GD at the best lr of {0.2, 0.3}", ratio=it["median_ratio"], target=0.05,
            notes="; ".join(f"seed {o['seed']}: {o['scaledgd_lambda']} vs {o['gd_best']}" for o in it["runs"]))
    rec.write()


if __name__ == "__main__":
    main()
