"""A tiny causal sequence model ``(B, T) ids -> (B, T, V)`` and its dense fp64 oracles, shared by
the sequence-GGN and Fisher tests.

The oracles are independent of ``overparam.hessian``: the output Jacobian, the per-row loss
gradients and the loss Hessian w.r.t. the outputs come from plain autograd
(:func:`overparam.testing.oracles.jacobian_of` / ``hessian_of``, themselves checked against
central differences in tests/testing).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from overparam.testing.oracles import hessian_of, jacobian_of, outputs_of_flat

V, T = 5, 4


class SeqLM(nn.Module):
    """Embedding → tanh → causal running mean of ``tanh(Linear)`` added back → ``Linear(d→out)``:
    every position's outputs depend on the earlier tokens, as in a decoder."""

    def __init__(self, d: int = 3, out: int = V):
        super().__init__()
        self.emb, self.mix, self.out = nn.Embedding(V, d), nn.Linear(d, d), nn.Linear(d, out)

    def forward(self, ids):
        h = torch.tanh(self.emb(ids))
        steps = torch.arange(1, ids.shape[1] + 1, dtype=h.dtype).unsqueeze(-1)
        return self.out(h + torch.tanh(self.mix(h)).cumsum(1) / steps)


def seq_case(seed: int = 0, *, batch: int = 2, mse: bool = False, ignored=((0, 1), (1, 3))):
    """``(model, ids (batch, T), targets)``: class targets ``(batch, T)`` with ``-100`` at ``ignored``
    positions, or float targets ``(batch, T, 2)`` for MSE."""
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    net = SeqLM(out=2 if mse else V).double()
    ids = torch.randint(0, V, (batch, T), generator=g)
    if mse:
        return net, ids, torch.randn(batch, T, 2, generator=g, dtype=torch.float64)
    y = torch.randint(0, V, (batch, T), generator=g)
    for i, j in ignored:
        y[i, j] = -100
    return net, ids, y


def dense_jacobian(net, ids):
    """``(outputs (B, T, C), J (B·T·C, n))`` by autograd."""
    of, th = outputs_of_flat(net, ids)
    return of(th).detach(), jacobian_of(of, th)


def row_gradients(net, ids, y, *, mse: bool = False):
    """Per-row loss gradients ``(B·T, n)``: ``∇θ ℓ_r`` of ``ℓ_r = −log p_r[y_r]`` or ``Σ_c (f_rc − y_rc)²``."""
    of, th = outputs_of_flat(net, ids)
    if mse:
        return jacobian_of(lambda t: ((of(t) - y) ** 2).sum(-1).reshape(-1), th)
    return jacobian_of(lambda t: F.cross_entropy(of(t).reshape(-1, V), y.reshape(-1).clamp(min=0), reduction="none"), th)


def dense_token_ggn(net, ids, y, *, reduction: str = "mean"):
    """``Jᵀ ∇²L J`` of ``L = F.cross_entropy(logits.reshape(-1, V), y.reshape(-1), reduction=...)``
    (the token mean over non-ignored targets), the loss Hessian w.r.t. all outputs by autograd."""
    out, J = dense_jacobian(net, ids)
    HL = hessian_of(lambda o: F.cross_entropy(o.reshape(-1, V), y.reshape(-1), reduction=reduction), out.reshape(-1))
    return J.mT @ HL @ J
