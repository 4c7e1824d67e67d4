"""Masks for models replicated (DDP) or sharded (FSDP2, DTensor parameters) over ranks.

* :func:`global_magnitude`: the global magnitude mask of :func:`~overparam.prune.masks.magnitude`
  (exactly ``floor(s·n + 1/2)`` pruned over all targets, ties pruned in flat order: parameters in
  order, then row-major) on every rank. Replicated parameters (plain or DDP-wrapped model): the
  local masks, checked identical across ranks. FSDP2 parameters (``Shard(0)`` on a 1-D mesh):
  the exact global threshold by :func:`overparam.backend.dist.global_kth_value` on the local
  shards, and the tied entries at the threshold pruned in the single-process order (parameter,
  then rank, then row-major), so the masks equal the single-process masks of the full weights
  bit for bit; they are DTensors with their parameter's layout.
* :func:`distributed_nm_masks`: N:M masks of local shards when every shard holds whole groups
  (a clear ``ValueError`` otherwise); DTensors with the parameter's layout.

DTensor masks apply to their sharded parameters with :func:`~overparam.prune.apply.apply_masks_`
(``p.mul_(mask)`` acts on the local shards).

Example:
    >>> import torch
    >>> net = torch.nn.Linear(4, 2)
    >>> m = global_magnitude(net, 0.5)
    >>> int(m["weight"].sum())
    4
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..backend import dist
from ..backend.nm import nm_mask
from ..backend.select import Spec
from .masks import check_sparsity, magnitude, n_pruned
from .nm import nm_dims, nm_masks
from .targets import Masks
from .targets import targets as _targets

__all__ = ["global_magnitude", "distributed_nm_masks"]


def _mask_fingerprint(masks: Masks) -> list:
    return [(k, tuple(m.shape), int(m.sum()), int((m.reshape(-1).to(torch.int64)
                                                   * torch.arange(1, m.numel() + 1)).sum())) for k, m in masks.items()]


def _params(model: nn.Module, targets: Spec, exclude: Spec) -> tuple[dict[str, Tensor], bool]:
    params = _targets(dist.unwrap(model), targets, exclude=exclude)
    kinds = {dist.is_dtensor(p) for p in params.values()}
    if len(kinds) > 1:
        raise ValueError("the targets mix DTensor (sharded) and plain parameters; select one kind with targets=/exclude=")
    return params, kinds == {True}


def global_magnitude(model: nn.Module, sparsity: float, *, targets: Spec = None, exclude: Spec = None,
                     group=None) -> Masks:
    """Global magnitude masks, identical on every rank and equal to the single-process masks.

    Args:
        model: a plain, DDP-wrapped or FSDP2 (``fully_shard``) module.
        sparsity: fraction pruned over all targets, in [0, 1).
        targets, exclude: which weights (:func:`~overparam.prune.targets.targets`).
        group: the process group (replicated parameters); sharded parameters use their mesh's.

    Returns:
        name → bool keep-mask: plain tensors of each weight's shape, or DTensors with the
        parameter's mesh and placements (local shape = the local shard's).

    Raises:
        ValueError: ranks hold different targets, shapes or masks; a non-``Shard(0)`` layout.

    Example:
        >>> net = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Linear(3, 2))   # one process: magnitude()
        >>> m = global_magnitude(net, 0.5); ref = magnitude(net, 0.5)
        >>> all(torch.equal(m[k], ref[k]) for k in ref), sum(int((~v).sum()) for v in m.values())   # 9 of 18
        (True, 9)
    """
    check_sparsity(sparsity)
    params, sharded = _params(model, targets, exclude)
    if not sharded:
        # group=LOCAL: the replicated weights are this rank's whole pool (group=None would count them once per rank)
        masks = magnitude(dist.unwrap(model), sparsity, targets=targets, exclude=exclude, group=dist.LOCAL)
        dist.agree(_mask_fingerprint(masks), "the magnitude masks (are the replicas' weights in sync?)", group=group)
        return masks
    names = list(params)
    for k in names:
        if dist.shard_dim(params[k], k) != 0:
            raise ValueError(f"{k}: global magnitude masks need Shard(0) placements (FSDP2's default), "
                             f"got {params[k].placements}")
    pg = params[names[0]].device_mesh.get_group()
    dist.agree([(k, tuple(params[k].shape)) for k in names], "the pruning targets and their shapes", group=pg)
    local = [params[k].to_local().detach().abs().reshape(-1) for k in names]
    flat = torch.cat(local)
    k_prune = n_pruned(sparsity, sum(params[k].numel() for k in names))
    if k_prune == 0:
        return {k: dist.dtensor_like(torch.ones_like(params[k].to_local(), dtype=torch.bool), params[k]) for k in names}
    t = dist.global_kth_value(flat, k_prune, group=pg)
    below = [s < t for s in local]
    tied = [s == t for s in local]
    counts = torch.tensor([[int(b.sum()) for b in below], [int(x.sum()) for x in tied]], dtype=torch.int64)
    allc = dist.all_gather(counts, group=pg)  # (world, 2, P)
    me = dist.rank(pg)
    left = k_prune - int(allc[:, 0].sum())  # tied entries to prune, in (parameter, rank, row-major) order
    out: Masks = {}
    for i, k in enumerate(names):
        before = int(allc[:, 1, :i].sum()) + int(allc[:me, 1, i].sum())
        take = max(0, min(left - before, int(counts[1, i])))
        prune = below[i] | (tied[i] & (torch.cumsum(tied[i], 0) <= take))
        out[k] = dist.dtensor_like((~prune).reshape(params[k].to_local().shape), params[k])
    return out


def distributed_nm_masks(model: nn.Module, n: int, m: int, *, targets: Spec = None, exclude: Spec = None) -> Masks:
    """N:M magnitude masks (:func:`~overparam.prune.nm.nm_masks`) computed on each rank's local
    shards; for replicated parameters, :func:`~overparam.prune.nm.nm_masks` itself.

    A shard holds whole groups when it is sharded along another dimension than the grouped one
    (the input dimension), or along it in chunks that are all multiples of ``m``.

    Raises:
        ValueError: some rank's shard splits a group of ``m`` (the message names the parameter).

    Example:
        >>> net = torch.nn.Linear(8, 2)   # one process (or DDP replicas): nm_masks()
        >>> m = distributed_nm_masks(net, 2, 4)["weight"]
        >>> m.shape, m.reshape(2, 2, 4).sum(-1).tolist(), torch.equal(m, nm_masks(net, 2, 4)["weight"])
        (torch.Size([2, 8]), [[2, 2], [2, 2]], True)
    """
    params, sharded = _params(model, targets, exclude)
    if not sharded:
        return nm_masks(dist.unwrap(model), n, m, targets=targets, exclude=exclude)
    dims = nm_dims(dist.unwrap(model), list(params))
    out: Masks = {}
    for k, p in params.items():
        loc = p.to_local().detach()
        sd, gd = dist.shard_dim(p, k), dims[k] % p.ndim
        if sd is not None and sd % p.ndim == gd:
            sizes = dist.all_gather(torch.tensor([loc.shape[gd]]), group=p.device_mesh.get_group())[:, 0].tolist()
            if any(s % m for s in sizes):
                raise ValueError(f"{k}: the shards along its grouped dim {gd} have sizes {sizes}, not all multiples "
                                 f"of m={m}: a shard would split an N:M group")
        out[k] = dist.dtensor_like(nm_mask(loc.abs(), n, m, dim=gd), p)
    return out
