"""Benchmark: many problem instances as one batched tensor program vs the per-instance loop.

256 instances of symmetric rank-5 Gaussian sensing (n = 50, m = 1000, one shared measurement
ensemble, condition numbers 1…100), ScaledGD(λ) from a small init, ``steps`` iterations:

* ``loop``: for each instance, ``op.optim.ScaledGD`` on ``problem.problems[b]`` (the usual script);
* ``batched``: ``op.optim.run_batched`` on the whole batch (one loss/backward per step,
  batched r×r Cholesky solves).

Both give the same iterates (checked here to 1e-12 on the first instances). Run from the
repository root: ``OMP_NUM_THREADS=1 overparam bench batched`` (``--instances``/``--steps`` to change the size).
"""

from __future__ import annotations

import argparse

import torch
from _rows import Rows
from _timing import interleaved

import overparam as op


def _loop(P, X0, steps, lr, damping):
    out = []
    for b, prob in enumerate(P.problems):
        X = X0[b].clone().requires_grad_()
        opt = op.optim.ScaledGD([X], lr=lr, damping=damping)
        for _ in range(steps):
            opt.zero_grad()
            prob.loss(X).backward()
            opt.step()
        out.append(X.detach())
    return torch.stack(out)


def main(argv=None) -> str:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--instances", type=int, default=256)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--n", type=int, default=50)
    ap.add_argument("--m", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args(argv)
    B = a.instances
    rows = Rows()
    kap = torch.logspace(0, 2, B, dtype=torch.float64).tolist()
    P = op.problems.shared_sensing(a.n, 5, a.m, seeds=list(range(B)), kappa=kap)
    X0 = P.init("small", rank=8, scale=1e-3, generators=[10_000 + b for b in range(B)])
    lr, lam = 0.5, 1e-2
    res = interleaved({"loop": lambda: _loop(P, X0, a.steps, lr, lam),
                       "batched": lambda: op.optim.run_batched(P, X0, method="scaledgd", steps=a.steps, lr=lr,
                                                               damping=lam, record_every=a.steps).X},
                      repeats=a.repeats)
    loop_t, loop_x = res["loop"]
    bat_t, bat_x = res["batched"]
    err = float((loop_x[-1] - bat_x[-1]).abs().max() / loop_x[-1].abs().max())
    assert err < 1e-12, f"batched iterates differ from the loop: {err:.2e}"
    tl, tb = sorted(loop_t)[len(loop_t) // 2], sorted(bat_t)[len(bat_t) // 2]
    lines = [f"{B} instances, symmetric sensing n={a.n}, r=5, k=8, m={a.m} (shared A), ScaledGD(lambda), "
             f"{a.steps} steps, {torch.get_num_threads()} thread(s), median of {a.repeats}:",
             "| case | per-instance loop | batched | speed-up |", "| --- | --- | --- | --- |",
             f"| {B} x {a.steps} steps | {tl:.3f} s | {tb:.3f} s | {tl / tb:.1f}x |",
             f"max relative difference of the iterates: {err:.1e}"]
    text = "\n".join(lines)
    print(text)
    case = f"{B} instances of rank-5 sensing (n = {a.n}, m = {a.m}), {a.steps} ScaledGD(λ) steps, batched (`run_batched`)"
    rows.add("problems / optim", case, "the per-instance loop", ours=tb, theirs=tl, target=1 / 8,
             notes=f"{tl / tb:.1f}× faster on this CPU (target ≥ 8×); iterates equal to {err:.1e}; "
                   f"{torch.get_num_threads()} thread(s)")
    rows.gpu("problems / optim", case.replace("(`run_batched`)", "(`run_batched`) on the GPU"), "the per-instance loop",
             target=1 / 50,
             notes="target ≥ 50× faster on a GPU")
    rows.write()
    return text


if __name__ == "__main__":
    main()
