"""Products of :class:`~overparam.hessian.DistributedOperator` on sharded vectors (``vectors="sharded"``).

The input (DTensor tuples in the operator's layout, this rank's shards, or its flat coordinates) is
checked on each rank without raising there: a rank whose input is bad says so inside the product's
all-gather (a status entry), so every rank raises the same ``ValueError`` and none is left waiting
in a collective. The product itself: all-gather ``v`` (one collective), the local exact product on
this rank's data, reduce-scatter of the sample-weighted result (one collective).
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..backend import dist, vec


def _parse(op, x, batched: bool):
    """``(flat (B, n_local) or None, form, reason)`` for a product's input ``x``."""
    sp, lead = op.space, int(batched)
    try:
        if isinstance(x, Tensor) and not dist.is_dtensor(x):
            want = (op.n, x.shape[-1] if x.ndim == 2 else -1) if batched else (op.n,)
            if tuple(x.shape) != want:
                raise ValueError(f"a flat {'block' if batched else 'vector'} of this rank's coordinates must have "
                                 f"shape ({op.n}{', B' if batched else ''}), got {tuple(x.shape)}")
            flat, form = (x.mT if batched else x[None]), "flat"
        else:
            xs = vec.as_vec(x, name="v")
            if len(xs) != len(sp.shapes):
                raise ValueError(f"v has {len(xs)} entries but the operator acts on {len(sp.shapes)} parameters")
            kinds = {dist.is_dtensor(t) for t in xs}
            if kinds == {True}:
                for i, (t, p, d) in enumerate(zip(xs, sp.layout, sp.dims)):
                    if (t.device_mesh != p.device_mesh or dist.shard_dim(t, f"v[{i}]") != d + lead
                            or t.shape[lead:] != sp.shapes[i] or t.ndim != len(sp.shapes[i]) + lead):
                        raise ValueError(f"v[{i}] is laid out as {t.placements} {tuple(t.shape)}, the operator's "
                                         f"parameter as {p.placements} {tuple(p.shape)}{' with a batch dim' * lead}")
                locs, form = [t.to_local() for t in xs], "dtensor"
            elif kinds == {False}:
                for i, (t, s) in enumerate(zip(xs, sp.local_shapes)):
                    if t.shape[lead:] != s or t.ndim != len(s) + lead:
                        raise ValueError(f"v[{i}] has shape {tuple(t.shape)}, this rank's shard is {tuple(s)}")
                locs, form = xs, "local"
            else:
                raise ValueError("v mixes DTensors and plain tensors")
            flat = vec.flatten(locs, batch=True) if batched else vec.flatten(locs)[None]
        if flat.dtype != op.dtype:
            raise TypeError(f"v has dtype {flat.dtype}, the operator {op.dtype} (nothing is cast silently)")
        return flat.to(op.device).contiguous(), form, ""
    except (TypeError, ValueError) as err:
        return None, "", str(err)


def _product(op, full: Tensor, batched: bool) -> Tensor:
    like = op.local.like
    if batched:
        return vec.flatten(op.local._mm(vec.unflatten(full, like)), batch=True)
    return vec.flatten(op.local._mv(vec.unflatten(full[0], like)))[None]


def agreed_input(op, x, *, batched: bool) -> tuple[Tensor, str]:
    """``(flat (B, n_local), form)`` of ``x`` once every rank has agreed on the block size and on
    every rank's input being valid (one small gather); the same ``ValueError`` on every rank otherwise."""
    flat, form, reason = _parse(op, x, batched)
    dist.agree(None if flat is None else flat.shape[0], "the sharded vectors' layout (block size, or a bad "
               "input on some rank)", group=op.space.group)
    if flat is None:
        raise ValueError(f"ranks disagree on the vector layout: {reason}")
    return flat, form


def in_form(op, out: Tensor, form: str, *, batched: bool):
    """The flat local result ``out (B, n_local)`` in the input's ``form`` (flat, local shards or DTensors)."""
    if form == "flat":
        return out.mT if batched else out[0]
    parts = vec.unflatten(out if batched else out[0], op.space.local_shapes)
    return tuple(parts) if form == "local" else op.space.wrap(parts, batch=out.shape[0] if batched else None)


def sharded_call(op, x, *, batched: bool, trusted: bool = False):
    """``A x`` for ``op`` (a DistributedOperator with ``space``); ``trusted``: ``x`` is already flat
    ``(B, n_local)`` (internal calls) and the result is too; otherwise the result has ``x``'s form."""
    sp = op.space
    if trusted:
        return sp.scatter(_product(op, sp.gather(x), batched), op.weight)
    if batched:  # the block size fixes the collective's size: agree on it first
        flat, form = agreed_input(op, x, batched=True)
        full = sp.gather(flat)
    else:  # a bad input on one rank is reported through the gather's status entry
        flat, form, reason = _parse(op, x, batched)
        try:
            full = sp.gather(flat if flat is not None else torch.zeros(1, op.n, dtype=op.dtype, device=op.device),
                             ok=flat is not None)
        except ValueError as err:
            raise ValueError(f"{err}{'; on this rank: ' + reason if reason else ''}") from None
    return in_form(op, sp.scatter(_product(op, full, batched), op.weight), form, batched=batched)
