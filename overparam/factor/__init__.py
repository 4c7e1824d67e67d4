"""overparam.factor: factorized (over-)parameterizations of weights.

Functional core (:mod:`.functional`): ``product``, ``lowrank_product``, ``init_small``,
``init_balanced``, ``init_orthogonal``, ``init_spectral``, ``balance`` (truncated SVDs:
:func:`overparam.backend.linalg.top_svd`).
Modules: :class:`LowRank`, :class:`LowRankLinear` (``L Rᵀ`` / ``U Uᵀ``), :class:`DeepLinear`
(``W_N ⋯ W_1``, balanced), :class:`Hadamard`, :class:`HadamardDifference`,
:class:`LowRankHadamard` (FedPara/LoHa), :class:`Kronecker` (LoKr), :class:`SparseLowRank`.
Wrappers (one hierarchy, :class:`LayerWrapper`): :class:`FactorizedLayer`,
:class:`LoRALayer` (LoRA, rsLoRA, PiSSA, OLoRA, MiLoRA, LoRA-GA, EVA, CorDA inits, DoRA),
:class:`HiRALayer` (HiRA); :class:`SparseUpdate` (SHiRA's weight module).
In place on a model: :func:`lowrank_`, :func:`hadamard_`, :func:`lora_`, :func:`merge_`,
:func:`unmerge_`, :func:`parametrize_`, :func:`relora_restart_`, :func:`adapter_state_dict`.
Optimizer protocol: :func:`pairs`, :class:`Chain`. Diagnostics: :mod:`.diagnostics`. Guide: docs/factor.md.
"""

from . import diagnostics, functional
from .adapters import LoRALayer, lora_scaling, relora_restart_
from .deep import DeepLinear, depth_preconditioner, init_balanced_deep, psd_power
from .diagnostics import FactorMonitor, FactorStats, balancedness, describe, effective_rank, relative_distance, \
    singular_values
from .functional import (LowRankFactors, balance, init_balanced, init_factors, init_orthogonal, init_small,
                         init_spectral, lowrank_product, product)
from .hira import HiRALayer
from .shira import SparseUpdate
from .hadamard import Hadamard, HadamardDifference, Kronecker, LowRankHadamard, kron_split
from .lowrank import LowRank, LowRankLinear
from .pairs import Chain, pairs
from .parametrize import LowRankParametrization, parametrize_
from .sparse_lowrank import SparseLowRank, topk_mask
from .layer import FactorizedLayer, LayerWrapper
from .wrap import adapter_state_dict, hadamard_, load_adapter_state_dict, lora_, lowrank_, merge_, unmerge_

__all__ = [
    "functional", "diagnostics",
    "LowRankFactors", "product", "lowrank_product", "balance", "init_small", "init_balanced",
    "init_orthogonal", "init_spectral", "init_factors",
    "LowRank", "LowRankLinear", "DeepLinear", "init_balanced_deep", "depth_preconditioner", "psd_power",
    "Hadamard", "HadamardDifference", "LowRankHadamard", "Kronecker", "kron_split",
    "SparseLowRank", "topk_mask",
    "LoRALayer", "lora_scaling", "relora_restart_", "HiRALayer", "SparseUpdate",
    "LayerWrapper", "FactorizedLayer", "LowRankParametrization", "lowrank_", "hadamard_", "lora_", "merge_", "unmerge_",
    "parametrize_", "adapter_state_dict", "load_adapter_state_dict",
    "pairs", "Chain",
    "FactorMonitor", "FactorStats", "singular_values", "effective_rank", "balancedness", "relative_distance",
    "describe",
]
