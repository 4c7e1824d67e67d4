"""The loss gradient of a model, computed without side effects: the one side-effect-free forward
that curvature operators and first-order pruning scores (SNIP, GraSP) share.

The forward passes run through :func:`torch.func.functional_call` on cloned parameters and
private copies of the buffers, inside a forked RNG: the model's parameters, ``.grad``, buffers
(running statistics, spectral-norm vectors), train/eval flags and the global RNG are left as they
were. Models that are not deterministic under this forward are refused with
:class:`~overparam.hessian.NonDeterministicModelError`, as every curvature operator refuses them.

Example:
    >>> import torch
    >>> net = torch.nn.Linear(3, 1).double()
    >>> x, y = torch.randn(8, 3, dtype=torch.float64), torch.randn(8, 1, dtype=torch.float64)
    >>> g = gradient(net, torch.nn.functional.mse_loss, (x, y))
    >>> list(g), g["weight"].shape
    (['weight', 'bias'], torch.Size([1, 3]))
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
from torch import Tensor, nn

from ..backend import vec
from ..backend.select import Spec
from ._model import Objective, check_agree, grad, rng_guard

__all__ = ["gradient"]


def _tensors(out) -> tuple[Tensor, ...]:
    """The floating tensors of a (possibly raw, ``output=None``) model output, detached."""
    if isinstance(out, Tensor):
        return (out.detach(),)
    items = out.values() if isinstance(out, Mapping) else out if isinstance(out, (tuple, list)) else ()
    return tuple(t for item in items for t in _tensors(item))


def gradient(model: nn.Module, loss_fn: Callable, data, *, params: Spec = None, exclude: Spec = None,
             reduction: str = "mean", check: bool | str = True, output="auto",
             attention: str | None = "math") -> dict[str, Tensor]:
    """``∇L(θ)`` of ``L = Σ_b (n_b/N) loss_fn(model(x_b), y_b)`` w.r.t. the selected parameters.

    Args:
        model: any ``nn.Module``; it must be deterministic (``eval()`` for dropout / BatchNorm).
        loss_fn: ``loss_fn(outputs, targets) -> scalar``, a mean over the batch by default.
        data: one batch ``(inputs, targets)`` or an iterable of batches (a DataLoader); the loss
            is averaged per sample across (possibly ragged) batches.
        params: which parameters, a spec of :func:`overparam.select`; default all trainable.
        exclude: parameters to leave out, same grammar.
        reduction: ``"mean"`` (``loss_fn`` averages over its batch) or ``"sum"`` (losses are added).
        check: compare the outputs of the forward pass the gradient came from with those of a
            fresh forward pass (one extra forward without backward per batch): a stochastic or
            stateful forward raises. ``"first"``: the first batch only (one extra forward in all,
            after every batch has run, so state left by the later batches still shows); False: none.
        output: what ``loss_fn`` sees of the model's output (``"auto"``: a ``ModelOutput``'s
            ``logits``, ...; None; a callable), as for :class:`~overparam.hessian.HessianOperator`.
        attention: ``"math"`` (the math SDPA kernel in every forward) or None (torch's choice).

    Returns:
        ``{name: gradient}`` in ``named_parameters`` order, each shaped like its parameter (detached).

    Raises:
        NonDeterministicModelError: train-mode dropout or BatchNorm, or a failed check.

    Example:
        >>> net = torch.nn.Linear(2, 1, bias=False).double()
        >>> x, y = torch.randn(8, 2, dtype=torch.float64), torch.randn(8, 1, dtype=torch.float64)
        >>> g = gradient(net, torch.nn.functional.mse_loss, (x, y))
        >>> torch.allclose(g["weight"], 2 * (net(x) - y).T @ x / 8), net.weight.grad is None
        (True, True)
    """
    if check not in (True, False, "first"):
        raise ValueError(f"check must be True, False or 'first', got {check!r}")
    obj = Objective.build(model, loss_fn, data, params, exclude=exclude, reduction=reduction, output=output,
                          attention=attention)
    total, kept = None, []
    with rng_guard(obj.device):
        leaves = obj.leaves()
        for i, (batch, w) in enumerate(zip(obj.batches, obj.weights)):
            out = obj.outputs(leaves, batch)
            loss = obj.loss_fn(out, batch[1]) * w
            g = grad(loss, leaves)
            total = g if total is None else vec.add(total, g)
            if check is True or i == 0:
                kept += [loss.detach(), *_tensors(out)]
        if check:  # losses and output tensors (a raw output=None may hold none) of a fresh forward pass
            n_check = 1 if check == "first" else len(obj.batches)
            with torch.no_grad():
                fresh = []
                for b, w in zip(obj.batches[:n_check], obj.weights[:n_check]):
                    out = obj.outputs(obj.theta, b)
                    fresh += [obj.loss_fn(out, b[1]) * w, *_tensors(out)]
            check_agree(tuple(kept), tuple(fresh), obj, what="network outputs of fresh forward passes")
    if not all(bool(torch.isfinite(t).all()) for t in total):
        raise ValueError("the gradient is not finite: the parameters, the data or the loss contain NaN/inf")
    return {k: t.detach() for k, t in zip(obj.names, total)}
