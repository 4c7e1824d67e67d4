"""Channel layouts of a tensor and how shape ops move them (private to :mod:`overparam.prune._depgraph`).

A :class:`Layout` says which dims of a tensor index a space of channels. :func:`reshaped`,
:func:`reduced` and :func:`indexed` map a layout through a reshape, a reduction or basic
indexing, returning ``None`` when the op mixes or drops channels (the caller then refuses
to remove channels of that space, naming the op).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class Layout:
    """Dims ``dims`` of a tensor (most significant first) index a space: flat index ``f`` over
    them covers the channels ``[f·block, (f+1)·block)`` (heads) and ``repeat`` consecutive ``f``
    share one channel (a flattened ``C×H×W``)."""

    space: int
    dims: tuple[int, ...]
    block: int = 1
    repeat: int = 1


def reshaped(lx: Layout, sin: tuple[int, ...], sout: tuple[int, ...]) -> Layout | None:
    """``lx`` through a reshape ``sin → sout``: the tracked dims must form the leading part of one
    group of dims (trailing untracked dims of the group are flattened into ``repeat``)."""
    groups = _groups(sin, sout)
    dims = sorted(lx.dims)
    if groups is None or list(lx.dims) != dims:
        return None
    for gi, go in groups:
        if set(gi) & set(dims):
            tracked = [d for d in gi if d in dims]
            lead, trail = gi[:gi.index(tracked[0])], gi[gi.index(tracked[-1]) + 1:]
            if set(dims) - set(gi) or tracked != list(range(tracked[0], tracked[-1] + 1)) or lead or (
                    trail and len(go) != 1):
                return None
            return Layout(lx.space, tuple(go), lx.block, lx.repeat * math.prod(sin[d] for d in trail))
    return None


def reduced(lx: Layout, nd: int, dim, keepdim: bool) -> Layout | None:
    """``lx`` through a reduction over ``dim`` (None: all dims); None if it reduces a tracked dim."""
    dims = set(range(nd)) if dim is None else {d % nd for d in (dim if isinstance(dim, (list, tuple)) else [dim])}
    if dims & set(lx.dims):
        return None
    if keepdim:
        return lx
    return Layout(lx.space, tuple(d - sum(r < d for r in dims) for d in lx.dims), lx.block, lx.repeat)


def indexed(lx: Layout, nd: int, index) -> Layout | None:
    """``lx`` through basic indexing ``x[index]`` (ints, slices, None, ...); None unless every tracked
    dim is taken whole (``:``)."""
    idx = index if isinstance(index, tuple) else (index,)
    if any(not (i is None or i is Ellipsis or type(i) in (int, slice)) for i in idx) or sum(
            i is Ellipsis for i in idx) > 1:
        return None
    real = sum(i is not None and i is not Ellipsis for i in idx)
    if any(i is Ellipsis for i in idx):
        e = [k for k, i in enumerate(idx) if i is Ellipsis][0]
        idx = idx[:e] + (slice(None),) * (nd - real) + idx[e + 1:]
    idx = idx + (slice(None),) * (nd - sum(i is not None for i in idx))
    where, d_in, d_out = {}, 0, 0
    for i in idx:
        if i is None:
            d_out += 1
            continue
        if d_in in lx.dims and i != slice(None):
            return None
        if type(i) is slice:
            where[d_in] = d_out
            d_out += 1
        d_in += 1
    return Layout(lx.space, tuple(where[d] for d in lx.dims), lx.block, lx.repeat)


def _new_sizes(g, lay: Layout, shape: tuple[int, ...], keep: Tensor, node) -> dict[int, int]:
    k = keep.repeat_interleave(lay.repeat)
    if lay.block > 1:
        kb = k.reshape(-1, lay.block)
        if not bool((kb == kb[:, :1]).all()):
            raise ValueError(f"masks: the removed channels are not whole heads of {lay.block} at node {node.name}")
        k = kb[:, 0]
    sizes = [shape[d] for d in lay.dims]
    k = k.reshape(sizes)
    out = {}
    for i, d in enumerate(lay.dims):
        out[d] = int(k.movedim(i, 0).reshape(sizes[i], -1).any(1).sum())
    if math.prod(out.values()) != int(k.sum()):
        raise ValueError(f"masks: the removed channels do not form a box over dims {lay.dims} at node {node.name} "
                         "(e.g. different channels removed in different heads)")
    return out


def fix_views(g, keep: dict[int, Tensor]) -> None:
    """Rewrite the sizes of ``view``/``reshape`` and ``split`` calls in ``g.gm`` on tensors whose channels shrank
    (``keep``: root space of ``g`` → kept channels)."""
    for node, parts in g.split.items():
        n = [int(keep[g.find(lay.space)].sum()) for lay in parts]
        if node.target in ("split", torch.split):
            node.args = (node.args[0], n[0] if len(set(n)) == 1 else n, *node.args[2:])
        elif len(set(n)) != 1:
            raise ValueError(f"masks: the parts of node {node.name} would differ in size {n}; chunk needs equal parts")
    for node, lay in g.layout.items():
        if lay is None or g.find(lay.space) not in keep or bool(keep[g.find(lay.space)].all()):
            continue
        sizes = _new_sizes(g, lay, tuple(g.values[node].shape), keep[g.find(lay.space)], node)
        name = node.target if node.op == "call_method" else getattr(node.target, "__name__", "")
        if name not in ("view", "reshape"):
            continue
        args = list(node.args)
        shape_args = args[1:] if not (len(args) == 2 and isinstance(args[1], (list, tuple))) else list(args[1])
        for d, n in sizes.items():   # a size read at run time (x.shape) is the old width: replaced too
            if d < len(shape_args) and not (isinstance(shape_args[d], int) and shape_args[d] == -1):
                shape_args[d] = n
        node.args = (args[0], *shape_args) if not (len(args) == 2 and isinstance(args[1], (list, tuple))) else (
            args[0], tuple(shape_args))

def _groups(sin: tuple[int, ...], sout: tuple[int, ...]) -> list[tuple[list[int], list[int]]] | None:
    """Pair the dims of a reshape ``sin → sout`` into groups of equal size (dims of size 1 skipped)."""
    ia = [d for d, s in enumerate(sin) if s != 1]
    oa = [d for d, s in enumerate(sout) if s != 1]
    groups, i, j = [], 0, 0
    while i < len(ia) and j < len(oa):
        gi, go = [ia[i]], [oa[j]]
        pi, po = sin[ia[i]], sout[oa[j]]
        i, j = i + 1, j + 1
        while pi != po:
            if pi < po:
                if i >= len(ia):
                    return None
                gi.append(ia[i])
                pi, i = pi * sin[ia[i]], i + 1
            else:
                if j >= len(oa):
                    return None
                go.append(oa[j])
                po, j = po * sout[oa[j]], j + 1
        groups.append((gi, go))
    return groups if i == len(ia) and j == len(oa) else None
