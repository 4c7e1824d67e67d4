"""LoRA adapter inits from the weight (OLoRA, MiLoRA) and from data statistics (LoRA-GA, EVA, CorDA).

Pure functions on the ``(rows, cols)`` weight matrix ``W`` (the layer's computation matrix, see
:mod:`~overparam.factor._layers`); each returns :class:`AdapterInit` ``(up (rows, r), down (cols, r),
residual)``: the adapter update is ``s · up @ downᵀ`` (``s`` the LoRA scaling) and ``residual``
says whether the base weight becomes ``W − s · up @ downᵀ`` (so the model's output is unchanged
at init) or stays ``W`` (then ``up = 0``). :func:`~overparam.factor.lora_` applies them
(``init="olora" | "milora" | "lora_ga" | "eva" | "corda"``); the statistics (gradient, input
rows, input covariance) are gathered by :mod:`~overparam.factor.data_inits`.

* OLoRA (Büyükakyüz 2024): ``W = Q R`` (reduced Householder QR), ``up = Q[:, :r]``,
  ``down = R[:r]ᵀ``, residual.
* MiLoRA (Wang et al. 2024): the *minor* singular triplets, ``up = U_r (S_r/s)^{1/2}``,
  ``down = V_r (S_r/s)^{1/2}`` from the ``r`` smallest singular values; the residual is the
  principal part (PiSSA's complement).
* LoRA-GA (Wang et al. 2024, as peft 0.21 implements it): from the SVD ``G = U S Vᵀ`` of the
  loss gradient in ``W``, ``down = V[:, :r]`` and ``up = U[:, r:2r] S[r:2r] · ζ`` with the
  "stable" ``ζ = rows^{1/4}/√γ``; residual.
* EVA (Paischer et al. 2024): ``down`` = the top right-singular vectors (principal
  components) of the layer's centered input rows, ``up = 0``; ranks redistributed across
  layers by explained variance (:func:`eva_ranks`).
* CorDA (Yang et al. 2024): the SVD of ``W C`` with ``C`` the damped input covariance,
  ``W C = U S V̂ᵀ`` and ``V = C⁻¹ V̂`` (so ``W = U S Vᵀ``); ``mode="ipm"``
  (instruction-previewed) takes the ``r`` largest triplets, ``mode="kpm"`` (knowledge-preserved)
  the ``r`` smallest; ``up = U_r (S_r/s)^{1/2}``, ``down = V_r (S_r/s)^{1/2}``; residual.

Example:
    >>> import torch
    >>> W = torch.randn(5, 4, dtype=torch.float64)
    >>> i = olora(W, 2, scaling=1.0)
    >>> bool(torch.allclose(i.up.mT @ i.up, torch.eye(2, dtype=torch.float64)))
    True
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from ..backend.checks import check_rank, check_real
from ..backend.linalg import top_svd
from ..backend.random import GeneratorLike, construction_generator

__all__ = ["AdapterInit", "olora", "milora", "lora_ga", "pca", "eva_ranks", "corda", "corda_damped_covariance"]


@dataclass
class AdapterInit:
    """``up (rows, r)``, ``down (cols, r)``; ``residual``: subtract ``s · up @ downᵀ`` from the base weight."""

    up: Tensor
    down: Tensor
    residual: bool


def _split(U: Tensor, S: Tensor, V: Tensor, scaling: float) -> AdapterInit:
    root = (S / scaling).sqrt()
    return AdapterInit((U * root).contiguous(), (V * root).contiguous(), True)


def olora(W: Tensor, rank: int, *, scaling: float) -> AdapterInit:
    """OLoRA: ``up = Q[:, :r]``, ``down = R[:r]ᵀ`` of ``W = Q R``; ``rank <= min(rows, cols)``.

    Example:
        >>> i = olora(torch.eye(3), 1, scaling=2.0)
        >>> i.up.shape, i.down.shape, i.residual
        (torch.Size([3, 1]), torch.Size([3, 1]), True)
    """
    check_rank(rank, tuple(W.shape), at_most_min=True)
    Q, R = torch.linalg.qr(W)
    return AdapterInit(Q[:, :rank].contiguous(), R[:rank].mT.contiguous(), True)


def milora(W: Tensor, rank: int, *, scaling: float) -> AdapterInit:
    """MiLoRA: the ``rank`` smallest singular triplets of ``W``, split ``(S/s)^{1/2}`` on each side.

    Example:
        >>> i = milora(torch.diag(torch.tensor([3.0, 2.0, 1.0])), 1, scaling=1.0)
        >>> (i.up @ i.down.mT).diagonal()
        tensor([0., 0., 1.])
    """
    check_rank(rank, tuple(W.shape), at_most_min=True)
    U, S, Vh = torch.linalg.svd(W, full_matrices=False)
    return _split(U[:, -rank:], S[-rank:], Vh[-rank:].mT, scaling)


GA_DIRECTIONS = ("ArBr", "A2rBr", "ArB2r", "random")
GA_SCALES = ("stable", "unit", "gd_scale", "weight_svd")
GA_SVDS = ("randomized", "svd")


def lora_ga(G: Tensor, W: Tensor, rank: int, *, scaling: float, direction: str = "ArB2r", scale: str = "stable",
            gamma: float = 16.0, svd: str = "randomized", niter: int = 4, oversample: int = 8,
            generator: GeneratorLike = None) -> AdapterInit:
    """LoRA-GA from the gradient ``G (rows, cols)`` of the loss in ``W``; ``2·rank <= min(rows, cols)``.

    ``direction`` picks the singular indices of ``down`` / ``up``: ``"ArB2r"`` (``:r`` / ``r:2r``),
    ``"A2rBr"`` (``r:2r`` / ``:r``), ``"ArBr"`` (odd / even of ``:2r``), ``"random"`` (the same
    ``r`` indices ``randperm(2r)[:r]`` for both, drawn from ``generator``: ``None`` is torch's
    default generator, the construction rule); ``up`` carries its singular values. ``scale``: ``"stable"`` (``up · rows^{1/4}/√gamma``), ``"unit"``, ``"gd_scale"`` (both
    divided by ``s``), ``"weight_svd"`` (``up · σ₁(W)/S_up[0]``). The top ``2·rank`` singular
    triplets of ``G`` come from :func:`~overparam.backend.linalg.top_svd`: ``svd="randomized"``
    (default; ``niter`` power iterations, ``oversample`` extra columns, the global RNG read but not
    advanced) or ``"svd"`` (exact, 8–29x slower on 1024x1024 gradients; docs/factor.md has the
    measured accuracy of the default).

    Example:
        >>> G = torch.diag(torch.tensor([4.0, 3.0, 2.0, 1.0]))
        >>> i = lora_ga(G, torch.eye(4), 1, scaling=1.0, scale="unit")
        >>> round((i.up @ i.down.mT).abs().sum().item(), 4)
        3.0
    """
    check_rank(2 * rank, tuple(G.shape), name="2·rank", at_most_min=True)
    if direction not in GA_DIRECTIONS:
        raise ValueError(f"ga_direction must be one of {GA_DIRECTIONS}, got {direction!r}")
    if scale not in GA_SCALES:
        raise ValueError(f"ga_scale must be one of {GA_SCALES}, got {scale!r}")
    check_real(gamma, "ga_gamma", above=0.0)
    dec = top_svd(G, 2 * rank, method=svd, niter=niter, oversample=oversample)
    U, S, Vh = dec.U, dec.S, dec.Vh
    if direction == "random":
        a = b = torch.randperm(2 * rank, generator=construction_generator(generator))[:rank].to(G.device)
    else:
        a, b = {"ArB2r": (slice(0, rank), slice(rank, 2 * rank)), "A2rBr": (slice(rank, 2 * rank), slice(0, rank)),
                "ArBr": (slice(1, 2 * rank, 2), slice(0, 2 * rank, 2))}[direction]
    down, up = Vh[a].mT, U[:, b] * S[b]
    if scale == "stable":
        up = up * (G.shape[0] ** 0.25 / math.sqrt(gamma))
    elif scale == "gd_scale":
        up, down = up / scaling, down / scaling
    elif scale == "weight_svd" and S[b][0] > 0:
        up = up * (torch.linalg.svdvals(W)[0] / S[b][0])
    return AdapterInit(up.contiguous(), down.contiguous(), True)


def pca(X: Tensor, *, center: bool = True, singular_values: bool = False) -> tuple[Tensor, ...]:
    """EVA's components: the right-singular vectors ``V (cols, k)`` of the stacked input rows
    ``X (N, cols)`` (centered by default: principal components), and their explained-variance
    ratios ``S²/ΣS² (k,)``, descending; ``k = min(N, cols)``. ``singular_values=True`` also
    returns ``S (k,)`` (EVA's ``eva_whiten`` divides the components by ``√S``).

    Example:
        >>> X = torch.tensor([[3.0, 0.0], [-3.0, 0.0], [0.0, 1.0], [0.0, -1.0]])
        >>> V, ratio = pca(X)
        >>> V[:, 0].abs().round(decimals=4), ratio
        (tensor([1., 0.]), tensor([0.9000, 0.1000]))
    """
    Xc = X - X.mean(0) if center else X
    _, S, Vh = torch.linalg.svd(Xc, full_matrices=False)
    var = S.square()
    return (Vh.mT, var / var.sum(), S) if singular_values else (Vh.mT, var / var.sum())


def eva_ranks(explained: dict[str, Tensor], budget: int, cap: dict[str, int]) -> dict[str, int]:
    """EVA's rank redistribution: the ``budget`` largest explained-variance ratios over all layers
    (layer ``k`` offering its first ``cap[k]``), counted per layer; ties by layer order, then index.
    The ranks sum to ``min(budget, Σ cap)``.

    Example:
        >>> eva_ranks({"a": torch.tensor([0.9, 0.05]), "b": torch.tensor([0.6, 0.3])}, 2, {"a": 2, "b": 2})
        {'a': 1, 'b': 1}
    """
    items = [(float(v), i, k) for i, k in enumerate(explained) for v in explained[k][: cap[k]].tolist()]
    order = sorted(range(len(items)), key=lambda j: (-items[j][0], j))
    counts = dict.fromkeys(explained, 0)
    for j in order[:budget]:
        counts[items[j][2]] += 1
    return counts


def corda_damped_covariance(C: Tensor, damping: float = 0.01) -> tuple[Tensor, Tensor]:
    """``(C + δ·mean(diag C)·I, its inverse)`` with ``δ`` doubled from ``damping`` until
    ``‖(C+…)(C+…)⁻¹ − I‖_F < 0.05`` (CorDA's reference rule).

    Example:
        >>> Cd, inv = corda_damped_covariance(torch.eye(2, dtype=torch.float64))
        >>> Cd.diagonal()
        tensor([1.0100, 1.0100], dtype=torch.float64)
    """
    eye = torch.eye(C.shape[0], dtype=C.dtype, device=C.device)
    mean = C.diagonal().mean()
    while True:
        Cd = C + eye * (mean * damping)
        inv = torch.linalg.inv(Cd)
        if float(torch.dist(Cd @ inv, eye)) < 0.05:
            return Cd, inv
        damping *= 2


def corda(W: Tensor, C: Tensor, rank: int, *, scaling: float, mode: str = "ipm") -> AdapterInit:
    """CorDA from the input covariance ``C (cols, cols)``: SVD of ``W C_d`` (damped), ``V = C_d⁻¹ V̂``;
    ``mode="ipm"`` the ``rank`` largest triplets, ``"kpm"`` the smallest.

    Example:
        >>> i = corda(torch.eye(3), torch.eye(3), 3, scaling=1.0)
        >>> bool(torch.allclose(i.up @ i.down.mT, torch.eye(3)))
        True
    """
    if mode not in ("ipm", "kpm"):
        raise ValueError(f"corda_mode must be 'ipm' or 'kpm', got {mode!r}")
    check_rank(rank, tuple(W.shape), at_most_min=True)
    Cd, inv = corda_damped_covariance(C)
    U, S, Vh = torch.linalg.svd(W @ Cd, full_matrices=False)
    V = (Vh @ inv).mT
    keep = slice(0, rank) if mode == "ipm" else slice(S.shape[0] - rank, S.shape[0])
    return _split(U[:, keep], S[keep], V[:, keep], scaling)
