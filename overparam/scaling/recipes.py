"""μP recipes for transformer models (Hugging Face GPT-2, LLaMA, BERT, ViT, or your own).

* **Tied embedding / read-out** (GPT-2, BERT): one tensor cannot have both the ``input`` rules
  (Θ(1) entries) and the ``output`` ones (~1/width). Plan it as ``input``
  (``roles={"wte": "input"}``) and let :func:`shared_readout` put μP's read-out multiplier
  ``1/m`` on the read-out's output (mup's ``MuSharedReadout``) with a removable forward hook: no
  module is replaced, the ``state_dict`` is untouched. (Or untie: ``tie_word_embeddings=False``.)
* **Attention scale**: μP wants logits ``q·k/d_head`` where the models use ``1/√d_head``.
  :func:`attention_scale_` rescales the float ``.scaling`` of every attention module (what
  transformers' eager and SDPA paths multiply the logits by) to ``1/d_head``, equal to the model's
  own at the base head size; a no-op when the width grows through the number of heads.

Example:
    >>> import torch, overparam as op
    >>> class LM(torch.nn.Module):
    ...     def __init__(self, w):
    ...         super().__init__()
    ...         self.emb, self.mix, self.head = torch.nn.Embedding(10, w), torch.nn.Linear(w, w), torch.nn.Linear(w, 10)
    ...         self.head.weight = self.emb.weight
    ...     def forward(self, ids):
    ...         return self.head(torch.tanh(self.mix(self.emb(ids))))
    >>> model = LM(64)
    >>> p = op.scaling.plan(model, "mup", base=LM(16), roles={"emb": "input"})
    >>> ids = torch.arange(4)
    >>> with op.scaling.shared_readout(model, p, "head") as h:
    ...     out = model(ids)
    >>> h.multiplier, torch.allclose(out, model(ids) / 4)
    (0.25, True)
"""

from __future__ import annotations

from torch import nn

from ..backend.checks import check_real
from ..backend.select import Spec, select
from .plan import Plan

__all__ = ["SharedReadout", "shared_readout", "attention_scale_"]


class SharedReadout:
    """A handle: the read-out modules' outputs are multiplied by ``multiplier`` until :meth:`remove`
    (or the end of a ``with`` block). Made by :func:`shared_readout`.

    Args:
        modules: ``{name: module}`` whose outputs are scaled (any output shape).
        multiplier: a finite positive float (μP's read-out multiplier ``1/m``).

    Reference: G. Yang, E. J. Hu et al., "Tensor Programs V" (2022): mup's ``MuSharedReadout``.

    Example:
        >>> import torch
        >>> lin = nn.Linear(3, 2)
        >>> x = torch.ones(1, 3)
        >>> with SharedReadout({"head": lin}, 0.5) as h:
        ...     torch.allclose(lin(x), h.multiplier * (x @ lin.weight.T + lin.bias))
        True
    """

    def __init__(self, modules: dict[str, nn.Module], multiplier: float):
        if not (isinstance(modules, dict) and modules and all(isinstance(m, nn.Module) for m in modules.values())):
            raise TypeError(f"modules must be a non-empty dict {{name: nn.Module}}, got {type(modules).__name__}")
        multiplier = check_real(multiplier, "multiplier", above=0.0, finite=True)
        self.modules, self.multiplier = list(modules), multiplier
        self._hooks = [m.register_forward_hook(lambda mod, args, out: out * multiplier) for m in modules.values()]

    def remove(self) -> None:
        """Remove the hooks (the model is then as before); calling it again does nothing.

        Example:
            >>> import torch
            >>> lin = nn.Linear(3, 2)
            >>> x = torch.ones(1, 3)
            >>> before = lin(x)
            >>> h = SharedReadout({"head": lin}, 0.25)
            >>> torch.allclose(lin(x), before / 4)
            True
            >>> h.remove()
            >>> torch.equal(lin(x), before), h
            (True, SharedReadout(['head'], multiplier=0.25, active=False))
        """
        for h in self._hooks:
            h.remove()
        self._hooks = []

    def __enter__(self) -> SharedReadout:
        return self

    def __exit__(self, *exc) -> None:
        self.remove()

    def __repr__(self) -> str:
        return f"SharedReadout({self.modules}, multiplier={self.multiplier:.4g}, active={bool(self._hooks)})"


def shared_readout(model: nn.Module, plan: Plan, module: Spec = "lm_head") -> SharedReadout:
    """Multiply the output of the read-out ``module`` (whose weight is tied to an embedding the
    plan treats as ``input``) by ``1/m``, ``m`` the width multiplier of that tensor.

    Args:
        model: the planned model.
        plan: its :class:`~overparam.scaling.Plan` (made with ``roles={<embedding>: "input"}``).
        module: a selection spec of the read-out module(s) (default ``"lm_head"``; BERT:
            ``"cls.predictions.decoder"``).

    Returns:
        a :class:`SharedReadout` handle (``.remove()``, or use it as a context manager). Nothing
        else changes: parameters, ``state_dict``, modules, train/eval flags.

    Raises:
        ValueError: ``module`` selects no module with a ``weight`` the plan covers, or the
            tensor's rule is not ``"input"`` (the read-out multiplier belongs to a tied tensor
            planned as an embedding), or read-outs with different multipliers.

    Reference: G. Yang, E. J. Hu et al., "Tensor Programs V" (2022): mup's MuSharedReadout.

    Example:
        >>> from overparam.scaling import plan
        >>> class LM(nn.Module):
        ...     def __init__(self, w):
        ...         super().__init__()
        ...         self.emb, self.lm_head = nn.Embedding(10, w), nn.Linear(w, 10, bias=False)
        ...         self.lm_head.weight = self.emb.weight
        ...     def forward(self, ids):
        ...         return self.lm_head(self.emb(ids))
        >>> model = LM(32)
        >>> h = shared_readout(model, plan(model, "mup", base=LM(8), roles={"emb": "input"}))
        >>> h.modules, h.multiplier  # 1/m for m = 32/8
        (['lm_head'], 0.25)
        >>> h.remove()
    """
    if not isinstance(plan, Plan):
        raise TypeError(f"plan must be a Plan (op.scaling.plan(...)), got {type(plan).__name__}")
    chosen = {k: m for k, m in select(model, module, kind="modules", argname="module").items()
              if isinstance(getattr(m, "weight", None), nn.Parameter) and m.weight.ndim >= 2}
    params = {id(q): k for k, q in model.named_parameters()}
    mults, found = set(), {}
    for name, m in chosen.items():
        key = params.get(id(m.weight))
        if key is None or key not in plan.rules:
            continue
        rule = plan.rules[key]
        if rule.shape.role != "input":
            raise ValueError(f"module: the weight of {name!r} ({key!r}) has the role {rule.shape.role!r}; "
                             f"shared_readout is for a read-out tied to an embedding planned with "
                             f"roles={{{key!r}: 'input'}}")
        found[name] = m
        mults.add(1 / rule.shape.m_out)
    if not found:
        raise ValueError(f"module: {module!r} selects no module whose weight (a matrix) the plan covers")
    if len(mults) > 1:
        raise ValueError(f"module: the selected read-outs have different width multipliers {sorted(mults)}")
    return SharedReadout(found, mults.pop())


def attention_scale_(model: nn.Module, base: nn.Module) -> dict[str, tuple[float, float]]:
    """Set every attention module's logit scale from ``1/√d_head`` to μP's ``1/d_head`` (in place).

    For each module of ``model`` with a float attribute ``scaling`` (transformers' GPT-2, LLaMA,
    BERT, ViT attention; any module of yours that has one) and its namesake in ``base`` (the
    architecture at the base width; the meta device will do): ``scaling ← scaling²/base.scaling``,
    that is ``scaling·√(d_head_base/d_head)``: ``1/d_head`` up to the base constant, equal to the
    model's own at the base head size, and unchanged when only the number of heads grows (GPT-2's
    per-layer factor is kept). Not in the ``state_dict``: call it once per model built (a second
    call applies the factor again).

    Returns:
        ``{module name: (old scaling, new scaling)}``.

    Raises:
        ValueError: no module with a float ``.scaling`` in ``model``, or one without a
            counterpart with a float ``.scaling`` in ``base``.
        TypeError: ``model``/``base`` not modules.

    Reference: G. Yang, E. J. Hu et al., "Tensor Programs V" (2022): μP's 1/d attention scale.

    Example:
        >>> import torch
        >>> class Attn(torch.nn.Module):
        ...     def __init__(self, d_head):
        ...         super().__init__()
        ...         self.qkv, self.scaling = torch.nn.Linear(4 * d_head, 12 * d_head), d_head ** -0.5
        >>> attention_scale_(Attn(64), Attn(16))
        {'': (0.125, 0.0625)}
    """
    for arg, m in (("model", model), ("base", base)):
        if not isinstance(m, nn.Module):
            raise TypeError(f"{arg} must be an nn.Module, got {type(m).__name__}")
    mods = {k: m for k, m in model.named_modules() if isinstance(getattr(m, "scaling", None), float)}
    if not mods:
        raise ValueError("model has no module with a float attribute 'scaling' (an attention logit scale)")
    bmods = dict(base.named_modules())
    missing = [k for k in mods if not isinstance(getattr(bmods.get(k), "scaling", None), float)]
    if missing:
        raise ValueError(f"base has no attention module with a float 'scaling' at {missing}: the architectures differ")
    out = {}
    for k, m in mods.items():
        old = m.scaling
        m.scaling = old * old / bmods[k].scaling
        out[k] = (old, m.scaling)
    return out
