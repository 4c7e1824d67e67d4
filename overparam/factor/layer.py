"""The one wrapper hierarchy: a held base layer whose weight is re-parameterized or adapted.

:class:`LayerWrapper` is the base of every in-place wrapper (:class:`FactorizedLayer` for
low-rank, Hadamard, LoHa/LoKr and sparse+low-rank weight modules;
:class:`~overparam.factor.adapters.LoRALayer` for LoRA/rsLoRA/PiSSA/DoRA/ReLoRA). Its protocol,
which :mod:`~overparam.factor.wrap` and :func:`~overparam.factor.pairs` rely on and nothing else:

* ``base``: the wrapped ``nn.Linear``/``ConvNd``/``Embedding``/transformers ``Conv1D``; ``residual``: ``False`` for a
  re-parameterization (``W = update()``, ``base.weight`` removed), ``True`` for an adapter
  (``W = base.weight + update()``, ``base.weight`` kept and frozen);
* :meth:`~LayerWrapper.update` (the one method a subclass must define) and the dense ``weight``;
* :meth:`~LayerWrapper.merge_` / :meth:`~LayerWrapper.unmerge_` (adapters only): fold the
  update into ``base.weight`` in place and back; ``merged`` says which;
* :meth:`~LayerWrapper.unwrap`: the base layer with the dense weight, its parameters in their
  original registration order with their original ``requires_grad`` flags (so ``state_dict``
  keys, ``parameters()`` order and a saved optimizer state survive a wrap + unwrap round trip);
* :meth:`~LayerWrapper.factor_pairs` (the pair protocol) and
  :meth:`~LayerWrapper.adapter_parameters` (what :func:`adapter_state_dict` saves).

``state_dict`` keys of a :class:`FactorizedLayer` at ``name``: ``name.base.*`` (the base layer
without ``weight`` for a re-parameterization, with the frozen ``weight`` for an adapter) and
``name.param.*`` (the weight module's keys, e.g. ``left``/``right`` for :class:`LowRank`).

Example:
    >>> import torch
    >>> from overparam.factor import LowRank
    >>> base = torch.nn.Linear(4, 3)
    >>> layer = FactorizedLayer(base, LowRank((3, 4), 2, generator=0))
    >>> layer(torch.zeros(1, 4)).shape, [k for k, _ in layer.unwrap().named_parameters()]
    (torch.Size([1, 3]), ['weight', 'bias'])
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from . import _layers

__all__ = ["LayerWrapper", "FactorizedLayer"]


class LayerWrapper(nn.Module):
    """Base of every wrapper: holds ``base`` and defines the merge/unmerge/unwrap/pairs protocol.

    A subclass calls ``super().__init__(base, residual=...)`` with a supported base layer it has
    already validated, then freezes what it freezes, and defines :meth:`update`.

    Args:
        base: an ``nn.Linear``, ``nn.Conv1d/2d/3d``, ``nn.Embedding`` or transformers' ``Conv1D``.
        residual: ``False``: the wrapper replaces ``base.weight`` (which is removed);
            ``True``: it adds an update to ``base.weight`` (kept, frozen by the subclass).

    Example:
        >>> class Scaled(LayerWrapper):  # W = base.weight + c · base.weight, c trainable
        ...     def __init__(self, base):
        ...         super().__init__(base, residual=True)
        ...         base.weight.requires_grad_(False)
        ...         self.c = nn.Parameter(torch.tensor(0.5))
        ...     def update(self):
        ...         return self.c * self.base.weight
        >>> base = nn.Linear(2, 2, bias=False)
        >>> W0 = base.weight.detach().clone()
        >>> layer = Scaled(base)
        >>> torch.allclose(layer(torch.eye(2)), 1.5 * W0.T), list(layer.adapter_parameters())
        (True, ['c'])
    """

    def __init__(self, base: nn.Module, *, residual: bool) -> None:
        super().__init__()
        self.weight_shape = tuple(base.weight.shape)
        self.residual, self.merged = residual, False
        self._base_order = list(base._parameters)
        self._base_requires_grad = {k: p.requires_grad for k, p in base.named_parameters()}
        if not residual:
            del base.weight
        self.base = base

    def update(self) -> Tensor:
        """The re-parameterized weight (``residual=False``) or the additive update ``ΔW``
        (``residual=True``), as the ``(rows, cols)`` matrix of the computation or (not for a
        transposed layout such as transformers' ``Conv1D``) in the weight's own shape.

        Example:
            >>> from overparam.factor import LowRank
            >>> layer = FactorizedLayer(nn.Linear(4, 3), LowRank((3, 4), 2, generator=0))
            >>> torch.equal(layer.update(), layer.param())  # a re-parameterization: W = update()
            True
        """
        raise NotImplementedError

    @property
    def weight(self) -> Tensor:
        """The dense weight in the base layer's shape: ``update()`` (re-parameterization) or
        ``base.weight + update()`` (adapter; ``base.weight`` once merged).

        Example:
            >>> from overparam.factor import LowRank
            >>> base = nn.Linear(4, 3)
            >>> layer = FactorizedLayer(base, LowRank((3, 4), 1, scale=1.0, generator=0), residual=True)
            >>> layer.weight.shape, torch.equal(layer.weight, base.weight + layer.param())
            (torch.Size([3, 4]), True)
        """
        if not self.residual:
            return self._dense_update()
        if self.merged:
            return self.base.weight
        return self.base.weight + self._dense_update()

    def _dense_update(self) -> Tensor:
        """:meth:`update` in the stored weight's shape (a matrix goes back through the layout)."""
        return _layers.from_matrix(self.base, self.update(), self.weight_shape)

    def forward(self, x: Tensor) -> Tensor:
        """The base layer's computation with the dense :attr:`weight` (``base(x)`` once merged):
        a Linear maps ``(..., in)`` to ``(..., out)``.

        Example:
            >>> from overparam.factor import LowRank
            >>> base = nn.Linear(4, 3)
            >>> layer = FactorizedLayer(base, LowRank((3, 4), 1, scale=1.0, generator=0), residual=True)
            >>> x = torch.randn(2, 4, generator=torch.Generator().manual_seed(0))
            >>> torch.allclose(layer(x), x @ layer.weight.T + base.bias)
            True
        """
        if self.merged:
            return self.base(x)
        return _layers.call(self.base, x, self.weight, getattr(self.base, "bias", None))

    # ------------------------------------------------------------- merge protocol
    def _merged_weight(self) -> Tensor:
        return self.base.weight + self._dense_update()

    def _unmerged_weight(self) -> Tensor:
        return self.base.weight - self._dense_update()

    @torch.no_grad()
    def merge_(self) -> LayerWrapper:
        """Fold the update into ``base.weight`` in place (forward then runs the base only); returns self.

        Raises:
            ValueError: a re-parameterization (``residual=False``) or an already merged adapter.

        Example:
            >>> from overparam.factor import LowRank
            >>> base = nn.Linear(4, 3)
            >>> layer = FactorizedLayer(base, LowRank((3, 4), 1, scale=1.0, generator=0), residual=True)
            >>> W = layer.weight.detach().clone()
            >>> layer.merge_().merged, torch.allclose(base.weight, W)
            (True, True)
        """
        if not self.residual:
            raise ValueError("only adapters (residual wrappers) merge in place; merge_(model) unloads the others")
        if self.merged:
            raise ValueError("this adapter is already merged")
        self.base.weight.copy_(self._merged_weight())
        self.merged = True
        return self

    @torch.no_grad()
    def unmerge_(self) -> LayerWrapper:
        """Undo :meth:`merge_` (``base.weight`` back to its value before, up to round-off); returns self.

        Example:
            >>> from overparam.factor import LowRank
            >>> base = nn.Linear(4, 3)
            >>> layer = FactorizedLayer(base, LowRank((3, 4), 1, scale=1.0, generator=0), residual=True)
            >>> W0 = base.weight.detach().clone()
            >>> layer.merge_().unmerge_().merged, torch.allclose(base.weight, W0, atol=1e-6)
            (False, True)
        """
        if not self.merged:
            raise ValueError("this adapter is not merged")
        self.base.weight.copy_(self._unmerged_weight())
        self.merged = False
        return self

    @torch.no_grad()
    def unwrap(self) -> nn.Module:
        """The base layer with the dense weight as an ordinary parameter: parameters in their
        original registration order, with their original ``requires_grad`` flags. An adapter
        keeps its ``base.weight`` tensor (the update is merged into it).

        Example:
            >>> from overparam.factor import LowRank
            >>> layer = FactorizedLayer(nn.Linear(4, 3), LowRank((3, 4), 2, generator=0))
            >>> W = layer.weight.detach().clone()
            >>> plain = layer.unwrap()
            >>> type(plain).__name__, [k for k, _ in plain.named_parameters()], torch.equal(plain.weight, W)
            ('Linear', ['weight', 'bias'], True)
        """
        base = self.base
        if self.residual:
            if not self.merged:
                self.merge_()
        else:
            base.weight = nn.Parameter(self.weight.detach().clone(memory_format=torch.contiguous_format))
        params = base._parameters
        ordered = [(k, params.pop(k)) for k in self._base_order if k in params]
        rest = list(params.items())
        params.clear()
        params.update(ordered + rest)
        for k, p in base.named_parameters():
            p.requires_grad_(self._base_requires_grad.get(k, True))
        return base

    # ------------------------------------------------------------- pair / adapter protocol
    def factor_pairs(self) -> list[tuple[nn.Parameter, nn.Parameter]]:
        """The ``(L, R)`` pairs this wrapper owns directly (its submodules yield their own).

        Example:
            >>> from overparam.factor import LoRALayer, LowRank
            >>> FactorizedLayer(nn.Linear(4, 3), LowRank((3, 4), 2, generator=0)).factor_pairs()  # in param
            []
            >>> [(tuple(a.shape), tuple(b.shape)) for a, b in LoRALayer(nn.Linear(4, 3), 2).factor_pairs()]
            [((3, 2), (4, 2))]
        """
        return []

    def adapter_parameters(self) -> dict[str, nn.Parameter]:
        """An adapter's own parameters (all but ``base.*``) by their key relative to this layer;
        empty for a re-parameterization (its parameters are the model's weights).

        Example:
            >>> from overparam.factor import LowRank
            >>> base = nn.Linear(4, 3)
            >>> layer = FactorizedLayer(base, LowRank((3, 4), 1, scale=1.0, generator=0), residual=True)
            >>> list(layer.adapter_parameters())
            ['param.left', 'param.right']
        """
        if not self.residual:
            return {}
        return {k: p for k, p in self.named_parameters() if not k.startswith("base.")}


class FactorizedLayer(LayerWrapper):
    """A base layer whose weight is produced by a weight module ``param`` (``param()``).

    Args:
        base: Linear, ConvNd, Embedding or transformers' ``Conv1D``.
        param: a module whose ``forward()`` returns the weight as a ``(rows, cols)`` matrix or
            (not for ``Conv1D``, stored transposed) in the weight's own shape (:class:`~overparam.factor.LowRank`,
            :class:`~overparam.factor.Hadamard`, :class:`~overparam.factor.SparseLowRank`, ...).
            A ``param`` with a ``linear(x, bias)`` method computes a Linear-like base's output itself
            (:class:`~overparam.factor.LowRank`: ``(x R) Lᵀ``, never forming ``W``).
        residual: ``False``: ``W = param()`` and ``base.weight`` is removed from the base layer;
            ``True``: ``W = base.weight + param()`` with ``base.weight`` kept and frozen (adapter).

    Example:
        >>> from overparam.factor import SparseLowRank
        >>> base = torch.nn.Linear(4, 3).double()
        >>> W = base.weight.detach().clone()
        >>> layer = FactorizedLayer(base, SparseLowRank((3, 4), 1, mask=torch.ones(3, 4, dtype=torch.bool), weight=W))
        >>> bool(torch.allclose(layer.weight, W))
        True
    """

    def __init__(self, base: nn.Module, param: nn.Module, *, residual: bool = False) -> None:
        _layers.check_supported(base)
        if not isinstance(param, nn.Module):
            raise TypeError(f"param must be an nn.Module whose forward() returns the weight, got {type(param).__name__}")
        super().__init__(base, residual=residual)
        if residual:
            base.weight.requires_grad_(False)
        self.param = param

    def update(self) -> Tensor:
        """``param()``: the weight (``residual=False``) or the update ``ΔW`` (``residual=True``).

        Example:
            >>> from overparam.factor import LowRank
            >>> base = nn.Linear(4, 3)
            >>> layer = FactorizedLayer(base, LowRank((3, 4), 1, scale=1.0, generator=0), residual=True)
            >>> torch.equal(layer.update(), layer.param.left @ layer.param.right.T)
            True
        """
        return self.param()

    def forward(self, x: Tensor) -> Tensor:
        """The base layer's computation with ``W = param()``; a Linear-like base with a ``param`` that
        has ``linear(x, bias)`` (:class:`~overparam.factor.LowRank`) never forms ``W``: ``(..., in) → (..., out)``.

        Example:
            >>> from overparam.factor import LowRank
            >>> layer = FactorizedLayer(nn.Linear(4, 3), LowRank((3, 4), 2, scale=1.0, generator=0))
            >>> x = torch.randn(5, 4, generator=torch.Generator().manual_seed(0))
            >>> torch.allclose(layer(x), x @ layer.weight.T + layer.base.bias, atol=1e-6)
            True
        """
        if not self.residual and _layers.layout(self.base).linear_like and hasattr(self.param, "linear"):
            return self.param.linear(x, self.base.bias)
        return super().forward(x)
