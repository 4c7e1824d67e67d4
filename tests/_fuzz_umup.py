"""Valid calls of the u-μP ops and wrappers (overparam.scaling.unit_ops, umup, unit_modules), merged
into tests/_fuzz_cases.py's CALLS."""

from __future__ import annotations

import torch
from torch import nn

D = torch.float64


def _t(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=D)


_X = {"input": lambda: _t(3, 4)}
_LIN = {"input": lambda: _t(3, 4), "weight": lambda: _t(5, 4), "bias": lambda: _t(5)}
_QKV = {n: (lambda s=s: _t(2, 5, 4, seed=s)) for s, n in enumerate(("query", "key", "value"))}

UMUP_CALLS = {
    **{f"scaling.unit_ops.{n}": {**_X, "scale": lambda: 2.0} for n in ("scale_fwd", "scale_bwd")},
    **{f"scaling.unit_ops.{n}": _LIN for n in ("linear", "linear_readout")},
    **{f"scaling.unit_ops.{n}": _X for n in ("gelu", "silu", "softmax", "residual_split")},
    "scaling.unit_ops.matmul": {"left": lambda: _t(3, 4), "right": lambda: _t(4, 2)},
    "scaling.unit_ops.layer_norm": {**_X, "normalized_shape": lambda: (4,), "weight": lambda: _t(4), "bias": lambda: _t(4)},
    "scaling.unit_ops.rms_norm": {**_X, "normalized_shape": lambda: (4,), "weight": lambda: _t(4)},
    "scaling.unit_ops.embedding": {"input": lambda: torch.tensor([[0, 5], [2, 1]]), "weight": lambda: _t(6, 4)},
    "scaling.unit_ops.scaled_dot_product_attention": _QKV,
    "scaling.unit_ops.residual_add": {"residual": lambda: _t(3, 4), "skip": lambda: _t(3, 4, seed=1)},
    "scaling.unit_ops.residual_apply": {**_X, "fn": lambda: torch.tanh},
    "scaling.unit_ops.cross_entropy": {**_X, "target": lambda: torch.tensor([0, 1, 3])},
    "scaling.unit_ops.mse_loss": {**_X, "target": lambda: _t(3, 4, seed=1)},
    "scaling.residual_taus": {"kinds": lambda: 3},
    "scaling.UnitResidual": {"branch": lambda: nn.Linear(4, 4).to(D)},
}
