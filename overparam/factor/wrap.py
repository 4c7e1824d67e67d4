"""Apply a factorization to an existing model in place, and take it off again.

* :func:`lowrank_` / :func:`hadamard_`: replace each targeted layer by a
  :class:`~overparam.factor.layer.FactorizedLayer` holding the base layer and a weight module;
* :func:`lora_`: replace each targeted layer by a :class:`~overparam.factor.adapters.LoRALayer`;
* :func:`merge_`: replace every wrapper by its base layer carrying the dense weight, parameters
  in their original order (``unload=False``: fold adapter updates in place, reversible by
  :func:`unmerge_`);
* :func:`adapter_state_dict` / :func:`load_adapter_state_dict`: just the adapter weights.

Every wrapper is a :class:`~overparam.factor.layer.LayerWrapper`; this module uses only that
protocol. Targets are a selection spec (:func:`overparam.backend.select.select`): a name or
dotted suffix (``"fc"``), a glob (``"blocks.*.attn.*"``), a module type, a predicate
``fn(name, module)``, or a list of these, minus ``exclude=``; ``None`` (the default) selects
every supported layer. A name of a container (``"blocks.0"``) selects the supported layers inside
it. Only ``nn.Linear``, ``nn.Conv1d/2d/3d``, ``nn.Embedding`` and transformers' ``Conv1D`` (GPT-2;
stored ``(in, out)``, every update merged back into that transposed storage) are wrapped — the
kinds of :mod:`overparam.backend.layers` registered with ``factor=True``. An item selecting
no supported layer, or a selected layer that is already wrapped, is a ``ValueError`` naming
``targets``, and so is a layer whose weight is tied to another module's (GPT-2's ``lm_head``
and ``transformer.wte``: a merge would change the other owner too). Every selected layer is
checked before any is changed (all or nothing).

Example:
    >>> import torch
    >>> net = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.ReLU(), torch.nn.Linear(5, 5)).double()
    >>> x = torch.randn(3, 6, dtype=torch.float64)
    >>> y = net(x)
    >>> lowrank_(net, torch.nn.Linear, rank=5, init="svd")
    ['0', '2']
    >>> bool(torch.allclose(net(x), y))
    True
    >>> merge_(net)
    2
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

import torch
from torch import Tensor, nn

from ..backend.checks import check_float, check_rank
from ..backend.layers import check_covered
from ..backend.random import GeneratorLike, construction_generator
from ..backend.select import Spec, select
from . import _layers, data_inits
from ._checks import check_module
from .adapters import LoRALayer, _Options
from .hadamard import Hadamard, HadamardDifference, Kronecker, LowRankHadamard
from .hira import HiRALayer
from .layer import FactorizedLayer, LayerWrapper
from .shira import SparseUpdate
from .functional import _check_scale
from .lowrank import LowRank

__all__ = ["lowrank_", "hadamard_", "lora_", "merge_", "unmerge_", "adapter_state_dict", "load_adapter_state_dict"]

_WHAT = "Linear, ConvNd, Embedding or Conv1D layer"


def _targets(model: nn.Module, targets: Spec, exclude: Spec) -> dict[str, nn.Module]:
    """The supported layers ``targets`` selects, none of them inside a wrapper."""
    if targets is None:
        check_covered(model, exclude, which="factor")
    chosen = select(model, targets, exclude=exclude, types=_layers.supported_types(), argname="targets", what=_WHAT)
    wrappers = [n for n, m in model.named_modules() if isinstance(m, LayerWrapper)]
    for name in chosen:
        if name == "":
            raise ValueError(f"targets: the model itself is a {type(model).__name__}; construct the wrapper "
                             f"directly (FactorizedLayer, LoRALayer) instead")
        for w in wrappers:
            if w == "" or name.startswith(w + "."):
                raise ValueError(f"targets: layer {w!r} is already wrapped; merge_ it before wrapping it again")
    _check_untied(model, chosen)
    return chosen


def _check_untied(model: nn.Module, chosen: dict[str, nn.Module]) -> None:
    """A weight tied to another module (GPT-2's ``lm_head`` and ``transformer.wte``) cannot be
    wrapped: a merge would write the update into the other owner too, an unwrap would untie them."""
    holders: dict[int, list[tuple[str, nn.Module]]] = {}
    for n, m in model.named_modules(remove_duplicate=False):
        for p in m._parameters.values():
            if p is not None:
                holders.setdefault(id(p), []).append((n, m))
    for name, base in chosen.items():
        w = base._parameters.get("weight")
        others = [n for n, m in holders.get(id(w), []) if m is not base]
        if w is not None and others:
            raise ValueError(f"targets: layer {name!r} shares its weight with {others} (tied weights); wrapping "
                             f"it would change or untie them: exclude= it, or untie the weights first")


def _replace(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


def _wrap_each(model: nn.Module, targets: Spec, exclude: Spec, prepare: Callable[[str, nn.Module], object],
               make: Callable[[nn.Module, object], nn.Module]) -> list[str]:
    """All-or-nothing: ``prepare(name, base)`` runs for every selected layer first and must not
    change it (it validates and builds what can be built aside); only when all succeed does
    ``make(base, prepared)`` build each wrapper, which replaces its layer."""
    chosen = _targets(model, targets, exclude)
    prepared = []
    for name, base in chosen.items():
        try:
            prepared.append(prepare(name, base))
        except (ValueError, TypeError) as e:
            raise type(e)(f"layer {name!r}: {e}") from None
    for (name, base), prep in zip(chosen.items(), prepared):
        new = make(base, prep)
        new.train(base.training)          # a new wrapper takes the mode of the layer it replaces
        _replace(model, name, new)
    return list(chosen)


def lowrank_(model: nn.Module, targets: Spec = None, *, rank: int, exclude: Spec = None, init="svd",
             scale: float = 1e-3, symmetric: bool = False, generator: GeneratorLike = None,
             **svd_kwargs) -> list[str]:
    """Re-parameterize each targeted weight as ``W = L Rᵀ`` (``W`` seen as ``(rows, cols)``).

    ``init="svd"`` (default) starts at the best rank-``rank`` approximation of the current weight
    (``rank <= min(rows, cols)``, else ``ValueError``); ``"randomized"``, ``"small"``,
    ``"balanced"``, ``"orthogonal"`` as in :func:`~overparam.factor.functional.init_factors`.
    Keys: ``name.base.bias``, ``name.param.left``, ``name.param.right``. Returns the wrapped names.

    ``generator=None`` draws from torch's default generator (the construction rule, docs/index.md).

    Reference: S. Burer & R. D. C. Monteiro, "A Nonlinear Programming Algorithm for Solving Semidefinite Programs
        via Low-Rank Factorization" (Math. Program. 2003)

    Example:
        >>> net = torch.nn.Sequential(torch.nn.Linear(4, 4))
        >>> lowrank_(net, "0", rank=2, init="small", generator=0)
        ['0']
    """
    g = construction_generator(generator)

    def prepare(name, base):
        W = _layers.as_matrix(base, base.weight.detach())
        rows, cols = W.shape
        if symmetric and rows != cols:
            raise ValueError(f"symmetric: the weight is not square ({rows}, {cols})")
        return LowRank((rows, cols), rank, init=init, scale=scale, symmetric=symmetric, weight=W, generator=g,
                       dtype=W.dtype, device=W.device, **svd_kwargs)

    return _wrap_each(model, targets, exclude, prepare, FactorizedLayer)


_HADAMARD_KINDS = ("product", "difference", "loha", "lokr", "hira", "shira")


def hadamard_(model: nn.Module, targets: Spec = None, *, kind: str = "product", exclude: Spec = None,
              depth: int = 2, rank: int | None = None, scale: float = 1e-2,
              generator: GeneratorLike = None) -> list[str]:
    """Element-wise over-parameterization of each targeted weight.

    * ``kind="product"``: ``w = u_1 ⊙ ⋯ ⊙ u_depth`` factoring the current weight exactly;
    * ``kind="difference"``: ``w = u^depth − v^depth`` factoring it exactly (``scale``: the
      offset ``α``, see :class:`~overparam.factor.HadamardDifference`);
    * ``kind="loha"`` / ``"lokr"``: a frozen weight plus a zero-initialized LoHa
      (``(L₁R₁ᵀ)⊙(L₂R₂ᵀ)``) or LoKr (``C ⊗ LRᵀ``) update of rank ``rank`` (required; ``depth``
      does not apply);
    * ``kind="hira"``: a :class:`~overparam.factor.HiRALayer`, ``ΔW = W₀ ⊙ (up downᵀ)`` of rank
      ``rank`` (``scale`` does not apply);
    * ``kind="shira"``: a frozen weight plus a :class:`~overparam.factor.SparseUpdate` on
      ``rank · (rows + cols)`` random entries (SHiRA; ``scale`` does not apply).

    The model's output is unchanged at init. Returns the wrapped names.

    ``generator=None`` draws from torch's default generator (the construction rule, docs/index.md).

    Reference: T. Vaškevičius, V. Kanade & P. Rebeschini, "Implicit Regularization for Optimal Sparse Recovery"
        (NeurIPS 2019) (``u^N − v^N``); LoHa: N. Hyeon-Woo, M. Ye-Bin & T.-H. Oh, "FedPara" (ICLR 2022); LoKr: S.-Y.
        Yeh et al. (LyCORIS, ICLR 2024)

    Example:
        >>> net = torch.nn.Sequential(torch.nn.Linear(4, 4))
        >>> hadamard_(net, torch.nn.Linear, kind="loha", rank=2, generator=0)
        ['0']
    """
    if kind not in _HADAMARD_KINDS:
        raise ValueError(f"kind must be one of {_HADAMARD_KINDS}, got {kind!r}")
    _check_scale(scale)
    adapter = kind in ("loha", "lokr", "hira", "shira")
    if adapter and rank is None:
        raise ValueError(f"rank: kind={kind!r} needs rank=")
    if not adapter and rank is not None:
        raise ValueError(f"rank: kind={kind!r} factors the weight element-wise and takes no rank, got {rank!r}")
    if adapter and depth != 2:
        raise ValueError(f"depth: kind={kind!r} has no depth, got {depth!r}")
    g = construction_generator(generator)

    def prepare(name, base):
        W = base.weight.detach()
        if _layers.layout(base).transposed:            # element-wise on the (rows, cols) matrix
            W = _layers.as_matrix(base, W)
        if kind == "product":
            return Hadamard(W.shape, depth=depth, weight=W)
        if kind == "difference":
            return HadamardDifference(W.shape, depth=depth, weight=W, scale=scale)
        if kind == "hira":
            check_rank(rank, _layers.matrix_shape(base), at_most_min=True)
            check_float(base.weight, "base.weight")
            return None
        if kind == "shira":
            return SparseUpdate(_layers.matrix_shape(base), rank, generator=g, dtype=W.dtype, device=W.device)
        cls = LowRankHadamard if kind == "loha" else Kronecker
        return cls(_layers.matrix_shape(base), rank, scale=scale, zero_init=True, generator=g, dtype=W.dtype,
                   device=W.device)

    def make(base, p):
        return HiRALayer(base, rank, generator=g) if kind == "hira" else FactorizedLayer(base, p, residual=adapter)

    return _wrap_each(model, targets, exclude, prepare, make)


def lora_(model: nn.Module, targets: Spec = None, *, rank: int, exclude: Spec = None, loss_fn=None, data=None,
          generator: GeneratorLike = None, **kwargs) -> list[str]:
    """Wrap each targeted layer in a :class:`~overparam.factor.adapters.LoRALayer`.

    ``kwargs`` are :class:`~overparam.factor.adapters.LoRALayer`'s: ``alpha``, ``rslora``,
    ``dropout``, ``init``, ``svd`` (``"svd" | "randomized"``), ``niter``, ``oversample``, ``dora``,
    ``detach_norm``; they are validated once, then against every selected layer before any is
    changed. ``init``: ``"gaussian" | "kaiming"`` (random ``down``, ``up = 0``), ``"pissa" | "olora" |
    "milora"`` (from the weight), or from ``data`` (and ``loss_fn``), see
    :mod:`~overparam.factor.inits` and :mod:`~overparam.factor.data_inits`:

    * ``"lora_ga"`` (needs ``loss_fn``, ``data``): ``ga_direction`` (``"ArB2r"``), ``ga_scale``
      (``"stable"``), ``ga_gamma`` (16), ``ga_svd`` (``"randomized"``);
    * ``"eva"`` (needs ``data``): ``rho`` (2.0, the largest rank a layer may take is
      ``round(rho · rank)``); layers given rank 0 are not wrapped;
    * ``"corda"`` (needs ``data``): ``corda_mode`` ``"ipm"`` (instruction-previewed, the top
      components of ``W C``) or ``"kpm"`` (knowledge-preserved, the bottom ones).

    Returns the wrapped names.

    ``generator=None`` draws from torch's default generator (the construction rule, docs/index.md).

    Reference: E. J. Hu et al., "LoRA: Low-Rank Adaptation of Large Language Models" (ICLR 2022); rsLoRA: D.
        Kalajdzievski, "A Rank Stabilization Scaling Factor for Fine-Tuning with LoRA" (2023); DoRA: S.-Y. Liu et
        al., "DoRA: Weight-Decomposed Low-Rank Adaptation" (ICML 2024); PiSSA: F. Meng, Z. Wang & M. Zhang, "PiSSA:
        Principal Singular Values and Singular Vectors Adaptation of Large Language Models" (NeurIPS 2024); the
        other inits: :mod:`~overparam.factor.inits`, :mod:`~overparam.factor.data_inits`

    Example:
        >>> net = torch.nn.Sequential(torch.nn.Linear(4, 4))
        >>> lora_(net, ["0"], rank=2, generator=0)
        ['0']
        >>> lora_(torch.nn.Sequential(torch.nn.Linear(4, 4)), rank=2, init="olora")
        ['0']
    """
    data_kw = {k: kwargs.pop(k) for k in data_inits.OPTIONS if k in kwargs}
    unknown = sorted(set(kwargs) - set(_Options.__dataclass_fields__) | ({"rank"} & set(kwargs)))
    if unknown:
        raise TypeError(f"lora_ got unexpected keyword arguments {unknown}")
    opts = _Options(rank, **kwargs)
    g = construction_generator(generator)
    if opts.init not in data_inits.DATA_INITS:
        given = [k for k, v in (("loss_fn", loss_fn), ("data", data)) if v is not None] + sorted(data_kw)
        if given:
            raise ValueError(f"{given[0]}: init={opts.init!r} takes no data; the data-driven inits are "
                             f"{data_inits.DATA_INITS}")
        return _wrap_each(model, targets, exclude, lambda name, base: opts.check(base),
                          lambda base, _: LoRALayer._build(base, opts, g))
    chosen = _targets(model, targets, exclude)
    for name, base in chosen.items():
        try:
            opts.check(base)
        except (ValueError, TypeError) as e:
            raise type(e)(f"layer {name!r}: {e}") from None
    if opts.init != "lora_ga" and loss_fn is not None:
        raise ValueError(f"loss_fn: init={opts.init!r} reads only the inputs of data; pass no loss_fn")
    plan = data_inits.plan(model, chosen, opts, loss_fn, data, generator=g, **data_kw)
    return _wrap_each(model, lambda n, m: n in plan, None, lambda name, base: plan[name],
                      lambda base, p: LoRALayer._build(base, p[0], g, p[1]))


def _wrappers(model: nn.Module) -> list[tuple[str, LayerWrapper]]:
    return [(n, m) for n, m in check_module(model).named_modules() if isinstance(m, LayerWrapper)]


def merge_(model: nn.Module, *, unload: bool = True) -> int:
    """Fold every wrapper's weight into a dense one.

    ``unload=True``: each wrapper is replaced by its base layer holding the dense weight (a plain
    model again, with the parameter order, ``state_dict`` keys and ``requires_grad`` flags it
    had before wrapping). ``unload=False``: adapters (LoRA, LoHa, LoKr) merge in place and stay
    wrapped (see :func:`unmerge_`). Returns the number of layers merged.

    Example:
        >>> net = torch.nn.Sequential(torch.nn.Linear(4, 4))
        >>> _ = lora_(net, "0", rank=1, generator=0)
        >>> merge_(net), type(net[0]).__name__
        (1, 'Linear')
    """
    wrappers = _wrappers(model)
    if not unload:
        if not all(m.residual for _, m in wrappers):
            raise ValueError("unload=False only applies to adapters; this model holds re-parameterized layers")
        todo = [m for _, m in wrappers if not m.merged]
        for m in todo:
            m.merge_()
        return len(todo)
    for name, m in wrappers:
        _replace(model, name, m.unwrap())
    return len(wrappers)


def unmerge_(model: nn.Module) -> int:
    """Undo ``merge_(model, unload=False)``; returns the number of layers unmerged.

    Example:
        >>> net = torch.nn.Sequential(torch.nn.Linear(4, 4))
        >>> _ = lora_(net, "0", rank=1, generator=0)
        >>> merge_(net, unload=False), unmerge_(net)
        (1, 1)
    """
    layers = [m for _, m in _wrappers(model) if m.merged]
    for m in layers:
        m.unmerge_()
    return len(layers)


def _adapter_params(model: nn.Module) -> OrderedDict[str, nn.Parameter]:
    out = OrderedDict()
    for prefix, m in _wrappers(model):
        out.update((f"{prefix}.{k}" if prefix else k, p) for k, p in m.adapter_parameters().items())
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
