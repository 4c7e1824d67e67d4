"""Hessian-vector products of a model's loss, with three interchangeable backends.

* ``"double_backward"`` (the CPU default): one ``autograd.grad(loss, θ, create_graph=True)``
  whose graph is kept and reused by every product ``∇(gᵀv)`` (PyHessian's scheme, without
  its per-call overhead). With a multi-batch loader the graphs of all batches are kept when
  ``retain_graph=True`` (default for up to 8 batches), otherwise rebuilt at each product.
* ``"jvp"`` (the GPU default): forward-over-reverse ``jvp(grad(L))`` from ``torch.func``,
  ``vmap``-ed over a block of probe vectors in :meth:`~overparam.hessian.Operator.matmat`.
  Where torch has no forward-mode rule (``F.mse_loss`` with mean reduction raises "ZeroTensors
  are immutable" in torch 2.13; out= ops such as spectral_norm's train-mode power iteration
  raise "forward AD ... not supported") it switches to a ``vmap``-ed reverse-over-reverse
  ``vjp(grad(L))`` and records that in ``jvp_mode``.
* ``"finite_difference"``: central differences ``(∇L(θ+hv) − ∇L(θ−hv)) / 2h`` (second-order
  accurate; for checking, and for models without double-backward support).

Example:
    >>> import torch
    >>> from overparam.testing import tanh_mlp
    >>> net = tanh_mlp([3, 4, 1], generator=0)
    >>> x, y = torch.randn(8, 3, dtype=torch.float64), torch.randn(8, 1, dtype=torch.float64)
    >>> H = hessian(net, torch.nn.functional.mse_loss, (x, y))
    >>> H.n, (H @ torch.ones(H.n, dtype=torch.float64)).shape
    (21, torch.Size([21]))
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from ..backend import vec
from ..backend.select import Spec
from ._model import NonDeterministicModelError, Objective, check_agree, check_deterministic, exactly, parameter_names, rng_guard
from .operators import Operator

__all__ = ["HessianOperator", "hessian", "blocks", "BACKENDS"]

BACKENDS = ("double_backward", "jvp", "finite_difference")


def _resolve_backend(backend: str, device: torch.device) -> str:
    if backend == "auto":
        return "jvp" if device.type == "cuda" else "double_backward"
    if backend not in BACKENDS:
        raise ValueError(f"backend must be 'auto' or one of {BACKENDS}, got {backend!r}")
    return backend


def _grad(out: Tensor, inputs, grad_outputs=None, *, create_graph=False, retain_graph=None) -> vec.Vec:
    return tuple(torch.autograd.grad(out, inputs, grad_outputs, create_graph=create_graph, retain_graph=retain_graph,
                                     allow_unused=True, materialize_grads=True))


def _exact_reductions(device: torch.device) -> bool:
    """Whether two forward/backward passes give bit-identical gradients on ``device`` (CPU kernels
    are deterministic). On GPUs, atomic reductions may differ in the last bits, and near a minimum
    the small gradient is a sum of cancelling terms: the construction check then compares two
    Hessian-vector products (no cancellation) instead of two gradients."""
    return device.type == "cpu"


class HessianOperator(Operator):
    """The Hessian ``∇²L(θ)`` of ``L = Σ_b (n_b/N) loss_fn(model(x_b), y_b)`` w.r.t. the
    selected parameters, at their values when the operator is built.

    Args:
        model: any ``nn.Module``; it must be deterministic (``eval()`` for dropout/BatchNorm).
        loss_fn: ``loss_fn(outputs, targets) -> scalar``, a mean over the batch by default.
        data: one batch ``(inputs, targets)`` or an iterable of batches (a DataLoader); the loss
            is then averaged per sample across (possibly ragged) batches.
        params: which parameters, a spec of :func:`overparam.select` (a name, a glob such as
            ``"encoder.*"``, a module type, a predicate ``(name, param) -> bool`` or a list);
            default every trainable parameter.
        exclude: parameters to leave out, same grammar.
        backend: ``"auto"`` | ``"double_backward"`` | ``"jvp"`` | ``"finite_difference"``.
        reduction: ``"mean"`` (loss_fn averages over its batch) or ``"sum"``.
        retain_graph: keep the double-backward graphs (None: yes for at most 8 batches).
        block: number of probes per ``vmap`` call of the jvp backend (memory vs. speed).
        fd_step: relative step of the finite-difference backend (``h = fd_step·max(1, ‖θ‖)/‖v‖``).
        check: verify at construction that the model is deterministic under probing: two products
            with one vector agree (backends that re-run the forward per product), or, for the
            kept double-backward graph that every product reuses, its gradient equals a fresh
            forward/backward's (as sensitive to dropout or random layers, ~6× cheaper).

    Raises:
        NonDeterministicModelError: active dropout, train-mode BatchNorm or a failed check.
    """

    def __init__(self, model: nn.Module, loss_fn: Callable, data, *, params: Spec = None, exclude: Spec = None,
                 backend: str = "auto",
                 reduction: str = "mean", retain_graph: bool | None = None, block: int = 16,
                 fd_step: float | None = None, check: bool = True):
        self.obj = obj = Objective.build(model, loss_fn, data, params, exclude=exclude, reduction=reduction)
        self.like = tuple(t.shape for t in obj.theta)
        self.dtype, self.device = obj.theta[0].dtype, obj.theta[0].device
        self.backend = _resolve_backend(backend, self.device)
        if not isinstance(block, int) or block < 1:
            raise ValueError(f"block must be a positive int, got {block!r}")
        self.block = block
        self.jvp_mode = "forward-over-reverse"  # set to "reverse-over-reverse" if torch lacks a forward rule
        self.fd_step = fd_step if fd_step is not None else torch.finfo(self.dtype).eps ** (1 / 3)
        if self.fd_step <= 0:
            raise ValueError(f"fd_step must be > 0, got {fd_step}")
        self.retain = retain_graph if retain_graph is not None else len(obj.batches) <= 8
        self._graph = None
        with rng_guard(self.device):
            if self.backend == "double_backward" and self.retain:
                leaves = obj.leaves()
                g = _grad(obj.total_loss(leaves), leaves, create_graph=True)
                self._graph = (leaves, g)
            if check and self._graph is not None and _exact_reductions(self.device):
                # the kept graph's gradient against a fresh forward/backward: a stochastic or stateful
                # forward changes the gradient as surely as the products (all later products reuse
                # this one graph), at a sixth of the cost of two Hessian-vector products
                check_agree(self._gradient(), obj.grad(obj.theta), obj, what="gradients of fresh forward passes")
            elif check:  # a product from the kept graph against one from a fresh graph; the other
                second = self._mv_fresh if self._graph is not None else self._mv  # backends re-run the forward
                check_deterministic(self._mv, second, obj, what="Hessian-vector")

    @property
    def names(self) -> list[str]:
        """Names of the parameters the operator acts on, in order."""
        return list(self.obj.names)

    def gradient(self) -> Tensor:
        """The loss gradient ``∇L(θ)`` at the operator's parameters, flat ``(n,)`` (free with a
        kept double-backward graph, one forward/backward otherwise)."""
        return vec.flatten(self._gradient())

    def _gradient(self) -> vec.Vec:
        if self._graph is not None:
            return tuple(t.detach() for t in self._graph[1])
        with rng_guard(self.device):
            return self.obj.grad(self.obj.theta)

    # -- double backward --------------------------------------------------------------------------
    def _mv_double_backward(self, v: vec.Vec) -> vec.Vec:
        if self._graph is not None:
            leaves, g = self._graph
            return _grad(g, leaves, v, retain_graph=True)
        return self._mv_fresh(v)

    def _mv_fresh(self, v: vec.Vec) -> vec.Vec:
        out = None
        for i in range(len(self.obj.batches)):
            leaves = self.obj.leaves()
            g = _grad(self.obj.loss(leaves, i), leaves, create_graph=True)
            hv = _grad(g, leaves, v)
            out = hv if out is None else vec.add(out, hv)
        return out

    # -- forward over reverse ---------------------------------------------------------------------
    def _grad_fn(self, i: int):
        return torch.func.grad(lambda th: self.obj.loss(th, i))

    def _mm_jvp(self, V: vec.Vec) -> vec.Vec:
        theta = self.obj.theta
        out = None
        for i in range(len(self.obj.batches)):
            gf = self._grad_fn(i)
            if self.jvp_mode == "forward-over-reverse":
                try:
                    hv = torch.func.vmap(lambda v, gf=gf: torch.func.jvp(gf, (theta,), (v,))[1],
                                         chunk_size=self.block)(V)
                except (RuntimeError, NotImplementedError) as e:
                    if "randomness" in str(e):
                        raise NonDeterministicModelError(
                            "the model draws random numbers in its forward pass (seen by vmap): dropout or "
                            "another stochastic layer is active; call model.eval() first") from e
                    # no forward-mode rule: F.mse_loss(reduction="mean")'s backward ("ZeroTensors are
                    # immutable"), or an out= op such as spectral_norm's power iteration ("forward AD")
                    if "ZeroTensor" not in str(e) and "forward AD" not in str(e):
                        raise
                    self.jvp_mode = "reverse-over-reverse"
            if self.jvp_mode == "reverse-over-reverse":
                _, vjp_fn = torch.func.vjp(gf, theta)
                hv = torch.func.vmap(lambda v, f=vjp_fn: f(v)[0], chunk_size=self.block)(V)
            out = hv if out is None else vec.add(out, hv)
        return tuple(out)

    # -- central differences ----------------------------------------------------------------------
    def _mv_fd(self, v: vec.Vec) -> vec.Vec:
        vn = vec.norm(v)
        if float(vn) == 0:
            return vec.zeros_like(v)
        h = self.fd_step * max(1.0, float(vec.norm(self.obj.theta))) / float(vn)
        gp = self.obj.grad(vec.axpy(h, v, self.obj.theta))
        gm = self.obj.grad(vec.axpy(-h, v, self.obj.theta))
        return vec.scale(1 / (2 * h), vec.sub(gp, gm))

    # -- dispatch ---------------------------------------------------------------------------------
    def _mv(self, v: vec.Vec) -> vec.Vec:
        if self.backend == "double_backward":
            return self._mv_double_backward(v)
        if self.backend == "jvp":
            return tuple(t[0] for t in self._mm_jvp(tuple(t.unsqueeze(0) for t in v)))
        return self._mv_fd(v)

    def _mm(self, V: vec.Vec) -> vec.Vec:
        if self.backend == "jvp":
            return self._mm_jvp(V)
        return super()._mm(V)

    def restrict(self, params: Spec, *, exclude: Spec = None) -> HessianOperator:
        """The Hessian block of a subset of this operator's parameters (same data and backend);
        ``params`` / ``exclude`` are specs of :func:`overparam.select` over the model.

        Example:
            >>> H.restrict("0").names  # doctest: +SKIP
            ['0.weight', '0.bias']
        """
        sub = parameter_names(self.obj.model, params, exclude)
        unknown = sorted(set(sub) - set(self.obj.names))
        if unknown:
            raise ValueError(f"params selects {unknown}, which are not among this operator's parameters {self.obj.names}")
        return HessianOperator(self.obj.model, self.obj.loss_fn, self.obj.batches, params=exactly(sub),
                               backend=self.backend, reduction=self.obj.reduction, retain_graph=self.retain, block=self.block,
                               fd_step=self.fd_step)


def hessian(model: nn.Module, loss_fn: Callable, data, **kwargs) -> HessianOperator:
    """Shorthand for :class:`HessianOperator` ``(model, loss_fn, data, **kwargs)``."""
    return HessianOperator(model, loss_fn, data, **kwargs)


def blocks(model: nn.Module, loss_fn: Callable, data, *, params: Spec = None, exclude: Spec = None,
           **kwargs) -> dict[str, HessianOperator]:
    """The diagonal Hessian blocks, one per layer: ``{module name: HessianOperator}`` for every
    module that directly owns selected parameters (e.g. ``"0"`` for ``0.weight`` and ``0.bias``).

    Example:
        >>> net = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.Tanh(), torch.nn.Linear(3, 1)).double()
        >>> x, y = torch.randn(5, 2, dtype=torch.float64), torch.randn(5, 1, dtype=torch.float64)
        >>> {k: H.n for k, H in blocks(net, torch.nn.functional.mse_loss, (x, y)).items()}
        {'0': 9, '2': 4}
    """
    names = parameter_names(model, params, exclude)
    groups: dict[str, list[str]] = {}
    for k in names:
        groups.setdefault(k.rpartition(".")[0], []).append(k)
    return {mod: HessianOperator(model, loss_fn, data, params=exactly(ks), **kwargs) for mod, ks in groups.items()}
