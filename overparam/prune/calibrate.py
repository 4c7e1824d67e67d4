"""Calibration driver: target layers' input statistics (bounded memory), then pruning layer by layer or by block.

SparseGPT, Wanda and OWL need, per target layer ``W (out, d)`` on input rows ``x (d,)`` (Linear, transformers'
Conv1D, Conv1d/2d/3d: :mod:`~overparam.prune.matrix_view`), the Gram matrix ``XᵀX`` ``(d, d)`` and the squared norms
``Σ x_j²`` ``(d,)`` of its inputs, accumulated batch by batch by :class:`LayerStats` (memory ``O(d²)`` per layer).

:func:`calibrate` runs ``model(inputs)`` (``data``: one ``(inputs, targets)`` batch or an iterable of them, targets
ignored; ``inputs`` a tensor, a tuple of tensors or a dict of keyword tensors) under ``torch.no_grad()`` with
forward pre-hooks on the target layers, group by group in execution order. A *group* is a block with the targets
inside it (``blocks=``, a selection spec: the outermost modules it selects; by default the model's repeated blocks,
GPT-2 ``transformer.h``, LLaMA ``model.layers``, if it has some), or a target layer outside every block.
``sequential=True`` (SparseGPT's scheme) takes a group's statistics with every earlier group already pruned (one
forward of the model's prefix per group); ``sequential=False`` takes all of them from one dense pass. Blocks and
layers run once per forward; the model must be deterministic (``model.eval()``); hooks are removed; a layer that
fails (a singular Gram matrix) restores every weight written so far. The global RNG is not touched.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..backend.layers import repeated_blocks, weights_of
from ..backend.nm import check_nm
from ..backend.select import Spec, select
from .masks import check_sparsity
from .matrix_view import _set_weight_matrix_, _matrix_to_weight, _layout, input_rows, weight_matrix
from .targets import Masks, check_model, resolve_overrides
from .targets import targets as _targets

__all__ = ["LayerStats", "PrunedMatrix", "collect_stats", "calibrate", "check_pattern", "layer_sparsities", "block_of",
           "module_name"]


# ---------------------------------------------------------------- sparsity of each layer
def check_pattern(sparsity, n, m) -> None:
    """Exactly one of an unstructured ``sparsity`` in [0, 1) or an N:M pattern ``n``, ``m`` (``1 <= n < m``).

    Example:
        >>> check_pattern(None, 2, 4); check_pattern(0.5, None, None)
    """
    if n is None and m is None:
        if sparsity is None:
            raise ValueError("sparsity: give a sparsity or an N:M pattern (n=, m=)")
        check_sparsity(sparsity)
        return
    if n is None or m is None:
        raise ValueError(f"n, m: give both for an N:M pattern (got n={n}, m={m})")
    check_nm(n, m)
    if sparsity is not None:
        raise ValueError(f"sparsity: an N:M pattern fixes the sparsity; got sparsity={sparsity} with n={n}, m={m}")


def layer_sparsities(model: nn.Module, sparsity, n=None, m=None, *, targets: Spec = None, exclude: Spec = None,
                     overrides: Mapping | None = None) -> dict[str, float] | None:
    """``{weight name: sparsity}`` of the target weights (None for an N:M pattern).

    ``overrides={spec: sparsity}`` as :func:`overparam.prune.magnitude`, except that a key equal to a target's full
    name selects exactly that target (and wins over the others); ``sparsity`` may be None when overrides cover all.

    Example:
        >>> net = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 2))
        >>> layer_sparsities(net, 0.5, overrides={"1.weight": 0.25})
        {'0.weight': 0.5, '1.weight': 0.25}
    """
    if not (sparsity is None and n is None and m is None and overrides is not None):
        check_pattern(sparsity, n, m)            # (with overrides alone, they must cover every target)
    names = list(_targets(model, targets, exclude=exclude))
    if n is not None:
        if overrides is not None:
            raise ValueError("overrides: per-layer sparsities do not apply to an N:M pattern")
        return None
    own: dict[str, float] = {}
    if overrides is not None:
        if not isinstance(overrides, Mapping):
            raise TypeError(f"overrides must be a dict {{spec: sparsity}}, got {type(overrides).__name__}")
        exact = {k: check_sparsity(v, f"overrides[{k!r}]") for k, v in overrides.items() if k in names}
        rest = {k: v for k, v in overrides.items() if k not in exact}
        own = {**resolve_overrides(rest, names, model=model), **exact} if rest else exact
    uncovered = [k for k in names if k not in own]
    if sparsity is None and uncovered:
        raise ValueError(f"sparsity: None, and overrides do not cover {uncovered}")
    return {k: own.get(k, sparsity) for k in names}


# ---------------------------------------------------------------- statistics
@dataclass
class LayerStats:
    """Input statistics of one layer over calibration rows: ``gram`` ``Σ x xᵀ`` ``(d, d)`` (None when not
    collected), ``sq_norms`` ``Σ x_j²`` ``(d,)`` (its diagonal), ``rows`` (number of rows accumulated).

    Example:
        >>> s = LayerStats.empty(2, gram=True, dtype=torch.double, device="cpu"); s.update(torch.tensor([[1., 2], [3, 4]]))
        >>> s.gram.tolist(), s.sq_norms.tolist(), s.rows
        ([[10.0, 14.0], [14.0, 20.0]], [10.0, 20.0], 2)
    """

    gram: Tensor | None
    sq_norms: Tensor
    rows: int = 0

    @classmethod
    def empty(cls, d: int, *, gram: bool, dtype: torch.dtype, device) -> LayerStats:
        """Zero statistics of a layer with ``d`` inputs (``gram=False``: the squared norms only).

        Example:
            >>> LayerStats.empty(2, gram=False, dtype=torch.float64, device="cpu")
            LayerStats(gram=None, sq_norms=tensor([0., 0.], dtype=torch.float64), rows=0)
        """
        g = torch.zeros(d, d, dtype=dtype, device=device) if gram else None
        return cls(g, torch.zeros(d, dtype=dtype, device=device), 0)

    def update(self, rows: Tensor) -> None:
        """Add the rows ``(r, d)`` (converted to the statistics' dtype).

        Example:
            >>> s = LayerStats.empty(2, gram=True, dtype=torch.float64, device="cpu"); x = torch.randn(5, 2)
            >>> s.update(x[:3]); s.update(x[3:]); torch.allclose(s.gram, x.double().T @ x.double()), s.rows
            (True, 5)
        """
        r = rows.detach().to(self.sq_norms.dtype)
        if self.gram is not None:
            self.gram.addmm_(r.T, r)
        self.sq_norms.add_(r.square().sum(0))
        self.rows += r.shape[0]

    @property
    def norms(self) -> Tensor:
        """Per-input L2 norms ``‖X_j‖₂`` ``(d,)`` (Wanda's activation norms).

        Example:
            >>> LayerStats(gram=None, sq_norms=torch.tensor([25., 1.]), rows=2).norms.tolist()
            [5.0, 1.0]
        """
        return self.sq_norms.sqrt()


@dataclass
class PrunedMatrix:
    """What a layer-pruning rule returns: the new weight matrix ``(out, d)`` and its bool keep-mask.

    Example:
        >>> W = torch.tensor([[1., -3.], [2., .5]]); keep = W.abs() >= 1; p = PrunedMatrix(W * keep, keep)
        >>> p.weight.tolist(), p.mask.tolist()
        ([[1.0, -3.0], [2.0, 0.0]], [[True, True], [True, False]])
    """

    weight: Tensor
    mask: Tensor


def _inputs_of(batch) -> tuple[tuple, dict]:
    inputs = batch[0]
    if isinstance(inputs, Tensor):
        return (inputs,), {}
    if isinstance(inputs, Mapping):
        return (), dict(inputs)
    return tuple(inputs), {}


def _is_batch(b) -> bool:
    return (isinstance(b, (tuple, list)) and len(b) == 2
            and (isinstance(b[0], (Tensor, Mapping)) or (isinstance(b[0], tuple) and all(isinstance(t, Tensor) for t in b[0]))))


def calibration_batches(data) -> list:
    """``data`` as a list of ``(inputs, targets)`` batches (a ``ValueError`` / ``TypeError`` naming it otherwise)."""
    if _is_batch(data):
        return [data]
    if isinstance(data, Iterable) and not isinstance(data, (Tensor, str, Mapping)):
        out = list(data)
        if out and all(_is_batch(b) for b in out):
            return out
    raise ValueError("data must be one (inputs, targets) batch or an iterable of such batches (inputs: a tensor, "
                     f"a tuple of tensors or a dict of tensors; targets are ignored), got {type(data).__name__}")


def _check_deterministic(model: nn.Module) -> None:
    for name, m in model.named_modules():
        if m.training and ((isinstance(m, nn.modules.dropout._DropoutNd) and m.p > 0)
                           or isinstance(m, nn.modules.batchnorm._BatchNorm)):
            raise ValueError(f"model: {name or '<root>'} ({type(m).__name__}) is in train mode, so calibration "
                             "would be random or update running statistics; call model.eval() first")


class _Stop(Exception):
    """Raised by a hook to end a forward once the group's block has run."""


def _run(model: nn.Module, batches: list, hooks: dict[nn.Module, Callable], stop: nn.Module | None) -> None:
    handles = [m.register_forward_pre_hook(h) for m, h in hooks.items()]

    def halt(_m, _i, _o):
        raise _Stop

    if stop is not None:
        handles.append(stop.register_forward_hook(halt))
    try:
        with torch.no_grad():
            for b in batches:
                args, kwargs = _inputs_of(b)
                try:
                    model(*args, **kwargs)
                except _Stop:
                    pass
    finally:
        for h in handles:
            h.remove()


def _stat_hooks(layers: dict[str, nn.Module], stats: dict[str, LayerStats], gram: bool, dtype) -> dict:
    def make(name, mod):
        def hook(_m, args):
            try:
                rows = input_rows(mod, args[0])
            except ValueError as err:
                raise ValueError(f"data: layer {name!r} got an input that does not fit it: {err}") from None
            if name not in stats:
                stats[name] = LayerStats.empty(rows.shape[1], gram=gram, dtype=dtype, device=rows.device)
            stats[name].update(rows)
        return hook
    return {mod: make(name, mod) for name, mod in layers.items()}


def _layers(model, targets, exclude) -> dict[str, nn.Module]:
    """``{weight name: layer}`` of the target weights (each the ``weight`` of a supported layer)."""
    registered = weights_of(model)
    out = {}
    for pname in _targets(model, targets, exclude=exclude):
        lw = registered[pname]
        if lw.param_name != "weight":
            raise TypeError(f"targets: {pname!r} is not a layer's weight; calibration prunes Linear, Conv1d/2d/3d "
                            "and Conv1D weights")
        _layout(lw.module, lw.module_name)
        out[pname] = lw.module
    return out


def collect_stats(model: nn.Module, data, *, targets: Spec = None, exclude: Spec = None, gram: bool = True,
                  dtype: torch.dtype = torch.float64) -> dict[str, LayerStats]:
    """Each target layer's input statistics over ``data`` (one forward per batch): ``{weight name: LayerStats}``.

    Args:
        model: the model (deterministic: eval mode for dropout / BatchNorm).
        data: an ``(inputs, targets)`` batch or an iterable of them (targets ignored).
        targets, exclude: which layers (Linear / Conv weights, as :func:`overparam.prune.targets`).
        gram, dtype: also accumulate the ``(d, d)`` Gram matrices (else squared norms only); float64 or float32.

    Reference: the statistics of SparseGPT (E. Frantar & D. Alistarh, ICML 2023) and Wanda (M. Sun et al., ICLR 2024).

    Example:
        >>> net = torch.nn.Linear(3, 2)
        >>> s = collect_stats(net, (torch.ones(4, 3), None), gram=False)["weight"]
        >>> s.norms.tolist(), s.gram, s.rows
        ([2.0, 2.0, 2.0], None, 4)
    """
    check_model(model)
    _check_dtype(dtype)
    batches = calibration_batches(data)
    _check_deterministic(model)
    layers = _layers(model, targets, exclude)
    stats: dict[str, LayerStats] = {}
    _run(model, batches, _stat_hooks(layers, stats, gram, dtype), None)
    _check_all_ran(layers, stats)
    return {n: stats[n] for n in layers}


def _check_dtype(dtype) -> None:
    if dtype not in (torch.float32, torch.float64):
        raise ValueError(f"dtype must be torch.float32 or torch.float64, got {dtype}")


def _check_all_ran(layers, stats) -> None:
    missing = [n for n in layers if n not in stats]
    if missing:
        raise ValueError(f"targets: layers {missing} never ran in model(inputs) on the calibration data")


def block_of(model: nn.Module, weights, blocks: Spec) -> dict[str, str]:
    """``{weight name: the outermost block (of the spec ``blocks``) containing its layer, or the layer}``.

    ``blocks=None``: the model's repeated blocks (:func:`overparam.backend.layers.repeated_blocks`: GPT-2
    ``transformer.h``, LLaMA ``model.layers``, any ModuleList of same-class blocks) if it has some, else each layer.

    Example:
        >>> net = torch.nn.Sequential(torch.nn.Sequential(torch.nn.Linear(2, 2)), torch.nn.Linear(2, 2))
        >>> block_of(net, ["0.0.weight", "1.weight"], "0")
        {'0.0.weight': '0', '1.weight': '1'}
    """
    chosen: list[str] = []
    if blocks is None:
        try:
            name, container = repeated_blocks(model)
            chosen = [f"{name}.{c}" if name else c for c, _ in container.named_children()]
        except ValueError:
            pass
    else:
        sel = [n for n in select(model, blocks, kind="modules", argname="blocks") if n]
        chosen = [n for n in sel if not any(n.startswith(p + ".") for p in sel if p != n)]
        if not chosen:
            raise ValueError(f"blocks: {blocks!r} selects no submodule of the model")
    out = {}
    for w in weights:
        layer = module_name(w)
        out[w] = next((b for b in chosen if layer == b or layer.startswith(b + ".")), layer)
    return out


def _groups(model: nn.Module, layers: dict[str, nn.Module], blocks: Spec, batches: list) -> list[tuple[nn.Module, list[str]]]:
    """``[(stop module, [layer names])]`` in execution order (found by one forward on the first batch)."""
    owner = block_of(model, layers, blocks)
    mods = dict(model.named_modules())
    units = {u: mods[u] for u in dict.fromkeys(owner.values())}
    order: list[str] = []
    hooks = {m: (lambda u: lambda _m, _a: order.append(u))(u) for u, m in units.items()}
    _run(model, batches[:1], hooks, None)
    if len(order) != len(set(order)):
        raise ValueError("blocks: a block or target layer runs more than once per forward; the calibration "
                         "driver needs each to run once")
    missing = [u for u in units if u not in order]
    if missing:
        raise ValueError(f"targets/blocks: {missing} never run in model(inputs) on the calibration data")
    return [(units[u], [ln for ln in layers if owner[ln] == u]) for u in order]


def calibrate(model: nn.Module, data, rule: Callable[[str, Tensor, LayerStats], PrunedMatrix], *,
              targets: Spec = None, exclude: Spec = None, blocks: Spec = None, sequential: bool = True,
              gram: bool = True, dtype: torch.dtype = torch.float64, restore: bool = False) -> Masks:
    """Prune the target layers in place with a layer rule fitted to calibration statistics; returns the
    masks ``{"<layer>.weight": bool tensor of the weight's shape}`` in model order.

    Args:
        model: the model (deterministic: eval mode for dropout / BatchNorm).
        data: an ``(inputs, targets)`` batch or an iterable of them; ``model(inputs)`` is run.
        rule: ``rule(weight name, W (out, d) float copy in dtype, stats) -> PrunedMatrix`` (new W, keep-mask).
        targets, exclude: which layers (as :func:`overparam.prune.targets`; Linear and Conv).
        blocks: a spec of the blocks run as units (module docstring), or None: the repeated blocks (:func:`block_of`).
        sequential: fit each group on the outputs of the pruned earlier groups (True) or the dense model's (False).
        gram, dtype: Gram matrices too (False: squared norms only, enough for Wanda); float64 or float32 (``W``'s too).
        restore: write the original weights back at the end (masks only, model unchanged).

    Reference: the sequential layer-wise scheme of SparseGPT (E. Frantar & D. Alistarh, ICML 2023).

    Example:
        >>> net = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Tanh(), torch.nn.Linear(4, 2))
        >>> keep_big = lambda name, W, stats: PrunedMatrix(W * (mask := W.abs() >= W.abs().median()), mask)
        >>> masks = calibrate(net, (torch.randn(16, 4), None), keep_big, gram=False)
        >>> sorted(masks), bool((net[0].weight[~masks["0.weight"]] == 0).all())
        (['0.weight', '2.weight'], True)
    """
    check_model(model)
    if not callable(rule):
        raise TypeError(f"rule must be callable, got {type(rule).__name__}")
    _check_dtype(dtype)
    batches = calibration_batches(data)
    _check_deterministic(model)
    layers = _layers(model, targets, exclude)
    groups = _groups(model, layers, blocks, batches)
    original = {n: m.weight.detach().clone() for n, m in layers.items()}
    masks: dict[str, Tensor] = {}
    try:
        if not sequential:
            stats: dict[str, LayerStats] = {}
            _run(model, batches, _stat_hooks(layers, stats, gram, dtype), None)
            _check_all_ran(layers, stats)
        for i, (stop, names) in enumerate(groups):
            if sequential:
                stats = {}
                sub = {n: layers[n] for n in names}
                _run(model, batches, _stat_hooks(sub, stats, gram, dtype), stop if i < len(groups) - 1 else None)
                _check_all_ran(sub, stats)
            for n in names:
                masks[n] = _prune_layer(n, layers[n], rule, stats.pop(n), dtype)
    except BaseException:
        for n, m in layers.items():
            with torch.no_grad():
                m.weight.copy_(original[n])
        raise
    if restore:
        for n, m in layers.items():
            with torch.no_grad():
                m.weight.copy_(original[n])
    return {n: masks[n] for n in layers}


def module_name(weight_name: str) -> str:
    """The layer that holds a target weight: ``"blocks.0.fc.weight"`` → ``"blocks.0.fc"`` (``"weight"`` → ``""``)."""
    return weight_name[: -len(".weight")] if weight_name.endswith(".weight") else ""


def _prune_layer(name: str, mod: nn.Module, rule, stats: LayerStats, dtype) -> Tensor:
    W = weight_matrix(mod).to(dtype).clone()
    out = rule(name, W, stats)
    if not isinstance(out, PrunedMatrix) or out.weight.shape != W.shape or out.mask.shape != W.shape:
        raise TypeError(f"rule must return a PrunedMatrix of two {tuple(W.shape)} tensors for layer {name!r}")
    _set_weight_matrix_(mod, out.weight * out.mask)
    return _matrix_to_weight(mod, out.mask.to(torch.bool)).contiguous()
