"""Importance scores for pruning: higher = more important (kept), except GraSP (see below).

All functions return ``dict`` name → score tensor shaped like the parameter, for the
parameters selected by ``targets=`` / ``exclude=`` (:func:`~overparam.prune.targets.targets`;
default the weight of every Linear/Conv). Model-level scores take ``(model, loss_fn, data)``
with ``data`` one batch ``(inputs, targets)``; ``loss_fn(model(inputs), targets)`` is the loss. None of them
changes the model (values, ``.grad``, train/eval mode) or the global RNG.

* :func:`magnitude_scores` ``|θ|``; :func:`random_scores` i.i.d. uniform from a generator.
* :func:`snip_scores` ``|∂L/∂c|`` at ``c = 1`` for the multiplicative mask ``θ ⊙ c``: ``|θ ⊙ g|``.
* :func:`grasp_scores` the GraSP score ``S = −θ ⊙ Hg`` (Wang et al. 2020). GraSP *removes the
  largest* ``S``, so a mask keeps the highest ``−S``; :func:`~overparam.prune.init.prune_at_init`
  does this. ``Hg`` is an :func:`overparam.hessian.hessian` product.
* :func:`synflow_scores` ``|θ ⊙ ∂R/∂θ|`` with ``R = 1ᵀ f_{|θ|}(1)``, in float64 on a copy.
* :func:`hessian_diagonal` and :func:`obd_scores` ``½ H_ii θ_i²`` (Optimal Brain Damage).
* :func:`movement_scores` ``−θ ⊙ g`` and :class:`Movement`, its sum over steps (Sanh et al. 2020).

Example:
    >>> import torch
    >>> net = torch.nn.Linear(3, 1)
    >>> s = snip_scores(net, torch.nn.functional.mse_loss, (torch.randn(4, 3), torch.randn(4, 1)))
    >>> list(s), s["weight"].shape
    (['weight'], torch.Size([1, 3]))
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from .. import hessian
from ..backend import vec
from ..backend.random import GeneratorLike, construction_generator, uniform
from ..backend.select import Spec
from .targets import targets as _targets

__all__ = [
    "magnitude_scores", "random_scores", "snip_scores", "grasp_scores", "synflow_scores",
    "hessian_diagonal", "obd_scores", "movement_scores", "Movement",
]

LossFn = Callable[[Tensor, Tensor], Tensor]


def magnitude_scores(model: nn.Module, *, targets: Spec = None, exclude: Spec = None) -> dict[str, Tensor]:
    """``|θ|`` for each selected parameter.

    Reference: S. Han, J. Pool, J. Tran & W. J. Dally, "Learning both Weights and Connections for Efficient Neural
        Networks" (NeurIPS 2015)

    Example:
        >>> magnitude_scores(torch.nn.Linear(2, 2))["weight"].min() >= 0
        tensor(True)
    """
    return {k: p.detach().abs() for k, p in _targets(model, targets, exclude=exclude).items()}


def random_scores(model: nn.Module, *, targets: Spec = None, exclude: Spec = None,
                  generator: GeneratorLike = None) -> dict[str, Tensor]:
    """i.i.d. uniform [0, 1) scores (random pruning), drawn from ``generator`` in parameter order.

    ``generator=None`` draws from torch's default generator (the construction rule, docs/index.md).

    Example:
        >>> a = random_scores(torch.nn.Linear(2, 2), generator=0)["weight"]
        >>> torch.equal(a, random_scores(torch.nn.Linear(2, 2), generator=0)["weight"])
        True
    """
    g = construction_generator(generator)
    out = {}
    for k, p in _targets(model, targets, exclude=exclude).items():
        out[k] = uniform(p.shape, generator=g, dtype=torch.float64, device=p.device)
    return out


def _batch(data):
    """``data`` checked to be one ``(inputs, targets)`` batch."""
    if not (isinstance(data, (tuple, list)) and len(data) == 2):
        raise ValueError("data must be one (inputs, targets) batch, got "
                         + (f"a {type(data).__name__} of length {len(data)}" if isinstance(data, (tuple, list))
                            else type(data).__name__))
    return data


def _exactly(ps: dict) -> Callable[[str, object], bool]:
    """A ``params=`` predicate for hessian selecting exactly the parameters named in ``ps``."""
    return lambda name, _obj: name in ps


def snip_scores(model: nn.Module, loss_fn: LossFn, data, *, targets: Spec = None,
                exclude: Spec = None) -> dict[str, Tensor]:
    """SNIP connection sensitivity ``|∂L(θ ⊙ c)/∂c|`` at ``c = 1``, i.e. ``|θ ⊙ ∂L/∂θ|``.

    The gradient is :func:`overparam.hessian.gradient` (side-effect free), which refuses
    (``NonDeterministicModelError``) a model with train-mode dropout or BatchNorm, whose scores
    would depend on the random stream or the batch statistics: call ``model.eval()`` first.

    Args:
        data: one batch ``(inputs, targets)``; ``loss_fn(model(inputs), targets)`` is a scalar.

    Returns:
        ``{name: scores}``, each shaped like its parameter.

    Reference: Lee, Ajanthan and Torr, "SNIP: single-shot network pruning based on connection
    sensitivity", ICLR 2019.

    Example (a linear model with MSE: ``g = 2 (Xw − y)ᵀX / N``):
        >>> net = torch.nn.Linear(3, 1, bias=False)
        >>> x, y = torch.randn(8, 3), torch.randn(8, 1)
        >>> s = snip_scores(net, torch.nn.functional.mse_loss, (x, y))
        >>> g = 2 * (net(x) - y).T @ x / 8
        >>> torch.allclose(s["weight"], (net.weight * g).abs().detach(), atol=1e-6)
        True
    """
    ps = _targets(model, targets, exclude=exclude)
    gs = hessian.gradient(model, loss_fn, _batch(data), params=_exactly(ps))  # refuses train-mode dropout / BatchNorm
    return {k: (p.detach() * gs[k]).abs() for k, p in ps.items()}


def grasp_scores(model: nn.Module, loss_fn: LossFn, data, *, targets: Spec = None,
                 exclude: Spec = None) -> dict[str, Tensor]:
    """GraSP ``S = −θ ⊙ H g`` with ``g = ∇L`` and ``H = ∇²L`` over the selected parameters.

    GraSP prunes the weights with the *largest* ``S`` (their removal least reduces the
    gradient norm), so pass ``−S`` to :func:`~overparam.prune.masks.unstructured`. ``H g`` is a
    product of :func:`overparam.hessian.hessian`, which refuses (``NonDeterministicModelError``)
    a model with train-mode dropout or BatchNorm: call ``model.eval()`` first.

    Reference: C. Wang, G. Zhang & R. Grosse, "Picking Winning Tickets Before Training by Preserving Gradient Flow"
        (GraSP, ICLR 2020)

    Example:
        >>> net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 1))
        >>> S = grasp_scores(net, torch.nn.functional.mse_loss, (torch.randn(8, 3), torch.randn(8, 1)))
        >>> S["0.weight"].shape
        torch.Size([4, 3])
    """
    ps = _targets(model, targets, exclude=exclude)
    H = hessian.hessian(model, loss_fn, tuple(_batch(data)), params=_exactly(ps))  # refuses before any forward
    hg = vec.unflatten(H @ H.gradient(), list(ps.values()))
    return {k: -(p.detach() * h) for (k, p), h in zip(ps.items(), hg)}


def synflow_scores(model: nn.Module, input_shape: Sequence[int], *, masks: dict[str, Tensor] | None = None,
                   targets: Spec = None, exclude: Spec = None) -> dict[str, Tensor]:
    """SynFlow ``|θ ⊙ ∂R/∂θ|``, ``R = Σ f(1)`` of a float64 copy with ``|θ|`` (masked by ``masks``).

    Args:
        input_shape: one input's shape without batch, e.g. ``(3, 32, 32)``; the input is all ones.
        masks: current masks (for the iterative schedule of :func:`~overparam.prune.init.synflow`).

    The copy is put in eval mode (BatchNorm uses running statistics); the model is untouched.
    Scores are float64: in float32 ``R`` overflows or loses the small scores of deep nets.

    Reference: Tanaka, Kunin, Yamins and Ganguli, "Pruning neural networks without any data by
    iteratively conserving synaptic flow", NeurIPS 2020.

    Example (one Linear layer: ``R = Σ_ij |W_ij|``, so the score of a weight is ``|W_ij|``):
        >>> net = torch.nn.Linear(3, 2)
        >>> s = synflow_scores(net, (3,))
        >>> s["weight"].dtype, torch.allclose(s["weight"], net.weight.detach().abs().double())
        (torch.float64, True)
    """
    names = list(_targets(model, targets, exclude=exclude))
    twin = copy.deepcopy(model).double().eval()
    params = dict(twin.named_parameters())
    with torch.no_grad():
        for p in twin.parameters():
            p.abs_()
        for k, m in (masks or {}).items():
            params[k].mul_(m)
    x = torch.ones(1, *input_shape, dtype=torch.float64, device=next(model.parameters()).device)
    R = twin(x).sum()
    gs = torch.autograd.grad(R, [params[k] for k in names])
    return {k: (params[k].detach() * g).abs() for k, g in zip(names, gs)}


def hessian_diagonal(model: nn.Module, loss_fn: LossFn, data, *, targets: Spec = None, exclude: Spec = None,
                     probes: int | None = None, generator: GeneratorLike = None, chunk: int = 256) -> dict[str, Tensor]:
    """Diagonal of the loss Hessian over the selected parameters.

    ``generator=None`` never advances the global RNG (the measurement rule, docs/index.md).

    Args:
        probes: ``None`` for the exact diagonal (one Hessian-vector product per entry: small
            models only), or the number of Rademacher probes of the Hutchinson estimate
            ``E[z ⊙ Hz]`` (unbiased) by :func:`overparam.hessian.diagonal`.
        chunk: products per batched ``H.matmat`` (rows of the exact diagonal, or probes).

    ``H`` is :func:`overparam.hessian.hessian`, which refuses (``NonDeterministicModelError``)
    a model with train-mode dropout or BatchNorm: call ``model.eval()`` first.

    Reference: Y. LeCun, J. S. Denker & S. A. Solla, "Optimal Brain Damage" (NeurIPS 1989)

    Example (a linear model with MSE: ``diag H = 2 Σ_n x_n² / N``):
        >>> net = torch.nn.Linear(3, 1, bias=False).double()
        >>> x = torch.randn(8, 3, dtype=torch.float64)
        >>> d = hessian_diagonal(net, torch.nn.functional.mse_loss, (x, torch.zeros(8, 1, dtype=torch.float64)))
        >>> torch.allclose(d["weight"], 2 * x.square().mean(0, keepdim=True))
        True
    """
    ps = _targets(model, targets, exclude=exclude)
    if probes is not None and (isinstance(probes, bool) or not isinstance(probes, int) or probes < 1):
        raise ValueError(f"probes must be a positive int or None, got {probes!r}")
    if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
        raise ValueError(f"chunk must be a positive int, got {chunk!r}")
    H = hessian.hessian(model, loss_fn, tuple(_batch(data)), params=_exactly(ps))
    parts = hessian.diagonal(H, probes, block=chunk, generator=generator).mean
    return {k: d.detach() for k, d in zip(ps, parts)}


def obd_scores(model: nn.Module, loss_fn: LossFn, data, *, targets: Spec = None, exclude: Spec = None,
               probes: int | None = None, generator: GeneratorLike = None) -> dict[str, Tensor]:
    """Optimal Brain Damage saliency ``½ H_ii θ_i²`` (exact diagonal, or Hutchinson with ``probes``).

    ``generator=None`` never advances the global RNG (the measurement rule, docs/index.md).

    Reference: LeCun, Denker and Solla, "Optimal brain damage", NeurIPS 1989.

    Example:
        >>> net = torch.nn.Linear(3, 1, bias=False).double()
        >>> x = torch.randn(8, 3, dtype=torch.float64)
        >>> s = obd_scores(net, torch.nn.functional.mse_loss, (x, torch.zeros(8, 1, dtype=torch.float64)))
        >>> torch.allclose(s["weight"], x.square().mean(0) * net.weight.detach().square())
        True
    """
    diag = hessian_diagonal(model, loss_fn, data, targets=targets, exclude=exclude, probes=probes, generator=generator)
    ps = _targets(model, targets, exclude=exclude)
    return {k: 0.5 * diag[k] * ps[k].detach().square() for k in ps}


def movement_scores(model: nn.Module, *, targets: Spec = None, exclude: Spec = None) -> dict[str, Tensor]:
    """First-order movement ``−θ ⊙ ∂L/∂θ`` from the current ``.grad`` (zero where there is none).

    Reference: Sanh, Wolf and Rush, "Movement pruning: adaptive sparsity by fine-tuning", NeurIPS 2020.

    Example:
        >>> net = torch.nn.Linear(2, 1)
        >>> net(torch.ones(1, 2)).sum().backward()  # ∂L/∂W = 1
        >>> torch.equal(movement_scores(net)["weight"], -net.weight.detach())
        True
    """
    out = {}
    for k, p in _targets(model, targets, exclude=exclude).items():
        out[k] = -(p.detach() * p.grad) if p.grad is not None else torch.zeros_like(p.detach())
    return out


@dataclass
class Movement:
    """Accumulated movement scores ``S = −Σ_t θ_t ⊙ g_t`` (call :meth:`update` after each backward).

    Reference: V. Sanh, T. Wolf & A. M. Rush, "Movement Pruning: Adaptive Sparsity by Fine-Tuning" (NeurIPS 2020)

    Example:
        >>> net = torch.nn.Linear(2, 1)
        >>> mv = Movement()
        >>> net(torch.ones(1, 2)).sum().backward()
        >>> mv.update(net); sorted(mv.scores)
        ['weight']
    """

    scores: dict[str, Tensor] = field(default_factory=dict)
    steps: int = 0

    def update(self, model: nn.Module, *, targets: Spec = None, exclude: Spec = None) -> None:
        """Add ``movement_scores(model, targets=, exclude=)`` (the same selection every call).

        Example:
            >>> net, mv = torch.nn.Linear(2, 1), Movement()
            >>> for _ in range(3):
            ...     net.zero_grad(); net(torch.ones(1, 2)).sum().backward(); mv.update(net)
            >>> mv.steps, torch.allclose(mv.scores["weight"], -3 * net.weight.detach())
            (3, True)
        """
        for k, s in movement_scores(model, targets=targets, exclude=exclude).items():
            self.scores[k] = self.scores[k] + s if k in self.scores else s.clone()
        self.steps += 1
