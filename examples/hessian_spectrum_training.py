"""The Hessian spectrum of a small MLP while it trains: a spectral-density plot every N steps.

An MLP learns scikit-learn's 8×8 digits with SGD. Every ``--every`` steps (and at the end) the
loss Hessian on a fixed batch is wrapped as an operator (``op.hessian.hessian``, Hessian-vector
products, never the matrix), its top eigenvalues come from ``op.hessian.lanczos`` and its whole
spectrum from stochastic Lanczos quadrature (``op.hessian.density``), drawn with
``op.hessian.plot_density``. One figure per checkpoint lands in ``--out`` together with
``spectrum.json`` (loss, accuracy, top eigenvalues per checkpoint) and ``top_eigenvalues.png``.
What to look for: a bulk near zero and, as training proceeds, outliers separating from it
(Sagun et al. 2017 count about ``classes − 1`` of them on trained classifiers; ``overparam run
hessian-outliers`` checks that claim — this short run only starts to show the gap).

The measurements take ``generator=`` seeds, so they never advance the global RNG: training is
the same with or without them.

Run: ``python examples/hessian_spectrum_training.py --out spectrum`` (about 15 s on one
CPU core), or ``--quick`` for a seconds-long smoke run. Needs scikit-learn and matplotlib.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits

import overparam as op


def digits() -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's digits: ``X (1797, 64)`` in ``[0, 1]``, ``y (1797,)`` int64."""
    X, y = load_digits(return_X_y=True)
    return torch.tensor(X / 16.0, dtype=torch.float32), torch.tensor(y)


def measure(model, batch, *, k: int, probes: int, steps: int, seed: int):
    """``(top-k eigenvalues, Density)`` of the loss Hessian of ``model`` on ``batch``."""
    H = op.hessian.hessian(model, F.cross_entropy, batch)
    top = op.hessian.lanczos(H, k=k, which="LA", generator=seed).values
    rho = op.hessian.density(H, probes=probes, steps=steps, generator=seed)
    return top, rho


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=600, help="SGD steps")
    ap.add_argument("--every", type=int, default=150, help="measure the spectrum every N steps")
    ap.add_argument("--width", type=int, default=64)
    ap.add_argument("--lr", type=float, default=0.1)
    ap.add_argument("--probes", type=int, default=4, help="SLQ probe vectors")
    ap.add_argument("--lanczos-steps", type=int, default=60, help="Lanczos steps per probe")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path("hessian_spectrum"))
    ap.add_argument("--quick", action="store_true", help="a seconds-long smoke run")
    args = ap.parse_args(argv)
    if args.quick:
        args.steps, args.every, args.width, args.probes, args.lanczos_steps = 60, 30, 16, 2, 25
    args.out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(args.seed)

    X, y = digits()
    fixed = (X[:256], y[:256])                      # the batch the Hessian is measured on
    model = torch.nn.Sequential(torch.nn.Linear(64, args.width), torch.nn.Tanh(), torch.nn.Linear(args.width, 10))
    opt = torch.optim.SGD(model.parameters(), lr=args.lr)
    g = torch.Generator().manual_seed(args.seed)

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = []
    for t in range(args.steps + 1):
        if t % args.every == 0 or t == args.steps:
            top, rho = measure(model, fixed, k=12, probes=args.probes, steps=args.lanczos_steps, seed=args.seed)
            with torch.no_grad():
                loss = float(F.cross_entropy(model(fixed[0]), fixed[1]))
                acc = float((model(X).argmax(1) == y).float().mean())
            records.append({"step": t, "loss": loss, "accuracy": acc, "top": top.tolist()})
            print(f"step {t:4d}: loss {loss:.3f}, accuracy {acc:.3f}, λmax {float(top[0]):.3f}, "
                  f"10th {float(top[9]):.3f}, 12th {float(top[11]):.3f}")
            fig, ax = plt.subplots(figsize=(5, 3.2))
            op.hessian.plot_density(rho, ax=ax)
            ax.set(title=f"Hessian spectral density, step {t}", xlabel="eigenvalue")
            fig.savefig(args.out / f"density_step{t:05d}.png", dpi=100, bbox_inches="tight")
            plt.close(fig)
        if t == args.steps:
            break
        i = torch.randint(0, len(y), (64,), generator=g)
        opt.zero_grad()
        F.cross_entropy(model(X[i]), y[i]).backward()
        opt.step()

    fig, ax = plt.subplots(figsize=(5, 3.2))
    steps = [r["step"] for r in records]
    for j in range(12):
        ax.plot(steps, [r["top"][j] for r in records], "o-" if j < 9 else "x:", ms=3)
    ax.set(xlabel="SGD step", ylabel="eigenvalue", title="top-12 Hessian eigenvalues (outliers: first 9)")
    fig.savefig(args.out / "top_eigenvalues.png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    (args.out / "spectrum.json").write_text(json.dumps(records, indent=1))
    print(f"wrote {len(records)} density plots, top_eigenvalues.png and spectrum.json to {args.out}")
    return {"records": records}


if __name__ == "__main__":
    torch.set_num_threads(1)
    main()
