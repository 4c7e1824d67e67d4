"""The statistics the data-driven LoRA inits need, gathered without changing the model.

:func:`~overparam.factor.lora_` with ``init="lora_ga" | "eva" | "corda"`` calls :func:`plan`
before it wraps anything: it reads ``data`` (one ``(inputs, targets)`` batch or an iterable of
them; ``model(inputs)``, or ``model(*inputs)`` for a tuple) and returns, for every selected layer,
the :class:`~overparam.factor.inits.AdapterInit` and the (EVA: redistributed) rank and ``alpha``.

* LoRA-GA: the loss gradient in each selected weight, from
  :func:`overparam.hessian.gradient` (per-sample mean over the batches; the model must be
  deterministic — ``eval()`` for dropout / BatchNorm);
* EVA: every selected layer's input rows ``(N, cols)`` (all leading dims flattened), stacked
  over the batches; the rank budget ``rank × layers`` is redistributed by explained variance with
  at most ``round(rho · rank)`` per layer (``rho=1``: no redistribution); a layer given rank 0 is
  not wrapped; ``alpha`` is scaled by ``r_layer / rank`` (so ``α/r`` is unchanged);
* CorDA: the covariance ``C = mean_b X_bᵀX_b`` of each layer's input rows, each batch ``X_b``
  divided by its largest absolute entry (CorDA's normalisation).

EVA and CorDA read a layer's inputs, so they take Linear-like layers (``nn.Linear``, transformers'
``Conv1D``) only; LoRA-GA takes every wrappable layer. Forward hooks are removed before return,
also on error; the model's train/eval flags are left as they are (statistics under train-mode
dropout are noisy: call ``model.eval()`` first).

Example:
    >>> import torch
    >>> net = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    >>> from overparam.factor import lora_
    >>> lora_(net, torch.nn.Linear, rank=2, init="eva", data=(torch.randn(16, 4), None))
    ['0', '2']
"""

from __future__ import annotations

import dataclasses

import torch
from torch import Tensor, nn

from ..backend.checks import check_real
from ..hessian import gradient
from . import _layers, inits
from .adapters import lora_scaling
from .inits import AdapterInit

__all__ = ["DATA_INITS", "plan"]

DATA_INITS = ("lora_ga", "eva", "corda")
OPTIONS = ("rho", "ga_direction", "ga_scale", "ga_gamma", "corda_mode")


def _batches(data) -> list:
    if isinstance(data, (tuple, list)) and len(data) == 2 and (
            isinstance(data[0], Tensor) or (isinstance(data[0], tuple) and isinstance(data[1], Tensor))):
        return [data]
    try:
        out = list(data)
    except TypeError:
        raise TypeError(f"data must be an (inputs, targets) batch or an iterable of batches, got "
                        f"{type(data).__name__}") from None
    if not out:
        raise ValueError("data is empty")
    for b in out:
        if not (isinstance(b, (tuple, list)) and len(b) == 2):
            raise ValueError("data: each batch must be (inputs, targets)")
    return out


def _inputs(model: nn.Module, chosen: dict[str, nn.Module], data, each) -> None:
    """Run ``model`` on every batch's inputs; ``each(name, rows (N, cols))`` for every selected layer."""
    handles = []
    for name, m in chosen.items():
        cols = _layers.matrix_shape(m)[1]
        handles.append(m.register_forward_hook(
            lambda mod, args, out, name=name, cols=cols: each(name, args[0].detach().reshape(-1, cols))))
    try:
        with torch.no_grad():
            for x, _ in _batches(data):
                model(*x) if isinstance(x, tuple) else model(x)
    finally:
        for h in handles:
            h.remove()


def _check_linear_like(chosen: dict[str, nn.Module], init: str) -> None:
    for name, m in chosen.items():
        if not _layers.layout(m).linear_like:
            raise ValueError(f"targets: init={init!r} reads a layer's inputs and takes Linear-like layers "
                             f"(nn.Linear, Conv1D) only; layer {name!r} is a {type(m).__name__}")


def plan(model: nn.Module, chosen: dict[str, nn.Module], opts, loss_fn, data, *, rho: float = 2.0,
         ga_direction: str = "ArB2r", ga_scale: str = "stable", ga_gamma: float = 16.0,
         corda_mode: str = "ipm") -> dict[str, tuple[object, AdapterInit]]:
    """``{name: (layer options, AdapterInit)}`` for the layers ``chosen`` (names of ``model``), in
    their order; EVA leaves out the layers it gives rank 0. ``opts`` are ``lora_``'s options."""
    if data is None:
        raise ValueError(f"data: init={opts.init!r} needs data=")
    rank, alpha = opts.rank, float(opts.rank if opts.alpha is None else opts.alpha)
    s = lora_scaling(alpha, rank, rslora=opts.rslora)
    W = {n: _layers.as_matrix(m, m.weight.detach()) for n, m in chosen.items()}
    if opts.init == "lora_ga":
        if loss_fn is None:
            raise ValueError("loss_fn: init='lora_ga' needs loss_fn=")
        wanted = {f"{n}.weight" if n else "weight": n for n in chosen}
        g = gradient(model, loss_fn, data, params=lambda name, _p: name in wanted)
        out = {}
        for key, n in wanted.items():
            G = _layers.as_matrix(chosen[n], g[key])
            out[n] = (opts, inits.lora_ga(G, W[n], rank, scaling=s, direction=ga_direction,
                                          scale=ga_scale, gamma=ga_gamma, svd=opts.svd,
                                          niter=opts.niter, oversample=opts.oversample))
        return out
    _check_linear_like(chosen, opts.init)
    if opts.init == "corda":
        if corda_mode not in ("ipm", "kpm"):
            raise ValueError(f"corda_mode must be 'ipm' or 'kpm', got {corda_mode!r}")
        cov, count = {}, {}

        def add(name, X):
            X = X.to(W[name].dtype)
            X = X / X.abs().max()
            cov[name] = cov.get(name, 0) + X.mT @ X
            count[name] = count.get(name, 0) + 1

        _inputs(model, chosen, data, add)
        _check_seen(chosen, cov)
        return {n: (opts, inits.corda(W[n], cov[n] / count[n], rank, scaling=s, mode=corda_mode))
                for n in chosen}
    check_real(rho, "rho", at_least=1.0)
    rows: dict[str, list[Tensor]] = {}
    _inputs(model, chosen, data, lambda name, X: rows.setdefault(name, []).append(X.to(W[name].dtype)))
    _check_seen(chosen, rows)
    X = {n: torch.cat(rows[n]) for n in chosen}
    cap, explained, comps = {}, {}, {}
    for n in chosen:
        cap[n] = min(round(rank * rho), *X[n].shape)
        comps[n], explained[n] = inits.pca(X[n])
    ranks = inits.eva_ranks(explained, rank * len(chosen), cap)
    out = {}
    for n, r in ranks.items():
        if r == 0:
            continue
        o = dataclasses.replace(opts, rank=r, alpha=alpha * r / rank)
        out[n] = (o, AdapterInit(W[n].new_zeros(W[n].shape[0], r), comps[n][:, :r].contiguous(), False))
    return out


def _check_seen(chosen: dict[str, nn.Module], seen: dict) -> None:
    missing = [n for n in chosen if n not in seen]
    if missing:
        raise ValueError(f"data: layers {missing} were not called by model(inputs); exclude= them")
