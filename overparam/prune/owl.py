"""OWL (Yin et al. 2024): layer-wise sparsities from the layers' outlier ratios.

Layers holding many *outliers* are pruned less. The outlier ratio of a group of layers (one
layer, or every target layer of a block when ``blocks=`` is given, as in the paper's
transformer blocks) is the fraction of its Wanda scores ``|W_ij|·‖X_j‖`` above ``threshold``
times their mean (the paper's ``M``, 5 by default). The ratios ``D_g`` are rescaled to
``[0, 2λ]`` and centred on their parameter-weighted mean,

    s_g = s − (D'_g − Σ_h N_h D'_h / Σ_h N_h),   D'_g = 2λ (D_g − min D) / (max D − min D),

so every group's sparsity lies in ``[s − 2λ, s + 2λ]`` and the parameter-weighted mean sparsity
``Σ N_g s_g / Σ N_g`` is exactly ``s`` (``N_g`` = weights in group ``g``). The paper centres
the unweighted mean of equally sized blocks, which is the same thing there. A sparsity that
leaves ``[0, 1)`` is an error (lower ``lam``), never clipped.

Pass the result to :func:`overparam.prune.wanda` or :func:`overparam.prune.sparsegpt_` as
``overrides=`` (its keys are the weights' full names).

Example:
    >>> owl_sparsities({"a": 0.01, "b": 0.03}, {"a": 100, "b": 100}, 0.5, lam=0.1)
    {'a': 0.6, 'b': 0.4}
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from ..backend.checks import check_real
from ..backend.select import Spec
from .calibrate import block_of, collect_stats, module_name, weight_matrix
from .masks import check_sparsity
from .wanda import wanda_scores

__all__ = ["owl_sparsities", "owl"]


def owl_sparsities(ratios: Mapping[str, float], sizes: Mapping[str, int], sparsity: float, *,
                   lam: float = 0.08) -> dict[str, float]:
    """Per-group sparsities from outlier ratios (the formula of the module docstring).

    Args:
        ratios: ``{group: outlier ratio}``; sizes: ``{group: number of weights}`` (same keys).
        sparsity: the target mean sparsity in [0, 1); lam: the spread ``λ`` (>= 0).

    Returns:
        ``{group: sparsity}`` with ``Σ N_g s_g / Σ N_g = sparsity``.

    Reference: L. Yin et al., "Outlier Weighed Layerwise Sparsity (OWL): A Missing Secret Sauce for Pruning LLMs to
        High Sparsity" (ICML 2024)

    Example:
        >>> owl_sparsities({"a": 0.2, "b": 0.2}, {"a": 10, "b": 30}, 0.7)
        {'a': 0.7, 'b': 0.7}
    """
    s = check_sparsity(sparsity)
    lam = check_real(lam, "lam", at_least=0.0, finite=True)
    if not isinstance(ratios, Mapping) or not ratios:
        raise ValueError("ratios must be a non-empty dict group -> outlier ratio")
    if not isinstance(sizes, Mapping) or set(sizes) != set(ratios):
        raise ValueError("sizes must be a dict with the keys of ratios")
    keys = list(ratios)
    D = torch.tensor([check_real(ratios[k], f"ratios[{k!r}]", at_least=0.0, finite=True) for k in keys],
                     dtype=torch.float64)
    N = torch.tensor([float(sizes[k]) for k in keys], dtype=torch.float64)
    if bool((N <= 0).any()):
        raise ValueError("sizes must be > 0")
    span = float(D.max() - D.min())
    Dn = (D - D.min()) / span * (2 * lam) if span > 0 else torch.zeros_like(D)   # divide first: a subnormal span
    out = s - (Dn - (N * Dn).sum() / N.sum())
    bad = [k for k, v in zip(keys, out.tolist()) if not 0.0 <= v < 1.0]
    if bad:
        raise ValueError(f"lam: {lam} moves the sparsity of {bad} outside [0, 1) around {s}; use a smaller lam")
    return dict(zip(keys, out.tolist()))


def owl(model: nn.Module, data, sparsity: float, *, threshold: float = 5.0, lam: float = 0.08, targets: Spec = None,
        exclude: Spec = None, blocks: Spec = None, dtype: torch.dtype = torch.float64) -> dict[str, float]:
    """OWL's per-weight sparsities for the model's Linear / Conv weights (model unchanged).

    Args:
        model: the model (deterministic); data: an ``(inputs, targets)`` batch or an iterable of them.
        sparsity: target mean sparsity (parameter-weighted) in [0, 1).
        threshold: a score is an outlier above ``threshold ×`` its group's mean score (> 0).
        lam: the spread ``λ`` of the sparsities (>= 0).
        targets, exclude: which layers; blocks: layers of one block share one ratio and sparsity.
        dtype: dtype of the activation norms.

    Returns:
        ``{"<layer>.weight": sparsity}``, to pass as ``overrides=`` to :func:`~overparam.prune.wanda`
        or :func:`~overparam.prune.sparsegpt_`.

    Reference: L. Yin et al., "Outlier Weighed Layerwise Sparsity (OWL): A Missing Secret Sauce for Pruning LLMs to
        High Sparsity" (ICML 2024)

    Example:
        >>> net = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.ReLU(), torch.nn.Linear(8, 8))
        >>> sp = owl(net, (torch.randn(32, 8), None), 0.5, threshold=2.0, lam=0.1)
        >>> round(sum(sp.values()) / 2, 12)
        0.5
    """
    check_sparsity(sparsity)
    check_real(threshold, "threshold", above=0.0, finite=True)
    check_real(lam, "lam", at_least=0.0, finite=True)
    stats = collect_stats(model, data, targets=targets, exclude=exclude, gram=False, dtype=dtype)
    mods = dict(model.named_modules())
    scores = {w: wanda_scores(weight_matrix(mods[module_name(w)]).to(dtype), st.norms).reshape(-1)
              for w, st in stats.items()}
    owner = block_of(model, list(stats), blocks)
    ratios, sizes = {}, {}
    for g in dict.fromkeys(owner.values()):
        s = torch.cat([scores[ln] for ln in stats if owner[ln] == g])
        ratios[g] = float((s > threshold * s.mean()).double().mean())
        sizes[g] = s.numel()
    per_group = owl_sparsities(ratios, sizes, sparsity, lam=lam)
    return {w: per_group[owner[w]] for w in stats}
