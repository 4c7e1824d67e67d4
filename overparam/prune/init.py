"""Pruning at initialization: one call from a method name to masks (SNIP, GraSP, SynFlow, ...).

:func:`synflow` iterates SynFlow with the exponential schedule ``1 − d^{k/T}`` (recomputing
the scores on the masked float64 copy each round, masks monotone); :func:`prune_at_init`
dispatches on the method and handles GraSP's sign (it removes the largest ``−θ ⊙ Hg``).

Example:
    >>> import torch
    >>> net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    >>> m = synflow(net, 0.9, input_shape=(4,), iterations=10)
    >>> sum(int(v.sum()) for v in m.values())
    5
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from ..backend.random import GeneratorLike
from . import scores as S
from .masks import check_sparsity, unstructured
from .schedules import exponential
from .select import Masks

__all__ = ["METHODS", "synflow", "prune_at_init"]

METHODS = ("magnitude", "random", "snip", "grasp", "synflow", "obd")


def synflow(model: nn.Module, sparsity: float, *, input_shape: Sequence[int], iterations: int = 100,
            scope: str = "global", **select) -> Masks:
    """Iterative SynFlow masks (Tanaka et al. 2020) at ``sparsity`` after ``iterations`` rounds."""
    masks = None
    for s in exponential(check_sparsity(sparsity), iterations):
        sc = S.synflow_scores(model, input_shape, masks=masks, **select)
        masks = unstructured(sc, s, scope=scope, previous=masks)
    return masks


def prune_at_init(model: nn.Module, method: str, sparsity: float, *, loss_fn=None, batch=None,
                  input_shape: Sequence[int] | None = None, iterations: int = 100, scope: str = "global",
                  generator: GeneratorLike = None, **select) -> Masks:
    """Masks by ``method`` in :data:`METHODS` (``loss_fn``/``batch`` for snip, grasp, obd; ``input_shape``
    for synflow; ``generator`` for random)."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if method in ("snip", "grasp", "obd") and (loss_fn is None or batch is None):
        raise ValueError(f"method {method!r} needs loss_fn and batch")
    if method == "synflow":
        if input_shape is None:
            raise ValueError("method 'synflow' needs input_shape")
        return synflow(model, sparsity, input_shape=input_shape, iterations=iterations, scope=scope, **select)
    if method == "magnitude":
        sc = S.magnitude_scores(model, **select)
    elif method == "random":
        sc = S.random_scores(model, generator=generator, **select)
    elif method == "snip":
        sc = S.snip_scores(model, loss_fn, batch, **select)
    elif method == "grasp":
        sc = {k: -v for k, v in S.grasp_scores(model, loss_fn, batch, **select).items()}
    else:
        sc = S.obd_scores(model, loss_fn, batch, probes=8, generator=generator, **select)
    return unstructured(sc, sparsity, scope=scope)
