"""overparam.optim: optimizers for factorized models.

All are ``torch.optim.Optimizer`` subclasses (closures, ``state_dict``, param groups, any
dtype/device). The pair optimizers take factor pairs ``(L, R)`` (``L @ R.T``) or symmetric
factors ``X`` (``X @ X.T``), e.g. from ``op.factor.pairs(model)``:

* :class:`ScaledGD` (``damping=0``) and ScaledGD(λ) (``damping > 0``);
* :class:`PrecGD`: damping ``λ_t = c·√f(X_t)`` from a loss value or closure;
* :class:`ScaledSM`: scaled subgradient method with Polyak / geometric steps;
* :class:`ScaledSGD`: minibatch ScaledGD with incrementally maintained Gram matrices;
* :func:`rpca_scaledgd`: robust PCA by ScaledGD with hard-thresholded outliers.

:class:`SubGM` is the plain subgradient method over any parameters; :class:`AdamAtan2` is Adam
without ε (``atan2`` in place of ``m/(√v+ε)``) for any parameters. :func:`run_batched` runs
GD / ScaledGD(λ) / PrecGD / SubGM on many problem instances at once (a leading batch dimension).
In front of any torch optimizer (AdamW, SGD, ...): :class:`Preconditioned` replaces the factor
pairs' gradients by their ScaledGD / ScaledGD(λ) / PrecGD directions before its step;
:class:`LoRAFA` (frozen ``A``, projected ``B`` gradient); :func:`loraplus_groups` (LoRA+ learning
rates). :class:`GaLore` is AdamW with low-rank projected moments for 2-D parameters. Step rules:
:func:`constant`, :func:`geometric`, :func:`polyak`. A NaN/inf gradient is not looked for by
default (it propagates, as in torch's optimizers); ``check_finite=True`` on any of them raises
:class:`NonFiniteGradientError` naming the parameter before anything changes. See docs/optim.md.
"""

from ._finite import NonFiniteGradientError
from .run_batched import BATCHED_METHODS, BatchedRun, run_batched
from ._pairs import PairOptimizer, as_pair
from .adam_atan2 import AdamAtan2
from .galore import GaLore, optimizer_state_bytes
from .loraplus import LoRAFA, loraplus_groups
from .precgd import PrecGD
from .precondition import Preconditioned, precondition_grads_
from .rpca import RPCAResult, hard_threshold, rpca_scaledgd, sparsify
from .scaledgd import ScaledGD
from .scaledsgd import ScaledSGD
from .scaledsm import ScaledSM
from .steps import closure_loss, Constant, Geometric, Polyak, StepInfo, StepRule, as_rule, constant, geometric, polyak
from .subgm import SubGM

__all__ = [
    "ScaledGD", "PrecGD", "ScaledSM", "ScaledSGD", "SubGM", "rpca_scaledgd", "RPCAResult", "sparsify",
    "hard_threshold", "PairOptimizer", "as_pair", "StepRule", "StepInfo", "Constant", "Geometric", "Polyak",
    "constant", "geometric", "polyak", "as_rule", "closure_loss", "NonFiniteGradientError", "Preconditioned", "precondition_grads_",
    "run_batched", "BatchedRun", "BATCHED_METHODS", "AdamAtan2", "loraplus_groups", "LoRAFA", "GaLore", "optimizer_state_bytes",
]
