"""The Hessian-vector product backends, registered as implementations of the routine ``"hvp"``
in :mod:`overparam.backend.dispatch` (``op.backend.implementations("hvp")`` lists them).

* ``"double_backward"`` (the reference; ``"auto"`` off CUDA): one ``autograd.grad(loss, θ,
  create_graph=True)`` whose graph is kept and reused by every product ``∇(gᵀv)`` (PyHessian's
  scheme, without its per-call overhead). With a multi-batch loader the graphs of all batches
  are kept when ``retain_graph=True`` (default for up to 8 batches), otherwise rebuilt per product.
* ``"jvp"`` (``"auto"`` on CUDA): forward-over-reverse ``jvp(grad(L))`` from ``torch.func``,
  ``vmap``-ed over a block of probe vectors. Where torch has no forward-mode rule
  (``F.mse_loss`` with mean reduction raises "ZeroTensors are immutable" in torch 2.13; out= ops
  such as spectral_norm's train-mode power iteration raise "forward AD ... not supported") it
  switches to a ``vmap``-ed reverse-over-reverse ``vjp(grad(L))`` and records that in ``mode``.
* ``"finite_difference"``: central differences ``(∇L(θ+hv) − ∇L(θ−hv)) / 2h`` (second-order
  accurate; for checking, and for models without double-backward support; never ``"auto"``).

A backend is a class built as ``Backend(obj, *, retain_graph, block, fd_step)`` from an
:class:`~overparam.hessian._model.Objective` with the methods of :class:`Products`; adding one
is that class plus one :func:`~overparam.backend.dispatch.register` call at the end of this file.

Example:
    >>> import overparam as op
    >>> [i.name for i in op.backend.implementations("hvp")]
    ['double_backward', 'jvp', 'finite_difference']
"""

from __future__ import annotations

import torch

from ..backend import dispatch, vec
from ._model import NonDeterministicModelError, Objective, check_agree, check_deterministic, grad

__all__ = ["Products", "DoubleBackward", "Jvp", "FiniteDifference"]


def _exact_reductions(device: torch.device) -> bool:
    """Whether two forward/backward passes give bit-identical gradients on ``device`` (CPU kernels
    are deterministic). On GPUs, atomic reductions may differ in the last bits, and near a minimum
    the small gradient is a sum of cancelling terms: the construction check then compares two
    Hessian-vector products (no cancellation) instead of two gradients."""
    return device.type == "cpu"


class Products:
    """What a backend provides: ``mv(v)`` (a parameter-shaped vector), ``mm(V)`` (a batched one,
    entries ``(B, *shape_i)``; default a loop over ``mv``), ``gradient()`` and ``check()`` (raise
    :class:`NonDeterministicModelError` unless two products from fresh forward passes agree)."""

    name = ""

    def __init__(self, obj: Objective, *, retain_graph: bool | None = None, block: int = 16,
                 fd_step: float | None = None):
        self.obj, self.retain_graph, self.block, self.fd_step = obj, retain_graph, block, fd_step

    def mv(self, v: vec.Vec) -> vec.Vec:
        raise NotImplementedError

    def mm(self, V: vec.Vec) -> vec.Vec:
        return vec.stack([self.mv(v) for v in vec.unstack(V)])

    def gradient(self) -> vec.Vec:
        return self.obj.grad(self.obj.theta)

    def check(self) -> None:
        check_deterministic(self.mv, self.mv, self.obj, what="Hessian-vector")


class DoubleBackward(Products):
    name = "double_backward"

    def __init__(self, obj: Objective, **options):
        super().__init__(obj, **options)
        self.retain = self.retain_graph if self.retain_graph is not None else len(obj.batches) <= 8
        self.graph = None
        if self.retain:
            leaves = obj.leaves()
            self.graph = (leaves, grad(obj.total_loss(leaves), leaves, create_graph=True))

    def mv(self, v: vec.Vec) -> vec.Vec:
        if self.graph is None:
            return self.mv_fresh(v)
        leaves, g = self.graph
        return grad(g, leaves, v, retain_graph=True)

    def mv_fresh(self, v: vec.Vec) -> vec.Vec:
        out = None
        for i in range(len(self.obj.batches)):
            leaves = self.obj.leaves()
            hv = grad(grad(self.obj.loss(leaves, i), leaves, create_graph=True), leaves, v)
            out = hv if out is None else vec.add(out, hv)
        return out

    def gradient(self) -> vec.Vec:
        return tuple(t.detach() for t in self.graph[1]) if self.graph is not None else super().gradient()

    def check(self) -> None:
        if self.graph is None:
            return super().check()
        if _exact_reductions(self.obj.device):
            # the kept graph's gradient against a fresh forward/backward: a stochastic or stateful forward
            # changes the gradient as surely as the products (all later products reuse this one graph),
            # at a sixth of the cost of two Hessian-vector products
            check_agree(self.gradient(), self.obj.grad(self.obj.theta), self.obj,
                        what="gradients of fresh forward passes")
        else:  # a product from the kept graph against one from a fresh graph
            check_deterministic(self.mv, self.mv_fresh, self.obj, what="Hessian-vector")


class Jvp(Products):
    name = "jvp"

    def __init__(self, obj: Objective, **options):
        super().__init__(obj, **options)
        self.mode = "forward-over-reverse"  # "reverse-over-reverse" once torch lacks a forward rule

    def mv(self, v: vec.Vec) -> vec.Vec:
        return tuple(t[0] for t in self.mm(tuple(t.unsqueeze(0) for t in v)))

    def mm(self, V: vec.Vec) -> vec.Vec:
        theta, out = self.obj.theta, None
        for i in range(len(self.obj.batches)):
            gf = torch.func.grad(lambda th, i=i: self.obj.loss(th, i))
            if self.mode == "forward-over-reverse":
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
                    self.mode = "reverse-over-reverse"
            if self.mode == "reverse-over-reverse":
                _, vjp_fn = torch.func.vjp(gf, theta)
                hv = torch.func.vmap(lambda v, f=vjp_fn: f(v)[0], chunk_size=self.block)(V)
            out = hv if out is None else vec.add(out, hv)
        return tuple(out)


class FiniteDifference(Products):
    name = "finite_difference"

    def __init__(self, obj: Objective, **options):
        super().__init__(obj, **options)
        if self.fd_step is None:
            self.fd_step = torch.finfo(obj.theta[0].dtype).eps ** (1 / 3)

    def mv(self, v: vec.Vec) -> vec.Vec:
        vn = float(vec.norm(v))
        if vn == 0:
            return vec.zeros_like(v)
        h = self.fd_step * max(1.0, float(vec.norm(self.obj.theta))) / vn
        gp = self.obj.grad(vec.axpy(h, v, self.obj.theta))
        gm = self.obj.grad(vec.axpy(-h, v, self.obj.theta))
        return vec.scale(1 / (2 * h), vec.sub(gp, gm))


dispatch.register("hvp", DoubleBackward.name, DoubleBackward, priority=1)  # the reference: first registered
dispatch.register("hvp", Jvp.name, Jvp, priority={"cuda": 2})
dispatch.register("hvp", FiniteDifference.name, FiniteDifference, priority={})  # only when asked for
