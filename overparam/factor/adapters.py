"""Adapters on a frozen base weight: LoRA, rsLoRA, PiSSA, DoRA, and ReLoRA restarts.

:class:`LoRALayer` wraps a Linear, ConvNd or Embedding ``base`` (held, frozen) and adds
``ΔW = s · up @ downᵀ`` (the weight seen as a matrix ``(rows, cols)``, see
:mod:`~overparam.factor._layers`) with ``s = α/r`` (or ``α/√r`` with ``rslora=True``):

* ``init="gaussian"``: ``down ~ N(0, 1/r²)``, ``up = 0``; ``"kaiming"``: ``down ~ U(±1/√cols)``
  (``nn.Linear``'s default), ``up = 0``. Either leaves the output bit-identical at init.
* ``init="pissa"``: ``up = U_r (S_r/s)^{1/2}``, ``down = V_r (S_r/s)^{1/2}`` from the top-``r``
  SVD of the base weight (``svd="randomized"`` for the fast randomized SVD), and the base
  weight is overwritten in place by the residual ``W − s·up downᵀ`` (PiSSA, Meng et al. 2024).
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

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..backend.checks import check_float
from ..backend.linalg import top_svd
from ..backend.random import GeneratorLike, gaussian, make_generator, uniform
from . import _layers
from .functional import check_rank

__all__ = ["LoRALayer", "relora_restart_", "lora_scaling"]


def lora_scaling(alpha: float, rank: int, *, rslora: bool = False) -> float:
    """``α/r``, or ``α/√r`` for rsLoRA (Kalajdzievski 2023).

    Example:
        >>> lora_scaling(16, 4), lora_scaling(16, 4, rslora=True)
        (4.0, 8.0)
    """
    check_rank(rank)
    if not alpha > 0:
        raise ValueError(f"alpha must be > 0, got {alpha}")
    return alpha / math.sqrt(rank) if rslora else alpha / rank


INITS = ("gaussian", "kaiming", "pissa")


def check_lora_args(base: nn.Module, rank: int, *, alpha: float | None = None, dropout: float = 0.0,
                    init: str = "kaiming", svd: str = "svd", dora: bool = False) -> None:
    """Validate :class:`LoRALayer` arguments without touching ``base`` (raises ValueError/TypeError)."""
    _layers.check_supported(base)
    check_rank(rank, _layers.matrix_shape(base), at_most_min=init == "pissa")
    if init not in INITS:
        raise ValueError(f"init must be 'gaussian', 'kaiming' or 'pissa', got {init!r}")
    if init == "pissa" and svd not in ("svd", "randomized"):
        raise ValueError(f"svd must be 'svd' or 'randomized', got {svd!r}")
    if alpha is not None and not alpha > 0:
        raise ValueError(f"alpha must be > 0, got {alpha}")
    if not 0 <= dropout < 1:
        raise ValueError(f"dropout must be in [0, 1), got {dropout}")
    if isinstance(base, nn.Embedding) and (dropout > 0 or dora):
        raise ValueError("dropout and dora are not defined for an nn.Embedding base")
    check_float(base.weight, "base.weight")


def _draw_down(kind: str, cols: int, rank: int, g: torch.Generator, like: Tensor) -> Tensor:
    if kind == "gaussian":
        return gaussian((cols, rank), generator=g, dtype=like.dtype, device=like.device) / rank
    if kind == "kaiming":
        return uniform((cols, rank), low=-1.0, high=1.0, generator=g, dtype=like.dtype, device=like.device) / math.sqrt(cols)
    raise ValueError(f"init must be 'gaussian', 'kaiming' or 'pissa', got {kind!r}")


class LoRALayer(nn.Module):
    """A frozen ``base`` layer plus a trainable low-rank (LoRA / PiSSA / DoRA) update.

    Args:
        base: an ``nn.Linear``, ``nn.Conv1d/2d/3d`` or ``nn.Embedding``; held as ``self.base``
            with its parameters frozen (``requires_grad=False``).
        rank: ``r >= 1`` (``<= min(rows, cols)`` for PiSSA).
        alpha: ``α`` (default ``r``, i.e. ``s = 1``). rslora: use ``α/√r``.
        dropout: dropout probability on the adapter's input (not for Embedding).
        init: ``"gaussian" | "kaiming" | "pissa"``.
        svd: PiSSA's SVD, ``"svd"`` (exact) or ``"randomized"`` (``niter``, ``oversample``).
        dora: add the DoRA magnitude vector. detach_norm: DoRA's constant-norm gradient trick.
        generator: the only source of randomness of the init.

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
        super().__init__()
        check_lora_args(base, rank, alpha=alpha, dropout=dropout, init=init, svd=svd, dora=dora)  # before any change
        rows, cols = _layers.matrix_shape(base)
        self.base, self.rank, self.rslora, self.dora, self.detach_norm = base, rank, rslora, dora, detach_norm
        self.alpha = float(rank if alpha is None else alpha)
        self.scaling = lora_scaling(self.alpha, rank, rslora=rslora)
        self.init_kind, self.merged = init, False
        self.lora_dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self._base_requires_grad = {k: p.requires_grad for k, p in base.named_parameters()}
        for p in base.parameters():
            p.requires_grad_(False)
        W = base.weight
        if init == "pissa":
            with torch.no_grad():
                W2 = W.detach().view(rows, cols)
                dec = top_svd(W2, rank, method=svd, niter=niter, oversample=oversample, generator=generator)
                s = (dec.S / self.scaling).sqrt()
                up, down = dec.U * s, dec.Vh.mT * s
                W2.addmm_(up, down.mT, alpha=-self.scaling)      # the residual, in place
        else:
            down = _draw_down(init, cols, rank, make_generator(generator), W)
            up = W.new_zeros(rows, rank)
        self.lora_down = nn.Parameter(down.contiguous())
        self.lora_up = nn.Parameter(up.contiguous())
        if dora:
            self.lora_magnitude = nn.Parameter(self._row_norm(W.detach().reshape(rows, cols)))
        self.register_buffer("_merged_norm", None, persistent=False)

    # ----------------------------------------------------------------- math
    @staticmethod
    def _row_norm(M: Tensor) -> Tensor:
        return torch.linalg.vector_norm(M, dim=1)

    def delta_weight(self) -> Tensor:
        """``s · up @ downᵀ`` in the base weight's shape."""
        return (self.scaling * (self.lora_up @ self.lora_down.mT)).reshape(self.base.weight.shape)

    def factor_pairs(self) -> list[tuple[nn.Parameter, nn.Parameter]]:
        return [(self.lora_up, self.lora_down)]

    def adapter_parameters(self) -> dict[str, nn.Parameter]:
        """The trainable adapter parameters by their ``state_dict`` key (relative to this layer)."""
        names = ["lora_down", "lora_up"] + (["lora_magnitude"] if self.dora else [])
        return {k: getattr(self, k) for k in names}

    def _dora_scale(self) -> Tensor:
        rows, cols = _layers.matrix_shape(self.base)
        V = self.base.weight.reshape(rows, cols) + (self.scaling * self.lora_up) @ self.lora_down.mT
        norm = self._row_norm(V)
        if self.detach_norm:
            norm = norm.detach()
        return (self.lora_magnitude / norm).reshape(_layers.bias_shape(self.base))

    def _lora_out(self, x: Tensor) -> Tensor:
        if isinstance(self.base, nn.Linear):
            up = self.lora_up if self.scaling == 1.0 else self.lora_up * self.scaling
            return F.linear(self.lora_dropout(x) @ self.lora_down, up)
        return _layers.call(self.base, self.lora_dropout(x), self.delta_weight(), None)

    def forward(self, x: Tensor) -> Tensor:
        y = self.base(x)
        if self.merged:
            return y
        if not self.dora:
            if isinstance(self.base, nn.Linear):  # fused: y + s·(x A) Bᵀ in one addmm, no extra pass over y
                h = self.lora_dropout(x) @ self.lora_down
                out = torch.addmm(y.reshape(-1, y.shape[-1]), h.reshape(-1, h.shape[-1]), self.lora_up.mT,
                                  alpha=self.scaling)
                return out.reshape(y.shape)
            return y + self._lora_out(x)
        scale = self._dora_scale()
        bias = getattr(self.base, "bias", None)
        plain = y if bias is None else y - bias.reshape(_layers.bias_shape(self.base))
        return y + (scale - 1) * plain + scale * self._lora_out(x)

    # ---------------------------------------------------------- merge
    @torch.no_grad()
    def merge_(self) -> LoRALayer:
        """Fold the update into ``base.weight`` in place (forward then runs the base only)."""
        if self.merged:
            raise ValueError("this adapter is already merged")
        W = self.base.weight
        if self.dora:
            rows, cols = _layers.matrix_shape(self.base)
            V = W.reshape(rows, cols) + self.delta_weight().reshape(rows, cols)
            norm = self._row_norm(V)
            self._merged_norm = norm
            W.copy_((V * (self.lora_magnitude / norm)[:, None]).reshape(W.shape))
        else:
            W.add_(self.delta_weight())
        self.merged = True
        return self

    @torch.no_grad()
    def unmerge_(self) -> LoRALayer:
        """Undo :meth:`merge_`."""
        if not self.merged:
            raise ValueError("this adapter is not merged")
        W = self.base.weight
        if self.dora:
            rows, cols = _layers.matrix_shape(self.base)
            V = W.reshape(rows, cols) * (self._merged_norm / self.lora_magnitude)[:, None]
            W.copy_(V.reshape(W.shape) - self.delta_weight())
            self._merged_norm = None
        else:
            W.sub_(self.delta_weight())
        self.merged = False
        return self

    @torch.no_grad()
    def restart_(self, *, init: str = "kaiming", generator: GeneratorLike = None) -> None:
        """ReLoRA: ``W ← W + ΔW``, then ``down`` re-drawn and ``up = 0`` (the output is unchanged)."""
        _check_restart(self, init)
        self.base.weight.add_(self.delta_weight())
        rows, cols = _layers.matrix_shape(self.base)
        self.lora_down.copy_(_draw_down(init, cols, self.rank, make_generator(generator), self.lora_down))
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

    Returns:
        the number of layers restarted.

    Example:
        >>> net = torch.nn.Sequential(LoRALayer(torch.nn.Linear(4, 4), rank=1, generator=0))
        >>> relora_restart_(net, generator=1)
        1
    """
    layers = [m for m in model.modules() if isinstance(m, LoRALayer)]
    if not layers:
        raise ValueError("model holds no LoRALayer to restart")
    for m in layers:                      # all checked before any layer changes
        _check_restart(m, init)
    g = make_generator(generator)
    for m in layers:
        m.restart_(init=init, generator=g)
        if optimizer is not None:
            for p in (m.lora_down, m.lora_up):
                optimizer.state.pop(p, None)
    return len(layers)
