"""Generalized Gauss-Newton ``G = Σ_b Jᵦᵀ ∇²ℓ(f_b) Jᵦ`` for MSE and cross-entropy losses.

``ggn(model, loss_fn, data)`` takes the arguments of :func:`~overparam.hessian.hessian`; the
loss must be one whose output Hessian has the closed form below: ``"mse"`` / ``F.mse_loss`` /
``nn.MSELoss()`` or ``"cross_entropy"`` / ``F.cross_entropy`` / ``nn.CrossEntropyLoss()``
(mean reduction, no class weights or label smoothing).

``J_b`` is the Jacobian of the model outputs on batch ``b`` w.r.t. the selected parameters and
``∇²ℓ`` the Hessian of the loss w.r.t. the outputs, in closed form:

* ``"mse"`` (``F.mse_loss``, mean over all ``N·C`` output entries): ``2/(N·C) · I``;
* ``"cross_entropy"`` (``F.cross_entropy`` with class-index targets, mean over ``N``):
  ``(diag(p) − p pᵀ)/N`` per sample, ``p = softmax(f)``.

The product never forms ``J``: one forward graph per batch is kept, ``Jv`` comes from the
double-vjp trick (``∂/∂u ⟨Jᵀu, v⟩``) and ``Jᵀw`` from a vjp on the same graph.

Example:
    >>> import torch
    >>> from overparam.testing import tanh_mlp
    >>> net = tanh_mlp([3, 4, 2], generator=0)
    >>> x, y = torch.randn(8, 3, dtype=torch.float64), torch.randint(0, 2, (8,))
    >>> G = ggn(net, torch.nn.functional.cross_entropy, (x, y))
    >>> bool((G.to_dense() - G.to_dense().T).abs().max() < 1e-12)
    True
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..backend import vec
from ..backend.select import Spec
from ._model import Objective, check_agree, grad, rng_guard
from .operators import Operator

__all__ = ["GGNOperator", "ggn", "LOSSES"]

LOSSES = {"mse": F.mse_loss, "cross_entropy": F.cross_entropy}
_MODULES = {"mse": nn.MSELoss, "cross_entropy": nn.CrossEntropyLoss}


def _loss_kind(loss_fn) -> str:
    """``"mse"`` or ``"cross_entropy"`` for the losses whose output Hessian has a closed form."""
    if isinstance(loss_fn, str) and loss_fn in LOSSES:
        return loss_fn
    for kind, fn in LOSSES.items():
        if loss_fn is fn:
            return kind
    for kind, cls in _MODULES.items():
        if type(loss_fn) is cls:
            plain = loss_fn.reduction == "mean" and getattr(loss_fn, "weight", None) is None and \
                getattr(loss_fn, "label_smoothing", 0.0) == 0.0 and getattr(loss_fn, "ignore_index", -100) == -100
            if not plain:
                raise ValueError(f"loss_fn: the GGN supports {cls.__name__} only with reduction='mean' and no weight, "
                                 f"ignore_index or label_smoothing, got {loss_fn!r}")
            return kind
    raise ValueError(f"loss_fn must be 'mse' or 'cross_entropy', F.mse_loss or F.cross_entropy, or nn.MSELoss() or "
                     f"nn.CrossEntropyLoss() (the losses with a closed-form output Hessian), got {loss_fn!r}")


def _loss_hessian_product(kind: str, out: Tensor, w: Tensor, total: int) -> Tensor:
    """``∇²ℓ(out) w`` for a batch with outputs ``out (n_b, C...)``; ``total`` = N (all samples)."""
    if kind == "mse":
        per_sample = out[0].numel() if out.ndim > 1 else 1
        return w * (2.0 / (total * per_sample))
    if out.ndim != 2:
        raise ValueError(f"cross_entropy GGN needs outputs of shape (N, C), got {tuple(out.shape)}")
    p = torch.softmax(out.detach(), dim=-1)
    return (p * w - p * (p * w).sum(-1, keepdim=True)) / total


class GGNOperator(Operator):
    """The generalized Gauss-Newton matrix of an MSE or cross-entropy loss (PSD).

    Args:
        model: a deterministic ``nn.Module`` (``eval()`` for dropout / BatchNorm).
        loss_fn: ``"mse"`` / ``F.mse_loss`` / ``nn.MSELoss()`` or ``"cross_entropy"`` /
            ``F.cross_entropy`` / ``nn.CrossEntropyLoss()`` (mean reduction); anything else
            is a ``ValueError``.
        data: one ``(inputs, targets)`` batch or an iterable of batches; per-sample mean.
        params: which parameters, a spec of :func:`overparam.select`; default all trainable.
        exclude: parameters to leave out, same grammar.
        check: verify at construction that a fresh forward pass reproduces the kept outputs
            (a stochastic or stateful forward raises :class:`NonDeterministicModelError`).
    """

    def __init__(self, model: nn.Module, loss_fn, data, *, params: Spec = None, exclude: Spec = None,
                 check: bool = True):
        self.kind = _loss_kind(loss_fn)
        self.obj = obj = Objective.build(model, LOSSES[self.kind], data, params, exclude=exclude)
        self.like = tuple(t.shape for t in obj.theta)
        self.dtype, self.device = obj.theta[0].dtype, obj.theta[0].device
        self._total = sum(int((b[0] if isinstance(b[0], Tensor) else b[0][0]).shape[0]) for b in obj.batches)
        with rng_guard(self.device):
            self._graphs = self._build()
            if check:  # the kept outputs against a fresh forward pass: every product reuses the kept graphs,
                with torch.no_grad():  # which depend on the model only through them (one forward, no products)
                    fresh = tuple(obj.outputs(obj.theta, b) for b in obj.batches)
                check_agree(tuple(g[1].detach() for g in self._graphs), fresh, obj,
                            what="network outputs of fresh forward passes")

    def _build(self) -> list:
        graphs = []
        for b in self.obj.batches:
            leaves = self.obj.leaves()
            out = self.obj.outputs(leaves, b)
            u = torch.zeros_like(out, requires_grad=True)
            jtu = grad(out, leaves, u, create_graph=True)  # linear in u: d<Jᵀu, v>/du = J v
            graphs.append((leaves, out, u, jtu))
        return graphs

    @property
    def names(self) -> list[str]:
        return list(self.obj.names)

    def _mv(self, v: vec.Vec) -> vec.Vec:
        return self._product(self._graphs, v)

    def _product(self, graphs: list, v: vec.Vec) -> vec.Vec:
        res = None
        for leaves, out, u, jtu in graphs:
            live = [(j, t) for j, t in zip(jtu, v) if j.requires_grad]  # parameters the outputs depend on
            if live:
                jv = torch.autograd.grad([j for j, _ in live], u, [t for _, t in live], retain_graph=True)[0]
            else:
                jv = torch.zeros_like(out)
            w = _loss_hessian_product(self.kind, out, jv, self._total)
            g = grad(out, leaves, w, retain_graph=True)
            res = g if res is None else vec.add(res, g)
        return res


def ggn(model: nn.Module, loss_fn, data, *, params: Spec = None, exclude: Spec = None, check: bool = True) -> GGNOperator:
    """Shorthand for :class:`GGNOperator` ``(model, loss_fn, data, ...)``, same arguments."""
    return GGNOperator(model, loss_fn, data, params=params, exclude=exclude, check=check)
