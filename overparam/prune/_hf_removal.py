"""Structural removal without tracing, from the module structure (private to :func:`overparam.prune.remove_pruned`).

``torch.fx`` cannot trace Hugging Face models (and ``transformers.utils.fx`` is gone in v5), but their
blocks have a fixed structure, found here by attribute names (transformers is never imported):

* GPT-2 MLP: ``c_fc`` → ``act`` → ``c_proj`` (transformers' ``Conv1D``, weight ``(in, out)``): hidden unit
  ``i`` is column ``i`` of ``c_fc`` and row ``i`` of ``c_proj``;
* gated MLP (LLaMA, Mistral, Qwen): ``down_proj(act_fn(gate_proj(x)) * up_proj(x))``: unit ``i`` is row ``i``
  of ``gate_proj`` and ``up_proj`` and column ``i`` of ``down_proj``;
* GPT-2 attention: fused ``c_attn`` (columns ``[q | k | v]``, ``split_size`` each) and ``c_proj`` (rows per
  head); ``split_size`` and ``num_heads`` follow;
* LLaMA attention: ``q_proj`` (heads), ``k_proj`` / ``v_proj`` (key-value heads, each shared by
  ``num_key_value_groups`` query heads), ``o_proj``; ``num_key_value_groups`` follows.

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

__all__ = ["blocks", "remove_by_structure", "remove_untraced"]


def _conv1d(m) -> bool:
    return isinstance(m, nn.Module) and getattr(kind_of(m), "name", None) == "hf_conv1d"


def _kind(m: nn.Module) -> str | None:
    a = lambda *n: all(isinstance(getattr(m, k, None), nn.Module) for k in n)  # noqa: E731
    if a("c_fc", "c_proj", "act") and _conv1d(m.c_fc) and _conv1d(m.c_proj):
        return "gpt2_mlp"
    if a("c_attn", "c_proj") and _conv1d(m.c_attn) and hasattr(m, "split_size") and not hasattr(m, "q_attn"):
        return "gpt2_attn"
    if a("gate_proj", "up_proj", "down_proj", "act_fn") and isinstance(m.down_proj, nn.Linear):
        return "gated_mlp"
    if a("q_proj", "k_proj", "v_proj", "o_proj") and hasattr(m, "num_key_value_groups") and hasattr(m, "head_dim"):
        return "llama_attn"
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


def _gpt2_attn(m: nn.Module, name: str, masks) -> None:
    E, d = m.split_size, m.head_dim
    H = E // d
    ma = masks.get(f"{name}.c_attn.weight")
    qkv = [_dead(None if ma is None else ma[:, i * E:(i + 1) * E], H, 1) for i in range(3)]
    cut, cpart = _dead(masks.get(f"{name}.c_proj.weight"), H, 0)
    gone = _removed(name, "head", qkv[0][0] & qkv[1][0] & qkv[2][0], cut, qkv[0][1] | qkv[1][1] | qkv[2][1] | cpart,
                    "its q, k and v columns of c_attn or its c_proj rows")
    rows = torch.arange(E).reshape(H, d)
    with torch.no_grad():   # a removed head outputs its value bias (attention rows sum to 1)
        bv = _bias(m.c_attn, 3 * E, m.c_attn.weight)[2 * E:]
        _fold(m.c_proj, m.c_proj.weight[rows[gone].flatten()].T, bv[rows[gone].flatten()])
    keep = rows[~gone].flatten()
    cols = torch.cat([keep, keep + E, keep + 2 * E])
    _param(m.c_attn, "weight", m.c_attn.weight[:, cols])
    _param(m.c_attn, "bias", m.c_attn.bias[cols])
    _param(m.c_proj, "weight", m.c_proj.weight[keep])
    m.c_attn.nf, m.split_size, m.num_heads = len(cols), len(keep), int((~gone).sum())


def _llama_attn(m: nn.Module, name: str, masks) -> None:
    d, G = m.head_dim, m.num_key_value_groups
    H, KV = m.q_proj.out_features // d, m.k_proj.out_features // d
    q, k, v = (_dead(masks.get(f"{name}.{p}.weight"), n, 0) for p, n in (("q_proj", H), ("k_proj", KV), ("v_proj", KV)))
    cut, cpart = _dead(masks.get(f"{name}.o_proj.weight"), H, 1)
    kv = torch.arange(H) // G                                       # the key-value head of each query head
    gone = _removed(name, "head", q[0] & k[0][kv] & v[0][kv], cut, q[1] | k[1][kv] | v[1][kv] | cpart,
                    "its q_proj rows with its key-value head's k_proj and v_proj rows, or its o_proj columns")
    per = (~gone).reshape(KV, G).sum(1)
    if len(set(per[per > 0].tolist())) > 1:
        raise ValueError(f"masks: {name!r} would keep {per.tolist()} query heads per key-value head: keep the same "
                         f"number in every key-value group (num_key_value_groups) it keeps")
    rows, kv_keep = torch.arange(H * d).reshape(H, d), per > 0
    with torch.no_grad():   # a removed head outputs its key-value head's value bias
        bv = _bias(m.v_proj, KV * d, m.v_proj.weight).reshape(KV, d)[kv[gone]].flatten()
        _fold(m.o_proj, m.o_proj.weight[:, rows[gone].flatten()], bv)
    keep, kv_rows = rows[~gone].flatten(), torch.arange(KV * d).reshape(KV, d)[kv_keep].flatten()
    for p, r in ((m.q_proj, keep), (m.k_proj, kv_rows), (m.v_proj, kv_rows)):
        _param(p, "weight", p.weight[r])
        if p.bias is not None:
            _param(p, "bias", p.bias[r])
        p.out_features = len(r)
    _param(m.o_proj, "weight", m.o_proj.weight[:, keep])
    m.o_proj.in_features, m.num_key_value_groups = len(keep), int(per.max())


_SHRINK = {"gpt2_mlp": _gpt2_mlp, "gated_mlp": _gated_mlp, "gpt2_attn": _gpt2_attn, "llama_attn": _llama_attn}
_WEIGHTS = {"gpt2_mlp": ("c_fc", "c_proj"), "gated_mlp": ("gate_proj", "up_proj", "down_proj"),
            "gpt2_attn": ("c_attn", "c_proj"), "llama_attn": ("q_proj", "k_proj", "v_proj", "o_proj")}


def remove_by_structure(net: nn.Module, masks: Mapping[str, Tensor]) -> None:
    """Shrink the blocks of ``net`` (masks already applied to it) in place; a structured mask of a Linear or
    Conv1D weight outside these blocks is refused (it would be left as zeros, not removed)."""
    found = blocks(net)
    ours = {f"{b}.{w}.weight" for b, k in found.items() for w in _WEIGHTS[k]}
    for key, m in masks.items():
        mod = net.get_submodule(key.rpartition(".")[0])
        if key not in ours and key.endswith("weight") and (isinstance(mod, nn.Linear) or _conv1d(mod)) and not bool(m.all()):
            raise ValueError(f"masks[{key!r}]: without a torch.fx trace only the MLP hidden units and attention heads "
                             f"of GPT-2- and LLaMA-style blocks are removed ({', '.join(found) or 'none found'})")
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
