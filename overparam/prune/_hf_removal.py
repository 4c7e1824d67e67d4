"""Structural removal without tracing, from the module structure (private to :func:`overparam.prune.remove_pruned`).

``torch.fx`` cannot trace Hugging Face models (and ``transformers.utils.fx`` is gone in v5), but their
blocks have a fixed structure, found here by attribute names (transformers is never imported):

* GPT-2 MLP: ``c_fc`` → ``act`` → ``c_proj`` (transformers' ``Conv1D``, weight ``(in, out)``): hidden unit
  ``i`` is column ``i`` of ``c_fc`` and row ``i`` of ``c_proj``;
* gated MLP (LLaMA, Mistral, Qwen): ``down_proj(act_fn(gate_proj(x)) * up_proj(x))``: unit ``i`` is row ``i``
  of ``gate_proj`` and ``up_proj`` and column ``i`` of ``down_proj``;
* GPT-2 attention: fused ``c_attn`` (columns ``[q | k | v]``, ``split_size`` each) and ``c_proj`` (rows per
  head); cross-attention (``add_cross_attention``): queries from ``q_attn``, ``c_attn`` columns ``[k | v]``;
  ``split_size`` and ``num_heads`` follow;
* LLaMA attention: ``q_proj`` (heads of ``head_dim`` rows), ``k_proj`` / ``v_proj`` (key-value heads, each shared
  by ``num_key_value_groups`` query heads), ``o_proj`` (columns); ``num_key_value_groups`` follows; ViT / DeiT
  attention has the same names without key-value groups (one key-value head per head);
* BERT / RoBERTa attention (self- and cross-): ``self.query/key/value`` (heads of ``attention_head_size`` rows)
  and ``output.dense`` (columns); ``num_attention_heads`` and ``all_head_size`` of ``self`` follow;
* BERT MLP (the layer): ``intermediate.dense`` → ``intermediate.intermediate_act_fn`` → ``output.dense``;
  ViT MLP: ``fc1`` → ``activation_fn`` → ``fc2`` (Linear: unit ``i`` is row ``i`` of the first, column ``i`` of
  the second).

A unit / head goes when all its producing rows are masked (a removed unit of the masked model is
the constant ``act(bias)`` — gated: ``act(b_gate)·b_up`` —, a removed head outputs its value bias:
both are folded into the consumer's bias, one is added if needed) or when all its consuming columns
are; a key-value head goes with the last of its query heads. ``masks`` are applied first, so every
other mask (a bias, a norm, an embedding) stays as it is in the result.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn

from ..backend.layers import kind_of

__all__ = ["blocks", "remove_by_structure", "remove_untraced", "structure_groups"]


def _conv1d(m) -> bool:
    return isinstance(m, nn.Module) and getattr(kind_of(m), "name", None) == "hf_conv1d"


def _sub(m: nn.Module, path: str):
    """``m``'s attribute at a dotted ``path`` (None where one is missing)."""
    for k in path.split("."):
        m = getattr(m, k, None)
    return m


def _kind(m: nn.Module) -> str | None:
    a = lambda *n: all(isinstance(_sub(m, k), nn.Module) for k in n)  # noqa: E731
    lin = lambda *n: all(isinstance(_sub(m, k), nn.Linear) for k in n)  # noqa: E731
    if a("c_fc", "c_proj", "act") and _conv1d(m.c_fc) and _conv1d(m.c_proj):
        return "gpt2_mlp"
    if a("c_attn", "c_proj") and _conv1d(m.c_attn) and _conv1d(m.c_proj) and hasattr(m, "split_size"):
        return "gpt2_cross" if a("q_attn") and _conv1d(m.q_attn) else "gpt2_attn"
    if a("gate_proj", "up_proj", "down_proj", "act_fn") and isinstance(m.down_proj, nn.Linear):
        return "gated_mlp"
    if lin("q_proj", "k_proj", "v_proj", "o_proj") and isinstance(getattr(m, "head_dim", None), int):
        return "llama_attn"
    if lin("self.query", "self.key", "self.value", "output.dense") and hasattr(m.self, "attention_head_size"):
        return "bert_attn"
    if lin("fc1", "fc2") and callable(getattr(m, "activation_fn", None)):
        return "fc_mlp"
    if lin("intermediate.dense", "output.dense") and callable(_sub(m, "intermediate.intermediate_act_fn")):
        return "bert_mlp"
    return None


def blocks(model: nn.Module) -> dict[str, str]:
    """Module name → kind of every block :func:`remove_by_structure` shrinks."""
    return {n: k for n, m in model.named_modules() if (k := _kind(m)) is not None}


def _dead(mask: Tensor | None, n: int, dim: int) -> tuple[Tensor, Tensor]:
    """For ``n`` equal runs of ``mask`` along ``dim``: (every entry masked, some entry masked), each ``(n,)``."""
    if mask is None:
        return torch.zeros(n, dtype=torch.bool), torch.zeros(n, dtype=torch.bool)
    v = ~mask.detach().cpu().movedim(dim, 0).reshape(n, -1)
    return v.all(1), v.any(1)


def _removed(block: str, what: str, full: Tensor, cut: Tensor, part: Tensor, how: str) -> Tensor:
    """``full | cut`` (the channels to remove); raises for a channel masked in part, or for all of them."""
    gone = full | cut
    if bool((part & ~gone).any()):
        raise ValueError(f"masks: {what} {int((part & ~gone).nonzero()[0])} of {block!r} is partly masked "
                         f"(remove it by masking {how} in full)")
    if bool(gone.all()):
        raise ValueError(f"masks: every {what} of {block!r} is masked (nothing would be left)")
    return gone


def _param(mod: nn.Module, name: str, t: Tensor) -> None:
    old = getattr(mod, name)
    setattr(mod, name, nn.Parameter(t.detach().clone(), requires_grad=old.requires_grad))


def _fold(lin: nn.Module, w_gone: Tensor, c: Tensor) -> None:
    """``lin.bias += w_gone @ c`` (``w_gone (out, removed)``, ``c (removed,)``); a bias is added where needed."""
    f = w_gone.detach() @ c.to(w_gone)
    if not bool(f.ne(0).any()):
        return
    with torch.no_grad():
        if lin.bias is None:
            lin.bias = nn.Parameter(f.clone(), requires_grad=lin.weight.requires_grad)
        else:
            lin.bias.add_(f)


def _bias(lin: nn.Module, n: int, like: Tensor) -> Tensor:
    return like.new_zeros(n) if lin.bias is None else lin.bias.detach()


def _gpt2_mlp(m: nn.Module, name: str, masks) -> None:
    n = m.c_fc.nf
    full, fpart = _dead(masks.get(f"{name}.c_fc.weight"), n, 1)
    cut, cpart = _dead(masks.get(f"{name}.c_proj.weight"), n, 0)
    gone = _removed(name, "hidden unit", full, cut, fpart | cpart, "its c_fc column or its c_proj row")
    with torch.no_grad():
        _fold(m.c_proj, m.c_proj.weight[gone].T, m.act(_bias(m.c_fc, n, m.c_fc.weight)[gone]))
    keep = ~gone
    _param(m.c_fc, "weight", m.c_fc.weight[:, keep])
    _param(m.c_fc, "bias", m.c_fc.bias[keep])
    _param(m.c_proj, "weight", m.c_proj.weight[keep])
    m.c_fc.nf = int(keep.sum())


def _gated_mlp(m: nn.Module, name: str, masks) -> None:
    n = m.gate_proj.out_features
    (fg, pg), (fu, pu) = (_dead(masks.get(f"{name}.{p}.weight"), n, 0) for p in ("gate_proj", "up_proj"))
    cut, cpart = _dead(masks.get(f"{name}.down_proj.weight"), n, 1)
    gone = _removed(name, "hidden unit", fg & fu, cut, pg | pu | cpart,
                    "its gate_proj and up_proj rows or its down_proj column")
    with torch.no_grad():
        c = m.act_fn(_bias(m.gate_proj, n, m.gate_proj.weight)[gone]) * _bias(m.up_proj, n, m.up_proj.weight)[gone]
        _fold(m.down_proj, m.down_proj.weight[:, gone], c)
    keep = ~gone
    for p in (m.gate_proj, m.up_proj):
        _param(p, "weight", p.weight[keep])
        if p.bias is not None:
            _param(p, "bias", p.bias[keep])
        p.out_features = int(keep.sum())
    _param(m.down_proj, "weight", m.down_proj.weight[:, keep])
    m.down_proj.in_features = int(keep.sum())


def _linear_mlp(m: nn.Module, name: str, masks, fc: str, proj: str, act) -> None:
    """``proj(act(fc(x)))`` of two Linear layers (paths in ``m``): unit ``i`` is row ``i`` of ``fc``, column ``i`` of ``proj``."""
    f, p = m.get_submodule(fc), m.get_submodule(proj)
    n = f.out_features
    full, fpart = _dead(masks.get(f"{name}.{fc}.weight"), n, 0)
    cut, cpart = _dead(masks.get(f"{name}.{proj}.weight"), n, 1)
    gone = _removed(name, "hidden unit", full, cut, fpart | cpart, f"its {fc} row or its {proj} column")
    with torch.no_grad():
        _fold(p, p.weight[:, gone], act(_bias(f, n, f.weight)[gone]))
    keep = ~gone
    _param(f, "weight", f.weight[keep])
    if f.bias is not None:
        _param(f, "bias", f.bias[keep])
    _param(p, "weight", p.weight[:, keep])
    f.out_features = p.in_features = int(keep.sum())


def _gpt2_attn(m: nn.Module, name: str, masks) -> None:
    """Self-attention (``c_attn`` columns ``[q | k | v]``) or cross-attention (``q_attn``; ``c_attn`` ``[k | v]``)."""
    E, d = m.split_size, m.head_dim
    H, cross = E // d, _kind(m) == "gpt2_cross"
    ma, mq = masks.get(f"{name}.c_attn.weight"), masks.get(f"{name}.q_attn.weight")
    parts = [(mq, 0)] * cross + [(ma, i) for i in range(3 - cross)]
    qkv = [_dead(None if mk is None else mk[:, i * E:(i + 1) * E], H, 1) for mk, i in parts]
    cut, cpart = _dead(masks.get(f"{name}.c_proj.weight"), H, 0)
    gone = _removed(name, "head", qkv[0][0] & qkv[1][0] & qkv[2][0], cut, qkv[0][1] | qkv[1][1] | qkv[2][1] | cpart,
                    "its q, k and v columns (q_attn, c_attn) or its c_proj rows" if cross else
                    "its q, k and v columns of c_attn or its c_proj rows")
    rows = torch.arange(E).reshape(H, d)
    with torch.no_grad():   # a removed head outputs its value bias (attention rows sum to 1)
        bv = _bias(m.c_attn, (3 - cross) * E, m.c_attn.weight)[(2 - cross) * E:]
        _fold(m.c_proj, m.c_proj.weight[rows[gone].flatten()].T, bv[rows[gone].flatten()])
    keep = rows[~gone].flatten()
    cols = torch.cat([keep + i * E for i in range(3 - cross)])
    for c, k in [(m.c_attn, cols)] + ([(m.q_attn, keep)] if cross else []):
        _param(c, "weight", c.weight[:, k])
        _param(c, "bias", c.bias[k])
        c.nf = len(k)
    _param(m.c_proj, "weight", m.c_proj.weight[keep])
    m.split_size, m.num_heads = len(keep), int((~gone).sum())


def _qkvo(m: nn.Module, name: str, masks, paths: tuple[str, str, str, str], d: int, G: int) -> tuple[int, int]:
    """Heads of four Linear projections q, k, v (rows; k, v per key-value head, each shared by ``G`` query heads)
    and o (columns); returns (query heads kept, query heads kept per key-value head)."""
    q_, k_, v_, o_ = (m.get_submodule(p) for p in paths)
    H, KV = q_.out_features // d, k_.out_features // d
    q, k, v = (_dead(masks.get(f"{name}.{p}.weight"), n, 0) for p, n in zip(paths, (H, KV, KV)))
    cut, cpart = _dead(masks.get(f"{name}.{paths[3]}.weight"), H, 1)
    kv = torch.arange(H) // G                                       # the key-value head of each query head
    gone = _removed(name, "head", q[0] & k[0][kv] & v[0][kv], cut, q[1] | k[1][kv] | v[1][kv] | cpart,
                    f"its {paths[0]} rows with its key-value head's {paths[1]} and {paths[2]} rows, or its "
                    f"{paths[3]} columns" if G > 1 else f"its {paths[0]}, {paths[1]} and {paths[2]} rows or its {paths[3]} columns")
    per = (~gone).reshape(KV, G).sum(1)
    if len(set(per[per > 0].tolist())) > 1:
        raise ValueError(f"masks: {name!r} would keep {per.tolist()} query heads per key-value head: keep the same "
                         f"number in every key-value group (num_key_value_groups) it keeps")
    rows, kv_keep = torch.arange(H * d).reshape(H, d), per > 0
    with torch.no_grad():   # a removed head outputs its key-value head's value bias
        bv = _bias(v_, KV * d, v_.weight).reshape(KV, d)[kv[gone]].flatten()
        _fold(o_, o_.weight[:, rows[gone].flatten()], bv)
    keep, kv_rows = rows[~gone].flatten(), torch.arange(KV * d).reshape(KV, d)[kv_keep].flatten()
    for p, r in ((q_, keep), (k_, kv_rows), (v_, kv_rows)):
        _param(p, "weight", p.weight[r])
        if p.bias is not None:
            _param(p, "bias", p.bias[r])
        p.out_features = len(r)
    _param(o_, "weight", o_.weight[:, keep])
    o_.in_features = len(keep)
    return int((~gone).sum()), int(per.max())


def _llama_attn(m: nn.Module, name: str, masks) -> None:
    """LLaMA (grouped-query) and ViT attention: ``q_proj``, ``k_proj``, ``v_proj``, ``o_proj``, ``head_dim``."""
    G = getattr(m, "num_key_value_groups", 1)
    heads, per = _qkvo(m, name, masks, _WEIGHTS["llama_attn"], m.head_dim, G)
    for a, v in (("num_key_value_groups", per), ("num_attention_heads", heads), ("num_heads", heads)):
        if isinstance(getattr(m, a, None), int):
            setattr(m, a, v)


def _bert_attn(m: nn.Module, name: str, masks) -> None:
    """BERT / RoBERTa self- and cross-attention: ``self.query/key/value`` (heads of ``attention_head_size`` rows),
    ``output.dense`` (its columns); ``num_attention_heads`` and ``all_head_size`` of ``self`` follow."""
    heads, _ = _qkvo(m, name, masks, _WEIGHTS["bert_attn"], m.self.attention_head_size, 1)
    m.self.num_attention_heads, m.self.all_head_size = heads, heads * m.self.attention_head_size


_SHRINK = {"gpt2_mlp": _gpt2_mlp, "gated_mlp": _gated_mlp, "gpt2_attn": _gpt2_attn, "gpt2_cross": _gpt2_attn,
           "llama_attn": _llama_attn, "bert_attn": _bert_attn,
           "fc_mlp": lambda m, n, k: _linear_mlp(m, n, k, "fc1", "fc2", m.activation_fn),
           "bert_mlp": lambda m, n, k: _linear_mlp(m, n, k, "intermediate.dense", "output.dense",
                                                   m.intermediate.intermediate_act_fn)}
_WEIGHTS = {"gpt2_mlp": ("c_fc", "c_proj"), "gated_mlp": ("gate_proj", "up_proj", "down_proj"),
            "gpt2_attn": ("c_attn", "c_proj"), "gpt2_cross": ("q_attn", "c_attn", "c_proj"),
            "llama_attn": ("q_proj", "k_proj", "v_proj", "o_proj"),
            "bert_attn": ("self.query", "self.key", "self.value", "output.dense"), "fc_mlp": ("fc1", "fc2"),
            "bert_mlp": ("intermediate.dense", "output.dense")}


def _group(b: str, kind: str, m: nn.Module):
    """``(size, producers, params)`` of the channels of block ``b`` removed together (None: GQA heads, not listed)."""
    if getattr(m, "num_key_value_groups", 1) > 1:
        return None
    *src, dst = _WEIGHTS[kind]
    if kind == "gpt2_mlp":
        n, producers = m.c_fc.nf, [f"{b}.c_fc.weight"]
    elif kind.startswith("gpt2"):
        n, cross = m.split_size, kind == "gpt2_cross"
        producers = [f"{b}.q_attn.weight"] * cross + [f"{b}.c_attn.weight rows {i * n}:{(i + 1) * n}" for i in range(3 - cross)]
    else:
        n, producers = _sub(m, src[0]).out_features, [f"{b}.{p}.weight" for p in src]
    d_in, d_out = (1, 0) if kind.startswith("gpt2") else (0, 1)     # Conv1D (in, out): producers' columns, c_proj's rows
    params = [x for p in src for x in [(f"{b}.{p}.weight", d_in)] + [(f"{b}.{p}.bias", 0)] * (_sub(m, p).bias is not None)]
    return n, producers, params + [(f"{b}.{dst}.weight", d_out)]


def structure_groups(net: nn.Module, error: Exception) -> list[tuple[int, list[str], list[tuple[str, int]]]]:
    """``(size, producers, params)`` for :func:`overparam.prune.channel_groups` without a trace (``error``, the
    trace's, is raised where ``net`` holds no known block): the hidden units of every MLP block, the q/k/v channels
    of every attention block (removed by whole heads; grouped-query attention with ``num_key_value_groups > 1`` is
    not listed: its k/v channels are fewer than its q channels)."""
    found = blocks(net)
    if not found:
        raise error
    return [g for b, k in found.items() if (g := _group(b, k, net.get_submodule(b))) is not None]


def remove_by_structure(net: nn.Module, masks: Mapping[str, Tensor]) -> None:
    """Shrink the blocks of ``net`` (masks already applied to it) in place; a structured mask of a Linear or
    Conv1D weight outside these blocks is refused (it would be left as zeros, not removed)."""
    found = blocks(net)
    ours = {f"{b}.{w}.weight" for b, k in found.items() for w in _WEIGHTS[k]}
    for key, m in masks.items():
        mod = net.get_submodule(key.rpartition(".")[0])
        if key not in ours and key.endswith("weight") and (isinstance(mod, nn.Linear) or _conv1d(mod)) and not bool(m.all()):
            raise ValueError(f"masks[{key!r}]: without a torch.fx trace only the MLP hidden units and attention heads "
                             f"of GPT-2-, LLaMA-, BERT- and ViT-style blocks are removed ({', '.join(found) or 'none found'})")
    for b, k in found.items():
        _SHRINK[k](net.get_submodule(b), b, masks)


def remove_untraced(net: nn.Module, masks, inputs: tuple, modes: dict[str, bool], check) -> nn.Module:
    """:func:`remove_by_structure` on ``net`` (the masked copy), ``check(net, reference output)`` on ``inputs``,
    then the train/eval flags ``modes`` (module name → flag) restored."""
    with torch.no_grad():
        reference = net.eval()(*inputs)
    remove_by_structure(net, masks)
    check(net, reference)
    for n, m in net.named_modules():
        m.training = modes[n]
    return net
