"""The statistics the data-driven LoRA inits need, gathered without changing the model.

:func:`~overparam.factor.lora_` with ``init="lora_ga" | "eva" | "corda"`` calls :func:`plan`
before it wraps anything: it reads ``data`` (one ``(inputs, targets)`` batch or an iterable of
them; ``model(inputs)``, or ``model(*inputs)`` for a tuple) and returns, for every selected layer,
the :class:`~overparam.factor.inits.AdapterInit` and the (EVA: redistributed) rank and ``alpha``.

* LoRA-GA: the loss gradient in each selected weight, from
  :func:`overparam.hessian.gradient` (per-sample mean over the batches; the model must be
  deterministic — ``eval()`` for dropout / BatchNorm —, checked on the first batch: ``check="first"``);
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
from ..backend.layers import kind_of
from ..backend.patches import conv_rows
from ..hessian import gradient
from . import _layers, inits
from .adapters import lora_scaling
from .inits import AdapterInit

__all__ = ["DATA_INITS", "plan"]

DATA_INITS = ("lora_ga", "eva", "corda")
OPTIONS = ("rho", "eva_whiten", "eva_label_mask", "ga_direction", "ga_scale", "ga_gamma", "ga_svd", "corda_mode")


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


def _rows(m: nn.Module, x: Tensor, cols: int) -> Tensor:
    """The rows ``(N, cols)`` the layer's weight matrix multiplies: the input flattened to ``(-1, cols)``
    (Linear-like) or the unfolded patches in the matrix view's column order (ConvNd, groups=1)."""
    if _layers.layout(m).linear_like:
        return x.detach().reshape(-1, cols)
    return conv_rows(m, x.detach())


def _inputs(model: nn.Module, chosen: dict[str, nn.Module], data, each, label_mask: int | None = None) -> None:
    """Run ``model`` on every batch's inputs; ``each(name, rows (N, cols))`` for every selected layer.
    With ``label_mask``, the rows whose target equals it are left out (the rows must be the
    targets' entries: a layer input ``(*targets.shape, cols)``)."""
    keep: list[Tensor | None] = [None]

    def hook(name, m, cols, x):
        rows = _rows(m, x, cols)
        if keep[0] is not None:
            if rows.shape[0] != keep[0].numel():
                raise ValueError(f"eva_label_mask: layer {name!r} sees {rows.shape[0]} input rows per batch but the "
                                 f"targets have {keep[0].numel()} entries; the mask needs one target per row")
            rows = rows[keep[0].to(rows.device)]
        each(name, rows)

    handles = []
    for name, m in chosen.items():
        cols = _layers.matrix_shape(m)[1]
        handles.append(m.register_forward_hook(
            lambda mod, args, out, name=name, cols=cols: hook(name, mod, cols, args[0])))
    try:
        with torch.no_grad():
            for x, y in _batches(data):
                if label_mask is not None:
                    if not isinstance(y, Tensor):
                        raise ValueError("eva_label_mask: each batch needs a targets tensor (the labels), got "
                                         f"{type(y).__name__}")
                    keep[0] = (y != label_mask).reshape(-1)
                model(*x) if isinstance(x, tuple) else model(x)
    finally:
        for h in handles:
            h.remove()


def _check_matrix_inputs(chosen: dict[str, nn.Module], init: str) -> None:
    for name, m in chosen.items():
        lay, kind = _layers.layout(m), kind_of(m)
        conv = kind is not None and kind.name == "conv"
        if not (lay.linear_like or conv):
            raise ValueError(f"targets: init={init!r} reads a layer's inputs and takes Linear-like layers "
                             f"(nn.Linear, Conv1D) and ConvNd only; layer {name!r} is a {type(m).__name__}")
        if conv and m.groups != 1:
            raise ValueError(f"targets: init={init!r} takes ConvNd with groups=1 only; layer {name!r} has "
                             f"groups={m.groups}")


def plan(model: nn.Module, chosen: dict[str, nn.Module], opts, loss_fn, data, *, generator=None, rho: float = 2.0,
         eva_whiten: bool = False, eva_label_mask: int | None = None,
         ga_direction: str = "ArB2r", ga_scale: str = "stable", ga_gamma: float = 16.0, ga_svd: str = "randomized",
         corda_mode: str = "ipm") -> dict[str, tuple[object, AdapterInit]]:
    """``{name: (layer options, AdapterInit)}`` for the layers ``chosen`` (names of ``model``), in
    their order; EVA leaves out the layers it gives rank 0. ``opts`` are ``lora_``'s options;
    ``generator`` (``lora_``'s, a ``torch.Generator``) draws LoRA-GA's ``"random"`` direction."""
    if data is None:
        raise ValueError(f"data: init={opts.init!r} needs data=")
    rank, alpha = opts.rank, float(opts.rank if opts.alpha is None else opts.alpha)
    s = lora_scaling(alpha, rank, rslora=opts.rslora)
    W = {n: _layers.as_matrix(m, m.weight.detach()) for n, m in chosen.items()}
    if opts.init == "lora_ga":
        if loss_fn is None:
            raise ValueError("loss_fn: init='lora_ga' needs loss_fn=")
        if ga_svd not in inits.GA_SVDS:
            raise ValueError(f"ga_svd must be one of {inits.GA_SVDS}, got {ga_svd!r}")
        if opts.svd != "svd":
            raise ValueError(f"svd: init='lora_ga' takes its gradient SVD from ga_svd= ('randomized' by default, "
                             f"or 'svd' exact), not svd={opts.svd!r} (PiSSA's)")
        wanted = {f"{n}.weight" if n else "weight": n for n in chosen}
        g = gradient(model, loss_fn, data, params=lambda name, _p: name in wanted, check="first")
        out = {}
        for key, n in wanted.items():
            G = _layers.as_matrix(chosen[n], g[key])
            out[n] = (opts, inits.lora_ga(G, W[n], rank, scaling=s, direction=ga_direction,
                                          scale=ga_scale, gamma=ga_gamma, svd=ga_svd,
                                          niter=opts.niter, oversample=opts.oversample, generator=generator))
        return out
    _check_matrix_inputs(chosen, opts.init)
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
    if not isinstance(eva_whiten, bool):
        raise TypeError(f"eva_whiten must be a bool, got {type(eva_whiten).__name__}")
    if eva_label_mask is not None and (isinstance(eva_label_mask, bool) or not isinstance(eva_label_mask, int)):
        raise TypeError(f"eva_label_mask must be an int label (e.g. -100) or None, got {eva_label_mask!r}")
    rows: dict[str, list[Tensor]] = {}
    _inputs(model, chosen, data, lambda name, X: rows.setdefault(name, []).append(X.to(W[name].dtype)),
            label_mask=eva_label_mask)
    _check_seen(chosen, rows)
    X = {n: torch.cat(rows[n]) for n in chosen}
    cap, explained, comps, sing = {}, {}, {}, {}
    for n in chosen:
        cap[n] = min(round(rank * rho), *X[n].shape)
        comps[n], explained[n], sing[n] = inits.pca(X[n], singular_values=True)
    ranks = inits.eva_ranks(explained, rank * len(chosen), cap)
    out = {}
    for n, r in ranks.items():
        if r == 0:
            continue
        o = dataclasses.replace(opts, rank=r, alpha=alpha * r / rank)
        down = comps[n][:, :r] / sing[n][:r].sqrt() if eva_whiten else comps[n][:, :r]
        out[n] = (o, AdapterInit(W[n].new_zeros(W[n].shape[0], r), down.contiguous(), False))
    return out


def _check_seen(chosen: dict[str, nn.Module], seen: dict) -> None:
    missing = [n for n in chosen if n not in seen]
    if missing:
        raise ValueError(f"data: layers {missing} were not called by model(inputs); exclude= them")
