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

from ..backend.checks import check_rank
from ..backend.random import GeneratorLike
from . import scores as S
from ..backend.select import Spec
from .masks import _unstructured, check_sparsity
from .schedules import exponential
from .targets import Masks, resolve_overrides
from .targets import targets as _targets

__all__ = ["METHODS", "synflow", "prune_at_init"]

METHODS = ("magnitude", "random", "snip", "grasp", "synflow", "obd")


def synflow(model: nn.Module, sparsity: float, *, input_shape: Sequence[int], iterations: int = 100,
            targets: Spec = None, exclude: Spec = None, scope: str = "global", overrides: dict | None = None) -> Masks:
    """Iterative SynFlow masks (Tanaka et al. 2020) at ``sparsity`` after ``iterations`` rounds.

    ``targets``, ``exclude``, ``scope`` and ``overrides`` as in :func:`~overparam.prune.masks.magnitude`
    (an override's sparsity is reached along the same exponential schedule).

    Returns:
        masks ``{"<layer>.weight": bool tensor of the weight's shape}`` (data-free: only
        ``input_shape``, the shape of one input without the batch dimension, is needed).

    Reference: Tanaka, Kunin, Yamins and Ganguli, "Pruning neural networks without any data by
    iteratively conserving synaptic flow", NeurIPS 2020.

    Example:
        >>> import torch
        >>> net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
        >>> masks = synflow(net, 0.5, input_shape=(4,), iterations=5)
        >>> {k: tuple(v.shape) for k, v in masks.items()}, sum(int(v.sum()) for v in masks.values())
        ({'0.weight': (8, 4), '2.weight': (2, 8)}, 24)
    """
    check_rank(iterations, name="iterations")  # an int >= 1
    names = list(_targets(model, targets, exclude=exclude))
    own = resolve_overrides(overrides, names, model=model)
    final = check_sparsity(sparsity)
    masks = None
    for t, s in enumerate(exponential(final, iterations), start=1):
        sc = S.synflow_scores(model, input_shape, masks=masks, targets=targets, exclude=exclude)
        step_own = {k: 1.0 - (1.0 - v) ** (t / iterations) for k, v in own.items()}
        masks = _unstructured(sc, s, scope, step_own, masks, None)
    return masks


def prune_at_init(model: nn.Module, method: str, sparsity: float, *, loss_fn=None, data=None,
                  input_shape: Sequence[int] | None = None, iterations: int = 100, targets: Spec = None,
                  exclude: Spec = None, scope: str = "global", overrides: dict | None = None,
                  generator: GeneratorLike = None) -> Masks:
    """Masks by ``method`` in :data:`METHODS` at ``sparsity`` (the pruned fraction).

    ``generator=None``: the construction rule for ``"random"``, the measurement rule for obd's
    probes (docs/index.md, Randomness).

    Args:
        loss_fn, data: for snip, grasp, obd (``data`` one ``(inputs, targets)`` batch).
        input_shape, iterations: for synflow. generator: for random and obd's probes.
        targets, exclude, scope, overrides: as in :func:`~overparam.prune.masks.magnitude`.

    Returns:
        masks ``{"<layer>.weight": bool tensor of the weight's shape}``.

    Reference: Lee, Ajanthan and Torr, "SNIP: single-shot network pruning based on connection
    sensitivity", ICLR 2019; Wang, Zhang and Grosse, "Picking winning tickets before training by
    preserving gradient flow" (GraSP), ICLR 2020; Tanaka et al. 2020 (SynFlow).

    Example:
        >>> import torch
        >>> net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
        >>> data = (torch.randn(16, 4), torch.randint(0, 2, (16,)))
        >>> masks = prune_at_init(net, "snip", 0.75, loss_fn=torch.nn.functional.cross_entropy, data=data)
        >>> sum(int(v.sum()) for v in masks.values()), sum(v.numel() for v in masks.values())
        (12, 48)
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    check_rank(iterations, name="iterations")  # an int >= 1, checked whatever the method
    if method in ("snip", "grasp", "obd") and (loss_fn is None or data is None):
        raise ValueError(f"method {method!r} needs loss_fn and data")
    sel = {"targets": targets, "exclude": exclude}
    if method == "synflow":
        if input_shape is None:
            raise ValueError("method 'synflow' needs input_shape")
        return synflow(model, sparsity, input_shape=input_shape, iterations=iterations, scope=scope,
                       overrides=overrides, **sel)
    if method == "magnitude":
        sc = S.magnitude_scores(model, **sel)
    elif method == "random":
        sc = S.random_scores(model, generator=generator, **sel)
    elif method == "snip":
        sc = S.snip_scores(model, loss_fn, data, **sel)
    elif method == "grasp":
        sc = {k: -v for k, v in S.grasp_scores(model, loss_fn, data, **sel).items()}
    else:
        sc = S.obd_scores(model, loss_fn, data, probes=8, generator=generator, **sel)
    return _unstructured(sc, sparsity, scope, resolve_overrides(overrides, sc, model=model), None, None)
