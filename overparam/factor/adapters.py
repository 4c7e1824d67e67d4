"""Adapters on a frozen base weight: LoRA, rsLoRA, PiSSA, DoRA, and ReLoRA restarts.

:class:`LoRALayer` wraps a Linear, ConvNd, Embedding or transformers ``Conv1D`` ``base`` (held, frozen) and adds
``ΔW = s · up @ downᵀ`` (the weight seen as a matrix ``(rows, cols)``, see
:mod:`~overparam.factor._layers`) with ``s = α/r`` (or ``α/√r`` with ``rslora=True``):

* ``init="gaussian"``: ``down ~ N(0, 1/r²)``, ``up = 0``; ``"kaiming"``: ``down ~ U(±1/√cols)``
  (``nn.Linear``'s default), ``up = 0``. Either leaves the output bit-identical at init.
* ``init="pissa"``: ``up = U_r (S_r/s)^{1/2}``, ``down = V_r (S_r/s)^{1/2}`` from the top-``r``
  SVD of the base weight (``svd="randomized"`` for the fast randomized SVD), and the base
  weight is overwritten in place by the residual ``W − s·up downᵀ`` (PiSSA, Meng et al. 2024).
* ``init="olora"`` / ``"milora"``: OLoRA (QR) and MiLoRA (minor singular triplets), with the
  residual base weight likewise; ``"lora_ga"`` / ``"eva"`` / ``"corda"`` are computed from data
  by :func:`~overparam.factor.lora_` (:mod:`~overparam.factor.inits`).
* ``dora=True``: ``W' = m ⊙ (W + ΔW)/‖W + ΔW‖_row`` with the magnitude ``m`` initialized to the
  row norms of ``W`` (DoRA, Liu et al. 2024); the norm is detached by default, as the paper does.

``state_dict`` keys of a wrapped layer ``name``: ``name.base.weight``, ``name.base.bias``,
``name.lora_down (cols, r)``, ``name.lora_up (rows, r)``, ``name.lora_magnitude (rows,)`` (DoRA).
The pair protocol yields ``(lora_up, lora_down)``.

Example:
    >>> import torch
    >>> base = torch.nn.Linear(8, 4)
    >>> layer = LoRALayer(base, rank=2, alpha=4, generator=0)
    >>> x = torch.randn(3, 8)
    >>> bool((layer(x) == base(x)).all())
    True
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..backend.checks import check_float, check_rank
from ..backend.linalg import top_svd
from ..backend.random import GeneratorLike, construction_generator, gaussian, uniform
from . import _layers, inits
from ._checks import check_module
from .layer import LayerWrapper

__all__ = ["LoRALayer", "relora_restart_", "lora_scaling"]


def _scaling(alpha: float, rank: int, rslora: bool) -> float:
    return alpha / math.sqrt(rank) if rslora else alpha / rank


def lora_scaling(alpha: float, rank: int, *, rslora: bool = False) -> float:
    """``α/r``, or ``α/√r`` for rsLoRA (Kalajdzievski 2023).

    Reference: E. J. Hu et al., "LoRA: Low-Rank Adaptation of Large Language Models" (ICLR 2022); D. Kalajdzievski,
        "A Rank Stabilization Scaling Factor for Fine-Tuning with LoRA" (2023)

    Example:
        >>> lora_scaling(16, 4), lora_scaling(16, 4, rslora=True)
        (4.0, 8.0)
    """
    check_rank(rank)
    if not alpha > 0:
        raise ValueError(f"alpha must be > 0, got {alpha}")
    return _scaling(alpha, rank, rslora)


INITS = ("gaussian", "kaiming", "pissa", "olora", "milora", "lora_ga", "eva", "corda")
_FROM_WEIGHT = ("pissa", "olora", "milora")
_FROM_DATA = ("lora_ga", "eva", "corda")


@dataclass(frozen=True)
class _Options:
    """:class:`LoRALayer`'s arguments, validated once on construction (``check(base)`` adds the
    per-layer checks), so that :func:`~overparam.factor.lora_` validates them once for all layers."""

    rank: int
    alpha: float | None = None
    rslora: bool = False
    dropout: float = 0.0
    init: str = "kaiming"
    svd: str = "svd"
    niter: int = 4
    oversample: int = 8
    dora: bool = False
    detach_norm: bool = True

    def __post_init__(self) -> None:
        check_rank(self.rank)
        if self.init not in INITS:
            raise ValueError(f"init must be one of {INITS}, got {self.init!r}")
        if self.svd not in ("svd", "randomized"):
            raise ValueError(f"svd must be 'svd' or 'randomized', got {self.svd!r}")
        for name in ("niter", "oversample"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ValueError(f"{name} must be an int >= 0, got {v!r}")
        if self.alpha is not None and not self.alpha > 0:
            raise ValueError(f"alpha must be > 0, got {self.alpha}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")

    def check(self, base: nn.Module) -> None:
        """The checks that depend on the layer (raises ValueError/TypeError, changes nothing)."""
        _layers.check_supported(base)
        if self.init in _FROM_WEIGHT or self.init == "corda":
            check_rank(self.rank, _layers.matrix_shape(base), at_most_min=True)
        if self.init == "eva":                                  # components live in the input space
            check_rank(self.rank, (_layers.matrix_shape(base)[1],), at_most_min=True)
        if self.init == "lora_ga":
            check_rank(2 * self.rank, _layers.matrix_shape(base), name="2·rank", at_most_min=True)
        if isinstance(base, nn.Embedding) and (self.dropout > 0 or self.dora):
            raise ValueError("dropout and dora are not defined for an nn.Embedding base")
        check_float(base.weight, "base.weight")


@torch.no_grad()
def _weight_init(W: Tensor, base: nn.Module, opts: _Options, scaling: float, generator) -> inits.AdapterInit:
    """PiSSA / OLoRA / MiLoRA factors from the base weight (its ``(rows, cols)`` view)."""
    W2 = _layers.as_matrix(base, W.detach())
    if opts.init == "olora":
        return inits.olora(W2, opts.rank, scaling=scaling)
    if opts.init == "milora":
        return inits.milora(W2, opts.rank, scaling=scaling)
    dec = top_svd(W2, opts.rank, method=opts.svd, niter=opts.niter, oversample=opts.oversample, generator=generator)
    s = (dec.S / scaling).sqrt()
    return inits.AdapterInit(dec.U * s, dec.Vh.mT * s, True)


def _draw_down(kind: str, cols: int, rank: int, g: torch.Generator, like: Tensor) -> Tensor:
    if kind == "gaussian":
        return gaussian((cols, rank), generator=g, dtype=like.dtype, device=like.device) / rank
    if kind == "kaiming":
        return uniform((cols, rank), low=-1.0, high=1.0, generator=g, dtype=like.dtype, device=like.device) / math.sqrt(cols)
    raise ValueError(f"init must be 'gaussian', 'kaiming' or 'pissa', got {kind!r}")


class LoRALayer(LayerWrapper):
    """A frozen ``base`` layer plus a trainable low-rank (LoRA / PiSSA / DoRA) update.

    ``generator=None`` draws from torch's default generator (the construction rule, docs/index.md).

    Args:
        base: an ``nn.Linear``, ``nn.Conv1d/2d/3d``, ``nn.Embedding`` or transformers' ``Conv1D``; held as ``self.base``
            with its parameters frozen (``requires_grad=False``).
        rank: ``r >= 1`` (``<= min(rows, cols)`` for PiSSA, OLoRA, MiLoRA).
        alpha: ``α`` (default ``r``, i.e. ``s = 1``). rslora: use ``α/√r``.
        dropout: dropout probability on the adapter's input (not for Embedding).
        init: ``"gaussian" | "kaiming" | "pissa" | "olora" | "milora"`` (the data-driven
            ``"lora_ga" | "eva" | "corda"`` through :func:`~overparam.factor.lora_`).
        svd: PiSSA's SVD, ``"svd"`` (exact) or ``"randomized"`` (``niter``, ``oversample``).
        dora: add the DoRA magnitude vector. detach_norm: DoRA's constant-norm gradient trick.
        generator: the only source of randomness of the init.

    Reference: LoRA (E. J. Hu et al., ICLR 2022); rsLoRA (D. Kalajdzievski, 2023); PiSSA (F. Meng, Z. Wang &
        M. Zhang, NeurIPS 2024); DoRA (S.-Y. Liu et al., ICML 2024).

    Example:
        >>> W = torch.nn.Linear(6, 6, bias=False).double()
        >>> W0 = W.weight.detach().clone()
        >>> layer = LoRALayer(W, rank=2, init="pissa")
        >>> bool(torch.allclose(layer.base.weight + layer.delta_weight(), W0))
        True
    """

    def __init__(self, base: nn.Module, rank: int, *, alpha: float | None = None, rslora: bool = False,
                 dropout: float = 0.0, init: str = "kaiming", svd: str = "svd", niter: int = 4, oversample: int = 8,
                 dora: bool = False, detach_norm: bool = True, generator: GeneratorLike = None) -> None:
        opts = _Options(rank, alpha=alpha, rslora=rslora, dropout=dropout, init=init, svd=svd, niter=niter,
                        oversample=oversample, dora=dora, detach_norm=detach_norm)
        if init in _FROM_DATA:
            raise ValueError(f"init={init!r} is computed from data: use lora_(model, ..., init={init!r}, data=...)")
        opts.check(base)                                   # before any change to base
        self._setup(base, opts, generator)

    @classmethod
    def _build(cls, base: nn.Module, opts: _Options, generator: GeneratorLike,
               start: inits.AdapterInit | None = None) -> LoRALayer:
        """Construct from options already checked against ``base`` (by :func:`lora_`); ``start``:
        the factors of a data-driven init."""
        self = cls.__new__(cls)
        self._setup(base, opts, generator, start)
        return self

    def _setup(self, base: nn.Module, opts: _Options, generator: GeneratorLike,
               start: inits.AdapterInit | None = None) -> None:
        super().__init__(base, residual=True)
        rows, cols = _layers.matrix_shape(base)
        self._linear_like = _layers.layout(base).linear_like      # fused x A Bᵀ paths (Linear, Conv1D)
        self.rank, self.rslora, self.dora, self.detach_norm = opts.rank, opts.rslora, opts.dora, opts.detach_norm
        self.alpha = float(opts.rank if opts.alpha is None else opts.alpha)
        self.scaling = _scaling(self.alpha, opts.rank, opts.rslora)
        self.init_kind = opts.init
        self.lora_dropout = nn.Dropout(opts.dropout) if opts.dropout > 0 else nn.Identity()
        for p in base.parameters():
            p.requires_grad_(False)
        W = base.weight
        if start is None and opts.init in _FROM_WEIGHT:
            start = _weight_init(W, base, opts, self.scaling, generator)
        if start is not None:
            up, down = start.up, start.down
            if start.residual:
                with torch.no_grad():                            # the residual, in place
                    _layers.as_matrix(base, W.detach()).addmm_(up, down.mT, alpha=-self.scaling)
        else:
            down = _draw_down(opts.init, cols, opts.rank, construction_generator(generator), W)
            up = W.new_zeros(rows, opts.rank)
        self.lora_down = nn.Parameter(down.contiguous())
        self.lora_up = nn.Parameter(up.contiguous())
        if opts.dora:
            self.lora_magnitude = nn.Parameter(self._row_norm(_layers.as_matrix(base, W.detach())))
        self.register_buffer("_merged_norm", None, persistent=False)

    # ----------------------------------------------------------------- math
    @staticmethod
    def _row_norm(M: Tensor) -> Tensor:
        return torch.linalg.vector_norm(M, dim=1)

    def delta_weight(self) -> Tensor:
        """``s · up @ downᵀ`` in the base weight's shape (``up (rows, r)``, ``down (cols, r)``, ``s = α/r``).

        Example:
            >>> layer = LoRALayer(nn.Linear(4, 3), rank=2, alpha=4.0, generator=0)
            >>> _ = nn.init.ones_(layer.lora_up)  # 0 at init
            >>> torch.equal(layer.delta_weight(), 2.0 * layer.lora_up @ layer.lora_down.T)
            True
        """
        return _layers.from_matrix(self.base, self._delta_matrix(), self.weight_shape)

    def _delta_matrix(self) -> Tensor:
        return self.scaling * (self.lora_up @ self.lora_down.mT)

    def update(self) -> Tensor:
        """``ΔW = s · up @ downᵀ`` as the ``(rows, cols)`` matrix of the computation.

        Example:
            >>> layer = LoRALayer(nn.Linear(4, 3), rank=2, generator=0)
            >>> layer.update().shape, torch.equal(layer.update(), layer.delta_weight())
            (torch.Size([3, 4]), True)
        """
        return self._delta_matrix()

    def factor_pairs(self) -> list[tuple[nn.Parameter, nn.Parameter]]:
        """``[(up (rows, r), down (cols, r))]``: the pair protocol (``ΔW ∝ up @ downᵀ``).

        Example:
            >>> layer = LoRALayer(nn.Linear(4, 3), rank=2, generator=0)
            >>> [(L is layer.lora_up, R is layer.lora_down) for L, R in layer.factor_pairs()]
            [(True, True)]
        """
        return [(self.lora_up, self.lora_down)]

    def _dora_scale(self) -> Tensor:
        V = _layers.as_matrix(self.base, self.base.weight) + (self.scaling * self.lora_up) @ self.lora_down.mT
        norm = self._row_norm(V)
        if self.detach_norm:
            norm = norm.detach()
        return (self.lora_magnitude / norm).reshape(_layers.bias_shape(self.base))

    def _lora_out(self, x: Tensor) -> Tensor:
        if self._linear_like:
            up = self.lora_up if self.scaling == 1.0 else self.lora_up * self.scaling
            return F.linear(self.lora_dropout(x) @ self.lora_down, up)
        return _layers.call(self.base, self.lora_dropout(x), self.delta_weight(), None)

    def forward(self, x: Tensor) -> Tensor:
        """``base(x) + s · (dropout(x) down) upᵀ`` (Linear: ``(..., in) → (..., out)``); DoRA rescales
        the rows: ``m ⊙ (W + ΔW)/‖W + ΔW‖_row``. Merged: ``base(x)``.

        Example:
            >>> layer = LoRALayer(nn.Linear(4, 3), rank=2, generator=0)
            >>> _ = nn.init.normal_(layer.lora_up, generator=torch.Generator().manual_seed(1))
            >>> x = torch.randn(5, 4, generator=torch.Generator().manual_seed(2))
            >>> torch.allclose(layer(x), layer.base(x) + x @ layer.delta_weight().T, atol=1e-6)
            True
        """
        y = self.base(x)
        if self.merged:
            return y
        if not self.dora:
            if self._linear_like:  # fused: y + s·(x A) Bᵀ in one addmm, no extra pass over y
                h = self.lora_dropout(x) @ self.lora_down
                out = torch.addmm(y.reshape(-1, y.shape[-1]), h.reshape(-1, h.shape[-1]), self.lora_up.mT,
                                  alpha=self.scaling)
                return out.reshape(y.shape)
            return y + self._lora_out(x)
        scale = self._dora_scale()
        bias = getattr(self.base, "bias", None)
        plain = y if bias is None else y - bias.reshape(_layers.bias_shape(self.base))
        return y + (scale - 1) * plain + scale * self._lora_out(x)

    # ---------------------------------------------------------- merge (DoRA's is not additive)
    def _dora_parts(self) -> tuple[Tensor, Tensor]:
        """``V = W + ΔW`` as ``(rows, cols)`` and its row norms."""
        V = _layers.as_matrix(self.base, self.base.weight) + self._delta_matrix()
        return V, self._row_norm(V)

    @property
    def weight(self) -> Tensor:
        """The dense weight in the base layer's shape: ``W₀ + ΔW`` (DoRA: ``m ⊙ V/‖V‖_row``, ``V = W₀ + ΔW``).

        Example:
            >>> layer = LoRALayer(nn.Linear(4, 3), rank=2, dora=True, generator=0)
            >>> with torch.no_grad(): _ = layer.lora_magnitude.mul_(2.0)
            >>> torch.allclose(layer.weight, 2.0 * layer.base.weight)  # ΔW = 0: V = W₀, m = 2‖W₀‖_row
            True
        """
        if self.merged or not self.dora:
            return super().weight
        V, norm = self._dora_parts()
        return _layers.from_matrix(self.base, V * (self.lora_magnitude / norm)[:, None], self.weight_shape)

    def _merged_weight(self) -> Tensor:
        if not self.dora:
            return super()._merged_weight()
        V, norm = self._dora_parts()
        self._merged_norm = norm
        return _layers.from_matrix(self.base, V * (self.lora_magnitude / norm)[:, None], self.weight_shape)

    def _unmerged_weight(self) -> Tensor:
        if not self.dora:
            return super()._unmerged_weight()
        V = _layers.as_matrix(self.base, self.base.weight) * (self._merged_norm / self.lora_magnitude)[:, None]
        self._merged_norm = None
        return _layers.from_matrix(self.base, V - self._delta_matrix(), self.weight_shape)

    @torch.no_grad()
    def restart_(self, *, init: str = "kaiming", generator: GeneratorLike = None) -> None:
        """ReLoRA: ``W ← W + ΔW``, then ``down`` re-drawn and ``up = 0`` (the output is unchanged).

        ``generator=None`` draws from torch's default generator (the construction rule, docs/index.md).

        Example:
            >>> layer = LoRALayer(nn.Linear(4, 3), rank=2, generator=0)
            >>> _ = nn.init.constant_(layer.lora_up, 0.5)
            >>> W = layer.weight.detach().clone()
            >>> layer.restart_(generator=1)
            >>> torch.allclose(layer.weight, W), float(layer.lora_up.detach().abs().max())
            (True, 0.0)
        """
        _check_restart(self, init)
        self.base.weight.add_(self.delta_weight())
        rows, cols = _layers.matrix_shape(self.base)
        self.lora_down.copy_(_draw_down(init, cols, self.rank, construction_generator(generator), self.lora_down))
        self.lora_up.zero_()

    def extra_repr(self) -> str:
        return (f"rank={self.rank}, alpha={self.alpha}, scaling={self.scaling:g}, init={self.init_kind!r}, "
                f"dora={self.dora}, merged={self.merged}")


def _check_restart(layer: LoRALayer, init: str) -> None:
    if init not in ("gaussian", "kaiming"):
        raise ValueError(f"init must be 'gaussian' or 'kaiming' for a restart, got {init!r}")
    if layer.dora or layer.merged:
        raise ValueError("ReLoRA restarts need a plain, unmerged LoRA layer (dora=False)")


def relora_restart_(model: nn.Module, optimizer: torch.optim.Optimizer | None = None, *, init: str = "kaiming",
                    generator: GeneratorLike = None) -> int:
    """ReLoRA's periodic merge-and-restart on every :class:`LoRALayer` in ``model``.

    Merges each update into its base weight, re-initializes the adapter (``up = 0``, so the
    model's output is unchanged) and drops the optimizer state of the adapter parameters
    (ReLoRA resets it; re-warm the learning rate with your scheduler). Repeated restarts
    accumulate an update whose rank can exceed ``r``.

    ``generator=None`` draws from torch's default generator (the construction rule, docs/index.md).

    Returns:
        the number of layers restarted.

    Reference: V. Lialin et al., "ReLoRA: High-Rank Training Through Low-Rank Updates" (ICLR 2024).

    Example:
        >>> net = torch.nn.Sequential(LoRALayer(torch.nn.Linear(4, 4), rank=1, generator=0))
        >>> relora_restart_(net, generator=1)
        1
    """
    layers = [m for m in check_module(model).modules() if isinstance(m, LoRALayer)]
    if not layers:
        raise ValueError("model holds no LoRALayer to restart")
    for m in layers:                      # all checked before any layer changes
        _check_restart(m, init)
    g = construction_generator(generator)
    for m in layers:
        m.restart_(init=init, generator=g)
        if optimizer is not None:
            for p in (m.lora_down, m.lora_up):
                optimizer.state.pop(p, None)
    return len(layers)
