"""One-shot pruning with calibration data: magnitude vs Wanda vs SparseGPT, unstructured 50% and 2:4.

A small MLP is trained on scikit-learn's digits, then pruned once, without retraining, from 128
calibration images: by weight magnitude (``op.prune.magnitude``, per layer), by Wanda's
``|W| · ‖x‖`` scores (``op.prune.wanda``: masks only, the weights untouched) and by SparseGPT
(``op.prune.sparsegpt_``: prunes *and* updates the surviving weights in place to compensate,
layer by layer on the pruned model's own activations). Each is done at 50% unstructured sparsity
and in the 2:4 pattern (``n=2, m=4``) that sparse tensor cores run. The test accuracy of each pruned
model and the per-layer relative output error against the dense model
(``op.prune.reconstruction``, on held-out images) are printed and plotted.

The read-out layer stays dense (``exclude=``), as is usual. Writes ``reconstruction.png`` and
``pruning.json`` into ``--out``.

Run: ``python examples/prune_calibration.py --out pruning`` (about 10 s on one CPU core), or
``--quick`` for a seconds-long smoke run. Needs scikit-learn and matplotlib.
"""

from __future__ import annotations

import argparse
import copy
import json
from pathlib import Path

import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits

import overparam as op


def data(seed: int):
    X, y = load_digits(return_X_y=True)
    X, y = torch.tensor(X / 16.0, dtype=torch.float32), torch.tensor(y)
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    te, tr = perm[: len(y) // 4], perm[len(y) // 4:]
    return (X[tr], y[tr]), (X[te], y[te])


def accuracy(model, X, y) -> float:
    with torch.no_grad():
        return float((model(X).argmax(1) == y).float().mean())


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--steps", type=int, default=800, help="Adam steps of the dense training")
    ap.add_argument("--calibration", type=int, default=128, help="calibration images")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path("pruning"))
    ap.add_argument("--quick", action="store_true", help="a seconds-long smoke run")
    args = ap.parse_args(argv)
    if args.quick:
        args.hidden, args.steps = 64, 150
    args.out.mkdir(parents=True, exist_ok=True)
    (X, y), (Xt, yt) = data(args.seed)
    torch.manual_seed(args.seed)
    h = args.hidden
    dense = torch.nn.Sequential(torch.nn.Linear(64, h), torch.nn.ReLU(), torch.nn.Linear(h, h), torch.nn.ReLU(),
                                torch.nn.Linear(h, 10))
    opt = torch.optim.Adam(dense.parameters(), lr=2e-3)
    g = torch.Generator().manual_seed(args.seed)
    for _ in range(args.steps):
        i = torch.randint(0, len(y), (128,), generator=g)
        opt.zero_grad()
        F.cross_entropy(dense(X[i]), y[i]).backward()
        opt.step()
    dense.eval()
    calib = (X[: args.calibration], None)            # targets are not needed: only model(inputs) runs
    keep = {"exclude": "4"}                          # the read-out layer stays dense
    print(f"dense: test accuracy {accuracy(dense, Xt, yt):.3f}")

    results, reports = {"dense": accuracy(dense, Xt, yt)}, {}
    for pattern, kw in (("50%", {"sparsity": 0.5}), ("2:4", {"n": 2, "m": 4})):
        for method in ("magnitude", "wanda", "sparsegpt"):
            model = copy.deepcopy(dense)
            if method == "magnitude":
                masks = (op.prune.magnitude(model, 0.5, scope="layerwise", **keep) if pattern == "50%"
                         else op.prune.nm_masks(model, 2, 4, **keep))
                op.prune.apply_masks_(model, masks)
            elif method == "wanda":
                op.prune.apply_masks_(model, op.prune.wanda(model, calib, **kw, **keep))
            else:
                op.prune.sparsegpt_(model, calib, **kw, **keep)   # prunes and updates the weights in place
            label = f"{method} {pattern}"
            rec = op.prune.reconstruction(dense, model, (Xt, None), **keep)
            reports[label] = rec
            results[label] = accuracy(model, Xt, yt)
            print(f"{label:>14}: test accuracy {results[label]:.3f}; relative output error per layer "
                  + ", ".join(f"{r.error:.3f}" for r in rec.layers))

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.4))
    op.prune.plot_reconstruction(reports, ax=ax)
    ax.set_title("one-shot pruning: relative output error per layer (held-out images)")
    fig.savefig(args.out / "reconstruction.png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    (args.out / "pruning.json").write_text(json.dumps({"test_accuracy": results}, indent=1))
    print(f"wrote reconstruction.png and pruning.json to {args.out}")
    return results


if __name__ == "__main__":
    torch.set_num_threads(1)
    main()
