"""u-μP (Blake et al. 2024, "u-μP: The Unit-Scaled Maximal Update Parametrization") as a plan.

u-μP runs the model's matrix products through unit-scaled ops (:mod:`~overparam.scaling.unit_ops`,
applied to an existing model by :func:`~overparam.scaling.unit_scale_`), which carry μP's
multipliers; the parameters then all start at unit scale and need only simple learning-rate
rules. Each trainable tensor has a *type*:

=========  =========================================  ============  ===================================
type       which tensors                              init          Adam LR ×
=========  =========================================  ============  ===================================
weight     matrices except the read-out               N(0, 1)       ``fan^-1/2`` (fan-in; an embedding:
                                                                    its dimension, the paper's rule)
output     the read-out matrix                        N(0, 1)       1
bias       other vectors                              0             1
norm       vectors owned by a normalization layer     kept (1)      1
=========  =========================================  ============  ===================================

and every tensor inside a residual branch gets a further ``(L/L_base)^-1/2`` (``L`` residual
branches; Graphcore's ``unit-scaling`` uses ``L_base = 1``). The gradients of unit-scaled ops are
unit-scaled, so plain SGD takes the same rules and Adam's ε needs no per-layer scaling
(``eps_scale`` 1). The paper's α hyperparameters (:class:`UmupAlphas`) are the multipliers the
ops take (nonlinearity, attention softmax, loss softmax) and the residual weights τ
(:func:`residual_taus`).

Example:
    >>> import torch
    >>> model = torch.nn.Sequential(torch.nn.Linear(4, 64), torch.nn.GELU(), torch.nn.Linear(64, 3))
    >>> p = umup_plan(model)
    >>> [(k, r.init_std, round(r.lr_scale, 3)) for k, r in p.rules.items()]
    [('0.weight', 1.0, 0.5), ('0.bias', 0.0, 1.0), ('2.weight', 1.0, 1.0), ('2.bias', 0.0, 1.0)]
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from torch import nn

from ..backend.checks import check_real
from ..backend.select import Spec
from .depth import resolve_depth
from .plan import _REGISTERED, Plan, Rule
from .shapes import TensorShape, _select_trainable, fans

__all__ = ["UMUP_TYPES", "UmupAlphas", "residual_taus", "umup_types", "umup_plan"]

UMUP_TYPES = ("weight", "bias", "norm", "output")
_NORMS = (nn.LayerNorm, nn.RMSNorm, nn.GroupNorm, nn.modules.batchnorm._NormBase)
_ROLE = {"weight": "hidden", "output": "output", "bias": "fixed", "norm": "fixed"}


@dataclass(frozen=True)
class UmupAlphas:
    """The u-μP hyperparameters (the paper's α's), each a positive multiplier, 1 by default.

    Attributes:
        ffn_act: the FFN nonlinearity's ``mult`` (``unit_ops.gelu/silu``).
        attn_softmax: attention's ``mult`` (``unit_ops.scaled_dot_product_attention``).
        residual: the residual branches' weight relative to the input (``residual_taus``).
        residual_attn_ratio: attention branches' weight relative to FFN branches.
        loss_softmax: the loss's ``mult`` (``unit_ops.cross_entropy``).

    Reference: C. Blake et al., "u-μP: The Unit-Scaled Maximal Update Parametrization" (2024).

    Example:
        >>> UmupAlphas(ffn_act=2.0).ffn_act
        2.0
    """

    ffn_act: float = 1.0
    attn_softmax: float = 1.0
    residual: float = 1.0
    residual_attn_ratio: float = 1.0
    loss_softmax: float = 1.0

    def __post_init__(self):
        for f in fields(self):
            check_real(getattr(self, f.name), f.name, above=0.0, finite=True)


def residual_taus(kinds, *, residual_mult: float = 1.0, residual_attn_ratio: float = 1.0) -> list[float]:
    """The τ of each residual branch (``residual_split``/``residual_add``) so that every branch
    of a kind adds the same variance and the branches' mean contribution per kind is
    ``residual_mult²`` times the stream's input (the paper's Appendix G rule; for a transformer
    that alternates attention and MLP it is Graphcore's ``transformer_residual_scaling_rule``).

    With ``α`` = ``residual_mult·√(2/(1+ρ²))`` for MLP branches and ``ρ·`` that for attention
    (``ρ = residual_attn_ratio``; one kind only: ``α = residual_mult``), and ``K`` the number of
    kinds present: ``τ_l = α_l / √(L/K + Σ_{j<l} α_j²)``.

    Args:
        kinds: a sequence of ``"attn"``/``"mlp"`` (the branches in order), or an int ``L``
            (``L`` MLP branches).

    Reference: C. Blake et al., "u-μP: The Unit-Scaled Maximal Update Parametrization" (2024).

    Example:
        >>> [round(t, 4) for t in residual_taus(3)]
        [0.5774, 0.5, 0.4472]
    """
    if isinstance(kinds, int) and not isinstance(kinds, bool):
        if kinds < 1:
            raise ValueError(f"kinds must be a positive number of branches or a sequence of 'attn'/'mlp', got {kinds}")
        kinds = ["mlp"] * kinds
    if isinstance(kinds, str) or not hasattr(kinds, "__iter__"):
        raise TypeError(f"kinds must be an int or a sequence of 'attn'/'mlp', got {type(kinds).__name__}")
    kinds = list(kinds)
    if not kinds or any(k not in ("attn", "mlp") for k in kinds):
        raise ValueError(f"kinds must be a non-empty sequence of 'attn'/'mlp', got {kinds!r}")
    r = check_real(residual_mult, "residual_mult", above=0.0, finite=True)
    rho = check_real(residual_attn_ratio, "residual_attn_ratio", above=0.0, finite=True)
    both = len(set(kinds)) == 2
    mlp = r * (2 / (1 + rho ** 2)) ** 0.5 if both else r
    alpha = {"mlp": mlp, "attn": rho * mlp if both else r}
    taus, acc = [], len(kinds) / len(set(kinds))
    for k in kinds:
        taus.append(alpha[k] / acc ** 0.5)
        acc += alpha[k] ** 2
    return taus


def _owner(model: nn.Module, name: str) -> nn.Module:
    """The layer that owns parameter ``name``: through a unit-scaled wrapper, the layer it wraps
    (so a plan is the same before and after ``unit_scale_``)."""
    owner = model.get_submodule(name.rsplit(".", 1)[0]) if "." in name else model
    # a UnitModule keeps its layer in __dict__ (not a submodule); nn.Module.__setattr__ never puts one there
    base = vars(owner).get("base")
    return base if isinstance(base, nn.Module) else owner


def _is_norm(module: nn.Module) -> bool:
    """A torch normalization layer, or a model library's own one (``LlamaRMSNorm``, ``T5LayerNorm``:
    a class whose name contains "Norm")."""
    return isinstance(module, _NORMS) or "norm" in type(module).__name__.lower()


def _check_tied(model: nn.Module, types: dict[str, str], given: set[str]) -> None:
    """Refuse a matrix shared under several names (a tied embedding and read-out) unless ``roles``
    gave its type: u-μP types the two uses differently (``weight`` vs ``output``)."""
    aliases: dict[int, list[str]] = {}
    for k, p in model.named_parameters(remove_duplicate=False):
        aliases.setdefault(id(p), []).append(k)
    params = dict(model.named_parameters())
    for k in types:
        names = aliases[id(params[k])]
        if params[k].ndim >= 2 and len(names) > 1 and k not in given:
            raise ValueError(f"model: the matrix {k!r} is tied to {names[1:]} (e.g. an embedding and its read-out), "
                             "which u-μP types differently ('weight' vs 'output'); untie them (transformers: "
                             f"tie_word_embeddings=False) or name its type in roles=, e.g. {{{names[-1].rsplit('.', 1)[0]!r}: "
                             "'output'}")


def umup_types(model: nn.Module, *, roles: dict[Spec, str] | None = None) -> dict[str, str]:
    """The u-μP type of each trainable tensor (``named_parameters`` order, a tied tensor once):
    ``"norm"`` for vectors of normalization layers (torch's, and a model library's own classes
    whose name contains "Norm", e.g. ``LlamaRMSNorm``), ``"bias"`` for other vectors, ``"output"``
    for the read-out and ``"weight"`` for other matrices. A matrix tied under two names (an
    embedding shared with the read-out) is refused unless ``roles`` gives its type.

    Args:
        roles: ``{spec: "output"}`` names the read-out (any selection spec); by default it is the
            last matrix in ``named_parameters`` order. ``{spec: type}`` with another type of
            :data:`UMUP_TYPES` overrides the type of what the spec selects (a matrix type applies to
            the selected matrices, a vector type to the selected vectors: ``{"head": "output"}``
            leaves ``head.bias`` a bias).

    Reference: C. Blake et al., "u-μP: The Unit-Scaled Maximal Update Parametrization" (2024).

    Example:
        >>> m = nn.Sequential(nn.Embedding(10, 8), nn.LayerNorm(8), nn.Linear(8, 10))
        >>> umup_types(m)
        {'0.weight': 'weight', '1.weight': 'norm', '1.bias': 'norm', '2.weight': 'output', '2.bias': 'bias'}
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    params = {k: p for k, p in model.named_parameters() if p.requires_grad}
    if not params:
        raise ValueError("model has no trainable parameters")
    types = {k: ("norm" if _is_norm(_owner(model, k)) else "bias") if p.ndim < 2 else "weight"
             for k, p in params.items()}
    if roles is not None and not isinstance(roles, dict):
        raise TypeError(f"roles must be a dict {{spec: type}}, got {type(roles).__name__}")
    roles = dict(roles or {})
    if "output" not in roles.values():
        matrices = [k for k, t in types.items() if t == "weight"]
        if matrices:
            types[matrices[-1]] = "output"
    given: set[str] = set()
    for spec, t in roles.items():
        if t not in UMUP_TYPES:
            raise ValueError(f"roles: type must be one of {UMUP_TYPES}, got {t!r}")
        fit = [k for k in _select_trainable(model, spec, argname="roles")
               if k in types and (t in ("weight", "output")) == (params[k].ndim >= 2)]
        if not fit:
            raise ValueError(f"roles: {spec!r} selects no {'matrix' if t in ('weight', 'output') else 'vector'} "
                             f"for the type {t!r} ('weight'/'output' are matrices, 'bias'/'norm' vectors)")
        types.update(dict.fromkeys(fit, t))
        given.update(fit)
    _check_tied(model, types, given)
    return types


def umup_plan(model: nn.Module, *, optimizer: str = "adam", init: bool = True, roles: dict[Spec, str] | None = None,
              depth=None, branches: Spec = None, branch_outputs: Spec = None) -> Plan:
    """The u-μP plan of ``model`` (``plan(model, "umup", ...)`` calls this): unit init and the
    u-μP learning-rate rule per :func:`umup_types` type (see the module's table).

    Args:
        optimizer: ``"adam"`` (also AdamW) or ``"sgd"`` (the same rules: the gradients are
            unit-scaled, the read-out's unconstrained).
        init: False keeps every tensor's values (``init_std`` None): only the learning rates.
        roles: see :func:`umup_types`.
        depth: ``(L, L_base)`` residual branches of ``model`` and of the tuned base
            (``(L, 1)``: Graphcore's rule ``L^-1/2``), or an int ``L_base`` with ``L`` counted
            from ``branch_outputs``; with ``branches``.
        branches: a spec of every parameter inside a residual branch (LR ``×(L/L_base)^-1/2``).
        branch_outputs: a spec of each branch's last layer (only to count ``L``).

    Returns:
        a :class:`~overparam.scaling.Plan` with ``parameterization="umup"``.

    Reference: C. Blake et al., "u-μP: The Unit-Scaled Maximal Update Parametrization" (2024).

    Example:
        >>> m = nn.Sequential(nn.Linear(4, 16), nn.Linear(16, 16), nn.Linear(16, 2))
        >>> p = umup_plan(m, depth=(4, 1), branches="1")
        >>> round(p.rules["1.weight"].lr_scale, 4), p.rules["1.bias"].lr_scale
        (0.125, 0.5)
    """
    if optimizer not in ("adam", "sgd"):
        raise ValueError(f"optimizer must be 'adam' or 'sgd', got {optimizer!r}")
    if not isinstance(init, bool):
        raise TypeError(f"init must be a bool, got {type(init).__name__}")
    types = umup_types(model, roles=roles)
    d = 1.0
    if branches is not None:
        inside = _select_trainable(model, branches, argname="branches")
        outputs = set() if branch_outputs is None else _select_trainable(model, branch_outputs, argname="branch_outputs")
        L, L0 = resolve_depth(model, depth, outputs, "umup")
        d = L / L0
    elif depth is not None or branch_outputs is not None:
        raise ValueError("depth= and branch_outputs= need branches= (the parameters whose LR the depth scales)")
    else:
        inside = set()
    params = dict(model.named_parameters())
    rules = {}
    for k, t in types.items():
        p, owner = params[k], _owner(model, k)
        fan_in, fan_out = fans(tuple(p.shape), owner, k.rsplit(".", 1)[-1]) if p.ndim >= 2 else (1, p.shape[0])
        lr = (fan_out if isinstance(owner, nn.Embedding) else fan_in) ** -0.5 if t == "weight" else 1.0
        if k in inside:
            lr *= d ** -0.5
        std = None if (not init or t == "norm") else (0.0 if t == "bias" else 1.0)
        shape = TensorShape(_ROLE[t], fan_in, fan_out, 1.0, 1.0)
        rules[k] = Rule(shape, std, 1.0, lr, tuple(p.shape), 1.0)
    return Plan("umup", optimizer, rules)


def _from_plan(model: nn.Module, *, base, delta, optimizer, init_std, zero_output, roles, depth, branches,
               branch_outputs) -> Plan:
    """``plan(model, "umup", ...)``: refuse the keywords u-μP has no use for, map ``init_std``."""
    for name, value, default in (("base", base, None), ("delta", delta, None), ("zero_output", zero_output, False)):
        if value is not default:
            raise ValueError(f"{name}= does not apply to 'umup' (u-μP's rules are absolute: no base model, unit init)")
    if init_std not in ("lecun", None):
        raise ValueError(f"'umup' initializes every matrix at unit std: init_std must be left at its default or be "
                         f"None (keep the model's init), got {init_std!r}")
    return umup_plan(model, optimizer=optimizer, init=init_std is not None, roles=roles, depth=depth,
                     branches=branches, branch_outputs=branch_outputs)


_REGISTERED["umup"] = _from_plan
