"""``nn.MultiheadAttention`` with some heads removed (built by :func:`overparam.prune.remove_pruned`).

Example:
    >>> import torch
    >>> mha = torch.nn.MultiheadAttention(8, 2, batch_first=True).eval()
    >>> pm = PrunedMultiheadAttention(mha, torch.tensor([True, False]))
    >>> out, w = pm(*(torch.randn(3, 5, 8),) * 3)
    >>> out.shape, w.shape, pm.in_proj_weight.shape
    (torch.Size([3, 5, 8]), torch.Size([3, 5, 5]), torch.Size([12, 8]))
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

__all__ = ["PrunedMultiheadAttention", "projections", "heads_kept"]


def projections(mha: nn.MultiheadAttention) -> tuple[str, ...]:
    """Names of ``mha``'s q/k/v weights: one fused ``in_proj_weight (3E, E)``, or (with ``kdim``/``vdim``)
    ``q_proj_weight (E, E)``, ``k_proj_weight (E, kdim)``, ``v_proj_weight (E, vdim)``."""
    return ("in_proj_weight",) if mha._qkv_same_embed_dim else ("q_proj_weight", "k_proj_weight", "v_proj_weight")


def heads_kept(mha: nn.MultiheadAttention, target: str, masks) -> Tensor | None:
    """Bool ``(heads,)``: the heads of ``mha`` (module ``target``) that ``masks`` keeps (None: no mask
    reaches it). A head is removed by its q, k and v rows or by its ``out_proj.weight`` columns;
    removing one (masked model) leaves its value bias, which is folded into ``out_proj.bias`` here."""
    names = projections(mha) + ("out_proj.weight",)
    E, H = mha.embed_dim, mha.num_heads
    d = E // H
    ms = [masks.get(f"{target}.{n}", torch.ones(mha.get_parameter(n).shape, dtype=torch.bool)) for n in names]
    qkv, o = [m for w in ms[:-1] for m in w.reshape(-1, E, w.shape[1]).unbind(0)], ms[-1]   # q, k, v: (E, in) each
    dead = torch.stack([(~m.any(1)).reshape(H, d).all(1) for m in qkv]).all(0)
    cut = (~o.any(0)).reshape(H, d).all(1)
    gone = dead | cut
    part = torch.stack([(~m).any(1).reshape(H, d).any(1) for m in qkv]).any(0) | (~o).any(0).reshape(H, d).any(1)
    if bool((part & ~gone).any()):
        h = int((part & ~gone).nonzero()[0])
        raise ValueError(f"masks: head {h} of MultiheadAttention {target!r} is partly masked (remove a head by "
                         f"masking its q, k and v rows of {' / '.join(names[:-1])}, or its out_proj.weight columns)")
    if bool(gone.all()):
        raise ValueError(f"masks: every head of MultiheadAttention {target!r} is masked (nothing would be left)")
    values = _head_values(mha)                # (H, kinds, d): what a head with no q/k/v weights averages
    mixed = (values != values[:, :1]).flatten(1).any(1) & dead & ~cut
    if bool(mixed.any()):
        raise ValueError(f"masks: head {int(mixed.nonzero()[0])} of MultiheadAttention {target!r}, removed by its q, k "
                         "and v rows, still outputs an input-dependent mix of its value bias, bias_v and the zero "
                         "attention (add_bias_kv / add_zero_attn): mask those to equal values (in_proj_bias's v rows, "
                         "bias_v), or remove the head by its out_proj.weight columns")
    cols = torch.arange(E).reshape(H, d)[gone].reshape(-1)
    w = mha.out_proj.weight
    fold = w.detach()[:, cols] @ values[gone][:, 0].reshape(-1).to(w)   # a removed head outputs its (common) value
    if bool(fold.ne(0).any()):
        with torch.no_grad():
            if mha.out_proj.bias is None:
                mha.out_proj.bias = nn.Parameter(fold.clone(), requires_grad=w.requires_grad)
            else:
                mha.out_proj.bias.add_(fold)
    return ~gone


def _head_values(mha: nn.MultiheadAttention) -> Tensor:
    """``(H, kinds, d)``: the value vectors a head attends to when its q, k and v weights are zero — its
    value bias (0 without ``in_proj_bias``), its slice of ``bias_v`` (``add_bias_kv``), 0 (``add_zero_attn``)."""
    E, H = mha.embed_dim, mha.num_heads
    w = mha.out_proj.weight.detach()
    bv = torch.zeros(E, dtype=w.dtype, device=w.device) if mha.in_proj_bias is None else mha.in_proj_bias.detach()[2 * E:]
    kinds = [bv] + ([mha.bias_v.detach().reshape(E)] if mha.bias_v is not None else []) + (
        [torch.zeros_like(bv)] if mha.add_zero_attn else [])
    return torch.stack(kinds).reshape(len(kinds), H, E // H).transpose(0, 1)


def _pad(m: Tensor | None) -> Tensor | None:
    """One more (unmasked) key column, as ``nn.MultiheadAttention`` does for ``bias_k`` and the zero attention."""
    return None if m is None else F.pad(m, (0, 1))


class PrunedMultiheadAttention(nn.Module):
    """``nn.MultiheadAttention`` with fewer heads than ``embed_dim / head_dim`` (inner width ``heads·head_dim``).

    Same parameter names (``in_proj_weight (3·h·d, E)`` — with ``kdim``/``vdim``: ``q_proj_weight (h·d, E)``,
    ``k_proj_weight (h·d, kdim)``, ``v_proj_weight (h·d, vdim)`` —, ``in_proj_bias``, ``out_proj``) and call
    ``(query, key, value, key_padding_mask=None, need_weights=True, attn_mask=None,
    average_attn_weights=True)``; returns ``(output, weights or None)`` with the weights averaged
    over the *kept* heads. Built by :func:`remove_pruned`.

    Reference: P. Michel, O. Levy & G. Neubig, "Are Sixteen Heads Really Better than One?" (NeurIPS 2019) (head
        pruning)

    Example:
        >>> mha = torch.nn.MultiheadAttention(8, 2, batch_first=True).eval(); x = torch.randn(2, 5, 8)
        >>> pm = PrunedMultiheadAttention(mha, torch.tensor([True, True]))   # every head kept: the same module
        >>> pm.heads, pm.in_proj_weight.shape, torch.allclose(pm(x, x, x)[0], mha(x, x, x)[0], atol=1e-6)
        (2, torch.Size([24, 8]), True)
    """

    def __init__(self, mha: nn.MultiheadAttention, keep: Tensor) -> None:
        super().__init__()
        if not isinstance(mha, nn.MultiheadAttention):
            raise TypeError(f"mha must be an nn.MultiheadAttention, got {type(mha).__name__}")
        if not isinstance(keep, Tensor) or keep.dtype != torch.bool or keep.shape != (mha.num_heads,) or not keep.any():
            raise ValueError(f"keep must be a bool tensor of shape ({mha.num_heads},) keeping at least one head, "
                             f"got {getattr(keep, 'dtype', type(keep).__name__)} {tuple(getattr(keep, 'shape', ()))}")
        E, H = mha.embed_dim, mha.num_heads
        d = E // H
        rows = (torch.arange(E, device=keep.device).reshape(H, d)[keep]).reshape(-1)
        idx = torch.cat([rows, rows + E, rows + 2 * E])
        self.heads, self.head_dim, self.batch_first, self.dropout = int(keep.sum()), d, mha.batch_first, mha.dropout
        self.head_index = keep.nonzero().flatten().tolist()
        self.proj = projections(mha)
        for name in self.proj:        # fused (3E, E): the head's rows in q, k and v; separate (E, in): its rows
            w = getattr(mha, name)
            setattr(self, name, nn.Parameter(w.detach()[idx if len(self.proj) == 1 else rows].clone(),
                                             requires_grad=w.requires_grad))
        self.in_proj_bias = (None if mha.in_proj_bias is None else
                             nn.Parameter(mha.in_proj_bias.detach()[idx].clone(),
                                          requires_grad=mha.in_proj_bias.requires_grad))
        w = mha.out_proj.weight
        self.bias_k, self.bias_v = ((None, None) if mha.bias_k is None else
                                    (nn.Parameter(b.detach()[..., rows].clone(), requires_grad=b.requires_grad)
                                     for b in (mha.bias_k, mha.bias_v)))
        self.add_zero_attn = mha.add_zero_attn
        self.out_proj = nn.Linear(rows.numel(), E, bias=mha.out_proj.bias is not None, device=w.device, dtype=w.dtype)
        with torch.no_grad():
            self.out_proj.weight.copy_(w[:, rows])
            if mha.out_proj.bias is not None:
                self.out_proj.bias.copy_(mha.out_proj.bias)
        self.train(mha.training)

    def forward(self, query: Tensor, key: Tensor, value: Tensor, key_padding_mask: Tensor | None = None,
                need_weights: bool = True, attn_mask: Tensor | None = None, average_attn_weights: bool = True):
        """``(output (B, L, E), weights (B, L, S) or (B, heads, L, S) or None)``, as ``nn.MultiheadAttention``.

        Example:
            >>> mha = torch.nn.MultiheadAttention(8, 2, batch_first=True).eval(); x = torch.randn(2, 5, 8)
            >>> out, w = PrunedMultiheadAttention(mha, torch.tensor([True, False]))(x, x, x, average_attn_weights=False)
            >>> with torch.no_grad(): _ = mha.out_proj.weight[:, 4:].zero_()   # head 1 silenced in the original
            >>> out.shape, w.shape, torch.allclose(out, mha(x, x, x)[0], atol=1e-6)
            (torch.Size([2, 5, 8]), torch.Size([2, 1, 5, 5]), True)
        """
        if not self.batch_first:
            query, key, value = (t.transpose(0, 1) for t in (query, key, value))
        B, L, _ = query.shape
        S, h, d = key.shape[1], self.heads, self.head_dim
        w = self.in_proj_weight.chunk(3) if len(self.proj) == 1 else [getattr(self, n) for n in self.proj]
        b = self.in_proj_bias.chunk(3) if self.in_proj_bias is not None else (None,) * 3
        q, k, v = (F.linear(t, wi, bi) for t, wi, bi in zip((query, key, value), w, b))    # (B, L or S, h·d)
        extra = [(self.bias_k.expand(B, 1, -1), self.bias_v.expand(B, 1, -1))] if self.bias_k is not None else []
        extra += [(k.new_zeros(B, 1, h * d),) * 2] if self.add_zero_attn else []
        for ek, ev in extra:                 # add_bias_kv, then add_zero_attn: one more key and value each
            k, v = torch.cat([k, ek], 1), torch.cat([v, ev], 1)
            attn_mask, key_padding_mask = _pad(attn_mask), _pad(key_padding_mask)
        S = S + len(extra)
        q, k, v = (t.reshape(B, -1, h, d).transpose(1, 2) for t in (q, k, v))
        scores = (q * d ** -0.5) @ k.transpose(-2, -1)                              # (B, h, L, S)
        if attn_mask is not None:
            m = attn_mask if attn_mask.dim() == 2 else attn_mask.reshape(B, -1, L, S)[:, self.head_index]
            scores = scores.masked_fill(m, float("-inf")) if m.dtype == torch.bool else scores + m
        if key_padding_mask is not None:
            kp = key_padding_mask.reshape(B, 1, 1, S)
            scores = scores.masked_fill(kp, float("-inf")) if kp.dtype == torch.bool else scores + kp
        att = torch.softmax(scores, dim=-1)
        out = F.dropout(att, self.dropout, self.training) @ v
        out = self.out_proj(out.transpose(1, 2).reshape(B, L, h * d))
        if not self.batch_first:
            out = out.transpose(0, 1)
        if not need_weights:
            return out, None
        return out, (att.mean(1) if average_attn_weights else att)
