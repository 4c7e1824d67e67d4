"""Unit-scaled module wrappers (u-μP) applied to an existing model, and their unwrap.

:func:`unit_scale_` replaces each selected ``nn.Linear`` / ``nn.Embedding`` / ``nn.LayerNorm`` /
``nn.RMSNorm`` / ``nn.GELU`` / ``nn.SiLU`` by a thin wrapper that calls the matching
:mod:`~overparam.scaling.unit_ops` op (the read-out: :func:`~overparam.scaling.unit_ops.linear_readout`).
A wrapper *shares* its layer's parameter objects under the same names, so ``named_parameters``,
``state_dict`` keys, a plan made before or after wrapping, and an optimizer built before
wrapping all stay valid; the original layer is kept aside (not a submodule) and
:func:`unwrap_units_` puts it back. The model's train/eval mode is kept. Residual connections
are written in the model's own forward: use :class:`UnitResidual` (or
``unit_ops.residual_apply``) where you build one; losses: ``unit_ops.cross_entropy`` / ``mse_loss``.

Example:
    >>> import torch
    >>> from torch import nn
    >>> model = nn.Sequential(nn.Linear(8, 32), nn.GELU(), nn.Linear(32, 2))
    >>> unit_scale_(model)
    ['0', '1', '2']
    >>> model[2].readout, model.state_dict().keys() == {'0.weight', '0.bias', '2.weight', '2.bias'}
    (True, True)
    >>> unwrap_units_(model)
    ['0', '1', '2']
    >>> type(model[0]).__name__
    'Linear'
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..backend.checks import check_real
from ..backend.select import Spec, select
from . import unit_ops as U
from .umup import UmupAlphas

__all__ = ["UnitModule", "UnitResidual", "unit_scale_", "unwrap_units_"]

_KINDS = (nn.Linear, nn.Embedding, nn.LayerNorm, nn.RMSNorm, nn.GELU, nn.SiLU)
#: a model library's own layers with a unit-scaled form: exact classes, matched by dotted name (the
#: library is never imported here), and the op each one computes
_LIBRARY = {"transformers.pytorch_utils.Conv1D": "conv1d",                 # x @ W + b, W (in, out)
            "transformers.activations.GELUActivation": "gelu",
            "transformers.activations.NewGELUActivation": "gelu_tanh",     # GPT-2's tanh approximation
            "transformers.activations.SiLUActivation": "silu",
            "transformers.models.llama.modeling_llama.LlamaRMSNorm": "rms_norm"}


def _library(module: nn.Module) -> str | None:
    return _LIBRARY.get(f"{type(module).__module__}.{type(module).__qualname__}")


def _wrappable(module: nn.Module) -> bool:
    return isinstance(module, _KINDS) or _library(module) is not None


class UnitModule(nn.Module):
    """A unit-scaled stand-in for one layer ``base`` (``nn.Linear``, ``nn.Embedding``,
    ``nn.LayerNorm``, ``nn.RMSNorm``, ``nn.GELU``, ``nn.SiLU``, and transformers' ``Conv1D``,
    ``GELUActivation``, ``NewGELUActivation``, ``SiLUActivation``, ``LlamaRMSNorm``), sharing its
    parameters.

    Args:
        base: the layer; it is kept unchanged as ``.base`` (not a submodule).
        readout: a Linear used as the read-out (output ``1/fan_in``, :func:`unit_ops.linear_readout`).
        mult: the nonlinearity's multiplier (α_ffn-act) for GELU/SiLU.

    Reference: C. Blake et al., "u-μP: The Unit-Scaled Maximal Update Parametrization" (2024).

    Example:
        >>> layer = nn.Linear(16, 4)
        >>> u = UnitModule(layer)
        >>> u.weight is layer.weight, u(torch.ones(2, 16)).shape
        (True, torch.Size([2, 4]))
    """

    def __init__(self, base: nn.Module, *, readout: bool = False, mult: float = 1.0) -> None:
        super().__init__()
        if not _wrappable(base):
            raise TypeError(f"base must be one of {[k.__name__ for k in _KINDS]} or {sorted(_LIBRARY)}, got "
                            f"{type(base).__name__}")
        if not isinstance(readout, bool):
            raise TypeError(f"readout must be a bool, got {type(readout).__name__}")
        if readout and not isinstance(base, nn.Linear):
            raise ValueError(f"readout=True needs an nn.Linear, got {type(base).__name__}")
        self.mult = check_real(mult, "mult", above=0.0, finite=True)
        if isinstance(base, nn.Embedding) and (base.max_norm is not None or base.scale_grad_by_freq or base.sparse):
            raise ValueError("base: an nn.Embedding with max_norm, scale_grad_by_freq or sparse has no unit-scaled form")
        self.readout = readout
        for k, p in base._parameters.items():     # the same objects, the same names and order
            self.register_parameter(k, p)
        object.__setattr__(self, "base", base)
        self.train(base.training)

    def forward(self, x: Tensor) -> Tensor:
        """The unit-scaled op of ``base`` on ``x`` (Linear: ``(..., fan_in) -> (..., fan_out)``;
        Embedding: integer ids ``(...,) -> (..., dim)``; norms and activations keep the shape).

        Reference: C. Blake et al., "u-μP: The Unit-Scaled Maximal Update Parametrization" (2024).

        Example:
            >>> _ = torch.manual_seed(0)
            >>> u = UnitModule(nn.Linear(256, 64, bias=False))
            >>> with torch.no_grad():
            ...     _ = u.weight.normal_()
            >>> y = u(torch.randn(512, 256)).detach()  # unit-variance weights and inputs → unit-variance outputs
            >>> y.shape, 0.95 < float(y.std()) < 1.05
            (torch.Size([512, 64]), True)
        """
        b, lib = self.base, _library(self.base)
        if lib == "conv1d":
            return U.linear(x, self.weight.t(), self.bias)
        if lib == "rms_norm":
            return U.rms_norm(x, tuple(self.weight.shape), self.weight, b.variance_epsilon)
        if lib is not None:
            return U.silu(x, self.mult) if lib == "silu" else U.gelu(
                x, self.mult, approximate="tanh" if lib == "gelu_tanh" else "none")
        if isinstance(b, nn.Linear):
            return (U.linear_readout if self.readout else U.linear)(x, self.weight, self.bias)
        if isinstance(b, nn.Embedding):
            return U.embedding(x, self.weight)
        if isinstance(b, nn.LayerNorm):
            return U.layer_norm(x, b.normalized_shape, self.weight, self.bias, b.eps)
        if isinstance(b, nn.RMSNorm):
            return U.rms_norm(x, b.normalized_shape, self.weight, torch.finfo(x.dtype).eps if b.eps is None else b.eps)
        if isinstance(b, nn.GELU):
            return U.gelu(x, self.mult, approximate=b.approximate)
        return U.silu(x, self.mult)

    def extra_repr(self) -> str:
        return f"{type(self.base).__name__}{', readout' if self.readout else ''}, mult={self.mult:g}"


class UnitResidual(nn.Module):
    """``residual_add(branch(b), s, tau)`` with ``b, s = residual_split(x, tau)``: a residual
    block ``x + f(x)`` in u-μP form (τ from :func:`~overparam.scaling.residual_taus`).

    Reference: C. Blake et al., "u-μP: The Unit-Scaled Maximal Update Parametrization" (2024).

    Example:
        >>> block = UnitResidual(nn.Identity(), tau=1.0)
        >>> block(torch.ones(2))
        tensor([1.4142, 1.4142])
    """

    def __init__(self, branch: nn.Module, tau: float = 1.0) -> None:
        super().__init__()
        if not isinstance(branch, nn.Module):
            raise TypeError(f"branch must be an nn.Module, got {type(branch).__name__}")
        self.branch, self.tau = branch, check_real(tau, "tau", above=0.0, finite=True)

    def forward(self, x: Tensor) -> Tensor:
        """``(τ·branch(x) + x)/√(1+τ²)``, of the shape of ``x`` (the branch must keep it).

        Reference: C. Blake et al., "u-μP: The Unit-Scaled Maximal Update Parametrization" (2024).

        Example:
            >>> block = UnitResidual(nn.Identity(), tau=0.5)
            >>> x = torch.ones(3)
            >>> torch.allclose(block(x), (0.5 * x + x) / 1.25 ** 0.5)
            True
        """
        return U.residual_apply(self.branch, x, self.tau)


_ACTIVATION_NAMES = ("gelu", "silu", "swish")


def _uncovered(model: nn.Module, skip: set[str]) -> list[str]:
    """Layers of ``model`` outside ``skip`` that u-μP would need unit-scaled but has no wrapper for:
    a module of another kind holding parameters itself (transformers' ``Conv1D``, a library's own
    norm), or a GELU/SiLU of a model library's own class (``NewGELUActivation``, ``SiLUActivation``)."""
    out = []
    for name, m in model.named_modules():
        if _wrappable(m) or any(name == k or name.startswith(k + ".") for k in skip if k):
            continue
        act = any(a in type(m).__name__.lower() for a in _ACTIVATION_NAMES)
        if act or any(p.requires_grad for p in m.parameters(recurse=False)):
            out.append(f"{name or '<model>'!r} ({type(m).__name__})")
    return out


def unit_scale_(model: nn.Module, targets: Spec = None, *, exclude: Spec = None, readout: Spec = None,
                alphas: UmupAlphas | None = None) -> list[str]:
    """Replace every selected layer of ``model`` by a :class:`UnitModule` (in place; the
    parameters, their names and the ``state_dict`` are unchanged). Returns the wrapped names.

    Args:
        targets: a spec of the layers to wrap (default: every Linear, Embedding, LayerNorm,
            RMSNorm, GELU and SiLU, and the transformers layers :class:`UnitModule` lists);
            :mod:`overparam.backend.select` grammar.
        exclude: layers to leave alone.
        readout: a spec of the read-out Linear(s) (default: the last selected ``nn.Linear``).
        alphas: :class:`~overparam.scaling.UmupAlphas`; ``ffn_act`` becomes GELU/SiLU's ``mult``.

    Raises:
        ValueError: a spec that selects nothing (the message names the keyword), a read-out that
            is not a selected Linear, an already wrapped model, the model itself as a target; with
            ``targets=None``, a layer u-μP would need but cannot wrap, named with its class: a module
            of another kind that holds trainable parameters itself (``nn.Conv2d``, a model library's
            own norm or embedding) or another library's GELU/SiLU class: replace it by the torch
            layer (``nn.Linear``, ``nn.RMSNorm``, ``nn.GELU``, ``nn.SiLU``) or ``exclude=`` it knowingly.

    Reference: C. Blake et al., "u-μP: The Unit-Scaled Maximal Update Parametrization" (2024).

    Example:
        >>> m = nn.Sequential(nn.Linear(4, 4), nn.SiLU(), nn.Linear(4, 2))
        >>> unit_scale_(m, readout="2", alphas=UmupAlphas(ffn_act=2.0))
        ['0', '1', '2']
        >>> m[1].mult
        2.0
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    if alphas is not None and not isinstance(alphas, UmupAlphas):
        raise TypeError(f"alphas must be UmupAlphas or None, got {type(alphas).__name__}")
    if any(isinstance(m, UnitModule) for m in model.modules()):
        raise ValueError("model is already unit-scaled (it holds UnitModule layers): unwrap_units_ it first")
    kinds = _KINDS + tuple({type(m) for m in model.modules() if _library(m) is not None})
    chosen = select(model, targets, exclude=exclude, types=kinds, argname="targets",
                    what="Linear/Embedding/LayerNorm/RMSNorm/GELU/SiLU layer (or a transformers one UnitModule lists)")
    if "" in chosen:
        raise ValueError("targets: the model itself is a layer; wrap a model that contains it")
    if targets is None:
        missing = _uncovered(model, set() if exclude is None else set(select(model, exclude, argname="exclude")))
        if missing:
            raise ValueError(f"model: {', '.join(missing)} cannot be unit-scaled (no wrapper for its class): replace "
                             "it by nn.Linear / nn.RMSNorm / nn.LayerNorm / nn.GELU / nn.SiLU, or exclude= it (it then "
                             "stays as it is, not unit-scaled)")
    linears = [k for k, m in chosen.items() if isinstance(m, nn.Linear)]
    if readout is None:
        heads = set(linears[-1:])
    else:
        heads = set(select(model, readout, types=nn.Linear, argname="readout", what="Linear layer"))
        outside = sorted(heads - set(linears))
        if outside:
            raise ValueError(f"readout: {outside} are not among the wrapped targets")
    mult = (alphas or UmupAlphas()).ffn_act
    for name, layer in chosen.items():
        model.set_submodule(name, UnitModule(layer, readout=name in heads, mult=mult))
    return list(chosen)


def unwrap_units_(model: nn.Module) -> list[str]:
    """Put back the original layer of every :class:`UnitModule` in ``model`` (in place; their
    parameters are the ones trained through the wrappers). Returns the unwrapped names.

    Example:
        >>> m = nn.Sequential(nn.Linear(2, 2))
        >>> unwrap_units_(m)
        []
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    if isinstance(model, UnitModule):
        raise ValueError("model is itself a UnitModule: use its .base")
    names = [k for k, m in model.named_modules() if isinstance(m, UnitModule)]
    for k in names:
        wrapper = model.get_submodule(k)
        wrapper.base.train(wrapper.training)
        model.set_submodule(k, wrapper.base)
    return names
