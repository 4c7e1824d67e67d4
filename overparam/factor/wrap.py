"""Apply a factorization to an existing model in place, and take it off again.

* :func:`lowrank_` / :func:`hadamard_`: replace each targeted layer by a
  :class:`FactorizedLayer` holding the base layer and a weight module (``W = param()``);
* :func:`lora_`: replace each targeted layer by a :class:`~overparam.factor.adapters.LoRALayer`;
* :func:`merge_`: replace every wrapper by its base layer carrying the dense weight
  (``unload=False``: fold LoRA updates in place, reversible by :func:`unmerge_`);
* :func:`parametrize_`: the ``torch.nn.utils.parametrize`` route for a raw parameter;
* :func:`adapter_state_dict` / :func:`load_adapter_state_dict`: just the adapter weights.

Targets: a module name (exact, or a dotted suffix: ``"fc"`` matches ``"block.0.fc"``), a regular
expression (full match), a layer type, or a list of these. Only ``nn.Linear``,
``nn.Conv1d/2d/3d`` and ``nn.Embedding`` can be wrapped. A target list matching nothing,
or a layer that is already wrapped, is a ``ValueError`` naming ``targets``.

``state_dict`` keys of a :class:`FactorizedLayer` at ``name``: ``name.base.*`` (the base
layer without ``weight`` for a re-parameterization, with the frozen ``weight`` for an adapter)
and ``name.param.*`` (the weight module's keys, e.g. ``left``/``right`` for :class:`LowRank`).

Example:
    >>> import torch
    >>> net = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.ReLU(), torch.nn.Linear(5, 5)).double()
    >>> x = torch.randn(3, 6, dtype=torch.float64)
    >>> y = net(x)
    >>> _ = lowrank_(net, targets=torch.nn.Linear, rank=5, init="svd")
    >>> bool(torch.allclose(net(x), y))
    True
    >>> merge_(net)
    2
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils import parametrize as _P

from ..backend.random import GeneratorLike, make_generator
from . import _layers
from .adapters import LoRALayer
from .functional import check_rank, init_factors
from .hadamard import Hadamard, HadamardDifference, Kronecker, LowRankHadamard
from .lowrank import LowRank

__all__ = ["FactorizedLayer", "select", "lowrank_", "hadamard_", "lora_", "merge_", "unmerge_", "parametrize_",
           "LowRankParametrization", "adapter_state_dict", "load_adapter_state_dict"]

WRAPPERS = (LoRALayer,)


class FactorizedLayer(nn.Module):
    """A base layer whose weight is produced by ``param()``.

    Args:
        base: Linear, ConvNd or Embedding.
        param: a module whose ``forward()`` returns the weight as a ``(rows, cols)`` matrix or
            in the weight's own shape.
        residual: ``False``: ``W = param()`` and ``base.weight`` is removed from the base layer;
            ``True``: ``W = base.weight + param()`` with ``base.weight`` kept and frozen (adapter).

    Example:
        >>> base = torch.nn.Linear(4, 3)
        >>> layer = FactorizedLayer(base, LowRank((3, 4), 2, generator=0))
        >>> layer(torch.zeros(1, 4)).shape
        torch.Size([1, 3])
    """

    def __init__(self, base: nn.Module, param: nn.Module, *, residual: bool = False) -> None:
        super().__init__()
        _layers.check_supported(base)
        self.weight_shape = tuple(base.weight.shape)
        self.residual = residual
        self._base_requires_grad = {k: p.requires_grad for k, p in base.named_parameters()}
        if residual:
            base.weight.requires_grad_(False)
        else:
            del base.weight
        self.base, self.param = base, param

    @property
    def weight(self) -> Tensor:
        """The dense weight in the base layer's shape."""
        W = self.param().reshape(self.weight_shape)
        return self.base.weight + W if self.residual else W

    def forward(self, x: Tensor) -> Tensor:
        if not self.residual and isinstance(self.param, LowRank) and isinstance(self.base, nn.Linear):
            right = self.param.left if self.param.symmetric else self.param.right
            return F.linear(x @ right, self.param.left, self.base.bias)
        return _layers.call(self.base, x, self.weight, getattr(self.base, "bias", None))

    def unwrap(self) -> nn.Module:
        """The base layer with the dense weight as an ordinary parameter (original grad flags)."""
        W = self.weight.detach().clone()
        if self.residual:
            del self.base.weight
        self.base.weight = nn.Parameter(W, requires_grad=self._base_requires_grad.get("weight", True))
        return self.base


def _matches(name: str, module: nn.Module, targets) -> bool:
    items = targets if isinstance(targets, (list, tuple)) and not isinstance(targets, type) else [targets]
    for t in items:
        if isinstance(t, type):
            if isinstance(module, t):
                return True
        elif isinstance(t, str):
            if name == t or name.endswith("." + t) or re.fullmatch(t, name):
                return True
        else:
            raise TypeError(f"targets must be names, regular expressions or module types, got {type(t).__name__}")
    return False


def select(model: nn.Module, targets) -> list[tuple[str, nn.Module]]:
    """The ``(name, layer)`` pairs ``targets`` selects, checked: something matches, nothing is
    already wrapped, and every match is a supported layer type.

    Example:
        >>> net = torch.nn.Sequential(torch.nn.Linear(2, 2))
        >>> [n for n, _ in select(net, "0")]
        ['0']
    """
    wrapped_bases = {id(m.base) for m in model.modules() if isinstance(m, (*WRAPPERS, FactorizedLayer))}
    out, seen = [], set()
    for name, m in model.named_modules():
        if not name or not _matches(name, m, targets):
            continue
        if isinstance(m, (*WRAPPERS, FactorizedLayer)) or id(m) in wrapped_bases:
            raise ValueError(f"targets: layer {name!r} is already wrapped; merge_ it before wrapping it again")
        if not isinstance(m, _layers.SUPPORTED):
            items = targets if isinstance(targets, (list, tuple)) else [targets]
            if name in items:             # named explicitly: an error; matched by a pattern: skipped
                raise ValueError(f"targets: {name!r} is a {type(m).__name__}, not a Linear, ConvNd or Embedding")
            continue
        if id(m) in seen:
            raise ValueError(f"targets: layer {name!r} is shared with another selected name; it would be wrapped twice")
        seen.add(id(m))
        out.append((name, m))
    if not out:
        raise ValueError(f"targets {targets!r} matched no Linear, ConvNd or Embedding layer of the model")
    return out


def _replace(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


def _wrap_each(model: nn.Module, targets, make: Callable[[str, nn.Module], nn.Module]) -> list[str]:
    chosen = select(model, targets)
    for name, base in chosen:
        new = make(name, base)
        new.train(base.training)          # a new wrapper takes the mode of the layer it replaces
        _replace(model, name, new)
    return [n for n, _ in chosen]


def lowrank_(model: nn.Module, targets, rank: int, *, init="svd", scale: float = 1e-3, symmetric: bool = False,
             generator: GeneratorLike = None, **svd_kwargs) -> list[str]:
    """Re-parameterize each targeted weight as ``W = L Rᵀ`` (``W`` seen as ``(rows, cols)``).

    ``init="svd"`` (default) starts at the best rank-``rank`` approximation of the current weight
    (``rank <= min(rows, cols)``, else ``ValueError``); ``"randomized"``, ``"small"``,
    ``"balanced"``, ``"orthogonal"`` as in :func:`~overparam.factor.functional.init_factors`.
    Keys: ``name.base.bias``, ``name.param.left``, ``name.param.right``. Returns the wrapped names.

    Example:
        >>> net = torch.nn.Sequential(torch.nn.Linear(4, 4))
        >>> lowrank_(net, "0", rank=2, init="small", generator=0)
        ['0']
    """
    check_rank(rank)
    g = make_generator(generator)

    def make(name, base):
        rows, cols = _layers.matrix_shape(base)
        W = base.weight.detach().reshape(rows, cols)
        p = LowRank((rows, cols), rank, init=init, scale=scale, symmetric=symmetric, weight=W, generator=g,
                    dtype=W.dtype, device=W.device, **svd_kwargs)
        return FactorizedLayer(base, p)

    return _wrap_each(model, targets, make)


def hadamard_(model: nn.Module, targets, *, kind: str = "product", depth: int = 2, rank: int | None = None,
              scale: float = 1e-2, generator: GeneratorLike = None) -> list[str]:
    """Element-wise over-parameterization of each targeted weight.

    * ``kind="product"``: ``w = u_1 ⊙ ⋯ ⊙ u_depth`` factoring the current weight exactly;
    * ``kind="difference"``: ``w = u^depth − v^depth`` factoring it exactly;
    * ``kind="loha"`` / ``"lokr"``: a frozen weight plus a zero-initialized LoHa
      (``(L₁R₁ᵀ)⊙(L₂R₂ᵀ)``) or LoKr (``C ⊗ LRᵀ``) update of rank ``rank``.

    The model's output is unchanged at init. Returns the wrapped names.

    Example:
        >>> net = torch.nn.Sequential(torch.nn.Linear(4, 4))
        >>> hadamard_(net, torch.nn.Linear, kind="loha", rank=2, generator=0)
        ['0']
    """
    g = make_generator(generator)
    if kind in ("loha", "lokr"):
        if rank is None:
            raise ValueError(f"kind={kind!r} needs rank=")
        check_rank(rank)
    elif kind not in ("product", "difference"):
        raise ValueError(f"kind must be 'product', 'difference', 'loha' or 'lokr', got {kind!r}")

    def make(name, base):
        W = base.weight.detach()
        kw = dict(dtype=W.dtype, device=W.device)
        if kind == "product":
            return FactorizedLayer(base, Hadamard(W.shape, depth=depth, weight=W))
        if kind == "difference":
            return FactorizedLayer(base, HadamardDifference(W.shape, depth=depth, weight=W, scale=scale))
        shape = _layers.matrix_shape(base)
        cls = LowRankHadamard if kind == "loha" else Kronecker
        return FactorizedLayer(base, cls(shape, rank, scale=scale, zero_init=True, generator=g, **kw), residual=True)

    return _wrap_each(model, targets, make)


def lora_(model: nn.Module, targets, rank: int, *, generator: GeneratorLike = None, **kwargs) -> list[str]:
    """Wrap each targeted layer in a :class:`~overparam.factor.adapters.LoRALayer`.

    ``kwargs``: ``alpha``, ``rslora``, ``dropout``, ``init`` (``"gaussian" | "kaiming" | "pissa"``),
    ``svd`` (``"svd" | "randomized"``), ``niter``, ``dora``. Returns the wrapped names.

    Example:
        >>> net = torch.nn.Sequential(torch.nn.Linear(4, 4))
        >>> lora_(net, ["0"], rank=2, generator=0)
        ['0']
    """
    check_rank(rank)
    g = make_generator(generator)
    return _wrap_each(model, targets, lambda name, base: LoRALayer(base, rank, generator=g, **kwargs))


def merge_(model: nn.Module, *, unload: bool = True) -> int:
    """Fold every wrapper's weight into a dense one.

    ``unload=True``: each wrapper is replaced by its base layer holding the dense weight (a plain
    model again). ``unload=False``: LoRA layers merge in place and stay wrapped (see
    :func:`unmerge_`). Returns the number of layers merged.

    Example:
        >>> net = torch.nn.Sequential(torch.nn.Linear(4, 4))
        >>> _ = lora_(net, "0", rank=1, generator=0)
        >>> merge_(net), type(net[0]).__name__
        (1, 'Linear')
    """
    names = [(n, m) for n, m in model.named_modules() if isinstance(m, (*WRAPPERS, FactorizedLayer))]
    if not unload:
        lora = [(n, m) for n, m in names if isinstance(m, LoRALayer)]
        if len(lora) != len(names):
            raise ValueError("unload=False only applies to LoRA layers; this model holds other wrappers")
        for _, m in lora:
            m.merge_()
        return len(lora)
    for name, m in names:
        if isinstance(m, LoRALayer):
            if not m.merged:
                m.merge_()
            base = m.base
            for k, p in base.named_parameters():
                p.requires_grad_(m._base_requires_grad.get(k, True))
        else:
            base = m.unwrap()
        _replace(model, name, base)
    return len(names)


def unmerge_(model: nn.Module) -> int:
    """Undo ``merge_(model, unload=False)``; returns the number of layers unmerged."""
    layers = [m for m in model.modules() if isinstance(m, LoRALayer) and m.merged]
    for m in layers:
        m.unmerge_()
    return len(layers)


class LowRankParametrization(nn.Module):
    """``W = (original0 @ original1ᵀ).reshape(shape)`` for ``torch.nn.utils.parametrize``.

    ``right_inverse(W)`` returns the initial ``(L, R)``, e.g. the top-``rank`` SVD of ``W``.
    """

    def __init__(self, rank: int, *, init="svd", scale: float = 1e-3, generator: GeneratorLike = None,
                 **svd_kwargs) -> None:
        super().__init__()
        self.rank, self.init, self.scale, self.svd_kwargs = check_rank(rank), init, scale, svd_kwargs
        self._generator = make_generator(generator)
        self.shape: tuple[int, ...] | None = None

    def forward(self, left: Tensor, right: Tensor) -> Tensor:
        return (left @ right.mT).reshape(self.shape)

    def right_inverse(self, W: Tensor) -> tuple[Tensor, Tensor]:
        self.shape = tuple(W.shape)
        M = W.detach().reshape(W.shape[0], -1)
        f = init_factors(self.init, tuple(M.shape), self.rank, weight=M, scale=self.scale, generator=self._generator,
                         dtype=M.dtype, device=M.device, **self.svd_kwargs)
        return f.left, f.right


class _HadamardParametrization(nn.Module):
    def __init__(self, kind: str, scale: float) -> None:
        super().__init__()
        self.kind, self.scale = kind, scale

    def forward(self, u: Tensor, v: Tensor) -> Tensor:
        return u * v if self.kind == "product" else u * u - v * v

    def right_inverse(self, w: Tensor) -> tuple[Tensor, Tensor]:
        mod = Hadamard(w.shape, weight=w) if self.kind == "product" else HadamardDifference(w.shape, weight=w,
                                                                                            scale=self.scale)
        a, b = (mod.factors[0], mod.factors[1]) if self.kind == "product" else (mod.u, mod.v)
        return a.detach(), b.detach()


def parametrize_(module: nn.Module, name: str = "weight", *, kind: str = "lowrank", rank: int | None = None,
                 **kwargs) -> nn.Module:
    """Factor the raw parameter ``module.<name>`` with ``torch.nn.utils.parametrize``.

    ``kind="lowrank"`` (``W = original0 @ original1ᵀ``, ``rank`` required, inits as in
    :func:`lowrank_`), ``"product"`` (``u ⊙ v``) or ``"difference"`` (``u⊙u − v⊙v``). Keys:
    ``parametrizations.<name>.original0`` / ``original1``. Returns the parametrization module.

    Example:
        >>> lin = torch.nn.Linear(4, 3)
        >>> _ = parametrize_(lin, "weight", kind="lowrank", rank=3)
        >>> sorted(k for k in lin.state_dict() if "original" in k)
        ['parametrizations.weight.original0', 'parametrizations.weight.original1']
    """
    if not isinstance(getattr(module, name, None), Tensor):
        raise ValueError(f"name: module has no tensor attribute {name!r}")
    if _P.is_parametrized(module, name):
        raise ValueError(f"name: {name!r} is already parametrized; remove it before factoring again")
    if kind == "lowrank":
        if rank is None:
            raise ValueError("kind='lowrank' needs rank=")
        P = LowRankParametrization(rank, **kwargs)
    elif kind in ("product", "difference"):
        P = _HadamardParametrization(kind, kwargs.get("scale", 1e-2))
    else:
        raise ValueError(f"kind must be 'lowrank', 'product' or 'difference', got {kind!r}")
    _P.register_parametrization(module, name, P, unsafe=True)
    return P


def _adapter_params(model: nn.Module) -> OrderedDict[str, nn.Parameter]:
    out = OrderedDict()
    for prefix, m in model.named_modules():
        if isinstance(m, LoRALayer):
            items = m.adapter_parameters().items()
        elif isinstance(m, FactorizedLayer) and m.residual:
            items = (("param." + k, p) for k, p in m.param.named_parameters())
        else:
            continue
        out.update((f"{prefix}.{k}" if prefix else k, p) for k, p in items)
    return out


def adapter_state_dict(model: nn.Module) -> OrderedDict[str, Tensor]:
    """Just the adapter weights (LoRA/DoRA/PiSSA, LoHa/LoKr), keyed as in ``model.state_dict()``.

    Example:
        >>> net = torch.nn.Sequential(torch.nn.Linear(4, 4))
        >>> _ = lora_(net, "0", rank=1, generator=0)
        >>> list(adapter_state_dict(net))
        ['0.lora_down', '0.lora_up']
    """
    out = OrderedDict((k, p.detach().clone()) for k, p in _adapter_params(model).items())
    if not out:
        raise ValueError("model holds no adapter")
    return out


@torch.no_grad()
def load_adapter_state_dict(model: nn.Module, state: dict[str, Tensor], *, strict: bool = True) -> None:
    """Copy adapter weights saved by :func:`adapter_state_dict` into a model wrapped the same way.

    ``strict=True``: the keys must be exactly the model's adapter keys.
    """
    params = _adapter_params(model)
    missing, unexpected = set(params) - set(state), set(state) - set(params)
    if strict and (missing or unexpected):
        raise ValueError(f"state: missing adapter keys {sorted(missing)}, unexpected {sorted(unexpected)}")
    for k, v in state.items():
        if k in params:
            if params[k].shape != v.shape:
                raise ValueError(f"state[{k!r}] has shape {tuple(v.shape)}, the model's is {tuple(params[k].shape)}")
            params[k].copy_(v)
