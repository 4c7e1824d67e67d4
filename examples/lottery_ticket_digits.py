"""Lottery tickets on scikit-learn's digits: iterative magnitude pruning with rewinding vs random re-init.

``op.prune.lottery`` trains an MLP, prunes the smallest-magnitude weights (globally), rewinds the
survivors to their initial values and repeats (Frankle & Carbin 2019). At every density it reaches
we also train the *same mask* from a fresh random initialization: the ticket should keep the dense
accuracy further down than the re-initialized mask. The pruned weights stay zero during training
through ``op.prune.masked`` (masks re-applied after every optimizer step).

Writes ``accuracy_vs_density.png`` and ``lottery.json`` into ``--out``.

Run: ``python examples/lottery_ticket_digits.py --out lottery`` (about 25 s on one CPU core),
or ``--quick`` for a seconds-long smoke run. Needs scikit-learn and matplotlib.
``overparam run lottery-ticket`` is the full reproduction (more seeds, SNIP/SynFlow baselines).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits

import overparam as op


def data(seed: int):
    """``(X_train, y_train), (X_test, y_test)``: digits scaled to ``[0, 1]``, a seeded 80/20 split."""
    X, y = load_digits(return_X_y=True)
    X, y = torch.tensor(X / 16.0, dtype=torch.float32), torch.tensor(y)
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    te, tr = perm[: len(y) // 5], perm[len(y) // 5:]
    return (X[tr], y[tr]), (X[te], y[te])


def make_model(hidden: int, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(64, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, hidden),
                               torch.nn.ReLU(), torch.nn.Linear(hidden, 10))


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hidden", type=int, default=200)
    ap.add_argument("--steps", type=int, default=300, help="Adam steps per round")
    ap.add_argument("--rounds", type=int, default=9, help="pruning rounds after the dense run")
    ap.add_argument("--rate", type=float, default=0.45, help="fraction of the survivors pruned per round")
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path("lottery"))
    ap.add_argument("--quick", action="store_true", help="a seconds-long smoke run")
    args = ap.parse_args(argv)
    if args.quick:
        args.hidden, args.steps, args.rounds, args.rate = 64, 60, 3, 0.6
    args.out.mkdir(parents=True, exist_ok=True)
    (X, y), (Xt, yt) = data(args.seed)

    def train_fn(model, opt, steps):
        """``steps`` minibatch Adam steps (the same batches in every round), then the test accuracy."""
        g = torch.Generator().manual_seed(args.seed)
        for _ in range(steps):
            i = torch.randint(0, len(y), (128,), generator=g)
            opt.zero_grad()
            F.cross_entropy(model(X[i]), y[i]).backward()
            opt.step()
        with torch.no_grad():
            return float((model(Xt).argmax(1) == yt).float().mean())

    def adam(params):
        return torch.optim.Adam(params, lr=args.lr)

    model = make_model(args.hidden, args.seed)
    ticket = op.prune.lottery(model, train_fn, optimizer_fn=adam, steps=args.steps, rounds=args.rounds,
                              rate=args.rate, targets=torch.nn.Linear, exclude="4")  # keep the read-out dense
    dense = ticket.rounds[0].result
    rows = []
    for r in ticket.rounds[1:]:
        fresh = make_model(args.hidden, args.seed + 1000)       # same mask, new random init
        opt = adam(fresh.parameters())
        with op.prune.masked(fresh, r.masks, optimizer=opt):
            reinit = train_fn(fresh, opt, args.steps)
        rows.append({"density": r.density, "ticket": r.result, "reinit": reinit})
        print(f"density {r.density:.3f}: ticket {r.result:.3f}, random re-init {reinit:.3f} (dense {dense:.3f})")

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.2))
    d = [100 * r["density"] for r in rows]
    ax.semilogx(d, [r["ticket"] for r in rows], "o-", label="IMP ticket (rewound to init)")
    ax.semilogx(d, [r["reinit"] for r in rows], "s--", label="same mask, random re-init")
    ax.axhline(dense, color="k", lw=0.8, label="dense")
    ax.invert_xaxis()
    ax.set(xlabel="hidden weights remaining (%)", ylabel="test accuracy", title="Lottery tickets on digits")
    ax.legend(fontsize=8)
    fig.savefig(args.out / "accuracy_vs_density.png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    result = {"dense": dense, "rounds": rows}
    (args.out / "lottery.json").write_text(json.dumps(result, indent=1))
    print(f"wrote accuracy_vs_density.png and lottery.json to {args.out}")
    return result


if __name__ == "__main__":
    torch.set_num_threads(1)
    main()
