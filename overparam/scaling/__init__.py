"""overparam.scaling: width and depth parameterizations (SP, μP, depth-μP, CompleteP, u-μP) as data, for any
torch optimizer, and coordinate checks. See docs/scaling.md for the guide.

A :class:`Plan` holds a per-tensor init std and learning-rate scale relative to a base model;
:meth:`Plan.init_` and :meth:`Plan.param_groups` apply it without touching the model's modules,
forward pass or ``state_dict`` keys (multipliers are absorbed into init and learning rate).

Example:
    >>> import torch, overparam as op
    >>> mlp = lambda w: torch.nn.Sequential(torch.nn.Linear(4, w), torch.nn.ReLU(), torch.nn.Linear(w, 3))
    >>> model = mlp(512)
    >>> p = op.scaling.plan(model, "mup", base=mlp(128))
    >>> [r.shape.role for r in p.rules.values()]
    ['input', 'input', 'output', 'fixed']
"""

from . import coord, depth, shapes, unit_ops
from .coord import CoordCheck, coord_check, plot_coord_check
from .coord_depth import coord_check_depth
from .muon import muon_param_groups
from .plan import PARAMETERIZATIONS, Plan, Rule, plan
from .recipes import SharedReadout, attention_scale_, shared_readout
from .shapes import ROLES, TensorShape, fans, infer_shapes
from .umup import UMUP_TYPES, UmupAlphas, residual_taus, umup_plan, umup_types
from .unit_modules import UnitModule, UnitResidual, unit_scale_, unwrap_units_

__all__ = ["coord", "depth", "shapes", "CoordCheck", "coord_check", "coord_check_depth", "plot_coord_check", "PARAMETERIZATIONS", "Plan",
           "Rule", "plan", "ROLES", "TensorShape", "fans", "infer_shapes", "muon_param_groups",
           "SharedReadout", "shared_readout", "attention_scale_", "unit_ops", "UMUP_TYPES", "UmupAlphas", "residual_taus",
           "umup_plan", "umup_types", "UnitModule", "UnitResidual", "unit_scale_", "unwrap_units_"]
