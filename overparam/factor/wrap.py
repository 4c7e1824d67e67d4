"""Apply a factorization to an existing model in place, and take it off again.

* :func:`lowrank_` / :func:`hadamard_`: replace each targeted layer by a
  :class:`FactorizedLayer` holding the base layer and a weight module (``W = param()``);
* :func:`lora_`: replace each targeted layer by a :class:`~overparam.factor.adapters.LoRALayer`;
* :func:`merge_`: replace every wrapper by its base layer carrying the dense weight
  (``unload=False``: fold LoRA updates in place, reversible by :func:`unmerge_`);
* :func:`~overparam.factor.parametrize.parametrize_` (in :mod:`.parametrize`): the
  ``torch.nn.utils.parametrize`` route for a raw parameter;
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

from ..backend.random import GeneratorLike, make_generator
from . import _layers
from .adapters import LoRALayer, check_lora_args
from .functional import check_rank
from .hadamard import Hadamard, HadamardDifference, Kronecker, LowRankHadamard
from .lowrank import LowRank

__all__ = ["FactorizedLayer", "select", "lowrank_", "hadamard_", "lora_", "merge_", "unmerge_", "adapter_state_dict",
           "load_adapter_state_dict"]

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


def _fullmatch(pattern: str, name: str) -> bool:
    try:
        return re.fullmatch(pattern, name) is not None
    except re.error as e:
        raise ValueError(f"targets: {pattern!r} is neither a module name nor a valid regular expression ({e})") from None


def _matches(name: str, module: nn.Module, targets) -> bool:
    items = targets if isinstance(targets, (list, tuple)) and not isinstance(targets, type) else [targets]
    for t in items:
        if isinstance(t, type):
            if isinstance(module, t):
                return True
        elif isinstance(t, str):
            if name == t or name.endswith("." + t) or _fullmatch(t, name):
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


def _wrap_each(model: nn.Module, targets, prepare: Callable[[str, nn.Module], object],
               make: Callable[[nn.Module, object], nn.Module]) -> list[str]:
    """All-or-nothing: ``prepare(name, base)`` runs for every selected layer first and must not
    change it (it validates and builds what can be built aside); only when all succeed does
    ``make(base, prepared)`` build each wrapper, which replaces its layer."""
    chosen = select(model, targets)
    prepared = [prepare(name, base) for name, base in chosen]
    for (name, base), prep in zip(chosen, prepared):
        new = make(base, prep)
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

    def prepare(name, base):
        rows, cols = _layers.matrix_shape(base)
        W = base.weight.detach().reshape(rows, cols)
        if symmetric and rows != cols:
            raise ValueError(f"symmetric: layer {name!r} has a non-square weight ({rows}, {cols})")
        if isinstance(init, str) and init in ("spectral", "svd", "randomized"):
            check_rank(rank, (rows, cols), name=f"rank (layer {name!r})", at_most_min=True)
        return LowRank((rows, cols), rank, init=init, scale=scale, symmetric=symmetric, weight=W, generator=g,
                       dtype=W.dtype, device=W.device, **svd_kwargs)

    return _wrap_each(model, targets, prepare, FactorizedLayer)


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

    def prepare(name, base):
        W = base.weight.detach()
        kw = dict(dtype=W.dtype, device=W.device)
        if kind == "product":
            return Hadamard(W.shape, depth=depth, weight=W)
        if kind == "difference":
            return HadamardDifference(W.shape, depth=depth, weight=W, scale=scale)
        cls = LowRankHadamard if kind == "loha" else Kronecker
        return cls(_layers.matrix_shape(base), rank, scale=scale, zero_init=True, generator=g, **kw)

    residual = kind in ("loha", "lokr")
    return _wrap_each(model, targets, prepare, lambda base, p: FactorizedLayer(base, p, residual=residual))


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
    check_kw = {k: kwargs[k] for k in ("alpha", "dropout", "init", "svd", "dora") if k in kwargs}

    def prepare(name, base):
        check_lora_args(base, rank, **check_kw)      # every layer checked before PiSSA rewrites any weight
        return None

    return _wrap_each(model, targets, prepare, lambda base, _: LoRALayer(base, rank, generator=g, **kwargs))


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
    """Undo ``merge_(model, unload=False)``; returns the number of layers unmerged.

    Example:
        >>> net = torch.nn.Sequential(torch.nn.Linear(4, 4))
        >>> _ = lora_(net, "0", rank=1, generator=0)
        >>> merge_(net, unload=False), unmerge_(net)
        (1, 1)
    """
    layers = [m for m in model.modules() if isinstance(m, LoRALayer) and m.merged]
    for m in layers:
        m.unmerge_()
    return len(layers)


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

    ``strict=True``: the keys must be exactly the model's adapter keys; shapes must match.

    Example:
        >>> a, b = torch.nn.Sequential(torch.nn.Linear(4, 4)), torch.nn.Sequential(torch.nn.Linear(4, 4))
        >>> _ = lora_(a, "0", rank=2, generator=0); _ = lora_(b, "0", rank=2, generator=1)
        >>> load_adapter_state_dict(b, adapter_state_dict(a))
        >>> bool(torch.equal(a[0].lora_down, b[0].lora_down))
        True
    """
    params = _adapter_params(model)
    if not params:
        raise ValueError("model holds no adapter to load into")
    missing, unexpected = set(params) - set(state), set(state) - set(params)
    if strict and (missing or unexpected):
        raise ValueError(f"state: missing adapter keys {sorted(missing)}, unexpected {sorted(unexpected)}")
    for k, v in state.items():
        if k in params:
            if params[k].shape != v.shape:
                raise ValueError(f"state[{k!r}] has shape {tuple(v.shape)}, the model's is {tuple(params[k].shape)}")
            params[k].copy_(v)
