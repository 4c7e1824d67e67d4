"""Digits MLP experiments shared by tests/prune/test_srste.py and test_learned.py (reduced size there;
full size: ``python tests/prune/_digits.py srste|tune|joint``, numbers recorded in docs/prune.md)."""

from __future__ import annotations

import functools
import itertools
import math

import torch
import torch.nn.functional as F

from overparam.experiments.harness import batches, digits, mlp, split, train
from overparam.prune import SRSTE, LearnableNM, apply_masks_, masked, nm_masks

ARMS = ("dense", "srste", "magnitude+ft")


@functools.lru_cache(maxsize=2)
def data(val: bool = False):
    """``(train, test)``: the fixed 80/20 split (seed 0); ``val``: the 80% split again 80/20 (seed 10) into
    ``(train', validation)`` — hyperparameters are chosen there, never on the test digits."""
    X, y = digits()
    tr, te = split(X, y, test=0.2, generator=0)
    return split(*tr, test=0.2, generator=10) if val else (tr, te)


@functools.lru_cache(maxsize=1)
def calibration_mlp():
    """``(net, calibration batch, held-out batch)``: a 64-64-10 GELU MLP after 80 full-batch Adam steps on a
    70/30 split (seed 0), 256 training digits to calibrate on, the test digits held out (the calibration-pruning
    tests: test_reconstruction.py, test_reconstruct.py). Callers deep-copy ``net`` before changing it."""
    from torch import nn

    X, y = digits()
    (Xtr, ytr), (Xte, _) = split(X, y, test=0.3, generator=0)
    net = mlp([64, 64, 10], activation=nn.GELU, generator=0)
    opt = torch.optim.Adam(net.parameters(), 3e-3)
    for _ in range(80):
        opt.zero_grad()
        F.cross_entropy(net(Xtr), ytr).backward()
        opt.step()
    return net, (Xtr[:256], None), (Xte, None)


def accuracy(f, val: bool = False) -> float:
    _, (X, y) = data(val)
    with torch.no_grad():
        return float((f(X).argmax(1) == y).float().mean())


def _opt(params, opt: str, lr: float | None = None):
    if opt == "adam":
        return torch.optim.Adam(params, lr=lr or 1e-3)
    return torch.optim.SGD(params, lr=lr or 0.05, momentum=0.9)


def _fit(params, forward, steps: int, seed: int, opt: str = "adam", masks=None, cosine: bool = False,
         lr: float | None = None, val: bool = False) -> None:
    """``steps`` minibatch (64) steps of cross-entropy; the batches of seed ``seed`` (a fine-tune continues
    with ``seed + 200``); with ``masks`` the parameters are kept masked (``params`` is then the model);
    ``cosine``: the learning rate decays from its value to 0 over the ``steps`` (half a cosine)."""
    (X, y), _ = data(val)
    it = batches(len(y), 64, generator=seed + (200 if masks else 100))

    def loss(t):
        i = next(it)
        return F.cross_entropy(forward(X[i]), y[i])

    o = _opt(params.parameters() if masks else params, opt, lr)
    after = None
    if cosine:
        sched = torch.optim.lr_scheduler.LambdaLR(o, lambda t: 0.5 * (1 + math.cos(math.pi * min(t, steps) / steps)))
        after = lambda t: sched.step()  # noqa: E731
    if masks:
        with masked(params, masks, optimizer=o):
            train(o, loss, steps, after_step=after)
    else:
        train(o, loss, steps, after_step=after)


def arm(name: str, seed: int, steps: int, width: int = 256, opt: str = "adam", *, lr: float | None = None,
        cosine: bool = False, decay: float = 2e-4, frac: float = 0.5, ft_lr: float = 1.0, val: bool = False) -> float:
    """Accuracy of one arm of the SR-STE comparison (MLP 64-w-w-10 of seed ``seed``, ``steps`` in all):
    ``dense``; ``srste`` (2:4 from scratch, λ_W = ``decay``); ``magnitude+ft`` (dense ``frac·steps``, one-shot
    magnitude 2:4, masked fine-tune for the rest at ``ft_lr`` × the learning rate; ``cosine``: each phase
    with its own cosine decay). ``val``: trained on train', scored on the validation split."""
    net = mlp([64, width, width, 10], generator=seed)
    if name == "dense":
        _fit(net.parameters(), net, steps, seed, opt, cosine=cosine, lr=lr, val=val)
    elif name == "srste":
        sr = SRSTE(net, 2, 4, decay=decay)
        _fit(net.parameters(), sr, steps, seed, opt, cosine=cosine, lr=lr, val=val)
        apply_masks_(net, sr.masks())
    elif name == "magnitude+ft":
        pre = round(steps * frac)
        _fit(net.parameters(), net, pre, seed, opt, cosine=cosine, lr=lr, val=val)
        ft = None if lr is None and ft_lr == 1.0 else (lr or (1e-3 if opt == "adam" else 0.05)) * ft_lr
        _fit(net, net, steps - pre, seed, opt, masks=nm_masks(net, 2, 4), cosine=cosine, lr=ft, val=val)
    else:
        raise ValueError(f"name must be one of {ARMS}, got {name!r}")
    return accuracy(net, val)


def srste_vs_dense(seed: int, steps: int, width: int = 256, opt: str = "adam", decay: float = 2e-4,
                   cosine: bool = False, settings: dict | None = None) -> dict[str, float]:
    """Test accuracy of the three arms (:func:`arm`), each with its own ``settings[arm]`` (keyword
    arguments of :func:`arm`; default: the optimizer's default lr, ``decay``, half the steps dense)."""
    settings = settings or {}
    return {a: arm(a, seed, steps, width, opt, cosine=cosine, **{**({"decay": decay} if a == "srste" else {}),
                                                                 **settings.get(a, {})}) for a in ARMS}


# The equal-effort grids (20 settings for each pruned arm; the dense reference gets the learning rates).
LRS = (0.02, 0.05, 0.1, 0.2, 0.4)
GRIDS = {"dense": [{"lr": lr} for lr in LRS],
         "srste": [{"lr": lr, "decay": d} for lr, d in itertools.product(LRS, (0.0, 2e-4, 2e-3, 2e-2))],
         "magnitude+ft": [{"lr": lr, "frac": f, "ft_lr": r} for lr, f, r in itertools.product(LRS, (0.5, 0.75), (1.0, 0.1))]}


def tune(steps: int = 1500, seeds=(10, 11), opt: str = "sgd", cosine: bool = True, log=print) -> dict[str, dict]:
    """For each arm the setting of :data:`GRIDS` with the best mean validation accuracy over the tuning
    ``seeds`` (disjoint from the evaluation seeds 0, 1, 2; ties: the earlier setting)."""
    best = {}
    for a, grid in GRIDS.items():
        scores = []
        for s in grid:
            accs = [arm(a, seed, steps, opt=opt, cosine=cosine, val=True, **s) for seed in seeds]
            scores.append(sum(accs) / len(accs))
            log(a, s, [round(v, 4) for v in accs], round(scores[-1], 4))
        best[a] = grid[max(range(len(grid)), key=lambda i: (scores[i], -i))]
    return best


def joint_vs_frozen(seed: int, pre: int, steps: int, width: int = 256) -> dict[str, float]:
    """Learned 2:4 masks (LearnableNM) on a dense MLP trained ``pre`` steps, ``steps`` more steps with the
    weights frozen or trained jointly; test accuracy of the decoded masks applied."""
    base = mlp([64, width, width, 10], generator=seed)
    _fit(base.parameters(), base, pre, seed)
    out = {"one-shot magnitude": accuracy(_masked(base, nm_masks(base, 2, 4)))}
    for joint in (False, True):
        net = _clone(base)
        sh = LearnableNM(net, 2, 4, tau=0.5, scale=3.0, generator=seed, train_weights=joint)
        params = [{"params": list(sh.mask_parameters()), "lr": 0.05}]
        if joint:
            params.append({"params": list(net.parameters()), "lr": 1e-3})
        _fit(params, sh, steps, seed + 1)
        out["joint" if joint else "frozen"] = accuracy(_masked(net, sh.masks()))
    return out


def _clone(net):
    import copy
    return copy.deepcopy(net)


def _masked(net, masks):
    net = _clone(net)
    apply_masks_(net, masks)
    return net


def _table(rows):
    for k in rows[0]:
        print(k, [round(r[k], 4) for r in rows], round(sum(r[k] for r in rows) / len(rows), 4), flush=True)


if __name__ == "__main__":
    import sys
    torch.set_num_threads(1)
    which, kw = sys.argv[1], eval(sys.argv[2]) if len(sys.argv) > 2 else {}
    if which == "eval":       # the settings chosen by a tune run: python _digits.py eval "{'settings': {...}}"
        _table([srste_vs_dense(s, 1500, opt="sgd", cosine=True, **kw) for s in range(3)])
    elif which == "tune":       # tune on seeds 10, 11 (validation split), then evaluate on seeds 0, 1, 2 (test split)
        best = tune(**kw, log=lambda *a: print(*a, flush=True))
        print("chosen", best, flush=True)
        opt, cosine = kw.get("opt", "sgd"), kw.get("cosine", True)
        _table([srste_vs_dense(s, kw.get("steps", 1500), opt=opt, cosine=cosine, settings=best) for s in range(3)])
    else:
        _table([srste_vs_dense(s, 1500, **kw) if which == "srste" else joint_vs_frozen(s, 600, 900) for s in range(3)])
