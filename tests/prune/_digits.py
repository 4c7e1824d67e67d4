"""Digits MLP experiments shared by tests/prune/test_srste.py and test_learned.py (reduced size there;
full size: ``python tests/prune/_digits.py``, numbers recorded in docs/prune.md)."""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F

from overparam.experiments.harness import batches, digits, mlp, split, train
from overparam.prune import SRSTE, LearnableNM, apply_masks_, masked, nm_masks


@functools.lru_cache(maxsize=1)
def data():
    X, y = digits()
    return split(X, y, test=0.2, generator=0)


def accuracy(f) -> float:
    _, (X, y) = data()
    with torch.no_grad():
        return float((f(X).argmax(1) == y).float().mean())


def _opt(params, opt: str, lr: float | None = None):
    if opt == "adam":
        return torch.optim.Adam(params, lr=lr or 1e-3)
    return torch.optim.SGD(params, lr=lr or 0.05, momentum=0.9)


def _fit(params, forward, steps: int, seed: int, opt: str = "adam", masks=None, cosine: bool = False) -> None:
    """``steps`` minibatch (64) steps of cross-entropy; the batches of seed ``seed`` (a fine-tune continues
    with ``seed + 200``); with ``masks`` the parameters are kept masked (``params`` is then the model);
    ``cosine``: the learning rate decays from its value to 0 over the ``steps`` (half a cosine)."""
    (X, y), _ = data()
    it = batches(len(y), 64, generator=seed + (200 if masks else 100))

    def loss(t):
        i = next(it)
        return F.cross_entropy(forward(X[i]), y[i])

    o = _opt(params.parameters() if masks else params, opt)
    after = None
    if cosine:
        sched = torch.optim.lr_scheduler.LambdaLR(o, lambda t: 0.5 * (1 + math.cos(math.pi * min(t, steps) / steps)))
        after = lambda t: sched.step()  # noqa: E731
    if masks:
        with masked(params, masks, optimizer=o):
            train(o, loss, steps, after_step=after)
    else:
        train(o, loss, steps, after_step=after)


def srste_vs_dense(seed: int, steps: int, width: int = 256, opt: str = "adam", decay: float = 2e-4,
                   cosine: bool = False) -> dict[str, float]:
    """Test accuracy of a 2:4 MLP 64-w-w-10 trained by SR-STE from scratch, of the dense MLP, and of
    magnitude 2:4 of the dense MLP trained half the steps, then fine-tuned masked the other half
    (``cosine``: every training phase with its own cosine learning-rate decay)."""
    out = {}
    net = mlp([64, width, width, 10], generator=seed)
    _fit(net.parameters(), net, steps, seed, opt, cosine=cosine)
    out["dense"] = accuracy(net)
    net = mlp([64, width, width, 10], generator=seed)
    sr = SRSTE(net, 2, 4, decay=decay)
    _fit(net.parameters(), sr, steps, seed, opt, cosine=cosine)
    apply_masks_(net, sr.masks())
    out["srste"] = accuracy(net)
    net = mlp([64, width, width, 10], generator=seed)
    _fit(net.parameters(), net, steps // 2, seed, opt, cosine=cosine)
    _fit(net, net, steps - steps // 2, seed, opt, masks=nm_masks(net, 2, 4), cosine=cosine)
    out["magnitude+ft"] = accuracy(net)
    return out


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


if __name__ == "__main__":
    import sys
    torch.set_num_threads(1)
    which, kw = sys.argv[1], eval(sys.argv[2]) if len(sys.argv) > 2 else {}
    rows = [srste_vs_dense(s, 1500, **kw) if which == "srste" else joint_vs_frozen(s, 600, 900) for s in range(3)]
    for k in rows[0]:
        print(k, [round(r[k], 4) for r in rows], round(sum(r[k] for r in rows) / len(rows), 4))
