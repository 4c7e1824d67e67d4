"""The ScaledGD direction of a deep product ``W = W_N ⋯ W_1`` (a :class:`~overparam.factor.Chain`).

Write ``W = A_j W_j B_j`` with ``A_j = W_N ⋯ W_{j+1}`` ``(d_N, d_j)`` (the identity for ``j = N``)
and ``B_j = W_{j−1} ⋯ W_1`` ``(d_{j−1}, d_0)`` (the identity for ``j = 1``). Then
``∇_{W_j} f = A_jᵀ ∇_W f B_jᵀ``, and the direction that replaces it is

    ``D_j = (A_jᵀA_j + λI)⁻¹ ∇_{W_j} f (B_jB_jᵀ + λI)⁻¹``      (a missing side is not preconditioned).

Derivation: with ``λ = 0`` and full-rank ``A_j``, ``B_j``, ``D_j`` is the least-squares solution of
``A_j Δ B_j ≈ ∇_W f``: the Gauss–Newton step of factor ``j`` alone for ``½‖W − M‖²_F``,
which moves the product by ``P_{A_j} ∇_W f P_{B_j}`` (orthogonal projectors onto the column space
of ``A_j`` and the row space of ``B_j``), whatever the factors' conditioning. For ``N = 2``
(``W = L Rᵀ`` with ``W_2 = L``, ``W_1 = Rᵀ``) it is exactly ScaledGD(λ) (Tong, Ma & Chi 2021,
"Accelerating ill-conditioned low-rank matrix estimation via scaled gradient descent", JMLR;
Xu, Shen, Chi & Ma 2023 for ``λ > 0``); summing over the factors of a rank-``r`` chain,
GD with step ``η`` moves the product by ``−η(P_U E + E P_V + (N − 2) P_U E P_V)`` (``E = ∇_W f``,
``U``, ``V`` its column and row spaces), a map whose spectrum does not depend on ``κ(W)``.

The Gram matrices come from the recursions ``A_{j−1}ᵀA_{j−1} = W_jᵀ(A_jᵀA_j)W_j`` and
``B_{j+1}B_{j+1}ᵀ = W_j(B_jB_jᵀ)W_jᵀ`` (``d_j × d_j`` only, never the products themselves), in at
least fp32; the solves are Cholesky solves (:func:`~overparam.backend.linalg.spd_solve`) or, with
``pinv=True``, pseudo-inverses.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..backend.linalg import NotPositiveDefiniteError, spd_solve

__all__ = ["chain_grams", "chain_directions"]


def chain_grams(factors: list[Tensor]) -> tuple[list[Tensor | None], list[Tensor | None]]:
    """``(left, right)``: ``left[j] = A_jᵀA_j`` (None for the last factor) and ``right[j] = B_jB_jᵀ``
    (None for the first), from the detached factors in at least fp32.

    Example:
        >>> left, right = chain_grams([2 * torch.eye(2), 3 * torch.eye(2)])
        >>> left[0].diag().tolist(), left[1], right[0], right[1].diag().tolist()
        ([9.0, 9.0], None, None, [4.0, 4.0])
    """
    Ws = [W.detach().to(torch.promote_types(W.dtype, torch.float32)) for W in factors]
    N = len(Ws)
    left: list[Tensor | None] = [None] * N
    right: list[Tensor | None] = [None] * N
    if N > 1:
        left[N - 2] = Ws[N - 1].mT @ Ws[N - 1]
        right[1] = Ws[0] @ Ws[0].mT
    for j in range(N - 3, -1, -1):
        left[j] = Ws[j + 1].mT @ left[j + 1] @ Ws[j + 1]
    for j in range(2, N):
        right[j] = Ws[j - 1] @ right[j - 1] @ Ws[j - 1].mT
    return left, right


def _right_solve(G: Tensor, B: Tensor, damping: float, pinv: bool) -> Tensor:
    """``B (G + λI)⁻¹``."""
    if pinv:
        return B @ torch.linalg.pinv(G + damping * torch.eye(G.shape[-1], dtype=G.dtype, device=G.device), hermitian=True)
    return spd_solve(G, B, damping=damping)


def chain_directions(factors: list[Tensor], grads: list[Tensor | None], *, damping: float = 0.0,
                     pinv: bool = False, name: str = "chain") -> list[Tensor | None]:
    """``D_j = (A_jᵀA_j + λI)⁻¹ g_j (B_jB_jᵀ + λI)⁻¹`` for every ``g_j`` that is not None (module
    docstring), cast to ``g_j``'s dtype; a Gram matrix that is not PD raises naming ``name`` and ``j``.

    Example:
        >>> Ws = [2 * torch.eye(2, dtype=torch.float64), 3 * torch.eye(2, dtype=torch.float64)]
        >>> [d.diag().tolist() for d in chain_directions(Ws, [W.new_ones(2, 2) for W in Ws])]
        [[0.1111111111111111, 0.1111111111111111], [0.25, 0.25]]
    """
    left, right = chain_grams(factors)
    out: list[Tensor | None] = []
    for j, g in enumerate(grads):
        if g is None:
            out.append(None)
            continue
        d = g.to(torch.promote_types(g.dtype, torch.float32))
        try:
            if left[j] is not None:         # (AᵀA + λI)⁻¹ d = ((dᵀ)(AᵀA + λI)⁻¹)ᵀ, the Gram being symmetric
                d = _right_solve(left[j], d.mT, damping, pinv).mT
            if right[j] is not None:
                d = _right_solve(right[j], d, damping, pinv)
        except NotPositiveDefiniteError as e:
            raise NotPositiveDefiniteError(f"{name}, factor {j} (shape {tuple(g.shape)}): {e}") from None
        out.append(d.to(g.dtype))
    return out
