"""Depth rules of residual networks ``x + a·f_l(x)``: depth-μP (``a = L^{-1/2}``) and CompleteP (``a = L^{-1}``).

Both put a branch multiplier ``a = d^{-α}`` (``d = L/L_base``, ``L`` residual blocks) on every
residual branch and scale the branch parameters' learning rate so that each block's update moves
the residual stream by ``Θ(1/L)`` (Yang, Yu, Zhu & Hayou 2023, Tensor Programs VI, for general
``α``; Bordelon et al. 2023 for ``α = 1/2``; Dey et al. 2025, "Don't be lazy: CompleteP enables
compute-efficient deep transformers", for ``α = 1``, the only one whose layers keep learning
non-linearly in the limit). In the multiplier form, for the parameters inside a branch:

=================  ============  ==============  ===============  =================
rule               branch mult.  Adam LR ×       SGD LR ×         Adam ε ×
=================  ============  ==============  ===============  =================
depth-μP (α=1/2)   d^{-1/2}      d^{-1/2}        1                d^{-1/2}
CompleteP (α=1)    d^{-1}        1               d                d^{-1}
general α          d^{-α}        d^{α-1}         d^{2α-1}         d^{-α}
=================  ============  ==============  ===============  =================

The plan absorbs the multiplier ``c = d^{-α}`` into each branch's last layer (init ``×c``, Adam LR
``×c``, SGD LR ``×c²``, Adam ε ``×1/c``: the gradient of ``c·W`` is ``1/c`` times that of ``W``),
so the forward stays ``x + f(x)`` and the absorbed layer's ε is the base one.

Example:
    >>> ALPHA["depth-mup"], ALPHA["completep"]
    (0.5, 1.0)
    >>> depth_factors(4.0, 1.0, "adam")  # (branch lr ×, absorbed c, branch eps ×)
    (1.0, 0.25, 0.25)
"""

from __future__ import annotations

from torch import nn

__all__ = ["ALPHA"]

#: the branch-multiplier exponent α of each depth parameterization
ALPHA = {"depth-mup": 0.5, "completep": 1.0}


def depth_factors(d: float, alpha: float, optimizer: str) -> tuple[float, float, float]:
    """``(branch LR factor, absorbed multiplier c, branch ε factor)`` for depth ratio ``d = L/L_base``."""
    lr = d ** (alpha - 1) if optimizer == "adam" else d ** (2 * alpha - 1)
    return lr, d ** -alpha, d ** -alpha


def _is_pos_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and x > 0


def resolve_depth(model: nn.Module, depth, outputs: set[str], parameterization: str) -> tuple[int, int]:
    """``(L, L_base)`` from ``depth=``: a pair, or an int ``L_base`` with ``L`` counted as the
    number of modules owning a selected branch-output weight (a tensor of two or more dimensions)."""
    if depth is None:
        raise ValueError(
            f"{parameterization!r} needs depth=: the base depth cannot be inferred (the base is built at the model's "
            "depth, with the same parameter names); pass depth=(L, L_base), or depth=L_base to count L from "
            "branch_outputs")
    if _is_pos_int(depth):
        params = dict(model.named_parameters())
        owners = {k.rsplit(".", 1)[0] for k in outputs if params[k].ndim >= 2}
        if not owners:
            raise ValueError(f"cannot infer the model's depth: branch_outputs selects no weight of two or more "
                             f"dimensions to count blocks by; pass depth=(L, {depth})")
        return len(owners), depth
    if not (isinstance(depth, (tuple, list)) and len(depth) == 2 and all(_is_pos_int(v) for v in depth)):
        raise ValueError(f"depth must be (L, L_base) with positive ints, or an int L_base, for {parameterization!r}, "
                         f"got {depth!r}")
    return int(depth[0]), int(depth[1])
