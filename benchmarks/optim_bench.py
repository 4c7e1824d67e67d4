"""Benchmarks for overparam.optim (ratios measured in one run; median of 3).

1. Cost of one ScaledGD step vs one GD step (``torch.optim.SGD``) on rank-10 factors with
   n = 1000 on CPU: (a) the whole step (loss, backward, update) on the full-observation
   sensing loss ``½‖LRᵀ − M*‖_F²`` (the m → ∞ limit of Gaussian sensing: a Gaussian
   operator at n = 1000 would need m·n² ≈ 10¹⁰ numbers), and (b) the update alone
   (``optimizer.step()`` with the gradients already there).
2. Iterations to relative error 1e-8 on symmetric Gaussian sensing with κ = 100 (n = 20,
   r = 3, m = 3000, small random init 1e-6): ScaledGD(λ) vs GD (best of a small lr grid).

Run from the repository root: ``OMP_NUM_THREADS=1 overparam bench optim`` (prints a markdown table).
"""

from __future__ import annotations

import argparse
import statistics

import torch
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


def main() -> None:
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args()
    torch.set_num_threads(1)
    rows = []
    for label, step_only in (("full step (loss + backward + update)", False), ("update only (optimizer.step)", True)):
        for dtype in (torch.float64, torch.float32):
            res = step_ratio(step_only, dtype)
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


if __name__ == "__main__":
    main()
