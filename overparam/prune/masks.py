"""Unstructured masks from scores: exact kept counts, deterministic ties, global or layerwise.

Pruning ``s`` of ``n`` entries removes exactly ``P = floor(s·n + 1/2)`` of them: the ones with
the smallest scores, selected by :func:`overparam.backend.topk.topk_mask` (the library's one
count and tie rule). The threshold is the P-th smallest score (``torch.kthvalue``, or
:func:`overparam.backend.dist.global_kth_value` when the scores are sharded over ranks);
entries strictly below it are pruned, and among entries *equal* to it the ones that come
first in flat order (parameters in dict order, then row-major; then rank order when
distributed) are pruned until exactly P are. A ``<=`` threshold would over-prune ties
(72.5% instead of 50% on integer-valued weights).

Example:
    >>> import torch
    >>> s = {"a": torch.tensor([1., 1., 1., 1.]), "b": torch.tensor([0., 2.])}
    >>> m = unstructured(s, 0.5)
    >>> m["a"].tolist(), m["b"].tolist()
    ([False, False, True, True], [False, True])
"""

from __future__ import annotations

import functools
from collections.abc import Mapping

import torch
from torch import Tensor, nn

from ..backend import dist as _dist
from ..backend.checks import check_float, check_fraction
from ..backend.select import Spec
from ..backend.topk import fraction_count, topk_mask
from .targets import Masks, check_masks, resolve_overrides
from .targets import targets as _targets

__all__ = ["n_pruned", "check_sparsity", "prune_smallest", "unstructured", "magnitude"]

SCOPES = ("global", "layerwise")


def check_sparsity(sparsity: float, name: str = "sparsity") -> float:
    """Return ``sparsity`` as a float, raising ``ValueError`` unless it lies in [0, 1)."""
    return check_fraction(sparsity, name, high_open=True)


def check_scope(scope: str) -> str:
    """Return ``scope``, raising ``ValueError`` unless it is ``"global"`` or ``"layerwise"``."""
    if scope not in SCOPES:
        raise ValueError(f"scope must be 'global' or 'layerwise', got {scope!r}")
    return scope


def n_pruned(sparsity: float, n: int) -> int:
    """Number of entries pruned from ``n`` at ``sparsity``: ``floor(s·n + 1/2)``
    (:func:`overparam.backend.topk.fraction_count`).

    Example:
        >>> n_pruned(0.5, 5), n_pruned(0.2, 10)
        (3, 2)
    """
    return fraction_count(check_sparsity(sparsity), n)


def prune_smallest(flat: Tensor, k: int, *, group=_dist.LOCAL) -> Tensor:
    """Bool keep-mask ``(n,)`` pruning exactly the ``k`` smallest entries of ``flat`` ``(n,)``:
    the complement of :func:`overparam.backend.topk.topk_mask` ``(flat, k, largest=False)``.

    Ties at the threshold are pruned in index order (then rank order across a process group,
    where ``k`` counts entries over all ranks). Scores may contain ``-inf`` (pruned first), not NaN.
    ``k = 0`` prunes nothing.

    Example:
        >>> prune_smallest(torch.tensor([3., 1., 1., 2.]), 2).tolist()
        [True, False, False, True]
    """
    check_float(flat, "flat")
    if not _dist.is_distributed(group) and isinstance(k, int) and not 0 <= k <= flat.numel():
        raise ValueError(f"k must be in [0, {flat.numel()}] (the size of flat), got {k}")
    if bool(torch.isnan(flat).any()):
        raise ValueError("flat contains NaN")
    return _prune_smallest(flat, k, group)


def _prune_smallest(flat: Tensor, k: int, group=_dist.LOCAL) -> Tensor:
    """:func:`prune_smallest` without the argument checks (the callers made the scores)."""
    return ~topk_mask(flat.reshape(-1), k, largest=False, group=group)


def _with_previous(name: str, s: Tensor, previous: Mapping[str, Tensor] | None) -> Tensor:
    check_float(s, "scores")
    if previous is None or name not in previous:
        return s
    return s.masked_fill(~previous[name], float("-inf"))


def unstructured(
    scores: Mapping[str, Tensor],
    sparsity: float,
    *,
    scope: str = "global",
    overrides: Mapping[str, float] | None = None,
    previous: Mapping[str, Tensor] | None = None,
    group=_dist.LOCAL,
) -> Masks:
    """Keep the highest-scoring entries; prune exactly ``floor(s·n + 1/2)`` per scope.

    Args:
        scores: name → score tensor (any shape, floating point); higher = more important.
        sparsity: fraction pruned, in [0, 1).
        scope: ``"global"`` (one threshold over all tensors not overridden) or ``"layerwise"``.
        overrides: ``{name or glob: sparsity}``; the tensors a key selects (by name, or by the
            name of a module containing them: ``"fc"`` selects ``"fc.weight"``) are pruned on
            their own at that sparsity, outside the global pool. A key that selects no tensor
            raises ``ValueError``. (Model-level functions take any selection spec as a key.)
        previous: masks of an earlier round: entries already pruned stay pruned (monotone masks);
            raises if the new sparsity would revive some.
        group: ``LOCAL`` (default: the scores of this process alone, also under DDP, whose weights are
            replicated), or the process group (``None``: the world) whose ranks each hold a shard of
            the scores (global scope only).

    Returns:
        name → bool mask of each score's shape.

    Reference: S. Han, J. Pool, J. Tran & W. J. Dally, "Learning both Weights and Connections for Efficient Neural
        Networks" (NeurIPS 2015)

    Example:
        >>> m = unstructured({"w": torch.arange(10.)}, 0.3, scope="layerwise")
        >>> int((~m["w"]).sum())
        3
    """
    if not isinstance(scores, Mapping) or not scores:
        raise ValueError("scores must be a non-empty dict name -> score tensor")
    return _unstructured(scores, sparsity, scope, resolve_overrides(overrides, scores), previous, group)


def _unstructured(scores: Mapping[str, Tensor], sparsity: float, scope: str, own_sparsity: dict[str, float],
                  previous: Mapping[str, Tensor] | None, group) -> Masks:
    """:func:`unstructured` with ``overrides`` already resolved to ``{name: sparsity}``."""
    check_scope(scope)
    check_sparsity(sparsity)
    if not scores:
        raise ValueError("scores is empty")
    out: Masks = {}
    pool: list[str] = []
    for name, s in scores.items():
        if previous is not None and name in previous and previous[name].shape != s.shape:
            raise ValueError(f"previous[{name!r}] has shape {tuple(previous[name].shape)}, scores {tuple(s.shape)}")
        own = own_sparsity.get(name)
        if own is None and scope == "global":
            pool.append(name)
            continue
        sp = sparsity if own is None else own
        s2 = _with_previous(name, s, previous)
        k = n_pruned(sp, s2.numel())
        _check_monotone(name, k, previous)
        out[name] = _prune_smallest(s2, k).reshape(s.shape)
    if pool:
        flats = [_with_previous(n, scores[n], previous).reshape(-1) for n in pool]
        dt = functools.reduce(torch.promote_types, [f.dtype for f in flats])
        flat = torch.cat([f.to(dt) for f in flats])
        total = int(_dist.all_reduce_vec((torch.tensor([flat.numel()], device=flat.device),), group=group)[0])
        k = n_pruned(sparsity, total)
        if previous is not None:
            already = sum(int(torch.count_nonzero(~previous[n])) for n in pool if n in previous)
            if already > k:
                raise ValueError(f"sparsity {sparsity} prunes {k} entries but {already} are already pruned in previous")
        keep = _prune_smallest(flat, k, group)
        for n, part in zip(pool, torch.split(keep, [f.numel() for f in flats])):
            out[n] = part.reshape(scores[n].shape)
    return {n: out[n] for n in scores}


def _check_monotone(name: str, k: int, previous) -> None:
    if previous is not None and name in previous:
        already = int(torch.count_nonzero(~previous[name]))
        if already > k:
            raise ValueError(f"{name}: prunes {k} entries but {already} are already pruned in previous")


def magnitude(
    model: nn.Module,
    sparsity: float,
    *,
    targets: Spec = None,
    exclude: Spec = None,
    scope: str = "global",
    overrides: Mapping | None = None,
    previous: Mapping[str, Tensor] | None = None,
    group=_dist.LOCAL,
) -> Masks:
    """Magnitude masks ``|θ|`` for the model's prunable weights.

    Args:
        model: any module.
        sparsity: fraction pruned, in [0, 1).
        targets, exclude: which weights (:func:`~overparam.prune.targets.targets`; default the
            weight of every Linear/Conv).
        scope: ``"global"`` or ``"layerwise"`` (see :func:`unstructured`).
        overrides: ``{spec: sparsity}``; the targets a key selects (any selection spec,
            resolved by :func:`overparam.backend.select.matches`) are pruned on their own.
            Every key must select a target.
        previous: masks of an earlier round (monotone masks); group: as :func:`unstructured`.

    Reference: S. Han, J. Pool, J. Tran & W. J. Dally, "Learning both Weights and Connections for Efficient Neural
        Networks" (NeurIPS 2015)

    Example:
        >>> net = torch.nn.Linear(10, 10)
        >>> m = magnitude(net, 0.8)
        >>> int(m["weight"].sum())
        20
    """
    params = _targets(model, targets, exclude=exclude)
    if previous is not None:
        check_masks(previous, params, "previous")
    scores = {k: p.detach().abs() for k, p in params.items()}
    own = resolve_overrides(overrides, params, model=model)
    return _unstructured(scores, sparsity, scope, own, previous, group)
