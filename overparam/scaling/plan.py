"""Parameterizations as data: per-tensor init std and learning-rate scale for any torch optimizer.

A :class:`Plan` says, for every trainable tensor, how to initialize it and how to scale the
learning rate (and weight decay) relative to a *base* model whose hyperparameters were tuned.
It is applied with :meth:`Plan.init_` and :meth:`Plan.param_groups`; the model's modules,
forward pass and ``state_dict`` keys are never changed. Output and residual-branch multipliers
are *absorbed* into the init and learning rate (the abc-symmetry of Tensor Programs V: a
multiplier ``c`` on ``W`` is the same network as ``W' = cW`` with init ``c·σ`` and learning rate
``c·η`` under Adam, ``c²·η`` under SGD), so the rules need no special read-out module.

Rules, with ``m_in``/``m_out`` the fan-in/fan-out width multipliers and ``σ₀`` the base init std
(Tensor Programs V, Table 3; MuAdam/MuSGD for non-square growth):

=========  ==============  ================  ==================
role       init std        Adam LR scale     SGD LR scale
=========  ==============  ================  ==================
input      σ₀              1                 m_out
hidden     σ₀/√m_in        1/m_in            m_out/m_in
output     σ₀/m_in (or 0)  1/m_in            1/m_in
fixed      σ₀              1                 1
=========  ==============  ================  ==================

SP keeps ``σ₀/√m_in`` for every weight and one learning rate. ``"depth-mup"`` and ``"completep"``
add, for a residual network ``x + f_l(x)`` with ``L`` blocks (base ``L₀``, ``d = L/L₀``), the
branch multiplier ``d^{-α}`` (α = 1/2: depth-μP, Yang, Yu, Zhu & Hayou 2023; α = 1: CompleteP,
Dey et al. 2025): every branch parameter gets Adam LR ``×d^{α-1}`` (SGD ``×d^{2α-1}``), and the
branch's output layer absorbs the multiplier ``c = d^{-α}`` (init and kept biases ``×c``, LR a
further ``×c`` under Adam, ``×c²`` under SGD); see :mod:`overparam.scaling.depth`. Vectors (1-D
tensors: biases, norm gains) keep the model's own init.

Adam's ε (Everett et al. 2024, "Scaling Exponents Across Parameterizations and Optimizers") must
scale like the gradient it is added to, else it swamps the update of wide layers: each rule
carries ``eps_scale`` (μP: ``1/m_out``, the gradient entries of a tensor scale like the backward
signal at its output; inside a branch a further ``d^{-α}``, 1 for the absorbed branch output;
SP: 1), applied by ``param_groups(..., eps=)``.

Example:
    >>> import torch
    >>> mlp = lambda w: torch.nn.Sequential(torch.nn.Linear(4, w), torch.nn.ReLU(), torch.nn.Linear(w, w),
    ...                                     torch.nn.ReLU(), torch.nn.Linear(w, 3))
    >>> model = mlp(256)
    >>> p = plan(model, "mup", base=mlp(64))
    >>> p.init_(model, generator=0)
    >>> opt = torch.optim.Adam(p.param_groups(model, lr=1e-3))
    >>> sorted({g["lr"] for g in opt.param_groups})
    [0.00025, 0.001]
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from ..backend import dist as _dist
from ..backend.random import GeneratorLike, construction_generator, gaussian
from ..backend.select import Spec
from .depth import ALPHA, depth_factors, resolve_depth
from .shapes import TensorShape, _select_trainable, infer_shapes

__all__ = ["PARAMETERIZATIONS", "Rule", "Plan", "plan"]

PARAMETERIZATIONS = ("sp", "mup", "depth-mup", "completep", "umup")
#: parameterizations whose plan another module builds (``{name: fn(model, **plan's keywords)}``)
_REGISTERED: dict[str, Callable[..., Plan]] = {}
OPTIMIZERS = ("adam", "sgd")


@dataclass(frozen=True)
class Rule:
    """How one tensor is initialized and trained.

    Attributes:
        shape: the tensor's width information (role, fans, multipliers).
        init_std: std of a fresh ``N(0, init_std²)`` draw, or None to keep the model's own values.
        init_scale: factor applied to kept values (``init_std`` None), e.g. an absorbed multiplier.
        lr_scale: factor on the base learning rate (weight decay: see :meth:`Plan.param_groups`).
        size: the tensor's shape, checked when the plan is applied.
        eps_scale: factor on Adam's base ε (``param_groups(..., eps=)``).

    Reference: G. Yang, E. J. Hu et al., "Tensor Programs V: Tuning Large Neural Networks via
        Zero-Shot Hyperparameter Transfer" (2022), Table 3.

    Example:
        >>> mlp = lambda w: nn.Sequential(nn.Linear(4, w), nn.ReLU(), nn.Linear(w, 3))
        >>> r = plan(mlp(32), "mup", base=mlp(8)).rules["2.weight"]  # the read-out, m_in = 4
        >>> r.shape.role, r.size, round(r.init_std * 8 ** 0.5 * 4, 12), r.lr_scale  # σ₀/m_in, σ₀ = 1/√8; LR ×1/m_in
        ('output', (3, 32), 1.0, 0.25)
    """

    shape: TensorShape
    init_std: float | None
    init_scale: float
    lr_scale: float
    size: tuple[int, ...]
    eps_scale: float = 1.0


def _is_real(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _width_rule(s: TensorShape, parameterization: str, optimizer: str, sigma0: float | None,
                zero_output: bool) -> tuple[float | None, float]:
    """(init std or None, lr scale) from the width multipliers alone."""
    if parameterization == "sp":
        return (None if sigma0 is None else sigma0 / math.sqrt(s.m_in)), 1.0
    adam = optimizer == "adam"
    if s.role == "input":
        std, lr = sigma0, (1.0 if adam else s.m_out)
    elif s.role == "hidden":
        std, lr = (None if sigma0 is None else sigma0 / math.sqrt(s.m_in)), (1 / s.m_in if adam else s.m_out / s.m_in)
    elif s.role == "output":
        std = 0.0 if zero_output and sigma0 is not None else (None if sigma0 is None else sigma0 / s.m_in)
        lr = 1 / s.m_in
    else:
        std, lr = sigma0, 1.0
    return std, lr


@dataclass
class Plan:
    """A parameterization of one model: ``{name: Rule}`` plus how it was made.

    Print it for a table. Apply it with :meth:`init_` (once, before training) and
    :meth:`param_groups` (to build any ``torch.optim`` optimizer).

    Attributes:
        parameterization: ``"sp"``, ``"mup"``, ``"depth-mup"``, ``"completep"`` or ``"umup"``.
        optimizer: ``"adam"`` or ``"sgd"``.
        rules: ``{parameter name: Rule}`` in ``named_parameters`` order.

    Reference: G. Yang, E. J. Hu et al., "Tensor Programs V: Tuning Large Neural Networks via
        Zero-Shot Hyperparameter Transfer" (2022), Table 3; depth rules: Yang, Yu, Zhu & Hayou 2023 (depth-μP), Dey et al.
    2025 (CompleteP).

    Example:
        >>> mlp = lambda w: nn.Sequential(nn.Linear(4, w), nn.ReLU(), nn.Linear(w, w), nn.ReLU(), nn.Linear(w, 3))
        >>> p = plan(mlp(32), "mup", base=mlp(8))
        >>> [(k, r.shape.role, r.lr_scale) for k, r in p.rules.items() if k.endswith("weight")]
        [('0.weight', 'input', 1.0), ('2.weight', 'hidden', 0.25), ('4.weight', 'output', 0.25)]
    """

    parameterization: str
    optimizer: str
    rules: dict[str, Rule]

    def __str__(self) -> str:
        head = (f"{'name':<28} {'role':<7} {'fan_in':>7} {'fan_out':>7} {'m_in':>6} {'m_out':>6} {'init std':>10} "
                f"{'lr ×':>9} {'eps ×':>9}")
        lines = [f"Plan({self.parameterization!r}, optimizer={self.optimizer!r})", head]
        for k, r in self.rules.items():
            init = "keep" if r.init_std is None else f"{r.init_std:.4g}"
            if r.init_std is None and r.init_scale != 1:
                init = f"keep×{r.init_scale:.3g}"
            s = r.shape
            lines.append(f"{k:<28} {s.role:<7} {s.fan_in:>7} {s.fan_out:>7} {s.m_in:>6.3g} {s.m_out:>6.3g} {init:>10} "
                         f"{r.lr_scale:>9.4g} {r.eps_scale:>9.4g}")
        return "\n".join(lines)

    def _check(self, model: nn.Module) -> dict[str, nn.Parameter]:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
        params = dict(model.named_parameters())
        missing = [k for k in self.rules if k not in params]
        if missing:
            raise ValueError(f"model has no parameters {missing}: the plan was made for another architecture")
        wrong = [f"{k}: {tuple(params[k].shape)} vs {r.size}" for k, r in self.rules.items() if tuple(params[k].shape) != r.size]
        if wrong:
            raise ValueError(f"model parameter shapes differ from the plan's: {wrong}")
        return params

    @torch.no_grad()
    def init_(self, model: nn.Module, *, generator: GeneratorLike = None) -> None:
        """Initialize ``model`` in place: a Gaussian draw of std ``init_std`` for every tensor
        that has one, kept values times ``init_scale`` for the others (parameters in
        ``named_parameters`` order, one generator).

        The draws are float32 ``N(0, 1)`` numbers from one CPU generator, times ``init_std`` in
        float32, then stored in the parameter's dtype and device: a seed gives the same init on
        every device, and in every dtype up to that dtype's rounding of the one float32 value
        (a float64 model holds exactly the float32 model's numbers). A CPU float32 parameter is
        drawn in place (no copy).

        Not idempotent where a rule keeps the model's values (``init_std`` None) with an
        ``init_scale`` other than 1 (depth-μP branch-output biases): call it once per model.

        ``generator=None`` draws from torch's default generator (the construction rule, docs/index.md).

        Raises:
            ValueError: ``model`` lacks a planned parameter or has another shape for one.

        Example:
            >>> mlp = lambda w: nn.Sequential(nn.Linear(64, w), nn.ReLU(), nn.Linear(w, w), nn.ReLU(), nn.Linear(w, 3))
            >>> model = mlp(256)
            >>> p = plan(model, "mup", base=mlp(64))
            >>> p.init_(model, generator=0)
            >>> round(float(model[2].weight.detach().std() * 64 ** 0.5 * 2), 1)  # hidden: σ₀/√m_in, σ₀ = 1/√64, m_in = 4
            1.0
            >>> round(float(model[4].weight.detach().std() * 64 ** 0.5 * 4), 1)  # output: σ₀/m_in
            1.0
        """
        params = self._check(model)
        g = construction_generator(generator)
        for k, r in self.rules.items():
            p = params[k]
            if r.init_std is not None:
                if p.dtype == torch.float32 and p.device == g.device and p.is_contiguous() and not _dist.is_dtensor(p):
                    p.normal_(generator=g).mul_(r.init_std)  # the same numbers as the draw below, in place
                else:
                    full = gaussian(tuple(p.shape), generator=g, dtype=torch.float32).mul_(r.init_std)
                    (p.to_local() if _dist.is_dtensor(p) else p).copy_(_dist.local_part(full, p))  # FSDP2: this rank's shard
            elif r.init_scale != 1:
                p.mul_(r.init_scale)

    def param_groups(self, model: nn.Module, *, lr: float, weight_decay: float = 0.0, decay: str = "independent",
                     vector_decay: bool = True, eps: float | None = None, **extra) -> list[dict]:
        """Parameter groups for any ``torch.optim`` optimizer: tensors with equal learning rate
        and weight decay share a group (so foreach/fused kernels stay batched).

        Args:
            lr: the base model's learning rate; each group gets ``lr · lr_scale``.
            weight_decay: the base weight decay.
            decay: ``"independent"`` (default: ``weight_decay / lr_scale``, so the product
                ``lr · weight_decay`` stays that of the base model; what Microsoft's ``mup``
                MuAdam/MuSGD do (they divide the weight decay by their lr factor), the AdamW rule of
                Wortsman et al. 2023 and of the weight-decay scaling paper for width-growing
                matrices) or ``"coupled"`` (every group keeps ``weight_decay``; with AdamW, whose
                decay is multiplied by the group's lr, the decay rate then scales like the lr).
            vector_decay: whether 1-D tensors (biases, norm gains) are decayed.
            eps: Adam's base ε; each group then gets ``eps · eps_scale`` (per-layer ε scaling,
                Adam-family plans only). None (default): no ``"eps"`` key, the optimizer's own.
            extra: other per-group options copied into every group (e.g. ``betas``).

        Returns:
            ``[{"params": [...], "lr": ..., "weight_decay": ..., **extra}, ...]`` covering every
            parameter of the plan exactly once.

        Raises:
            ValueError: a non-finite or non-positive ``lr``, a negative or non-finite
                ``weight_decay``, an unknown ``decay``, ``eps`` not > 0 or on an SGD plan, or a
                trainable parameter of ``model`` that the plan does not cover.

        Example:
            >>> mlp = lambda w: nn.Sequential(nn.Linear(4, w), nn.ReLU(), nn.Linear(w, w), nn.ReLU(), nn.Linear(w, 3))
            >>> model = mlp(32)
            >>> groups = plan(model, "mup", base=mlp(8)).param_groups(model, lr=1e-2, weight_decay=0.1, eps=1e-8)
            >>> [(len(g["params"]), g["lr"], g["weight_decay"], g["eps"]) for g in groups]  # lr · wd kept
            [(3, 0.01, 0.1, 2.5e-09), (1, 0.0025, 0.4, 2.5e-09), (1, 0.0025, 0.4, 1e-08), (1, 0.01, 0.1, 1e-08)]
            >>> opt = torch.optim.AdamW(groups)
        """
        params = self._check(model)
        planned = {id(params[k]) for k in self.rules}
        uncovered = [k for k, q in params.items() if q.requires_grad and id(q) not in planned]
        if uncovered:
            raise ValueError(f"model has trainable parameters {uncovered} that the plan does not cover "
                             "(unfrozen or added after plan() was called): make a new plan")
        return _groups(self, params, list(self.rules), lr=lr, weight_decay=weight_decay, decay=decay,
                       vector_decay=vector_decay, eps=eps, extra=extra)


def _groups(p: Plan, params: dict[str, nn.Parameter], names: list[str], *, lr: float, weight_decay: float,
            decay: str, vector_decay: bool, eps: float | None, extra: dict, lr_scale: dict | None = None) -> list[dict]:
    """Parameter groups of ``names`` (see :meth:`Plan.param_groups`; ``lr_scale`` overrides the rules')."""
    if decay not in ("coupled", "independent"):
        raise ValueError(f"decay must be 'coupled' or 'independent', got {decay!r}")
    if not (_is_real(lr) and lr > 0):
        raise ValueError(f"lr must be a finite positive number, got {lr!r}")
    if not (_is_real(weight_decay) and weight_decay >= 0):
        raise ValueError(f"weight_decay must be a finite number >= 0, got {weight_decay!r}")
    if eps is not None:
        if not (_is_real(eps) and eps > 0):
            raise ValueError(f"eps must be a finite number > 0, got {eps!r}")
        if p.optimizer != "adam":
            raise ValueError(f"eps= is Adam's ε; this plan is for optimizer={p.optimizer!r}")
    groups: dict[tuple, dict] = {}
    for k in names:
        r = p.rules[k]
        scale = r.lr_scale if lr_scale is None else lr_scale[k]
        wd = weight_decay if (vector_decay or params[k].ndim > 1) else 0.0
        if decay == "independent":
            wd = wd / scale
        key = (lr * scale, wd) + (() if eps is None else (eps * r.eps_scale,))
        group = {"params": [], "lr": key[0], "weight_decay": key[1], **extra} | ({} if eps is None else {"eps": key[2]})
        groups.setdefault(key, group)["params"].append(params[k])
    return list(groups.values())

def plan(model: nn.Module, parameterization: str = "mup", *, base: nn.Module | None = None, delta: nn.Module | None = None,
         optimizer: str = "adam", init_std: float | Callable[[str, TensorShape], float | None] | None = "lecun",
         zero_output: bool = False, roles: dict[Spec, str] | None = None, depth: tuple[int, int] | None = None,
         branches: Spec = None, branch_outputs: Spec = None) -> Plan:
    """The per-tensor rules of a parameterization for ``model``, relative to ``base``.

    Args:
        model: the model to train (any architecture; the rules see only parameter shapes and
            owning module types, see :func:`~overparam.scaling.infer_shapes`).
        parameterization: ``"sp"``, ``"mup"``, ``"depth-mup"`` or ``"completep"`` (μP in width plus
            the depth rules with branch multiplier ``L^{-1/2}`` or ``L^{-1}``), or ``"umup"``
            (:func:`~overparam.scaling.umup_plan`: no ``base``; ``roles``, ``depth``,
            ``branches``, ``branch_outputs`` and ``init_std=None`` as there).
        base: (required except for ``"umup"``) the same architecture at the width whose hyperparameters were tuned, with the same
            parameter names (for the depth rules build it at the model's depth: the base depth is
            given by ``depth=``). Only shapes are read: build it on the meta device.
        delta: a third width, when ``model`` equals ``base`` in some growing dimension (needed
            when ``model`` is at the base width itself).
        optimizer: ``"adam"`` (also AdamW, Adagrad-like sign-invariant methods) or ``"sgd"``.
        init_std: the base std σ₀ of weight matrices: ``"lecun"`` (``1/√fan_in`` of the base),
            a number, a function ``(name, TensorShape) -> σ₀`` (None keeps that tensor's init), or
            None (keep every init; only the learning rates are planned).
        zero_output: initialize read-out weights at zero (a μP variant that transfers well);
            needs a tensor of role ``"output"``.
        roles: role overrides ``{spec: role}`` (see :func:`~overparam.scaling.infer_shapes`).
        depth: ``(L, L_base)``: the number of residual blocks of ``model`` and of the base depth
            (depth rules only); or an int ``L_base``, ``L`` then counted as the number of modules
            whose weight ``branch_outputs`` selects.
        branches: a selection spec (:mod:`overparam.backend.select`: names, globs, module types,
            predicates, lists) of every parameter inside a residual branch (depth rules),
            e.g. ``"blocks"`` or ``"blocks.*"``.
        branch_outputs: a spec of each branch's last layer (weight and bias), which absorbs the
            branch multiplier, e.g. ``"blocks.*.fc2"``; your forward stays ``x + f(x)``.

    Returns:
        a :class:`Plan`.

    Raises:
        ValueError: unknown parameterization/optimizer, depth rules without ``depth``/specs,
            a ``roles``/``branches``/``branch_outputs`` item that selects no trainable parameter
            (the message names the keyword), a non-positive or non-finite σ₀, ``zero_output``
            with ``init_std=None`` or without an ``"output"`` tensor, a model without trainable
            parameters, or a ``base`` of the model's own shapes without ``delta``.
        TypeError: a spec item of the wrong type.

    Reference: G. Yang, E. J. Hu et al., "Tensor Programs V: Tuning Large Neural Networks via
    Zero-Shot Hyperparameter Transfer" (2022), Table 3.

    Example:
        >>> mlp = lambda w: nn.Sequential(nn.Linear(4, w), nn.ReLU(), nn.Linear(w, w), nn.ReLU(), nn.Linear(w, 3))
        >>> p = plan(mlp(32), "mup", base=mlp(8), optimizer="sgd")
        >>> {k: r.lr_scale for k, r in p.rules.items() if k.endswith("weight")}  # SGD: m_out, m_out/m_in, 1/m_in
        {'0.weight': 4.0, '2.weight': 1.0, '4.weight': 0.25}
    """
    if parameterization not in PARAMETERIZATIONS:
        raise ValueError(f"parameterization must be one of {PARAMETERIZATIONS}, got {parameterization!r}")
    if parameterization in _REGISTERED:  # "umup": its rules live in umup.py, which registers them
        return _REGISTERED[parameterization](model, base=base, delta=delta, optimizer=optimizer, init_std=init_std,
                          zero_output=zero_output, roles=roles, depth=depth, branches=branches,
                          branch_outputs=branch_outputs)
    if base is None:
        raise ValueError(f"{parameterization!r} needs base=, the model at the width whose hyperparameters were tuned")
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {optimizer!r}")
    if init_std is None and zero_output:
        raise ValueError("zero_output=True needs an init_std (init_std=None keeps every init)")
    shapes = infer_shapes(model, base=base, delta=delta, roles=roles)
    if zero_output and not any(s.role == "output" for s in shapes.values()):
        raise ValueError("zero_output=True but no tensor has the role 'output' (roles: "
                         f"{sorted({s.role for s in shapes.values()})}): check base/delta, or name the read-out "
                         "with roles={spec: 'output'}")
    inside, outputs, factors = set(), set(), (1.0, 1.0, 1.0)
    if parameterization in ALPHA:
        if branches is None or branch_outputs is None:
            raise ValueError(f"{parameterization!r} needs branches= and branch_outputs= selection specs")
        inside = _select_trainable(model, branches, argname="branches")
        outputs = _select_trainable(model, branch_outputs, argname="branch_outputs")
        L, L0 = resolve_depth(model, depth, outputs, parameterization)
        factors = depth_factors(L / L0, ALPHA[parameterization], optimizer)
    elif depth is not None or branches is not None or branch_outputs is not None:
        raise ValueError(f"depth=, branches= and branch_outputs= apply to the depth parameterizations {tuple(ALPHA)} "
                         "only")
    rules = {}
    params = dict(model.named_parameters())
    for k, s in shapes.items():
        ndim = params[k].ndim
        if ndim < 2:
            sigma0 = None
        elif init_std == "lecun":
            sigma0 = 1 / math.sqrt(s.fan_in / s.m_in)
        elif callable(init_std):
            sigma0 = init_std(k, s)
        elif isinstance(init_std, str):
            raise ValueError(f"init_std must be 'lecun', a number, a function or None, got {init_std!r}")
        else:
            sigma0 = init_std
        if sigma0 is not None and not (_is_real(sigma0) and sigma0 > 0):
            raise ValueError(f"init_std must be a finite number > 0, got {sigma0!r} for {k!r}")
        std, lr = _width_rule(s, "sp" if parameterization == "sp" else "mup", optimizer, sigma0, zero_output)
        scale, eps = 1.0, (1.0 if parameterization == "sp" else 1 / s.m_out)
        if k in inside or k in outputs:
            lr *= factors[0]
            if k in outputs:  # the absorbed multiplier c = d^{-α}: its gradient is 1/c times the multiplier form's
                c = factors[1]
                std, scale = (None, c) if std is None else (std * c, 1.0)
                lr *= c if optimizer == "adam" else c * c
            else:
                eps *= factors[2]
        rules[k] = Rule(s, std, scale, lr, tuple(params[k].shape), eps)
    return Plan(parameterization, optimizer, rules)
