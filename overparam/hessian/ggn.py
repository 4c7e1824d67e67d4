"""Generalized Gauss-Newton ``G = c Σ_r J_rᵀ ∇²ℓ_r J_r`` for MSE and cross-entropy losses, on
``(N, C)`` outputs and on sequence outputs ``(B, T, V)`` with ignored targets.

``ggn(model, loss_fn, data)`` takes the arguments of :func:`~overparam.hessian.hessian`; the
loss must be one whose output Hessian has a closed form: ``"mse"`` / ``F.mse_loss`` /
``nn.MSELoss()`` or ``"cross_entropy"`` / ``F.cross_entropy`` / ``nn.CrossEntropyLoss()`` (no
class weights or label smoothing).

**Rows.** The model's (selected, ``output=``) outputs ``f`` of every batch are read as rows
``f.reshape(-1, C)`` over all leading dimensions: ``(N, C)`` gives ``N`` rows, ``(B, T, V)`` gives
``B·T`` token rows. Cross-entropy takes class indices shaped like the leading dimensions
(``(N,)``, ``(B, T)``); a row whose target is ``ignore_index`` (default ``-100``, as
``F.cross_entropy``) is dropped. MSE takes targets shaped like the outputs.

**The loss** is ``L(θ) = c Σ_r ℓ_r`` over the rows of all batches, with the per-row losses
``ℓ_r = −log softmax(f_r)[y_r]`` (cross-entropy) or ``ℓ_r = Σ_c (f_rc − y_rc)²`` (MSE), and

* ``reduction="mean"``: ``c = 1 / (number of non-ignored targets of all batches)`` for
  cross-entropy (the token mean, as ``F.cross_entropy`` over the flattened batches) and
  ``c = 1 / (number of output entries of all batches)`` for MSE (as ``F.mse_loss``);
* ``reduction="sum"``: ``c = 1``.

``J_r`` is the Jacobian of row ``f_r`` w.r.t. the selected parameters and ``∇²ℓ_r`` in closed
form ``diag(p) − p pᵀ`` (``p = softmax(f_r)``) or ``2 I``. The product never forms ``J``: one
forward graph per batch is kept, ``Jv`` comes from the double-vjp trick (``∂/∂u ⟨Jᵀu, v⟩``, with
``u`` one zero expanded to the outputs' shape: no ``(B·T, V)`` buffer is kept for it) and ``Jᵀw``
from a vjp on the same graph. The cross-entropy ``∇²ℓ_r (Jv)_r`` is
:func:`overparam.backend.softmax_ce.softmax_ce_hvp` (``impl=`` chooses its implementation),
applied over row chunks and written into ``Jv``, so it adds no ``(B·T, V)`` buffer. The Fisher
operators of :mod:`overparam.hessian.fisher` share this machinery with another output-space matrix.

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

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..backend import dispatch, vec
from ..backend.select import Spec
from ..backend.softmax_ce import softmax_ce_hvp
from ._model import Objective, check_agree, grad, rng_guard
from .operators import Operator

__all__ = ["GGNOperator", "ggn", "LOSSES"]

LOSSES = {"mse": F.mse_loss, "cross_entropy": F.cross_entropy}
_MODULES = {"mse": nn.MSELoss, "cross_entropy": nn.CrossEntropyLoss}


def _option(name: str, given, from_module, default):
    if given is not None and from_module is not None and given != from_module:
        raise ValueError(f"{name}={given!r} contradicts the loss module's {name}={from_module!r}")
    return given if given is not None else from_module if from_module is not None else default


@dataclass(frozen=True)
class ClosedFormLoss:
    """A loss with a closed-form output Hessian: ``kind`` (``"mse"`` / ``"cross_entropy"``),
    ``reduction`` (``"mean"`` / ``"sum"``) and the ``ignore_index`` of cross-entropy targets."""

    kind: str
    reduction: str = "mean"
    ignore_index: int = -100

    @classmethod
    def of(cls, loss_fn, reduction: str | None = None, ignore_index: int | None = None) -> ClosedFormLoss:
        """Read ``loss_fn`` (a name, ``F.mse_loss``/``F.cross_entropy`` or their modules); the
        keywords default to the module's settings, else ``"mean"`` and ``-100``."""
        kind, mod_red, mod_ii = None, None, None
        if isinstance(loss_fn, str) and loss_fn in LOSSES:
            kind = loss_fn
        for k, fn in LOSSES.items():
            if loss_fn is fn:
                kind = k
        for k, mcls in _MODULES.items():
            if type(loss_fn) is mcls:
                if getattr(loss_fn, "weight", None) is not None or getattr(loss_fn, "label_smoothing", 0.0) != 0.0:
                    raise ValueError(f"loss_fn: the GGN and the Fisher take {mcls.__name__} without weight or "
                                     f"label_smoothing, got {loss_fn!r}")
                kind, mod_red, mod_ii = k, loss_fn.reduction, getattr(loss_fn, "ignore_index", None)
        if kind is None:
            raise ValueError(f"loss_fn must be 'mse' or 'cross_entropy', F.mse_loss or F.cross_entropy, or nn.MSELoss() "
                             f"or nn.CrossEntropyLoss() (the losses with a closed-form output Hessian), got {loss_fn!r}")
        red = _option("reduction", reduction, mod_red, "mean")
        if red not in ("mean", "sum"):
            raise ValueError(f"reduction (or the reduction of loss_fn) must be 'mean' or 'sum', got {red!r}")
        if kind == "mse" and ignore_index is not None:
            raise ValueError("ignore_index applies to cross_entropy targets only, not to mse")
        ii = _option("ignore_index", ignore_index, mod_ii, -100)
        if isinstance(ii, bool) or not isinstance(ii, int):
            raise TypeError(f"ignore_index must be an int, got {ii!r}")
        return cls(kind, red, ii)

    def rows(self, out: Tensor, y: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``(f (R, C), targets (R,) or (R, C), keep (R,) bool)`` of one batch's outputs."""
        if not isinstance(out, Tensor):
            raise TypeError(f"the model output (after output=) must be a tensor, got {type(out).__name__}: pass output=")
        if self.kind == "cross_entropy":
            if out.ndim < 2 or tuple(y.shape) != tuple(out.shape[:-1]) or y.is_floating_point():
                raise ValueError(f"cross_entropy needs class logits (..., C) and integer targets shaped like their "
                                 f"leading dimensions, got outputs {tuple(out.shape)} and targets {tuple(y.shape)} "
                                 f"(for a causal LM use output=lambda o: o.logits[:, :-1] with targets ids[:, 1:])")
            f, t = out.reshape(-1, out.shape[-1]), y.reshape(-1).to(out.device)
            return f, t, t != self.ignore_index
        if tuple(y.shape) != tuple(out.shape):
            raise ValueError(f"mse needs targets shaped like the outputs, got outputs {tuple(out.shape)} and targets "
                             f"{tuple(y.shape)}")
        f = out.reshape(-1, out.shape[-1]) if out.ndim > 1 else out.reshape(-1, 1)
        return f, y.reshape(f.shape).to(out), torch.ones(f.shape[0], dtype=torch.bool, device=out.device)

    def count(self, f: Tensor, keep: Tensor) -> int:
        """What ``reduction="mean"`` divides by, for one batch: its non-ignored rows (cross-entropy)
        or its output entries (MSE)."""
        return int(keep.sum()) if self.kind == "cross_entropy" else f.numel()

    def value(self, out: Tensor, y: Tensor) -> Tensor:
        """``Σ_r ℓ_r`` over the kept rows of one batch."""
        f, t, keep = self.rows(out, y)
        if self.kind == "cross_entropy":
            return F.cross_entropy(f, t, ignore_index=self.ignore_index, reduction="sum")
        return F.mse_loss(f, t, reduction="sum")

    def hessian_product(self, f: Tensor, w: Tensor, impl: str | None = None) -> Tensor:
        """``∇²ℓ_r w_r`` row by row, ``(R, C)``, written into ``w``; cross-entropy through
        :func:`~overparam.backend.softmax_ce.softmax_ce_hvp` (``impl``: its implementation) over
        :func:`row_chunks`, so that no further ``(R, C)`` buffer is formed."""
        if self.kind == "mse":
            return w.mul_(2.0)
        for rows in row_chunks(f):
            w[rows] = softmax_ce_hvp(f[rows].detach(), w[rows], reduction="sum", impl=impl)
        return w


def row_chunks(f: Tensor, entries: int = 1 << 20):
    """Slices of the rows of ``f (R, C)`` holding about ``entries`` entries each (at least one row)."""
    step = max(1, entries // max(1, f.shape[-1]))
    return [slice(s, s + step) for s in range(0, f.shape[0], step)]


def _shares_storage(t: Tensor, others) -> bool:
    ptr = t.untyped_storage().data_ptr()
    return any(o.untyped_storage().data_ptr() == ptr for o in others)


class OutputCurvature(Operator):
    """``c Σ_r J_rᵀ M_r J_r`` over the rows of all batches, for an output-space PSD matrix ``M_r``
    given by :meth:`_output_product` (the GGN's ``∇²ℓ_r``, the Fisher's outer products).
    Subclasses may draw per-batch state in :meth:`_prepare`."""

    def __init__(self, model: nn.Module, loss_fn, data, *, params: Spec = None, exclude: Spec = None,
                 reduction: str | None = None, ignore_index: int | None = None, output="auto",
                 attention: str | None = "math", check: bool = True):
        self.loss = loss = ClosedFormLoss.of(loss_fn, reduction, ignore_index)
        self.obj = obj = Objective.build(model, LOSSES[loss.kind], data, params, exclude=exclude, reduction="sum",
                                         output=output, attention=attention)
        self.like = tuple(t.shape for t in obj.theta)
        self.dtype, self.device = obj.theta[0].dtype, obj.theta[0].device
        with rng_guard(self.device):
            self._graphs = self._build()
            if check:  # the kept outputs against a fresh forward pass: every product reuses the kept graphs,
                with torch.no_grad():  # which depend on the model only through them (one forward, no products)
                    fresh = tuple(obj.outputs(obj.theta, b) for b in obj.batches)
                check_agree(tuple(g[1].detach() for g in self._graphs), fresh, obj,
                            what="network outputs of fresh forward passes")
        self._rows = [loss.rows(g[1].detach(), b[1]) for g, b in zip(self._graphs, obj.batches)]
        total = sum(loss.count(f, keep) for f, _, keep in self._rows)
        if total == 0:
            raise ValueError(f"every target equals ignore_index={loss.ignore_index}: the loss has no term")
        self.scale = 1.0 / total if loss.reduction == "mean" else 1.0
        obj.loss_fn = lambda out, y, s=self.scale: s * loss.value(out, y)  # L(θ) = c Σ_r ℓ_r, for gradients and checks
        self._prepare()

    def _build(self) -> list:
        graphs = []
        for b in self.obj.batches:
            leaves = self.obj.leaves()
            out = self.obj.outputs(leaves, b)
            self.loss.rows(out, b[1])  # type and shapes checked before any product
            # u: one zero expanded to the outputs' shape (no (B·T, V) buffer, here or saved in the graph of Jᵀu)
            u = torch.zeros((), dtype=out.dtype, device=out.device, requires_grad=True).expand(out.shape)
            jtu = grad(out, leaves, u, create_graph=True)  # linear in u: d<Jᵀu, v>/du = J v
            graphs.append((leaves, out, u, jtu))
        return graphs

    def _prepare(self) -> None:
        """Per-batch state drawn once at construction (none for the GGN)."""

    def _output_product(self, i: int, f: Tensor, t: Tensor, jv: Tensor) -> Tensor:
        """``M_r (Jv)_r`` row by row, ``(R, C)``; may overwrite ``jv``."""
        raise NotImplementedError

    @property
    def names(self) -> list[str]:
        """Names of the parameters the operator acts on, in order.

        Example:
            >>> net = torch.nn.Linear(2, 2).double()
            >>> ggn(net, "mse", (torch.randn(3, 2, dtype=torch.float64), torch.randn(3, 2, dtype=torch.float64))).names
            ['weight', 'bias']
        """
        return list(self.obj.names)

    def _mv(self, v: vec.Vec) -> vec.Vec:
        res = None
        for i, (leaves, out, u, jtu) in enumerate(self._graphs):
            live = [(j, t) for j, t in zip(jtu, v) if j.requires_grad]  # parameters the outputs depend on
            if live:
                jv = torch.autograd.grad([j for j, _ in live], u, [t for _, t in live], retain_graph=True)[0]
            else:
                jv = torch.zeros_like(out)
            f, t, keep = self._rows[i]
            if not jv.is_contiguous() or _shares_storage(jv, v):  # an expanded bias gradient, or v passed through
                jv = jv.contiguous().clone() if jv.is_contiguous() else jv.contiguous()
            w = self._output_product(i, f, t, jv.reshape(f.shape))  # overwrites jv: our own buffer now
            w.mul_(keep.unsqueeze(-1).to(w.dtype) * self.scale)
            g = grad(out, leaves, w.reshape(out.shape), retain_graph=True)
            res = g if res is None else vec.add(res, g)
        return res


class GGNOperator(OutputCurvature):
    """The generalized Gauss-Newton matrix of an MSE or cross-entropy loss (PSD), rows and
    reductions as in :mod:`overparam.hessian.ggn`.

    Args:
        model: a deterministic ``nn.Module`` (``eval()`` for dropout / BatchNorm).
        loss_fn: ``"mse"`` / ``F.mse_loss`` / ``nn.MSELoss()`` or ``"cross_entropy"`` /
            ``F.cross_entropy`` / ``nn.CrossEntropyLoss()``; anything else is a ``ValueError``.
        data: one ``(inputs, targets)`` batch or an iterable of batches; outputs ``(N, C)`` or
            ``(B, T, V)``, cross-entropy targets ``(N,)`` / ``(B, T)``, MSE targets like the outputs.
        params: which parameters, a spec of :func:`overparam.select`; default all trainable.
        exclude: parameters to leave out, same grammar.
        reduction: ``"mean"`` (the token mean over the non-ignored targets of all batches; for MSE
            the mean over all output entries) or ``"sum"``; None: the loss module's, else ``"mean"``.
        ignore_index: the cross-entropy target that drops its row; None: the module's, else ``-100``.
        output: what is read of the model's output (``"auto"``: a ``ModelOutput``'s ``logits``, a
            tensor as is, else the first tensor; or a callable), as for :class:`HessianOperator`.
        attention: ``"math"``: forwards under the math SDPA kernel (double-vjp needs it); None: torch's.
        check: verify at construction that a fresh forward pass reproduces the kept outputs
            (a stochastic or stateful forward raises :class:`NonDeterministicModelError`).
        impl: cross-entropy only: the implementation of the routine ``"softmax_ce_hvp"`` of
            :mod:`overparam.backend.softmax_ce` for ``∇²ℓ_r (Jv)_r`` (``"reference"``, ``"compiled"``,
            ``"triton"``); None: the dispatch's choice (``OVERPARAM_IMPL``, else ``"auto"``: Triton on
            CUDA when installed, else the reference).

    Shapes: an ``(n, n)`` operator, ``n`` the selected parameters' total size.

    Reference: Schraudolph, "Fast curvature matrix-vector products for second-order gradient
    descent", Neural Computation 2002.

    Example:
        >>> net = torch.nn.Linear(2, 1, bias=False).double()
        >>> x, y = torch.randn(16, 2, dtype=torch.float64), torch.randn(16, 1, dtype=torch.float64)
        >>> G = GGNOperator(net, "mse", (x, y))
        >>> torch.allclose(G.to_dense(), 2 * x.T @ x / 16)  # a linear model: the GGN is the Hessian
        True
    """

    def __init__(self, model: nn.Module, loss_fn, data, *, params: Spec = None, exclude: Spec = None,
                 reduction: str | None = None, ignore_index: int | None = None, output="auto",
                 attention: str | None = "math", check: bool = True, impl: str | None = None):
        self.impl = impl
        super().__init__(model, loss_fn, data, params=params, exclude=exclude, reduction=reduction,
                         ignore_index=ignore_index, output=output, attention=attention, check=check)
        if impl is not None:
            if self.loss.kind != "cross_entropy":
                raise ValueError(f"impl applies to cross_entropy only (the softmax_ce_hvp routine), not to "
                                 f"{self.loss.kind}, got {impl!r}")
            dispatch.choose("softmax_ce_hvp", impl, device=self.device)  # unknown or unavailable: raises here

    def _output_product(self, i: int, f: Tensor, t: Tensor, jv: Tensor) -> Tensor:
        return self.loss.hessian_product(f, jv, self.impl)


def ggn(model: nn.Module, loss_fn, data, *, params: Spec = None, exclude: Spec = None, reduction: str | None = None,
        ignore_index: int | None = None, output="auto", attention: str | None = "math",
        check: bool = True, impl: str | None = None) -> GGNOperator:
    """Shorthand for :class:`GGNOperator` ``(model, loss_fn, data, ...)``, same arguments.

    Reference: N. N. Schraudolph, "Fast Curvature Matrix-Vector Products for Second-Order Gradient Descent" (Neural
        Computation 2002)

    Example (cross-entropy; the GGN is positive semi-definite):
        >>> net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 3)).double()
        >>> x, y = torch.randn(10, 3, dtype=torch.float64), torch.randint(0, 3, (10,))
        >>> G = ggn(net, torch.nn.functional.cross_entropy, (x, y))
        >>> G.shape, bool(torch.linalg.eigvalsh(G.to_dense()).min() > -1e-12)
        ((31, 31), True)
    """
    return GGNOperator(model, loss_fn, data, params=params, exclude=exclude, reduction=reduction,
                       ignore_index=ignore_index, output=output, attention=attention, check=check, impl=impl)
