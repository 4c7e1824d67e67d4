"""overparam.prune: scores, masks, schedules, lottery tickets and mask application.

Masks are ``dict[str, Tensor]``: parameter name → bool tensor of the parameter's shape
(``True`` = kept), kept beside the model; :func:`masked` applies them to weights, gradients
and optimizer state without rewriting the model. See docs/prune.md for the guide.

Example:
    >>> import torch, overparam as op
    >>> net = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.ReLU(), torch.nn.Linear(8, 4))
    >>> masks = op.prune.magnitude(net, 0.75)
    >>> round(op.prune.kept_fraction(masks), 2)
    0.25
    >>> list(op.prune.magnitude(net, 0.5, targets="2"))
    ['2.weight']
"""

from . import apply, init, learned, masks, nm, removal, schedules, scores, semistructured, srste, structured
from .calibrate import LayerStats, PrunedMatrix, calibrate, collect_stats  # calibrate: the function shadows the module
from .apply import Masked, MaskParametrization, apply_masks_, masked, parametrize_masks_, unparametrize_masks_
from .init import prune_at_init, synflow
from .learned import EdgePopup, LearnableNM, nm_patterns
from .lottery import Round, Ticket, lottery  # the function shadows the module name (import from .lottery)
from .masks import magnitude, n_pruned, prune_smallest, unstructured
from .distributed import distributed_nm_masks, global_magnitude
from .packed import PackedAdamW, PackedOptimizer, PackedSGD
from .nm import is_nm, nm_mask, nm_masks, transposable_nm_mask
from .removal import ChannelGroup, PrunedMultiheadAttention, channel_groups, remove_pruned
from .schedules import GradualPruner, cubic, exponential, iterative, one_shot
from .scores import (Movement, grasp_scores, hessian_diagonal, magnitude_scores, movement_scores, obd_scores,
                     random_scores, snip_scores, synflow_scores)
from .targets import Masks, kept_fraction, targets  # the function shadows the module name
from .srste import SRSTE, srste_weight
from .semistructured import compress, decompress, is_semi_structured, to_semi_structured, validate
from .structured import block_mask, ln_structured
from .owl import owl, owl_sparsities  # the function shadows the module name
from .reconstruction import LayerError, Reconstruction, plot_reconstruction, reconstruction  # likewise
from .sparsegpt import sparsegpt_, sparsegpt_matrix
from .reconstruct import reconstruct_, reconstruct_matrix
from .wanda import wanda, wanda_mask, wanda_scores  # likewise

__all__ = [
    "apply", "init", "learned", "masks", "nm", "removal", "schedules", "scores", "semistructured", "srste", "structured",
    "Masked", "MaskParametrization", "apply_masks_", "masked", "parametrize_masks_", "unparametrize_masks_",
    "prune_at_init", "synflow", "EdgePopup", "LearnableNM", "nm_patterns", "Round", "Ticket", "lottery",
    "magnitude", "n_pruned", "prune_smallest", "unstructured", "global_magnitude", "distributed_nm_masks",
    "is_nm", "nm_mask", "nm_masks", "transposable_nm_mask",
    "GradualPruner", "cubic", "exponential", "iterative", "one_shot",
    "Movement", "grasp_scores", "hessian_diagonal", "magnitude_scores", "movement_scores", "obd_scores",
    "random_scores", "snip_scores", "synflow_scores",
    "Masks", "kept_fraction", "targets", "compress", "decompress", "is_semi_structured", "to_semi_structured", "validate",
    "block_mask", "ln_structured", "ChannelGroup", "PrunedMultiheadAttention", "channel_groups",
    "PackedOptimizer", "PackedSGD", "PackedAdamW", "remove_pruned", "SRSTE", "srste_weight",
    "LayerStats", "PrunedMatrix", "calibrate", "collect_stats", "sparsegpt_", "sparsegpt_matrix",
    "wanda", "wanda_mask", "wanda_scores", "owl", "owl_sparsities",
    "LayerError", "Reconstruction", "reconstruction", "plot_reconstruction", "reconstruct_", "reconstruct_matrix",
]
