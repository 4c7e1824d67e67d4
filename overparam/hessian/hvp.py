"""The Hessian of a model's loss as an operator; its products come from one of the backends
registered for the routine ``"hvp"`` in :mod:`overparam.backend.dispatch` (see
:mod:`overparam.hessian.hvp_backends`: ``"double_backward"``, ``"jvp"``, ``"finite_difference"``).

Example:
    >>> import torch
    >>> from overparam.testing import tanh_mlp
    >>> net = tanh_mlp([3, 4, 1], generator=0)
    >>> x, y = torch.randn(8, 3, dtype=torch.float64), torch.randn(8, 1, dtype=torch.float64)
    >>> H = hessian(net, torch.nn.functional.mse_loss, (x, y))
    >>> H.n, H.backend, (H @ torch.ones(H.n, dtype=torch.float64)).shape
    (21, 'double_backward', torch.Size([21]))
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from ..backend import dispatch, vec
from ..backend.select import Spec
from . import hvp_backends  # noqa: F401  (registers the "hvp" backends before BACKENDS is read)
from ._model import Objective, exactly, parameter_names, rng_guard
from .operators import Operator

__all__ = ["HessianOperator", "hessian", "blocks", "BACKENDS"]

BACKENDS = tuple(i.name for i in dispatch.implementations("hvp"))
"""The HVP backends overparam registers (``op.backend.implementations("hvp")`` lists every one)."""


def _backend_name(backend: str | None) -> str | None:
    valid = ("auto", "reference", *(i.name for i in dispatch.implementations("hvp")))
    if backend is not None and backend not in valid:
        raise ValueError(f"backend must be None (the {dispatch.ENV_VAR} environment variable, default 'auto') or one of "
                         f"{valid}, got {backend!r}")
    return backend


class HessianOperator(Operator):
    """The Hessian ``∇²L(θ)`` of ``L = Σ_b (n_b/N) loss_fn(model(x_b), y_b)`` w.r.t. the
    selected parameters, at their values when the operator is built.

    Args:
        model: any ``nn.Module``; it must be deterministic (``eval()`` for dropout/BatchNorm).
        loss_fn: ``loss_fn(outputs, targets) -> scalar``, a mean over the batch by default.
        data: one batch ``(inputs, targets)`` or an iterable of batches (a DataLoader); the loss
            is then averaged per sample across (possibly ragged) batches.
        params: which parameters, a spec of :func:`overparam.select` (a name, a glob such as
            ``"encoder.*"``, a module type, a predicate ``(name, param) -> bool`` or a list);
            default every trainable parameter.
        exclude: parameters to leave out, same grammar.
        backend: an implementation of the dispatch routine ``"hvp"`` (``"double_backward"``, the
            reference, ``"jvp"``, ``"finite_difference"``, or one registered by the user),
            ``"auto"`` (jvp on CUDA, else double_backward), ``"reference"``, or None (the
            ``OVERPARAM_IMPL`` environment variable, default ``"auto"``).
        reduction: ``"mean"`` (loss_fn averages over its batch) or ``"sum"``.
        retain_graph: keep the double-backward graphs (None: yes for at most 8 batches).
        block: number of probes per ``vmap`` call of the jvp backend (memory vs. speed).
        fd_step: relative step of the finite-difference backend (``h = fd_step·max(1, ‖θ‖)/‖v‖``).
        check: verify at construction that the model is deterministic under probing: two products
            with one vector agree (backends that re-run the forward per product), or, for the
            kept double-backward graph that every product reuses, its gradient equals a fresh
            forward/backward's (as sensitive to dropout or random layers, ~6× cheaper).
        output: what ``loss_fn`` sees of the model's output: ``"auto"`` (a tensor as is, a
            ``ModelOutput``/Mapping's ``logits``, else the first tensor of a tuple/list/Mapping),
            None (the raw output) or a callable (:func:`~overparam.hessian._model.select_output`).
        attention: ``"math"`` (default): every forward runs under
            ``torch.nn.attention.sdpa_kernel(SDPBackend.MATH)`` (the flash/efficient SDPA kernels
            have no double-backward); None: torch's choice of kernel.

    Raises:
        NonDeterministicModelError: active dropout, train-mode BatchNorm or a failed check.

    Shapes: acts on flat ``(n,)`` vectors / ``(n, B)`` blocks, ``n`` = the selected parameters'
    total size, or on parameter-shaped tuples (see :class:`~overparam.hessian.operators.Operator`).

    Reference: Pearlmutter, "Fast exact multiplication by the Hessian", Neural Computation 1994.

    Example:
        >>> net = torch.nn.Linear(2, 1, bias=False).double()
        >>> x = torch.randn(16, 2, dtype=torch.float64)
        >>> H = HessianOperator(net, torch.nn.functional.mse_loss, (x, torch.zeros(16, 1, dtype=torch.float64)))
        >>> torch.allclose(H.to_dense(), 2 * x.T @ x / 16)  # MSE of a linear model: 2 XᵀX / N
        True
    """

    def __init__(self, model: nn.Module, loss_fn: Callable, data, *, params: Spec = None, exclude: Spec = None,
                 backend: str = "auto",
                 reduction: str = "mean", retain_graph: bool | None = None, block: int = 16,
                 fd_step: float | None = None, check: bool = True, output="auto", attention: str | None = "math"):
        self.obj = obj = Objective.build(model, loss_fn, data, params, exclude=exclude, reduction=reduction,
                                         output=output, attention=attention)
        self.like = tuple(t.shape for t in obj.theta)
        self.dtype, self.device = obj.theta[0].dtype, obj.theta[0].device
        if isinstance(block, bool) or not isinstance(block, int) or block < 1:
            raise ValueError(f"block must be a positive int, got {block!r}")
        if fd_step is not None and not fd_step > 0:
            raise ValueError(f"fd_step must be > 0, got {fd_step}")
        self._options = {"retain_graph": retain_graph, "block": block, "fd_step": fd_step}
        make = dispatch.choose("hvp", _backend_name(backend), device=self.device)
        with rng_guard(self.device):
            self._impl = make(obj, **self._options)
            if check:
                self._impl.check()
        self.backend = self._impl.name

    @property
    def jvp_mode(self) -> str | None:
        """``"forward-over-reverse"`` or ``"reverse-over-reverse"`` (the jvp backend's fallback); None for others.

        Example:
            >>> net = torch.nn.Linear(2, 1).double()
            >>> data = (torch.randn(4, 2, dtype=torch.float64), torch.randn(4, 1, dtype=torch.float64))
            >>> hessian(net, torch.nn.functional.mse_loss, data, backend="double_backward").jvp_mode is None
            True
        """
        return getattr(self._impl, "mode", None)

    @property
    def _graph(self):
        """The kept double-backward graph ``(leaves, gradient)``, or None (for benchmarks)."""
        return getattr(self._impl, "graph", None)

    @property
    def names(self) -> list[str]:
        """Names of the parameters the operator acts on, in order.

        Example:
            >>> net = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.Tanh(), torch.nn.Linear(3, 1)).double()
            >>> data = (torch.randn(4, 2, dtype=torch.float64), torch.randn(4, 1, dtype=torch.float64))
            >>> hessian(net, torch.nn.functional.mse_loss, data, params="2.*").names
            ['2.weight', '2.bias']
        """
        return list(self.obj.names)

    def gradient(self) -> Tensor:
        """The loss gradient ``∇L(θ)`` at the operator's parameters, flat ``(n,)`` (free with a
        kept double-backward graph, one forward/backward otherwise).

        Example:
            >>> net = torch.nn.Linear(2, 1, bias=False).double()
            >>> x, y = torch.randn(8, 2, dtype=torch.float64), torch.randn(8, 1, dtype=torch.float64)
            >>> g = hessian(net, torch.nn.functional.mse_loss, (x, y)).gradient()
            >>> torch.allclose(g, 2 * ((net(x) - y).T @ x / 8).flatten())
            True
        """
        return vec.flatten(self._gradient())

    def _gradient(self) -> vec.Vec:
        with rng_guard(self.device):
            return self._impl.gradient()

    def _mv(self, v: vec.Vec) -> vec.Vec:
        return self._impl.mv(v)

    def _mm(self, V: vec.Vec) -> vec.Vec:
        return self._impl.mm(V)

    def restrict(self, params: Spec, *, exclude: Spec = None) -> HessianOperator:
        """The Hessian block of a subset of this operator's parameters (same data and backend);
        ``params`` / ``exclude`` are specs of :func:`overparam.select` over the model.

        Example:
            >>> net = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.Tanh(), torch.nn.Linear(3, 1)).double()
            >>> data = (torch.randn(4, 2, dtype=torch.float64), torch.randn(4, 1, dtype=torch.float64))
            >>> H = hessian(net, torch.nn.functional.mse_loss, data)
            >>> B = H.restrict("0.*")
            >>> B.names, torch.allclose(B.to_dense(), H.to_dense()[:9, :9])
            (['0.weight', '0.bias'], True)
        """
        sub = parameter_names(self.obj.model, params, exclude)
        unknown = sorted(set(sub) - set(self.obj.names))
        if unknown:
            raise ValueError(f"params selects {unknown}, which are not among this operator's parameters {self.obj.names}")
        return HessianOperator(self.obj.model, self.obj.loss_fn, self.obj.batches, params=exactly(sub),
                               backend=self.backend, reduction=self.obj.reduction, output=self.obj.output,
                               attention=self.obj.attention, **self._options)


def hessian(model: nn.Module, loss_fn: Callable, data, *, params: Spec = None, exclude: Spec = None,
            backend: str | None = "auto", reduction: str = "mean", retain_graph: bool | None = None, block: int = 16,
            fd_step: float | None = None, check: bool = True, output="auto",
            attention: str | None = "math") -> HessianOperator:
    """Shorthand for :class:`HessianOperator` ``(model, loss_fn, data, ...)``, same arguments.

    Returns:
        a :class:`HessianOperator` of shape ``(n, n)``, ``n`` the selected parameters' total size.

    Reference: B. A. Pearlmutter, "Fast Exact Multiplication by the Hessian" (Neural Computation 1994)

    Example:
        >>> net = torch.nn.Linear(3, 1).double()
        >>> data = (torch.randn(8, 3, dtype=torch.float64), torch.randn(8, 1, dtype=torch.float64))
        >>> H = hessian(net, torch.nn.functional.mse_loss, data)
        >>> H.shape, torch.allclose(H.to_dense(), H.to_dense().T)
        ((4, 4), True)
    """
    return HessianOperator(model, loss_fn, data, params=params, exclude=exclude, backend=backend, reduction=reduction,
                           retain_graph=retain_graph, block=block, fd_step=fd_step, check=check, output=output,
                           attention=attention)


def blocks(model: nn.Module, loss_fn: Callable, data, *, params: Spec = None, exclude: Spec = None,
           output="auto", attention: str | None = "math", **kwargs) -> dict[str, HessianOperator]:
    """The diagonal Hessian blocks, one per layer: ``{module name: HessianOperator}`` for every
    module that directly owns selected parameters (e.g. ``"0"`` for ``0.weight`` and ``0.bias``);
    ``output``, ``attention`` and ``kwargs`` as for :class:`HessianOperator`.

    Example:
        >>> net = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.Tanh(), torch.nn.Linear(3, 1)).double()
        >>> x, y = torch.randn(5, 2, dtype=torch.float64), torch.randn(5, 1, dtype=torch.float64)
        >>> {k: H.n for k, H in blocks(net, torch.nn.functional.mse_loss, (x, y)).items()}
        {'0': 9, '2': 4}
    """
    names = parameter_names(model, params, exclude)
    groups: dict[str, list[str]] = {}
    for k in names:
        groups.setdefault(k.rpartition(".")[0], []).append(k)
    return {mod: HessianOperator(model, loss_fn, data, params=exactly(ks), output=output, attention=attention, **kwargs)
            for mod, ks in groups.items()}
