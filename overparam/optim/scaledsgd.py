"""ScaledSGD: minibatch preconditioned SGD for large (sparse) matrix completion.

G. Zhang, H.-M. Chiu & R. Y. Zhang (NeurIPS 2022), "Accelerating SGD for Highly
Ill-Conditioned Huge-Scale Online Matrix Completion": each minibatch of observed entries
touches only a few rows of the factors, so the preconditioners ``(RᵀR + λI)⁻¹`` / ``(LᵀL + λI)⁻¹`` are kept up to date
*incrementally*: the optimizer stores the Gram matrices and, after updating the rows ``I`` of
``L``, adds ``L_Iᵀ L_I`` (new) − ``L_Iᵀ L_I`` (old). A step costs ``O(b r² + r³)`` for a batch
touching ``b`` rows instead of ``O(n r²)``. Every ``refresh`` steps the Grams are recomputed
exactly (so round-off does not accumulate, and edits made to the factors outside the
optimizer are picked up at the next refresh). The authors' code (Hong-Ming/ScaledSGD,
``scaledsgd.m``: one sampled entry per step) instead keeps the *inverse* ``(XᵀX)⁻¹`` up to date
by Sherman–Morrison rank-one updates (``O(r²)`` per entry); keeping the Gram matrices and
solving by Cholesky costs an extra ``O(r³)`` per step but never accumulates round-off in an
explicit inverse (and a Gram that stops being PD raises instead of giving a wrong step). Damping ``λ`` is not in the paper (``λ = 0`` there); it is the ScaledGD(λ)
option for rank-deficient or over-parameterized factors.

The rows touched are the rows with a nonzero gradient: compute the loss on a minibatch of
entries (e.g. :meth:`overparam.problems.MatrixCompletion.loss` with ``entries=``), call
``backward()`` and ``step()``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from ..backend.linalg import spd_solve
from ._pairs import PairOptimizer
from .steps import closure_loss

__all__ = ["ScaledSGD"]


class ScaledSGD(PairOptimizer):
    """Preconditioned SGD over factor pairs with incrementally maintained Gram matrices.

    Args:
        params: factor pairs / symmetric factors / param-group dicts (see :class:`ScaledGD`).
        lr: step size ``η >= 0``.
        damping: ``λ >= 0``.
        refresh: recompute the Gram matrices exactly every ``refresh`` steps (>= 1).
        check_finite: raise :class:`~overparam.optim.NonFiniteGradientError` naming the factor
            whose gradient holds NaN/inf, before any update (see :class:`ScaledGD`; off by default:
            a non-finite gradient then also enters the incrementally kept Gram matrices).

    Reference: G. Zhang, H.-M. Chiu & R. Y. Zhang, "Accelerating SGD for Highly Ill-Conditioned Huge-Scale Online
        Matrix Completion" (NeurIPS 2022).

    Example:
        >>> import torch, overparam as op
        >>> P = op.problems.completion(n=30, r=2, p=0.5, symmetric=False, generator=0)
        >>> L, R = (t.requires_grad_() for t in P.init("spectral", rank=2))
        >>> opt = op.optim.ScaledSGD([(L, R)], lr=0.2)
        >>> g = torch.Generator().manual_seed(0)
        >>> float(P.relative_error((L.detach(), R.detach()))) > 0.4   # the spectral start
        True
        >>> for _ in range(200):   # 40 random observed entries per step; linear convergence
        ...     opt.zero_grad(); P.loss((L, R), entries=P.minibatch(40, generator=g)).backward(); opt.step()
        >>> float(P.relative_error((L.detach(), R.detach()))) < 1e-3
        True
    """

    def __init__(self, params: Any, lr: float = 0.5, damping: float = 0.0, refresh: int = 100, *,
                 check_finite: bool = False) -> None:
        if not isinstance(refresh, int) or refresh < 1:
            raise ValueError(f"refresh must be an int >= 1, got {refresh!r}")
        super().__init__(params, dict(lr=lr, damping=damping, refresh=refresh), check_finite=check_finite)

    @staticmethod
    def _rows(g: Tensor | None) -> Tensor | None:
        if g is None:
            return None
        if g.is_sparse:
            raise TypeError("ScaledSGD does not support sparse gradients")
        return torch.nonzero(torch.any(g != 0, dim=1)).squeeze(1)

    @torch.no_grad()
    def step(self, closure: Callable[[], Tensor] | None = None) -> Tensor | None:
        """One step on the rows with a nonzero gradient: ``L_I ← L_I − η ∇_{L_I} f (RᵀR + λI)⁻¹``
        (likewise ``R``), the stored Grams updated by the changed rows (``L (n1, k)``, ``R (n2, k)``).

        Returns the loss of the optional ``closure`` (evaluated with grad enabled), or None.

        Example:
            >>> _ = torch.manual_seed(0)
            >>> L, R = torch.randn(5, 2, requires_grad=True), torch.randn(4, 2, requires_grad=True)
            >>> opt = ScaledSGD([(L, R)], lr=0.5)
            >>> (L[1] @ R[2] - 1.0).square().backward()  # one observed entry (1, 2)
            >>> L0, R0 = L.detach().clone(), R.detach().clone()
            >>> opt.step()
            >>> changed = (L.detach() != L0).any(1).nonzero().flatten().tolist(), (R.detach() != R0).any(1).nonzero().flatten().tolist()
            >>> changed  # only the touched rows move
            ([1], [2])
            >>> torch.allclose(opt.state[L]["gram_L"], L.detach().T @ L.detach(), atol=1e-5)  # Gram kept up to date
            True
        """
        loss = closure_loss(closure)
        self._check_finite()
        for group in self.param_groups:
            lr, lam = group["lr"], group["damping"]
            ps = group["params"]
            for i, j in group["pair_index"]:
                L, R = ps[i], ps[j]
                st = self.state[L]
                if st.get("since_refresh", group["refresh"]) >= group["refresh"]:
                    st["gram_L"] = L.mT @ L
                    if i != j:
                        st["gram_R"] = R.mT @ R
                    st["since_refresh"] = 0
                st["since_refresh"] += 1
                GL = st["gram_L"]
                GR = GL if i == j else st["gram_R"]
                rl, rr = self._rows(L.grad), (None if i == j else self._rows(R.grad))
                upd = []
                if rl is not None:
                    upd.append((L, rl, spd_solve(GR, L.grad[rl], damping=lam), "gram_L"))
                if rr is not None:
                    upd.append((R, rr, spd_solve(GL, R.grad[rr], damping=lam), "gram_R"))
                for T, rows, d, key in upd:
                    old = T[rows]
                    new = old - lr * d
                    T[rows] = new
                    st[key] = st[key] + new.mT @ new - old.mT @ old
        return loss
