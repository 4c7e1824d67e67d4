"""overparam.prune: scores, masks, schedules, lottery tickets and mask application.

Masks are ``dict[str, Tensor]``: parameter name → bool tensor of the parameter's shape
(``True`` = kept). See docs/prune.md for the guide.
"""

from . import apply, masks, nm, select, semistructured, structured
from .apply import Masked, MaskParametrization, apply_masks_, masked, parametrize_, unparametrize_
from .masks import magnitude, n_pruned, prune_smallest, unstructured
from .nm import is_nm, nm_mask, nm_masks, transposable_nm_mask
from .select import Masks, density, targets
from .structured import block_mask, ln_structured

__all__ = [
    "apply", "masks", "nm", "select", "semistructured", "structured",
    "Masked", "MaskParametrization", "apply_masks_", "masked", "parametrize_", "unparametrize_",
    "magnitude", "n_pruned", "prune_smallest", "unstructured",
    "is_nm", "nm_mask", "nm_masks", "transposable_nm_mask",
    "Masks", "density", "targets", "block_mask", "ln_structured",
]
