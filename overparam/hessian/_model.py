"""What every model-based operator shares: the data (one batch or a loader), the selected
parameters (a ``params=`` spec of :func:`overparam.backend.select.select`), the per-sample weighting of the loss across ragged batches, and
the guard that refuses models which are not deterministic under probing.

Models of every common shape are accepted: inputs may be a tensor, a tuple of tensors (positional
arguments) or a Mapping such as a Hugging Face ``BatchEncoding`` (keyword arguments); the model's
output goes through the selector ``output=`` (:func:`select_output`: a ``ModelOutput``'s
``.logits`` by default); and every forward runs under the math SDPA kernel (``attention="math"``),
the one attention kernel with double-backward and forward-mode derivatives.

Nothing here changes a module's train/eval flags, its parameters or buffers, or the global RNG:
every forward pass goes through :func:`torch.func.functional_call` on cloned parameters.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from ..backend import vec
from ..backend.select import Spec, select

__all__ = ["NonDeterministicModelError", "Objective", "parameter_names", "exactly", "grad", "check_agree",
           "check_deterministic", "check_stateless", "rng_guard", "select_output", "OUTPUTS", "ATTENTION"]

OUTPUTS = ("auto", None)
"""The named output selectors (a callable ``outputs -> Tensor`` is the third kind)."""
ATTENTION = ("math", None)
"""``attention="math"``: every forward runs under ``sdpa_kernel(SDPBackend.MATH)``; None: torch's choice."""


class NonDeterministicModelError(ValueError):
    """The model gives different curvature products for the same vector (active dropout,
    train-mode BatchNorm, or another stochastic/stateful module). A ``ValueError``.

    Example:
        >>> from overparam.hessian import hessian
        >>> net = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Dropout(0.5))  # train mode
        >>> try:
        ...     hessian(net, torch.nn.functional.mse_loss, (torch.randn(4, 2), torch.randn(4, 2)))
        ... except NonDeterministicModelError:
        ...     print("refused")
        refused
    """


def parameter_names(model: nn.Module, params: Spec = None, exclude: Spec = None) -> list[str]:
    """Names of the parameters that ``params`` selects, minus ``exclude`` (``named_parameters``
    order), by :func:`overparam.backend.select.select`; ``params=None`` means every trainable
    parameter. Selecting nothing is a ``ValueError``."""
    chosen = select(model, params, kind="parameters", exclude=exclude, argname="params")
    names = [k for k, p in chosen.items() if params is not None or p.requires_grad]
    if not names:
        raise ValueError(f"params={params!r} (exclude={exclude!r}) selects no trainable parameter of the model")
    return names


def exactly(names: Sequence[str]) -> Callable[[str, object], bool]:
    """A ``params`` predicate selecting exactly these qualified names (a name used as a string
    spec would also select every parameter it is a dotted suffix of)."""
    keep = frozenset(names)
    return lambda name, _obj: name in keep


def grad(out: Tensor, inputs, grad_outputs=None, *, create_graph: bool = False, retain_graph: bool | None = None) -> vec.Vec:
    """``torch.autograd.grad`` as a tuple, with zeros (not None) for inputs ``out`` does not depend on."""
    return tuple(torch.autograd.grad(out, inputs, grad_outputs, create_graph=create_graph, retain_graph=retain_graph,
                                     allow_unused=True, materialize_grads=True))


def batched_grad(outputs, inputs, grads: Sequence[Tensor], B: int) -> tuple[Tensor, ...]:
    """``torch.autograd.grad`` for ``B`` seeds at once (leading dim of ``grads``): one vmapped
    backward pass, or ``B`` passes where an operation has no batching rule."""
    try:
        return tuple(torch.autograd.grad(outputs, inputs, grads, retain_graph=True, allow_unused=True,
                                         materialize_grads=True, is_grads_batched=True))
    except RuntimeError:  # no vmap rule for some backward op: one pass per seed
        rows = [grad(outputs, inputs, [g[b] for g in grads] if isinstance(outputs, (list, tuple)) else grads[0][b],
                     retain_graph=True) for b in range(B)]
        return tuple(torch.stack([r[i] for r in rows]) for i in range(len(inputs)))


def select_output(out, output="auto") -> Tensor:
    """The tensor a loss sees of a model's output ``out``.

    ``output="auto"``: a Tensor as is; a Mapping or ``ModelOutput`` holding ``logits`` → its
    ``logits``; else the first Tensor of a tuple/list/Mapping; anything else is a ``TypeError``
    naming ``output``. ``None``: ``out`` unchanged (a custom ``loss_fn`` takes it raw). A callable:
    ``output(out)`` (e.g. ``lambda o: o.logits[:, :-1]`` for a causal shift).

    Example:
        >>> select_output({"loss": None, "logits": torch.ones(2)})
        tensor([1., 1.])
        >>> select_output((torch.zeros(1), torch.ones(1)))
        tensor([0.])
    """
    if output is None:
        return out
    if callable(output):
        return output(out)
    if isinstance(out, Tensor):
        return out
    if isinstance(out, Mapping):
        if isinstance(out.get("logits"), Tensor):
            return out["logits"]
        items = list(out.values())
    elif isinstance(out, (tuple, list)):
        items = list(out)
    else:
        items = []
    for item in items:
        if isinstance(item, Tensor):
            return item
    raise TypeError(f"output='auto' found no tensor in the model's output of type {type(out).__name__}: pass "
                    "output=<callable picking the tensor> (or output=None to hand the raw output to loss_fn)")


def _check_output(output) -> None:
    if not (output is None or output == "auto" or callable(output)) or isinstance(output, bool):
        raise ValueError(f"output must be 'auto', None or a callable (model output -> tensor), got {output!r}")


def _check_attention(attention) -> None:
    if attention not in ATTENTION:
        raise ValueError(f"attention must be one of {ATTENTION}, got {attention!r}")


def _is_inputs(x) -> bool:
    return isinstance(x, Tensor) or (isinstance(x, tuple) and len(x) > 0) or (
        isinstance(x, Mapping) and len(x) > 0 and all(isinstance(k, str) for k in x))


def _is_batch(data) -> bool:
    # (inputs, targets): inputs a tensor, a tuple of tensors (positional) or a Mapping (keywords); targets a tensor
    return isinstance(data, (tuple, list)) and len(data) == 2 and _is_inputs(data[0]) and (
        isinstance(data[0], Tensor) or isinstance(data[1], Tensor))


def _batch_size(inputs) -> int:
    values = [inputs] if isinstance(inputs, Tensor) else list(inputs.values() if isinstance(inputs, Mapping) else inputs)
    first = next((t for t in values if isinstance(t, Tensor)), None)
    if first is None or first.ndim == 0:
        raise ValueError("each batch must be (inputs, targets) with inputs a tensor, a tuple of tensors or a Mapping "
                         "of tensors (keyword arguments), the first of shape (N, ...)")
    return int(first.shape[0])


def _stochastic_modules(model: nn.Module) -> list[str]:
    bad = []
    for name, m in model.named_modules():
        if not m.training:
            continue
        if isinstance(m, nn.modules.dropout._DropoutNd) and m.p > 0:
            bad.append(f"{name or '<root>'} ({type(m).__name__} p={m.p}, in train mode)")
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            bad.append(f"{name or '<root>'} ({type(m).__name__} in train mode: batch statistics and running-stat updates)")
    return bad


def _attention_context(attention):
    if attention is None:
        return contextlib.nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel
    return sdpa_kernel(SDPBackend.MATH)


@dataclass
class Objective:
    """The loss ``L(θ) = Σ_b (n_b / N) loss_fn(model(x_b; θ), y_b)`` over the data, as a
    function of the selected parameters θ (cloned at construction: the operator is the
    curvature at the parameters the model had then).

    With ``reduction="sum"`` the losses are added instead (``loss_fn`` returns sums).
    ``loss_fn`` sees ``select_output(model(x_b), output)``; inputs that are a Mapping are passed as
    keyword arguments; ``attention="math"`` runs every forward under the math SDPA kernel.
    """

    model: nn.Module
    loss_fn: Callable[[Tensor, Tensor], Tensor]
    batches: list
    weights: list[float]
    names: list[str]
    theta: tuple[Tensor, ...]
    reduction: str = "mean"
    buffers: dict[str, Tensor] = field(default_factory=dict)  # private copies: a stateful forward
    # (e.g. spectral_norm's power iteration in train mode) updates these, never the model's own
    output: object = "auto"
    attention: str | None = "math"

    @classmethod
    def build(cls, model: nn.Module, loss_fn, data, params: Spec = None, *, exclude: Spec = None,
              reduction: str = "mean", output="auto", attention: str | None = "math") -> Objective:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if not callable(loss_fn):
            raise TypeError(f"loss_fn must be callable, got {type(loss_fn).__name__}")
        if reduction not in ("mean", "sum"):
            raise ValueError(f"reduction must be 'mean' or 'sum', got {reduction!r}")
        _check_output(output)
        _check_attention(attention)
        bad = _stochastic_modules(model)
        if bad:
            raise NonDeterministicModelError(
                "the model is not deterministic under probing: " + "; ".join(bad)
                + ". Call model.eval() (or disable these modules) before building a curvature operator; "
                "overparam never changes train/eval flags itself (Hugging Face models built as Model(config) "
                "come back in train mode; from_pretrained returns them in eval mode)."
            )
        if _is_batch(data):
            batches = [tuple(data)]
        elif isinstance(data, Iterable) and not isinstance(data, (Tensor, str)):
            batches = [tuple(b) for b in data]
            if not batches or not all(_is_batch(b) for b in batches):
                raise ValueError("data must be one (inputs, targets) batch or an iterable of such batches (e.g. a "
                                 "DataLoader); inputs a tensor, a tuple of tensors or a Mapping of keyword tensors")
        else:
            raise TypeError(f"data must be an (inputs, targets) batch or a DataLoader, got {type(data).__name__}")
        sizes = [_batch_size(b[0]) for b in batches]
        total = sum(sizes)
        if total == 0:
            raise ValueError("data holds no samples")
        weights = [s / total for s in sizes] if reduction == "mean" else [1.0] * len(sizes)
        names = parameter_names(model, params, exclude)
        pd = dict(model.named_parameters())
        theta = tuple(pd[k].detach().clone() for k in names)
        dtypes = {t.dtype for t in theta}
        if len(dtypes) > 1:
            raise TypeError(f"selected parameters have mixed dtypes {sorted(map(str, dtypes))}; cast the model first")
        buffers = {k: b.detach().clone() for k, b in model.named_buffers()}
        return cls(model, loss_fn, batches, weights, names, theta, reduction, buffers, output, attention)

    @property
    def n(self) -> int:
        return vec.numel(self.theta)

    def outputs(self, theta: Sequence[Tensor], batch) -> Tensor:
        """``select_output(model(x_b))`` with the selected parameters replaced by ``theta``
        (``functional_call``; a Mapping of inputs as keyword arguments; under the math SDPA kernel
        when ``attention="math"``)."""
        x = batch[0]
        args, kwargs = ((), dict(x)) if isinstance(x, Mapping) else ((x if isinstance(x, tuple) else (x,)), None)
        with _attention_context(self.attention):
            out = torch.func.functional_call(self.model, {**self.buffers, **dict(zip(self.names, theta))}, args,
                                             kwargs, strict=False)
            return select_output(out, self.output)

    def loss(self, theta: Sequence[Tensor], i: int) -> Tensor:
        """Weighted loss of batch ``i`` at ``theta``."""
        b = self.batches[i]
        return self.loss_fn(self.outputs(theta, b), b[1]) * self.weights[i]

    def total_loss(self, theta: Sequence[Tensor]) -> Tensor:
        return sum(self.loss(theta, i) for i in range(len(self.batches)))

    @property
    def device(self) -> torch.device:
        return self.theta[0].device

    def grad(self, theta: Sequence[Tensor]) -> vec.Vec:
        """``∇L(θ)`` at ``theta`` by one fresh forward/backward per batch (one graph alive at a time)."""
        leaves = tuple(t.detach().requires_grad_(True) for t in theta)
        out = None
        for i in range(len(self.batches)):
            g = grad(self.loss(leaves, i), leaves)
            out = g if out is None else vec.add(out, g)
        return out

    def leaves(self) -> tuple[Tensor, ...]:
        """Fresh leaf copies of θ that require grad (the model's own tensors are never touched)."""
        return tuple(t.detach().clone().requires_grad_(True) for t in self.theta)


def rng_guard(device: torch.device):
    """Context manager restoring the global RNG (CPU, and ``device`` if CUDA) on exit."""
    devices = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else []
    return torch.random.fork_rng(devices=devices)


def check_deterministic(first: Callable[[vec.Vec], vec.Vec], second: Callable[[vec.Vec], vec.Vec], obj: Objective, *,
                        what: str) -> None:
    """Apply two independently built product functions (fresh forward passes) to one fixed
    probe and raise when the results differ.

    The probe comes from a private generator and the global RNG state is restored afterwards,
    so a custom stochastic module cannot leave a trace either.
    """
    from ..backend.random import probes_like

    v = probes_like(obj.theta, generator=12345)
    with rng_guard(obj.theta[0].device):
        a = first(v)
        b = second(v)
    check_agree(a, b, obj, what=f"{what} products with the same vector")


def check_stateless(obj: Objective) -> None:
    """Raise :class:`NonDeterministicModelError` if the forward passes run so far rewrote any of the
    objective's private buffer copies (compared bitwise with the model's own buffers, which no
    forward touches): a stateful forward, such as spectral_norm's train-mode power iteration, is
    refused however little its outputs move."""
    own = dict(obj.model.named_buffers())
    changed = [k for k, b in obj.buffers.items() if k in own and not torch.equal(b, own[k])]
    if changed:
        raise NonDeterministicModelError(
            f"the forward pass rewrites the buffers {changed}: the model is stateful under probing "
            "(spectral_norm, or another module that updates its state in train mode). Call model.eval() first.")


def check_agree(a: vec.Vec, b: vec.Vec, obj: Objective, *, what: str) -> None:
    """Raise :class:`NonDeterministicModelError` unless two evaluations ``a`` and ``b`` (of one
    quantity, from two fresh forward passes) agree to ``1e3·eps`` relative, and the forwards left
    the private buffer copies bitwise unchanged (:func:`check_stateless`)."""
    with torch.no_grad():
        diff, ref = vec.norm(vec.sub(a, b)), vec.norm(a)
    tol = 1e3 * torch.finfo(obj.theta[0].dtype).eps * (ref + 1e-30)
    if not bool(torch.isfinite(ref)):
        raise ValueError(f"the {what} are not finite: the parameters, the data or the loss contain NaN/inf")
    if bool(diff > tol):
        raise NonDeterministicModelError(
            f"two {what} differ (relative difference "
            f"{float(diff / (ref + 1e-30)):.2e}): the model is stochastic or stateful under probing "
            "(dropout, train-mode BatchNorm, random augmentation?). Call model.eval() first."
        )
    check_stateless(obj)
