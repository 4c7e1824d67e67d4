"""Structural removal: turn structured masks into a physically smaller model computing the same function.

:func:`remove_pruned` traces a copy of the model with ``torch.fx``, builds the channel dependency graph
(:mod:`overparam.prune._depgraph`: which layers' channels are one *space*, joined through residual adds, gates and
attention products) and removes every channel whose producing rows are masked in **every** producer of its space,
or whose input columns are masked in every layer that reads it (in attention products: whole heads):

* output channels of a Linear, Conv or ConvTranspose (``mask[c] == False`` over the whole row / filter; dim 1 of a
  ConvTranspose weight), with the BatchNorm, depthwise Conv and next-layer columns that index them; a grouped Conv /
  ConvTranspose is regrouped (the same number of channels kept in every group it keeps; a group that loses all goes);
* hidden units of an MLP (the rows of the first Linear; gated MLPs: of both branches);
* attention heads of a hand-written attention (the rows of q, k and v for the head, or all its columns of the
  out-projection — the head then contributes nothing —, also of one fused q/k/v Linear that is ``split`` or
  ``chunk``-ed; views, masks and ``att @ v`` follow) and of ``nn.MultiheadAttention`` (its ``in_proj_weight`` or ``q/k/v_proj_weight`` rows of
  the head in q, k and v, or the head's columns of ``out_proj.weight``), replaced by :class:`PrunedMultiheadAttention`.

A removed channel of the masked model is not zero but a constant (the producer's bias through the BatchNorm and
activation): its contribution is folded into the consuming layer's bias (``b ← b + W[:, removed] c``; a bias is added
if the layer had none). A constant cannot be folded into a zero-padded Conv (borders see zeros): then it must be
zero — mask the producer's bias and the BatchNorm's weight and bias for those channels too — or the call raises.

The result is a new ``torch.fx.GraphModule`` (the user's model is never modified) with the same submodule names and
the user's train/eval flags; in eval mode it computes the masked model's function (checked on ``example_inputs``;
BatchNorm in train mode normalizes with batch statistics, under which a constant channel is another: use eval mode).

Refused with a ``ValueError`` naming the parameter, layer or node: a mask that is not structured (a partially masked
row), channels masked in some producers of a space but not all (a residual add couples them: removed jointly or not
at all), channels of a space that a LayerNorm normalizes, an op this module does not know, or the model output reads,
and models ``torch.fx`` cannot trace (unless they hold Hugging Face GPT-2, LLaMA, BERT or ViT blocks: :mod:`._hf_removal`).

Example:
    >>> import torch
    >>> net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    >>> masks = {"0.weight": torch.arange(8).repeat_interleave(4).reshape(8, 4) < 3}
    >>> x = torch.randn(5, 4)
    >>> small = remove_pruned(net, masks, (x,))                      # hidden units 3..7 removed
    >>> small.get_submodule("0").out_features, small.get_submodule("2").in_features
    (3, 3)
    >>> ref = copy.deepcopy(net); apply_masks_(ref, masks)
    >>> bool(torch.allclose(small(x), ref(x), atol=1e-6))
    True
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import Tensor, fx, nn
from torch.utils._pytree import tree_leaves

from ._attention import PrunedMultiheadAttention, heads_kept, projections
from ._convt import CONV, TRANSPOSED, canonical, depthwise, grouped, in_dim, regroup
from ._depgraph import DepGraph, trace
from ._hf_removal import blocks, remove_untraced, structure_groups
from ._layouts import fix_views
from .apply import apply_masks_
from .targets import check_masks, check_model

__all__ = ["remove_pruned", "channel_groups", "ChannelGroup", "PrunedMultiheadAttention"]


def _row_masks(name: str, mask: Tensor | None, dim: int = 0) -> Tensor | None:
    """Channels of ``mask`` along ``dim`` masked in full (None when no mask)."""
    if mask is None:
        return None
    return ~mask.movedim(dim, 0).reshape(mask.shape[dim], -1).any(1)


def remove_pruned(model: nn.Module, masks: Mapping[str, Tensor], example_inputs: tuple, *,
                  atol: float = 1e-5) -> nn.Module:
    """A physically smaller copy of ``model`` computing the function of ``model`` with ``masks`` applied.

    Args:
        model: a module ``torch.fx.symbolic_trace`` can trace, or one holding Hugging Face GPT-2, LLaMA, BERT or
            ViT-style blocks (not modified).
        masks: name → bool tensor of the parameter's shape (``True`` = kept), structured: every
            masked entry of a Linear/Conv/ConvTranspose weight lies in a fully masked output row (or filter),
            or in an input channel that is removed; ``nn.MultiheadAttention`` heads by their
            ``in_proj_weight`` rows (q, k and v) or ``out_proj.weight`` columns. Masks of biases
            and norms are applied as they are.
        example_inputs: a tuple of the model's positional inputs (a few samples); the channel
            constants are read from, and the result is checked on, this run.
        atol: tolerance of the two checks on ``example_inputs`` (constancy of a removed channel,
            equality of the outputs, relative to their scale).

    Returns:
        a ``torch.fx.GraphModule`` with the removed channels and heads gone; for a model torch.fx cannot trace that
        holds GPT-2 / LLaMA / BERT / ViT-style blocks, a copy of the model's own class whose blocks lost their removed
        MLP units and heads (:mod:`overparam.prune._hf_removal`).

    Raises:
        ValueError: see the module docstring (each message names what is refused).

    Reference: Fang et al., "DepGraph: Towards any structural pruning", CVPR 2023 (the dependency graph).

    Example:
        >>> net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 1)); x = torch.randn(6, 3)
        >>> masks = {"0.weight": torch.tensor([1, 0, 1, 0]).bool()[:, None].expand(4, 3)}   # hidden units 1, 3 off
        >>> small = remove_pruned(net, masks, (x,)); ref = copy.deepcopy(net); apply_masks_(ref, masks)
        >>> small.get_submodule("0").weight.shape, torch.allclose(small(x), ref(x), atol=1e-6)
        (torch.Size([2, 3]), True)
    """
    params = check_model(model)
    check_masks(masks, params)
    if isinstance(atol, bool) or not isinstance(atol, (int, float)) or not atol > 0 or math.isinf(atol):
        raise ValueError(f"atol must be a positive finite number, got {atol!r}")
    net = copy.deepcopy(model)
    modes = {n: m.training for n, m in net.named_modules()}
    apply_masks_(net, masks)
    try:
        g = trace(net, example_inputs)
    except ValueError:
        if not blocks(net):
            raise
        return remove_untraced(net, masks, example_inputs, modes, lambda new, ref: _check_same(new, example_inputs, ref, atol))
    gm, values = g.gm, g.values
    reference = [v for n, v in values.items() if n.op == "output"][0]
    mods = dict(gm.named_modules())
    keep = _keep_per_space(g, masks)
    _check_structured(g, masks, keep, mods)
    heads = _mha_heads(g, masks, mods)
    _fold(g, keep, mods, atol)
    _shrink(g, keep, mods)
    for _, target in g.mha:
        if target in heads and not bool(heads[target].all()):
            _set(gm, target, PrunedMultiheadAttention(mods[target], heads[target]))
    fix_views(g, keep)
    gm.graph.lint()
    gm.recompile()
    new = fx.GraphModule(gm, gm.graph, class_name=type(model).__name__ + "Pruned")
    _check_same(new, example_inputs, reference, atol)
    for n, m in new.named_modules():
        m.training = modes.get(n, model.training)
    return new


@dataclass
class ChannelGroup:
    """Channels removed together (one space of the dependency graph).

    ``size`` channels; ``producers``: the weights whose output rows (dim 0) make them — mask the
    same rows in each (``"qkv.weight rows 16:32"`` for a part of a fused layer that is split); ``params``: every ``(parameter or buffer name, dim)`` indexed by them
    (BatchNorm statistics and affine, a depthwise Conv, the next layers' input columns);
    ``fixed``: why they cannot be removed (``None``: removable).

    Example:
        >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.Conv2d(4, 2, 1))
        >>> g = channel_groups(net, (torch.randn(1, 3, 5, 5),))[0]
        >>> g.size, g.producers, g.params[:3], g.fixed
        (4, ['0.weight'], [('0.weight', 0), ('0.bias', 0), ('1.weight', 0)], None)
    """

    size: int
    producers: list[str]
    params: list[tuple[str, int]]
    fixed: str | None


def channel_groups(model: nn.Module, example_inputs: tuple) -> list[ChannelGroup]:
    """The channel groups of ``model`` as :func:`remove_pruned` sees them, in graph order.

    Residual adds, gates and attention products join layers into one group; a structured mask that
    :func:`remove_pruned` accepts masks the same rows of every producer of a group (``nn.MultiheadAttention`` heads are
    not listed: they are removed by its own rows and columns). A model torch.fx cannot trace that holds Hugging Face
    GPT-2 / LLaMA / BERT / ViT blocks: one group per block, from its module structure — the MLP's hidden units, the
    attention's q/k/v channels (removed by whole heads; grouped-query attention is not listed).

    Reference: G. Fang et al., "DepGraph: Towards Any Structural Pruning" (CVPR 2023)

    Example:
        >>> import torch
        >>> net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
        >>> hidden, out = channel_groups(net, (torch.randn(3, 4),))
        >>> hidden.size, hidden.producers, hidden.params, hidden.fixed
        (8, ['0.weight'], [('0.weight', 0), ('0.bias', 0), ('2.weight', 1)], None)
        >>> out.fixed
        "it reaches the model's output"
    """
    check_model(model)
    try:
        g = trace(copy.deepcopy(model), example_inputs)
    except ValueError as e:   # Hugging Face blocks: their MLP units and attention channels, from the module structure
        return [ChannelGroup(*grp, None) for grp in structure_groups(model, e)]
    mods = dict(g.gm.named_modules())
    params: dict[int, list[tuple[str, int]]] = {g.find(i): [] for i in range(len(g.spaces))}
    for u in g.uses:
        if getattr(mods[u.module], u.attr, None) is not None:
            params[g.find(u.space)].append((f"{u.module}.{u.attr}", u.dim))
    return [ChannelGroup(g.spaces[r].size, _who(g.spaces[r]).split(", "), ps, g.spaces[r].fixed)
            for r, ps in params.items() if g.spaces[r].producers and r not in g.parts]


def _set(root: nn.Module, target: str, mod: nn.Module) -> None:
    parent, _, name = target.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, name, mod)


def _who(sp) -> str:
    return ", ".join(f"{n}.weight" + (f" rows {a}:{a + sp.size}" if a or canonical(m, m.weight).shape[0] != sp.size else "")
                     for n, m, a in sp.producers)


def _keep_per_space(g: DepGraph, masks: Mapping[str, Tensor]) -> dict[int, Tensor]:
    """Root space → bool keep vector; raises for channels masked in some producers only, or in a fixed space."""
    keep: dict[int, Tensor] = {}
    readers: dict[int, list[Tensor]] = {}
    mods = dict(g.gm.named_modules())
    for u in g.uses:
        if u.attr == "weight" and u.dim == in_dim(mods[u.module]):
            m = masks.get(f"{u.module}.weight")
            dead = torch.zeros(g.spaces[g.find(u.space)].size * u.repeat, dtype=torch.bool) if m is None else \
                _row_masks(u.module, canonical(mods[u.module], m), 1).cpu()
            readers.setdefault(g.find(u.space), []).append(dead.reshape(-1, u.repeat).all(1))
    mixed: dict[int, int] = {}       # an attention's space (q·kᵀ reads it too) → channels per head
    for n, lay in g.layout.items():
        if lay is not None and (lay.block > 1 or getattr(n.target, "__name__", "") == "scaled_dot_product_attention"):
            mixed[g.find(lay.space)] = math.lcm(mixed.get(g.find(lay.space), 1), lay.block)
    roots = {g.find(i) for i in range(len(g.spaces))}
    for r in roots:
        sp = g.spaces[r]
        if not sp.producers or r in g.parts:
            continue
        device = sp.producers[0][1].weight.device
        every = torch.ones(sp.size, dtype=torch.bool, device=device)
        some = torch.zeros(sp.size, dtype=torch.bool, device=device)
        for name, mod, a in sp.producers:
            m = masks.get(f"{name}.weight")
            gn = None if m is None else _row_masks(name, canonical(mod, m), 0)
            gn = torch.zeros(sp.size, dtype=torch.bool, device=device) if gn is None else gn[a:a + sp.size].to(device)
            every &= gn
            some |= gn
        unread = torch.zeros(sp.size, dtype=torch.bool, device=device) if sp.fixed or r not in readers else \
            torch.stack(readers[r]).all(0).to(device)   # every reader masks its columns: dead too
        if r in mixed and sp.size % mixed[r] == 0:        # in an attention only whole heads whose outputs nobody reads (q, k, v rows go too)
            unread = unread.reshape(-1, mixed[r]).all(1, keepdim=True).expand(-1, mixed[r]).reshape(-1)
        if bool((some & ~every).any()):
            ch = (some & ~every).nonzero().flatten().tolist()[:8]
            raise ValueError(f"masks: channels {ch} of {_who(sp)} are coupled (a residual add, a gate or an attention "
                             f"product joins them) and are masked in some of these weights but not all: "
                             f"remove them jointly (mask the same rows in each) or not at all")
        if bool(every.any()) and sp.fixed:
            raise ValueError(f"masks: the masked output channels of {_who(sp)} cannot be removed: {sp.fixed}")
        if bool((every | unread).all()):
            raise ValueError(f"masks: every output channel of {_who(sp)} is masked (nothing would be left)")
        keep[r] = ~(every | unread)
    for r, parts in g.parts.items():       # a fused layer split into parts (q, k, v) keeps what its parts keep
        keep[r] = torch.cat([keep[g.find(c)] for c, _ in parts])
        if g.spaces[r].fixed and not bool(keep[r].all()):
            raise ValueError(f"masks: the masked output channels of {_who(g.spaces[r])} cannot be removed: "
                             f"{g.spaces[r].fixed}")
    return keep


def _check_structured(g: DepGraph, masks, keep: dict[int, Tensor], mods) -> None:
    """Every masked entry of a Linear/Conv weight lies in a removed row or a removed input channel."""
    cols: dict[str, Tensor] = {}
    for u in g.uses:
        r = g.find(u.space)
        if u.attr == "weight" and u.dim == in_dim(mods[u.module]) and r in keep:
            cols[u.module] = keep[r].repeat_interleave(u.repeat)
    for u in g.uses:
        if u.attr != "weight" or u.dim != 1 - in_dim(mods[u.module]) or f"{u.module}.weight" not in masks:
            continue
        m = canonical(mods[u.module], masks[f"{u.module}.weight"])     # (out, in, ...)
        ok = _row_masks(u.module, m).to(m.device)
        bad = ~m & canonical(mods[u.module], torch.ones_like(masks[f"{u.module}.weight"])) & ~ok.reshape(
            -1, *([1] * (m.dim() - 1)))
        if u.module in cols:
            c = cols[u.module].to(m.device)
            bad &= c.reshape(1, -1, *([1] * (m.dim() - 2)))
        if bool(bad.any()):
            row = int(bad.reshape(m.shape[0], -1).any(1).nonzero()[0])
            cols = m.dim() > 1 and bool((~m).equal((~m).any(0, keepdim=True).expand_as(m)))
            raise ValueError(f"masks[{u.module + '.weight'!r}] is not structured: output channel {row} is partly "
                             "masked (structural removal removes whole rows / filters and heads)" + (
                                 "; it masks whole input channels, which are removed where the rows of the layers "
                                 "producing them are masked (channel_groups names them)" if cols else ""))
    seen = {f"{u.module}.{u.attr}" for u in g.uses} | {
        f"{t}.{n}" for _, t in g.mha for n in projections(mods[t]) + ("out_proj.weight",)}
    for k, m in masks.items():
        mod = k.rpartition(".")[0]
        if k not in seen and isinstance(mods.get(mod), (nn.Linear,) + CONV + TRANSPOSED) and not bool(m.all()):
            raise ValueError(f"masks[{k!r}]: layer {mod!r} is not part of the traced graph's channel structure")


def _mha_heads(g: DepGraph, masks, mods) -> dict[str, Tensor]:
    out = {}
    for node, target in g.mha:
        keep = heads_kept(mods[target], target, masks)       # folds the removed heads' value bias
        if keep is None:
            continue
        users = [u for u in node.users if u.args[1] == 1 and u.users]
        if not bool(keep.all()) and users:
            raise ValueError(f"masks: the attention weights of {target!r} are used (node {users[0].name}); "
                             "with heads removed they average over fewer heads")
        out[target] = keep
    return out


def _fold(g: DepGraph, keep: dict[int, Tensor], mods, atol: float) -> None:
    """Fold the constant values of removed input channels into each consumer's bias."""
    for node, mod, lay in g.consumers:
        r = g.find(lay.space)
        if r not in keep or bool(keep[r].all()):
            continue
        x = g.values[node.args[0]]
        gone = ~keep[r].repeat_interleave(lay.repeat)
        w = canonical(mod, mod.weight.detach())[:, gone]
        live = w.reshape(w.shape[0], w.shape[1], -1).ne(0).any(2).any(0)   # removed channels it still reads
        if not bool(live.any()):
            continue
        w = w[:, live]
        if isinstance(mod, nn.Linear):
            xs = x.reshape(-1, x.shape[-1])[:, gone][:, live]
        else:
            xs = x.movedim(1, -1).reshape(-1, x.shape[1])[:, gone][:, live]
        c = xs[0]
        scale = atol * (1 + float(x.abs().max()))
        if bool(((xs - c).abs() > scale).any()):
            raise ValueError(f"masks: a removed input channel of {node.target!r} is not constant in the masked model, "
                             f"so it cannot be folded: unsupported graph between its producer and {node.target!r}")
        if not bool((c != 0).any()):
            continue
        if isinstance(mod, TRANSPOSED):     # a constant input reaches the outputs through varying numbers of taps
            raise ValueError(f"masks: the removed input channels of ConvTranspose {node.target!r} are the nonzero constants "
                             f"{c[:4].tolist()}: mask the producer's bias (and BatchNorm weight and bias) for them too")
        if isinstance(mod, CONV):
            pads = mod.padding if isinstance(mod.padding, tuple) else (mod.padding,)
            if mod.padding_mode == "zeros" and (mod.padding == "same" or any(p != 0 for p in pads)):
                raise ValueError(f"masks: the removed input channels of Conv {node.target!r} are the nonzero "
                                 f"constants {c[:4].tolist()} (their producer's bias through the BatchNorm and "
                                 "activation), which its zero padding does not see at the border: mask the "
                                 "producer's bias and the BatchNorm's weight and bias for those channels too")
            w = w.flatten(2).sum(2)
        fold = w @ c.to(w.dtype)
        with torch.no_grad():
            if mod.bias is None:
                mod.bias = nn.Parameter(fold.clone(), requires_grad=mod.weight.requires_grad)
            else:
                mod.bias.add_(fold)


def _shrink(g: DepGraph, keep: dict[int, Tensor], mods) -> None:
    calls = [n.target for n in g.gm.graph.nodes if n.op == "call_module"]
    for u in g.uses:
        r = g.find(u.space)
        if r not in keep or bool(keep[r].all()):
            continue
        if calls.count(u.module) > 1:
            raise ValueError(f"masks: layer {u.module!r} is called more than once (shared weights) and would "
                             "have to shrink along two sets of channels: not supported")
        mod = mods[u.module]
        t = getattr(mod, u.attr, None)
        if t is None or u.attr == "weight" and grouped(mod):   # regrouped below
            continue
        idx = keep[r].repeat_interleave(u.repeat).nonzero().flatten().to(t.device)
        new = t.detach().index_select(u.dim, idx).clone()
        if isinstance(t, nn.Parameter):
            setattr(mod, u.attr, nn.Parameter(new, requires_grad=t.requires_grad))
        else:
            setattr(mod, u.attr, new)
    for name in dict.fromkeys(u.module for u in g.uses if grouped(mods[u.module])):
        mod, ks = mods[name], {}
        for u in g.uses:
            if u.module == name and u.attr == "weight" and g.find(u.space) in keep:
                ks[u.dim == in_dim(mod)] = keep[g.find(u.space)]
        regroup(mod, name, ks.get(False, torch.ones(mod.out_channels, dtype=torch.bool)),
                ks.get(True, torch.ones(mod.in_channels, dtype=torch.bool)))
    for u in g.uses:
        r = g.find(u.space)
        if r not in keep or grouped(mods[u.module]):
            continue
        mod, n = mods[u.module], int(keep[r].sum()) * u.repeat
        if isinstance(mod, nn.Linear):
            setattr(mod, "in_features" if u.dim == 1 else "out_features", n)
        elif isinstance(mod, CONV + TRANSPOSED):
            if depthwise(mod):
                mod.groups = mod.in_channels = mod.out_channels = n
            else:
                setattr(mod, "in_channels" if u.attr == "weight" and u.dim == in_dim(mod) else "out_channels", n)
        elif hasattr(mod, "num_features"):
            mod.num_features = n


def _check_same(new: nn.Module, inputs: tuple, reference, atol: float) -> None:
    with torch.no_grad():
        got = new.eval()(*inputs)
    out, ref = tree_leaves(got), tree_leaves(reference)       # tensors, tuples, dicts of tensors
    if not any(isinstance(a, Tensor) for a in ref):
        raise ValueError(f"the model's output ({type(reference).__name__}) holds no tensor to check the result against")
    for a, b in zip(out, ref):
        if isinstance(a, Tensor) and isinstance(b, Tensor):
            err = float((a - b).abs().max()) if a.shape == b.shape else float("inf")
            if not err <= atol * (1 + float(b.abs().max())):
                raise ValueError(f"the smaller model differs from the masked one by {err:.3g} on example_inputs: "
                                 "the graph holds an op whose channel structure is not supported")
