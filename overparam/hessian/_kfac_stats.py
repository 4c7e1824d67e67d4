"""What K-FAC and EK-FAC read from a model: the layers they cover, each layer's inputs ``a`` and
backpropagated output vectors ``g``, and the factors of the loss Hessian that ``g`` starts from.

Layout of one layer's block: the selected parameters of an ``nn.Linear`` / ``nn.Conv2d`` as one
matrix ``M (out, d)`` whose columns are the selected columns of the bias-augmented input
``[a; 1]`` (``d = in·kh·kw + 1`` with weight and bias; the weight is ``M[:, :-1]`` reshaped, the bias
``M[:, -1]``). The loss is ``L = s · Σ_n −log p(y_n | f_n)`` with ``s = 1/N`` (cross-entropy) or
``1/(N·C)`` (MSE, ``C`` = output entries per sample, ``p`` Gaussian with variance 1/2); each
sample's loss-Hessian factor is a set of columns ``c_{nk}`` with ``Σ_k c_{nk} c_{nk}ᵀ`` =

* ``"type-2"``: ``s ∇²_f(−log p)`` exactly (columns ``√(s p_k)(e_k − p)``, resp. ``√(2s) e_k``);
* ``"mc"``: ``s ∇(−log p(ŷ))∇(−log p(ŷ))ᵀ`` averaged over ``mc_samples`` draws ``ŷ ~ p(· | f_n)``;
* ``"empirical"``: the same at the true targets (the empirical Fisher).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from ..backend import vec
from ..backend.random import gaussian
from ._model import Objective, check_agree

FISHER_TYPES = ("type-2", "mc", "empirical")
WEIGHT_SHARING = ("expand", "reduce")


@dataclass
class Layer:
    """One Linear/Conv2d layer of the operator: ``slots`` are ``(index into like, "weight"|"bias")``
    (weight first), ``d_in`` = ``in·kh·kw``."""

    name: str
    module: nn.Module
    slots: list[tuple[int, str]]
    d_in: int

    @property
    def has_weight(self) -> bool:
        return any(k == "weight" for _, k in self.slots)

    @property
    def has_bias(self) -> bool:
        return any(k == "bias" for _, k in self.slots)

    @property
    def out(self) -> int:
        return int(self.module.weight.shape[0])

    @property
    def d(self) -> int:
        """Columns of the block: ``d_in`` with the weight, plus one with the bias."""
        return self.d_in * self.has_weight + self.has_bias

    def inputs(self, x: Tensor) -> Tensor:
        """The layer input as ``(n, T, d)`` rows of the augmented input (``T`` shared positions; only
        for a layer whose weight is selected: a bias-only block's input is the constant 1)."""
        m = self.module
        if isinstance(m, nn.Conv2d):
            if x.ndim != 4:
                raise ValueError(f"K-FAC needs batched (N, C, H, W) inputs to Conv2d {self.name!r}, got {tuple(x.shape)}")
            pad = (0, 0) if m.padding == "valid" else m.padding
            a = rearrange(F.unfold(x, m.kernel_size, m.dilation, pad, m.stride), "n d t -> n t d")
        else:
            if x.ndim < 2:
                raise ValueError(f"K-FAC needs batched (N, ..., in) inputs to Linear {self.name!r}, got {tuple(x.shape)}")
            a = rearrange(x, "n ... d -> n (...) d")
        if self.has_bias:
            a = torch.cat([a, a.new_ones(*a.shape[:-1], 1)], dim=-1)
        return a

    def outputs(self, g: Tensor) -> Tensor:
        """Backpropagated vectors ``(K, n, *out_shape)`` as ``(K, n, T, out)``."""
        if isinstance(self.module, nn.Conv2d):
            return rearrange(g, "k n o h w -> k n (h w) o")
        return rearrange(g, "k n ... o -> k n (...) o")

    def to_matrix(self, V: vec.Vec) -> Tensor:
        """Batched parameter entries (``(B, *shape)``) -> ``(B, out, d)``."""
        parts = [V[i].reshape(V[i].shape[0], self.out, -1) for i, _ in self.slots]
        return parts[0] if len(parts) == 1 else torch.cat(parts, dim=-1)

    def from_matrix(self, M: Tensor, out: list) -> None:
        """Write ``M (B, out, d)`` into ``out`` at this layer's slots (entries ``(B, *shape)``)."""
        for i, kind in self.slots:
            piece = M[..., : self.d_in] if kind == "weight" else M[..., -1]
            out[i] = piece.reshape(M.shape[0], *self.module.get_parameter(kind).shape)


def layers_of(model: nn.Module, names: list[str]) -> list[Layer]:
    """The Linear/Conv2d layers owning the selected parameters ``names`` (in order of first
    appearance); any other parameter is a ``ValueError`` naming ``params``."""
    modules = dict(model.named_modules())
    layers: dict[str, Layer] = {}
    for i, name in enumerate(names):
        mod_name, _, attr = name.rpartition(".")
        m = modules.get(mod_name)
        if not isinstance(m, (nn.Linear, nn.Conv2d)) or attr not in ("weight", "bias"):
            raise ValueError(f"params: K-FAC covers the weight and bias of nn.Linear and nn.Conv2d layers, but "
                             f"{name!r} belongs to {type(m).__name__}; leave it out with exclude=")
        if isinstance(m, nn.Conv2d):
            if m.groups != 1 or m.padding_mode != "zeros" or m.padding == "same":
                raise ValueError(f"params: K-FAC supports Conv2d with groups=1, padding_mode='zeros' and numeric or "
                                 f"'valid' padding; {mod_name!r} has groups={m.groups}, padding_mode="
                                 f"{m.padding_mode!r}, padding={m.padding!r}")
        lay = layers.setdefault(mod_name, Layer(mod_name, m, [], int(m.weight[0].numel())))
        lay.slots.append((i, attr))
    for lay in layers.values():
        lay.slots.sort(key=lambda s: s[1] == "bias")  # weight columns first, then the bias column
    return list(layers.values())


def loss_columns(kind: str, fisher: str, out: Tensor, y: Tensor, total: int, *, mc_samples: int,
                 generator: torch.Generator | None) -> Tensor:
    """The columns ``c (K, *out.shape)`` of the loss-Hessian factor of one batch (module docstring)."""
    out = out.detach()
    if kind == "cross_entropy":
        if out.ndim != 2 or y.shape != out.shape[:1] or y.dtype != torch.long:
            raise ValueError(f"cross-entropy K-FAC needs outputs (N, C) and int64 class targets (N,), got outputs "
                             f"{tuple(out.shape)} and targets {tuple(y.shape)} {y.dtype}")
        s, p = 1.0 / total, torch.softmax(out, dim=-1)
        if fisher == "type-2":
            eye = torch.eye(out.shape[1], dtype=out.dtype, device=out.device)
            return rearrange(p.sqrt(), "n k -> k n 1") * (eye[:, None, :] - p) * math.sqrt(s)
        if fisher == "mc":
            labels = torch.multinomial(p.cpu(), mc_samples, replacement=True, generator=generator).to(out.device).T
        else:
            labels = y[None]
        return (p - F.one_hot(labels, out.shape[1]).to(out.dtype)) * math.sqrt(s / labels.shape[0])
    if y.shape != out.shape:
        raise ValueError(f"MSE K-FAC needs targets shaped like the outputs {tuple(out.shape)}, got {tuple(y.shape)}")
    per = out[0].numel()
    s = 1.0 / (total * per)
    if fisher == "type-2":
        eye = torch.eye(per, dtype=out.dtype, device=out.device) * math.sqrt(2 * s)
        return eye[:, None, :].expand(per, out.shape[0], per).reshape(per, *out.shape)
    if fisher == "mc":
        eps = gaussian((mc_samples, *out.shape), generator=generator, dtype=out.dtype, device=out.device)
        return eps * math.sqrt(2 * s / mc_samples)
    return (2 * math.sqrt(s)) * (out - y)[None]


def backprop(out: Tensor, outs: list[Tensor], cols: Tensor) -> list[Tensor]:
    """``[J_iᵀ c_k]_k`` stacked ``(K, *outs[i].shape)`` for every recorded layer output: one batched
    (vmapped) backward pass, or one pass per column where an op has no batching rule."""
    try:
        return list(torch.autograd.grad(out, outs, cols, retain_graph=True, allow_unused=True,
                                        materialize_grads=True, is_grads_batched=True))
    except RuntimeError:
        pass
    gs = [[] for _ in outs]
    for c in cols:
        for i, g in enumerate(torch.autograd.grad(out, outs, c, retain_graph=True, allow_unused=True,
                                                  materialize_grads=True)):
            gs[i].append(g)
    return [torch.stack(g) for g in gs]


def n_samples(obj: Objective) -> int:
    """``N``: the samples in all batches."""
    return sum(int((b[0] if isinstance(b[0], Tensor) else b[0][0]).shape[0]) for b in obj.batches)


def _record(store: dict, i: int, name: str, module: nn.Module, args, kwargs, output) -> None:
    if i in store:
        raise ValueError(f"K-FAC needs every covered layer to run once per forward pass; layer {name!r} ran twice "
                         "(a shared module): leave its parameters out with exclude=")
    x = args[0] if args else kwargs["input"]
    store[i] = (x.detach(), output, output._version)


def sweep(obj: Objective, layers: list[Layer], kind: str, fisher: str, *, mc_samples: int,
          generator: torch.Generator | None, consume: Callable[[int, Tensor, Tensor], None], check: bool) -> None:
    """One pass over the data: per batch, one forward (hooks record each layer's input and output,
    removed before returning) and one backward per loss-factor column; ``consume(i, a, g)`` gets
    layer ``i``'s ``a (n, T, d)`` and ``g (K, n, T, out)``. With ``check``, the outputs are compared
    with a fresh forward pass (:class:`~overparam.hessian.NonDeterministicModelError`)."""
    total = n_samples(obj)
    kept, fresh = [], []
    for b in obj.batches:
        store: dict = {}
        handles = [lay.module.register_forward_hook(partial(_record, store, i, lay.name), with_kwargs=True)
                   for i, lay in enumerate(layers)]
        try:
            out = obj.outputs(obj.leaves(), b)
        finally:
            for h in handles:
                h.remove()
        for i, lay in enumerate(layers):
            if i not in store:
                raise ValueError(f"params: layer {lay.name!r} did not run in the forward pass")
            if store[i][1]._version != store[i][2]:
                raise ValueError(f"the output of layer {lay.name!r} is modified in place (ReLU(inplace=True)?); "
                                 "K-FAC needs its gradient: use an out-of-place activation")
        cols = loss_columns(kind, fisher, out, b[1], total, mc_samples=mc_samples, generator=generator)
        outs = [store[i][1] for i in range(len(layers))]
        gs = backprop(out, outs, cols)
        for i, lay in enumerate(layers):
            g = lay.outputs(gs[i])
            x = store[i][0]
            a = lay.inputs(x) if lay.has_weight else x.new_ones(g.shape[1], g.shape[2], 1)
            consume(i, a, g)
        if check:
            kept.append(out.detach())
    if check:
        with torch.no_grad():
            fresh = [obj.outputs(obj.theta, b) for b in obj.batches]
        check_agree(tuple(kept), tuple(fresh), obj, what="network outputs of fresh forward passes")
