"""The memory-true FSDP2 route: Hessian-vector products by central differences of gradients that
FSDP's own forward and backward compute, on sharded vectors, never gathering the full parameters.

``(∇L(θ + hv) − ∇L(θ − hv)) / 2h``: this rank's parameter shards are moved by ``±h·v`` (its shard
of ``v``), the model runs its FSDP forward/backward on the rank's batches (FSDP all-gathers each
layer's parameters for its forward and reduce-scatters the gradients, as in training), and the
gradient shards are read back; the shards and any ``.grad`` are restored bit for bit afterwards.
Each rank's loss is scaled by ``world · n_b / N`` so that FSDP's default gradient averaging yields
the gradient of the loss on all the data (a custom ``set_gradient_divide_factor`` is not supported).
Memory per rank: the model's shards, one copy of them, two gradient shards, FSDP's transient
per-layer gathers. The step is :class:`~overparam.hessian.hvp_backends.FiniteDifference`'s,
``h = eps^(1/3) · max(1, ‖θ‖) / ‖v‖``; docs/distributed.md records the measured error.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from ..backend import dist, sharded, vec
from ..backend.sharded import ShardedSpace
from ._model import _batch_size, parameter_names
from ._sharded import agreed_input, in_form
from .operators import Operator


class FSDPFiniteDifference(Operator):
    """The Hessian of ``loss_fn`` (a mean over each batch) on every rank's ``data`` for an FSDP2
    ``model``, on sharded vectors; see the module docstring."""

    def __init__(self, model: nn.Module, loss_fn: Callable, data, *, params=None, exclude=None,
                 samples=None, group=None, fd_step: float | None = None):
        self.model, self.loss_fn, self.group = model, loss_fn, group
        self.names = parameter_names(model, params, exclude)
        own = dict(model.named_parameters())
        self.params = [own[k] for k in self.names]
        self.space = ShardedSpace(self.params, group=group)
        self.like = self.space.local_shapes
        self.dtype, self.device = self.params[0].dtype, self.params[0].device
        is_batch = isinstance(data, (tuple, list)) and len(data) == 2 and isinstance(data[0], Tensor)
        self.batches = [tuple(data)] if is_batch else [tuple(b) for b in data]
        counts = [_batch_size(b[0]) for b in self.batches]
        share = dist.sample_weight(sum(counts), samples=samples, group=group)  # n_r / N
        self.scales = [dist.world_size(group) * share * c / sum(counts) for c in counts]
        self.weight = 1.0
        self.fd_step = torch.finfo(self.dtype).eps ** (1 / 3) if fd_step is None else float(fd_step)
        dist.agree([*self.space.shapes, *self.space.dims, self.fd_step], "the FSDP finite-difference operator",
                   group=group)

    def _shards(self) -> list[Tensor]:
        return [p.to_local() if dist.is_dtensor(p) else p for p in self.params]

    def _grad(self, shift: Tensor | None) -> Tensor:
        """This rank's shard of the all-data gradient at ``θ + shift`` (flat ``(n_local,)``)."""
        shards = self._shards()
        base = [s.detach().clone() for s in shards]
        saved = [p.grad for p in self.model.parameters()]
        try:
            with torch.no_grad():
                if shift is not None:
                    for s, d in zip(shards, vec.unflatten(shift, self.like)):
                        s.add_(d)
            for p in self.model.parameters():
                p.grad = None
            with torch.random.fork_rng(devices=[]):
                for (x, y), c in zip(self.batches, self.scales):
                    (self.loss_fn(self.model(x), y) * c).backward()
            gs = [torch.zeros(s, dtype=self.dtype, device=self.device) if p.grad is None else
                  (p.grad.to_local() if dist.is_dtensor(p.grad) else p.grad) for p, s in zip(self.params, self.like)]
            return vec.flatten(gs).clone()
        finally:
            with torch.no_grad():
                for s, b in zip(shards, base):
                    s.copy_(b)
            for p, g in zip(self.model.parameters(), saved):
                p.grad = g

    def _mv(self, v: vec.Vec) -> vec.Vec:
        x = vec.flatten(v)
        vn = float(sharded.norm(self.space, x))
        if vn == 0:
            return vec.zeros_like(v)
        tn = float(sharded.norm(self.space, vec.flatten(self._shards()).detach()))
        h = self.fd_step * max(1.0, tn) / vn
        out = (self._grad(h * x) - self._grad(-h * x)) / (2 * h)
        return vec.unflatten(out, self.like)

    def _call(self, x, batched: bool):
        flat, form = agreed_input(self, x, batched=batched)
        out = torch.stack([vec.flatten(self._mv(vec.unflatten(f, self.like))) for f in flat])
        return in_form(self, out, form, batched=batched)

    def matvec(self, v):
        return self._call(v, False)

    def matmat(self, V):
        return self._call(V, True)

    def gradient(self) -> Tensor:
        """This rank's shard of the all-data gradient, flat ``(n_local,)``."""
        return self._grad(None)
