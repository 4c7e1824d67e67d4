"""GaLore: AdamW with the moments of each 2-D parameter kept in a low-rank projected space.

Zhao, Zhang, Chen, Wang, Anandkumar & Tian (2024), "GaLore: Memory-Efficient LLM Training by
Gradient Low-Rank Projection". For a weight ``W (m, n)`` with gradient ``G``, every
``update_every`` steps (from step 0) a projector is taken from the top-``rank`` singular vectors of
the current ``G`` (:func:`~overparam.backend.linalg.top_svd`, randomized by default):

* ``proj="right"``: ``Q = V_r (n, r)``, ``G̃ = G Q (m, r)``, update back ``Ũ Qᵀ``;
* ``proj="left"``: ``Q = U_r (m, r)``, ``G̃ = Qᵀ G (r, n)``, update back ``Q Ũ``;
* ``proj="auto"`` (GaLore's "std"): right when ``m >= n``, else left (the smaller projector).

Adam's moments are kept for ``G̃`` only; the Adam direction ``Ũ = m̂/(√v̂ + ε)`` is projected back
and multiplied by ``scale`` (GaLore's α, 0.25 by default). As in the reference implementation
the moments are kept across a projector refresh. Weight decay is decoupled and, like the rest
of the arithmetic, exactly ``torch.optim.AdamW``'s (decay before the update, ``ε`` added to
``√v/√(1−β₂ᵗ)``): with ``rank = min(m, n)``, ``scale = 1`` and an axis-aligned projector the
step is AdamW's. (The reference implementation adds ``ε`` to ``√v`` and decays after the update.)

Optimizer state of a projected ``(m, n)`` weight with ``m >= n`` (``proj="auto"``): ``2·m·r``
moments and ``n·r`` projector entries, i.e. ``r/n + r/(2m)`` of AdamW's ``2·m·n``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor
from torch.optim import Optimizer

from ..backend.checks import check_int, check_real
from ..backend.linalg import top_svd
from ..backend.random import GeneratorLike
from ._finite import check_finite_flag, check_finite_grads
from .steps import closure_loss

__all__ = ["GaLore", "optimizer_state_bytes"]

PROJ = ("auto", "left", "right")


def optimizer_state_bytes(optimizer: Optimizer) -> int:
    """Bytes held by the tensors in ``optimizer.state`` (moments, projectors, step counters).

    Example:
        >>> p = torch.nn.Parameter(torch.zeros(4, 3))
        >>> opt = torch.optim.AdamW([p]); p.grad = torch.ones(4, 3); opt.step()
        >>> optimizer_state_bytes(opt)    # two (4, 3) fp32 moments and a 0-dim fp32 step
        100
    """
    if not isinstance(optimizer, Optimizer):
        raise TypeError(f"optimizer must be a torch.optim.Optimizer, got {type(optimizer).__name__}")
    return sum(v.numel() * v.element_size() for st in optimizer.state.values() for v in st.values()
               if isinstance(v, Tensor))


class GaLore(Optimizer):
    """AdamW with GaLore gradient low-rank projection for the 2-D parameters of its groups.

    Args:
        params: parameters or param-group dicts (any key below may be set per group). A group's
            2-D parameters are projected when its ``rank`` is not None; its other parameters
            (biases, norms) and the groups with ``rank=None`` get plain AdamW.
        lr, betas, eps, weight_decay: as ``torch.optim.AdamW``.
        rank: ``r >= 1``, at most ``min(m, n)`` of every projected parameter; or None.
        update_every: ``T >= 1``: the projector is recomputed at steps ``0, T, 2T, ...``.
        scale: ``α > 0`` multiplying the projected-back update.
        proj: ``"auto" | "left" | "right"`` (module docstring).
        svd: ``"randomized"`` (:func:`~overparam.backend.linalg.randomized_svd`, ``niter``,
            ``oversample``) or ``"svd"`` (exact).
        generator: the randomized SVD's sketches (``None``: the measurement rule, docs/index.md:
            the global RNG is never advanced).
        check_finite: raise :class:`~overparam.optim.NonFiniteGradientError` on a NaN/inf gradient.

    Reference: J. Zhao et al., "GaLore: Memory-Efficient LLM Training by Gradient Low-Rank Projection" (ICML 2024).

    Example:
        >>> W = torch.nn.Parameter(torch.randn(32, 16, generator=torch.Generator().manual_seed(0)))
        >>> opt = GaLore([W], lr=1e-2, rank=4, update_every=10)
        >>> for _ in range(3):
        ...     opt.zero_grad(); (W ** 2).sum().backward(); opt.step()
        >>> tuple(opt.state[W]["exp_avg"].shape), tuple(opt.state[W]["projector"].shape)
        ((32, 4), (16, 4))
    """

    def __init__(self, params: Any, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0, *, rank: int | None = 128, update_every: int = 200, scale: float = 0.25,
                 proj: str = "auto", svd: str = "randomized", niter: int = 2, oversample: int = 8,
                 generator: GeneratorLike = None, check_finite: bool = False) -> None:
        defaults = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, rank=rank, update_every=update_every,
                        scale=scale, proj=proj, svd=svd, niter=niter, oversample=oversample,
                        check_finite=check_finite_flag(check_finite))
        self._check(defaults)
        self.generator = generator
        super().__init__(params, defaults)

    @staticmethod
    def _check(g: dict[str, Any]) -> None:
        check_real(g["lr"], "lr", at_least=0.0)
        check_real(g["eps"], "eps", at_least=0.0)
        check_real(g["weight_decay"], "weight_decay", at_least=0.0)
        b = g["betas"]
        if not (isinstance(b, (tuple, list)) and len(b) == 2):
            raise TypeError(f"betas must be a pair of floats, got {b!r}")
        for name, v in zip(("betas[0]", "betas[1]"), b):
            check_real(v, name, at_least=0.0)
            if not v < 1:
                raise ValueError(f"{name} must be in [0, 1), got {v}")
        if g["rank"] is not None:
            check_int(g["rank"], "rank")
        check_int(g["update_every"], "update_every")
        check_real(g["scale"], "scale", above=0.0)
        if g["proj"] not in PROJ:
            raise ValueError(f"proj must be 'auto', 'left' or 'right', got {g['proj']!r}")
        if g["svd"] not in ("randomized", "svd"):
            raise ValueError(f"svd must be 'randomized' or 'svd', got {g['svd']!r}")
        check_int(g["niter"], "niter", at_least=0)
        check_int(g["oversample"], "oversample", at_least=0)
        check_finite_flag(g["check_finite"])

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a group (``torch.optim.Optimizer.add_param_group``); its keys are checked, and
        ``rank`` may not exceed ``min(m, n)`` of a projected ``(m, n)`` parameter.

        Example:
            >>> opt = GaLore([torch.nn.Parameter(torch.zeros(8, 4))], rank=2)
            >>> opt.add_param_group({"params": [torch.nn.Parameter(torch.zeros(4, 4))], "rank": None})
            >>> [g["rank"] for g in opt.param_groups]
            [2, None]
            >>> opt.add_param_group({"params": [torch.nn.Parameter(torch.zeros(3, 5))], "rank": 4})
            Traceback (most recent call last):
            ...
            ValueError: rank = 4 exceeds min(m, n) = 3 of param_groups[2]['params'][0] (3, 5)
        """
        super().add_param_group(param_group)
        group = self.param_groups[-1]
        self._check(group)
        for i, p in enumerate(group["params"]):
            if not p.is_floating_point():
                raise TypeError(f"param_groups[{len(self.param_groups) - 1}]['params'][{i}] must be floating-point")
            if group["rank"] is not None and p.ndim == 2 and group["rank"] > min(p.shape):
                raise ValueError(f"rank = {group['rank']} exceeds min(m, n) = {min(p.shape)} of "
                                 f"param_groups[{len(self.param_groups) - 1}]['params'][{i}] {tuple(p.shape)}")

    @staticmethod
    def _side(group: dict[str, Any], p: Tensor) -> str:
        if group["proj"] != "auto":
            return group["proj"]
        return "right" if p.shape[0] >= p.shape[1] else "left"

    def _projector(self, group: dict[str, Any], G: Tensor, side: str) -> Tensor:
        dt = torch.promote_types(G.dtype, torch.float32)
        dec = top_svd(G.detach().to(dt), group["rank"], method=group["svd"], niter=group["niter"],
                      oversample=group["oversample"], generator=self.generator)
        Q = dec.U if side == "left" else dec.Vh.mT
        return Q.to(G.dtype).contiguous()

    @torch.no_grad()
    def step(self, closure: Callable[[], Tensor] | None = None) -> Tensor | None:
        """One AdamW step with the moments of each projected ``W (m, n)`` kept for ``G̃ = G Q (m, r)``
        (``proj="right"``, ``Q (n, r)``) or ``Qᵀ G (r, n)`` (``"left"``); the projector is refreshed at
        steps ``0, T, 2T, ...``. Returns the closure's loss or None.

        Reference: J. Zhao et al., "GaLore: Memory-Efficient LLM Training by Gradient Low-Rank Projection" (2024).

        Example:
            >>> W = torch.nn.Parameter(torch.randn(6, 4, generator=torch.Generator().manual_seed(0)))
            >>> opt = GaLore([W], lr=0.1, rank=2, svd="svd")
            >>> W0 = W.detach().clone()
            >>> (W.sum(1) ** 2).sum().backward()
            >>> opt.step()
            >>> Q = opt.state[W]["projector"]  # (n, r): the step lies in its span
            >>> tuple(Q.shape), torch.allclose((W.detach() - W0) @ (torch.eye(4) - Q @ Q.T), torch.zeros(6, 4), atol=1e-6)
            ((4, 2), True)
        """
        loss = closure_loss(closure)
        check_finite_grads(self)
        for group in self.param_groups:
            b1, b2 = group["betas"]
            lr, eps, wd = group["lr"], group["eps"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise TypeError("GaLore does not support sparse gradients")
                g, st = p.grad, self.state[p]
                projected = group["rank"] is not None and p.ndim == 2
                if not st:
                    st["step"] = 0
                if projected:
                    if st["step"] % group["update_every"] == 0:
                        st["side"] = self._side(group, p)
                        st["projector"] = self._projector(group, g, st["side"])
                    Q = st["projector"]
                    g = Q.mT @ g if st["side"] == "left" else g @ Q
                if "exp_avg" not in st:
                    st["exp_avg"], st["exp_avg_sq"] = torch.zeros_like(g), torch.zeros_like(g)
                st["step"] += 1
                t = st["step"]
                m, v = st["exp_avg"], st["exp_avg_sq"]
                if wd:
                    p.mul_(1 - lr * wd)
                m.lerp_(g, 1 - b1)
                v.mul_(b2).addcmul_(g, g, value=1 - b2)
                denom = (v.sqrt() / (1 - b2 ** t) ** 0.5).add_(eps)
                u = m / denom
                if projected:
                    u = (Q @ u if st["side"] == "left" else u @ Q.mT).mul_(group["scale"])
                p.add_(u, alpha=-lr / (1 - b1 ** t))
        return loss
