"""Closed-form oracles for factorized parameterizations: the chain rule written out by hand.

Given the dense gradient ``G = ∂ℓ/∂W`` of a loss at the represented weight ``W``, these return
the gradients with respect to the factors, so a test can compare them with autograd.

Example:
    >>> import torch
    >>> L, R, G = torch.ones(3, 2), torch.ones(4, 2), torch.ones(3, 4)
    >>> [t.shape for t in lowrank_grads(L, R, G)]
    [torch.Size([3, 2]), torch.Size([4, 2])]
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from einops import rearrange
from torch import Tensor

from ..backend.checks import check_floats, check_rank

__all__ = ["lowrank_grads", "symmetric_grads", "deep_grads", "hadamard_grads", "loha_grads", "kron_grads",
           "dense_top_svd"]


def lowrank_grads(L: Tensor, R: Tensor, G: Tensor) -> tuple[Tensor, Tensor]:
    """``W = L Rᵀ``: ``(G R, Gᵀ L)``."""
    check_floats({"L": L, "R": R, "G": G})
    return G @ R, G.mT @ L


def symmetric_grads(U: Tensor, G: Tensor) -> Tensor:
    """``W = U Uᵀ``: ``(G + Gᵀ) U``."""
    check_floats({"U": U, "G": G})
    return (G + G.mT) @ U


def deep_grads(Ws: Sequence[Tensor], G: Tensor) -> list[Tensor]:
    """``W = W_N ⋯ W_1``: ``∇W_j = (W_N ⋯ W_{j+1})ᵀ G (W_{j−1} ⋯ W_1)ᵀ``."""
    check_floats({**{f"Ws[{i}]": W for i, W in enumerate(Ws)}, "G": G})
    out = []
    for j in range(len(Ws)):
        after = torch.eye(Ws[j].shape[0], dtype=G.dtype)
        for W in Ws[j + 1:]:
            after = W @ after
        before = torch.eye(Ws[0].shape[1], dtype=G.dtype)
        for W in Ws[:j]:
            before = W @ before
        out.append(after.mT @ G @ before.mT)
    return out


def hadamard_grads(factors: Sequence[Tensor], G: Tensor) -> list[Tensor]:
    """``w = u_1 ⊙ ⋯ ⊙ u_N``: ``∇u_j = G ⊙ ∏_{i≠j} u_i``."""
    check_floats({**{f"factors[{i}]": u for i, u in enumerate(factors)}, "G": G})
    out = []
    for j in range(len(factors)):
        p = torch.ones_like(G)
        for i, u in enumerate(factors):
            if i != j:
                p = p * u
        out.append(G * p)
    return out


def loha_grads(L1: Tensor, R1: Tensor, L2: Tensor, R2: Tensor, G: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``W = (L₁R₁ᵀ) ⊙ (L₂R₂ᵀ)``: the low-rank grads of ``G ⊙ (L₂R₂ᵀ)`` and ``G ⊙ (L₁R₁ᵀ)``."""
    check_floats({"G": G, "L1": L1, "R1": R1, "L2": L2, "R2": R2})
    G1, G2 = G * (L2 @ R2.mT), G * (L1 @ R1.mT)
    return G1 @ R1, G1.mT @ L1, G2 @ R2, G2.mT @ L2


def kron_grads(C: Tensor, L: Tensor, R: Tensor, G: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """``W = C ⊗ (L Rᵀ)``: ``∇C_ab = ⟨G_ab, B⟩``, ``∇B = Σ_ab C_ab G_ab`` (``G_ab`` the blocks)."""
    check_floats({"G": G, "C": C, "L": L, "R": R})
    a1, a2 = C.shape
    blocks = rearrange(G, "(a1 b1) (a2 b2) -> a1 a2 b1 b2", a1=a1, a2=a2)
    B = L @ R.mT
    gC = (blocks * B).sum((-1, -2))
    gB = (C[:, :, None, None] * blocks).sum((0, 1))
    return gC, gB @ R, gB.mT @ L


def dense_top_svd(W: Tensor, k: int) -> Tensor:
    """The best rank-``k`` approximation of ``W`` by a full fp64 SVD."""
    check_floats({"W": W}, finite=True)
    check_rank(k, tuple(W.shape), name="k", at_most_min=True)
    U, S, Vh = torch.linalg.svd(W.double(), full_matrices=False)
    return ((U[:, :k] * S[:k]) @ Vh[:k]).to(W.dtype)
