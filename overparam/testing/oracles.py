"""Dense oracles: slow, obviously-correct computations that fast code is checked against.

Use them in fp64 on small problems. They are shipped so that users can check their own
code the way overparam's test suite checks overparam.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from ..backend import vec

__all__ = ["flat_params", "dense_hessian", "dense_matrix", "loss_of_flat"]


def flat_params(model: nn.Module, *, only_trainable: bool = True) -> tuple[list[str], Tensor]:
    """Names and the concatenated values ``(n,)`` of a model's parameters (detached copy)."""
    named = [(k, p) for k, p in model.named_parameters() if p.requires_grad or not only_trainable]
    if not named:
        raise ValueError("model has no (trainable) parameters")
    return [k for k, _ in named], vec.flatten([p.detach() for _, p in named]).clone()


def loss_of_flat(model: nn.Module, loss_fn: Callable[..., Tensor], batch) -> tuple[Callable[[Tensor], Tensor], Tensor]:
    """The loss as a function of the flat parameter vector, and the current flat vector.

    ``loss_fn(outputs, targets)`` with ``batch = (inputs, targets)``; buffers are held fixed.
    """
    names, theta = flat_params(model)
    like = [p for k, p in model.named_parameters() if k in set(names)]
    inputs, targets = batch

    def f(flat: Tensor) -> Tensor:
        params = dict(zip(names, vec.unflatten(flat, like)))
        out = torch.func.functional_call(model, params, (inputs,))
        return loss_fn(out, targets)

    return f, theta


def dense_hessian(model: nn.Module, loss_fn: Callable[..., Tensor], batch) -> Tensor:
    """Dense Hessian ``(n, n)`` of ``loss_fn(model(inputs), targets)`` w.r.t. all trainable
    parameters (in ``named_parameters`` order), through ``torch.func.hessian``.

    The model's train/eval flags are used as they are and left unchanged.

    Example:
        >>> net = torch.nn.Linear(2, 1).double()
        >>> x, y = torch.randn(5, 2, dtype=torch.float64), torch.randn(5, 1, dtype=torch.float64)
        >>> dense_hessian(net, torch.nn.functional.mse_loss, (x, y)).shape
        torch.Size([3, 3])
    """
    f, theta = loss_of_flat(model, loss_fn, batch)
    return torch.func.hessian(f)(theta).detach()


def dense_matrix(matvec: Callable[[Tensor], Tensor] | Tensor, n: int | None = None, *, dtype=torch.float64, device=None) -> Tensor:
    """The ``(n, n)`` matrix of a linear map given by ``matvec`` on flat vectors (or ``A @ v``),
    built column by column from the identity."""
    if isinstance(matvec, Tensor):
        return matvec
    if n is None:
        raise ValueError("n is required when matvec is a function")
    eye = torch.eye(n, dtype=dtype, device=device)
    return torch.stack([matvec(eye[:, j]) for j in range(n)], dim=1)
