"""Dense oracles: slow, obviously-correct computations that fast code is checked against.

Use them in fp64 on small problems. They are shipped so that users can check their own
code the way overparam's test suite checks overparam.

Every second derivative here comes from plain autograd double-backward, one pass per row
(never ``torch.func.hessian`` or ``jacrev∘jacrev``: in torch 2.13 they are wrong for
``layer_norm``: 1e-2 to 2e-1 relative on small residual LayerNorm/GELU MLPs), and is checked in
the tests against :func:`fd_hessian_of`, central differences of the autograd gradient.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from ..backend import vec

__all__ = ["flat_params", "outputs_of_flat", "loss_of_flat", "hessian_of", "jacobian_of", "fd_hessian_of",
           "dense_hessian", "dense_matrix"]


def flat_params(model: nn.Module, *, only_trainable: bool = True) -> tuple[list[str], Tensor]:
    """Names and the concatenated values ``(n,)`` of a model's parameters (detached copy), in
    ``named_parameters`` order; ``only_trainable=False`` includes frozen parameters.

    Example:
        >>> net = torch.nn.Linear(2, 3)
        >>> names, theta = flat_params(net)
        >>> names, theta.shape
        (['weight', 'bias'], torch.Size([9]))
        >>> torch.equal(theta[:6], net.weight.detach().flatten())
        True
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    named = [(k, p) for k, p in model.named_parameters() if p.requires_grad or not only_trainable]
    if not named:
        raise ValueError("model has no (trainable) parameters")
    return [k for k, _ in named], vec.flatten([p.detach() for _, p in named]).clone()


def outputs_of_flat(model: nn.Module, inputs) -> tuple[Callable[[Tensor], Tensor], Tensor]:
    """The model's outputs on ``inputs`` as a function of the flat parameter vector ``(n,)``, and
    the current flat vector.

    ``inputs`` is a tensor or a tuple of positional inputs. The forward runs through
    :func:`torch.func.functional_call` on private copies of the buffers: a stateful forward
    (train-mode BatchNorm statistics) never updates the model's own.

    Example:
        >>> net = torch.nn.Linear(2, 3).double()
        >>> f, theta = outputs_of_flat(net, torch.ones(4, 2, dtype=torch.float64))
        >>> theta.shape, f(theta).shape
        (torch.Size([9]), torch.Size([4, 3]))
    """
    names, theta = flat_params(model)
    for i, a in enumerate(inputs if isinstance(inputs, tuple) else (inputs,)):
        if not isinstance(a, Tensor):
            raise TypeError(f"inputs must be a tensor or a tuple of tensors, got {type(a).__name__} at position {i}")
        if a.is_floating_point() and not bool(torch.isfinite(a).all()):
            raise ValueError(f"inputs holds NaN or inf (position {i}): the oracle would be NaN")
    like = [p for k, p in model.named_parameters() if k in set(names)]
    buffers = {k: b.detach().clone() for k, b in model.named_buffers()}
    args = inputs if isinstance(inputs, tuple) else (inputs,)

    def f(flat: Tensor) -> Tensor:
        params = dict(zip(names, vec.unflatten(flat, like)))
        return torch.func.functional_call(model, {**buffers, **params}, args, strict=False)

    return f, theta


def loss_of_flat(model: nn.Module, loss_fn: Callable[..., Tensor], data) -> tuple[Callable[[Tensor], Tensor], Tensor]:
    """The loss as a function of the flat parameter vector, and the current flat vector.

    ``loss_fn(outputs, targets)`` on one batch ``data = (inputs, targets)``; buffers are held fixed
    (see :func:`outputs_of_flat`).

    Example:
        >>> net = torch.nn.Linear(2, 1).double()
        >>> x, y = torch.ones(3, 2, dtype=torch.float64), torch.zeros(3, 1, dtype=torch.float64)
        >>> f, theta = loss_of_flat(net, torch.nn.functional.mse_loss, (x, y))
        >>> bool(f(torch.zeros_like(theta)) == 0)
        True
    """
    if not callable(loss_fn):
        raise TypeError(f"loss_fn must be callable, got {type(loss_fn).__name__}")
    if not (isinstance(data, (tuple, list)) and len(data) == 2):
        raise ValueError("data must be one (inputs, targets) batch")
    inputs, targets = data
    out, theta = outputs_of_flat(model, inputs)
    return (lambda flat: loss_fn(out(flat), targets)), theta


def _flat_point(x, name: str = "x") -> Tensor:
    if not isinstance(x, Tensor) or x.ndim != 1 or not x.is_floating_point():
        raise ValueError(f"{name} must be a 1-D floating-point tensor (n,), got "
                         f"{type(x).__name__ if not isinstance(x, Tensor) else (tuple(x.shape), x.dtype)}")
    if x.numel() == 0:
        raise ValueError(f"{name} is empty: there is nothing to differentiate")
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} holds NaN or inf")
    return x.detach().clone().requires_grad_(True)


def _scalar(y: Tensor, what: str = "f") -> Tensor:
    if not isinstance(y, Tensor) or y.numel() != 1:
        raise ValueError(f"{what}(x) must return a scalar tensor, got "
                         f"{type(y).__name__ if not isinstance(y, Tensor) else tuple(y.shape)}")
    return y.reshape(())


def _grad(y: Tensor, x: Tensor, seed: Tensor | None = None, *, create_graph: bool = False) -> Tensor:
    if not y.requires_grad:  # y does not depend on x at all
        return torch.zeros_like(x)
    return torch.autograd.grad(y, x, seed, create_graph=create_graph, retain_graph=True, allow_unused=True,
                               materialize_grads=True)[0]


def _callable(f) -> None:
    if not callable(f):
        raise TypeError(f"f must be callable, got {type(f).__name__}")


def _rows(y: Tensor, x: Tensor) -> Tensor:
    """``(m, n)`` with row ``i`` = ``∇_x y_i`` (one backward pass each), ``m = y.numel()``."""
    y = y.reshape(-1)
    eye = torch.eye(y.numel(), dtype=y.dtype, device=y.device)
    return torch.stack([_grad(y, x, e) for e in eye] or [x.new_zeros((0, x.numel()))]).detach().reshape(-1, x.numel())


def hessian_of(f: Callable[[Tensor], Tensor], x: Tensor) -> Tensor:
    """Dense Hessian ``(n, n)`` of a scalar function ``f`` of a flat vector ``x (n,)``:
    ``H[j, k] = ∂²f / ∂x_j ∂x_k``, row ``j`` from one autograd double-backward pass ``∇(∇f)_j``.

    Example:
        >>> hessian_of(lambda x: (x[0] * x[1]) ** 2, torch.tensor([1.0, 2.0], dtype=torch.float64))
        tensor([[8., 8.],
                [8., 2.]], dtype=torch.float64)
    """
    _callable(f)
    x = _flat_point(x)
    with torch.enable_grad():
        return _rows(_grad(_scalar(f(x)), x, create_graph=True), x)


def jacobian_of(f: Callable[[Tensor], Tensor], x: Tensor) -> Tensor:
    """Dense Jacobian ``(m, n)`` of ``f`` at a flat vector ``x (n,)``, with ``m = f(x).numel()``
    (outputs flattened in row-major order); row ``i`` from one autograd backward pass.

    Example:
        >>> jacobian_of(lambda x: x ** 2, torch.tensor([1.0, 3.0], dtype=torch.float64))
        tensor([[2., 0.],
                [0., 6.]], dtype=torch.float64)
    """
    _callable(f)
    x = _flat_point(x)
    with torch.enable_grad():
        y = f(x)
        if not isinstance(y, Tensor):
            raise ValueError(f"f(x) must return a tensor, got {type(y).__name__}")
        return _rows(y, x)


def fd_hessian_of(f: Callable[[Tensor], Tensor], x: Tensor, *, step: float = 1e-5) -> Tensor:
    """Dense Hessian ``(n, n)`` of a scalar ``f`` at ``x (n,)`` by central differences of its
    autograd gradient: column ``k`` is ``(∇f(x + h e_k) − ∇f(x − h e_k)) / 2h`` with ``h = step``.

    The independent check of :func:`hessian_of` (first derivatives only). In fp64 with the
    default step its error is ``O(h²·f''') + O(eps·|∇f|/h)``, about 1e-10 relative on smooth
    small models; it is not symmetrised.

    Example:
        >>> H = fd_hessian_of(lambda x: (x[0] * x[1]) ** 2, torch.tensor([1.0, 2.0], dtype=torch.float64))
        >>> torch.allclose(H, torch.tensor([[8.0, 8.0], [8.0, 2.0]], dtype=torch.float64), atol=1e-8)
        True
    """
    _callable(f)
    if isinstance(step, bool) or not isinstance(step, (int, float)) or not 0 < step < float("inf"):
        raise ValueError(f"step must be a finite number > 0, got {step!r}")
    x = _flat_point(x).detach()

    def grad_at(t: Tensor) -> Tensor:
        t = t.requires_grad_(True)
        with torch.enable_grad():
            return _grad(_scalar(f(t)), t).detach()

    eye = torch.eye(x.numel(), dtype=x.dtype, device=x.device)
    return torch.stack([(grad_at(x + step * e) - grad_at(x - step * e)) / (2 * step) for e in eye], dim=1)


def dense_hessian(model: nn.Module, loss_fn: Callable[..., Tensor], data) -> Tensor:
    """Dense Hessian ``(n, n)`` of ``loss_fn(model(inputs), targets)`` w.r.t. all trainable
    parameters (in ``named_parameters`` order), by :func:`hessian_of` (autograd
    double-backward, one pass per row).

    The model's train/eval flags are used as they are and left unchanged; its buffers are
    never updated. The model must be deterministic (no active dropout).

    Example:
        >>> net = torch.nn.Linear(2, 1).double()
        >>> x, y = torch.randn(5, 2, dtype=torch.float64), torch.randn(5, 1, dtype=torch.float64)
        >>> dense_hessian(net, torch.nn.functional.mse_loss, (x, y)).shape
        torch.Size([3, 3])
    """
    return hessian_of(*loss_of_flat(model, loss_fn, data))


def dense_matrix(matvec: Callable[[Tensor], Tensor] | Tensor, n: int | None = None, *, dtype=torch.float64, device=None) -> Tensor:
    """The ``(n, n)`` matrix of a linear map given by ``matvec`` on flat vectors (or ``A @ v``),
    built column by column from the identity.

    Example:
        >>> dense_matrix(lambda v: 2 * v, 2)
        tensor([[2., 0.],
                [0., 2.]], dtype=torch.float64)
    """
    if isinstance(matvec, Tensor):
        return matvec
    if n is None:
        raise ValueError("n is required when matvec is a function")
    eye = torch.eye(n, dtype=dtype, device=device)
    return torch.stack([matvec(eye[:, j]) for j in range(n)], dim=1)
