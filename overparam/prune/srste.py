"""SR-STE: training N:M sparse networks from scratch (Zhou et al. 2021).

The dense weights ``W`` are kept and trained; every forward recomputes the N:M magnitude mask
``M = nm(|W|)`` and uses ``W̃ = W ⊙ M``. The backward is the *sparse-refined* straight-through
estimator of the paper (their eq. 5): the gradient with respect to the sparse weight is passed
to the dense one, plus a decay ``λ_W`` on the pruned entries only,

    ∂ℓ/∂W := ∂ℓ/∂W̃ + λ_W · (¬M) ⊙ W,

so with SGD the update is ``W ← W − γ (∂ℓ/∂W̃ + λ_W Ē ⊙ W)`` exactly as in the paper (``Ē``
the complement of the mask). ``decay=0`` is the plain STE. Any optimizer can be used; with
Adam the decay term is rescaled like the rest of the gradient.

:class:`SRSTE` is a thin ``nn.Module`` shell (as :class:`~overparam.prune.EdgePopup`): it holds
the user's model and calls it through ``torch.func.functional_call`` with the masked weights;
nothing of the model is rewritten. Optimize ``model.parameters()``; at the end
``apply_masks_(model, shell.masks())`` leaves the N:M sparse model.

Example:
    >>> import torch
    >>> net = torch.nn.Linear(8, 2)
    >>> sr = SRSTE(net, 2, 4)
    >>> sr(torch.randn(3, 8)).sum().backward()
    >>> net.weight.grad.shape, int(sr.masks()["weight"].sum())
    (torch.Size([2, 8]), 8)
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..backend.checks import check_real
from ..backend.nm import check_nm, nm_mask
from ..backend.select import Spec
from .nm import nm_dims
from .targets import Masks
from .targets import targets as _targets

__all__ = ["SRSTE", "srste_weight"]


class _SRSTEFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, w: Tensor, mask: Tensor, decay: float) -> Tensor:
        ctx.save_for_backward(w, mask)
        ctx.decay = decay
        return w * mask

    @staticmethod
    def backward(ctx, g: Tensor):
        w, mask = ctx.saved_tensors
        grad = g if ctx.decay == 0 else g + ctx.decay * (~mask) * w
        return grad, None, None


def srste_weight(w: Tensor, n: int, m: int, *, decay: float = 2e-4, dim: int | None = None) -> Tensor:
    """``w ⊙ nm(|w|)`` whose backward is SR-STE's ``g + decay · (¬mask) ⊙ w`` (``g`` the gradient of the output).

    Args:
        w: a weight ``(out, in, ...)``, groups of ``m`` along dim 1 (``in % m == 0``), or along ``dim``
            (its input dim: 0 for a ConvTranspose or transformers' ``Conv1D`` weight).
        n, m: keep ``n`` of every ``m`` (``1 <= n < m``).
        decay: ``λ_W >= 0`` (the paper uses 2e-4).

    Reference: A. Zhou et al., "Learning N:M Fine-grained Structured Sparse Neural Networks From Scratch" (ICLR
        2021), eq. 5

    Example:
        >>> w = torch.tensor([[4., -1., 3., 0.5]], requires_grad=True)
        >>> out = srste_weight(w, 2, 4, decay=0.5)
        >>> out.tolist(), out.sum().backward(), w.grad.tolist()
        ([[4.0, -0.0, 3.0, 0.0]], None, [[1.0, 0.5, 1.0, 1.25]])
    """
    check_nm(n, m)
    decay = check_real(decay, "decay", at_least=0.0, finite=True)
    if not isinstance(w, Tensor) or not w.is_floating_point():
        raise TypeError(f"w must be a floating-point tensor, got {getattr(w, 'dtype', type(w).__name__)}")
    try:
        mask = nm_mask(w.detach().abs(), n, m, dim=dim)
    except ValueError as e:   # NaN weights, a dim not divisible by m
        raise ValueError(f"w: {e}") from None
    return _SRSTEFn.apply(w, mask, decay)


class SRSTE(nn.Module):
    """N:M training from scratch: the forward of ``model`` with ``W ⊙ nm(|W|)``, masks recomputed every call.

    Args:
        model: the network whose weights are trained (its parameters get the SR-STE gradients).
        n, m: the pattern (``1 <= n < m``); groups along each weight's input dim (``in % m == 0``):
            dim 1 of a Linear / Conv weight, dim 0 of a ConvTranspose or transformers' ``Conv1D``
            (as :func:`~overparam.prune.nm_masks`, :func:`~overparam.prune.nm_dims`).
        decay: ``λ_W >= 0``, the decay on pruned weights (paper: 2e-4; 0 gives the plain STE).
        targets, exclude: which weights are N:M (see :func:`~overparam.prune.targets.targets`).

    The forward takes and returns what ``model`` does. :meth:`masks` gives the current masks.

    Reference: Zhou et al., "Learning N:M fine-grained structured sparse neural networks from
    scratch", ICLR 2021 (SR-STE, eq. 5).

    Example:
        >>> net = torch.nn.Linear(4, 1, bias=False); sr = SRSTE(net, 2, 4, decay=0.5)
        >>> with torch.no_grad(): _ = net.weight.copy_(torch.tensor([[4., -1., 3., 0.5]]))
        >>> x = torch.ones(1, 4); sr(x).item(), sr(x).sum().backward(), net.weight.grad.tolist()   # 4 + 3
        (7.0, None, [[1.0, 0.5, 1.0, 1.25]])
    """

    def __init__(self, model: nn.Module, n: int, m: int, *, decay: float = 2e-4, targets: Spec = None,
                 exclude: Spec = None) -> None:
        super().__init__()
        check_nm(n, m)
        self.decay = check_real(decay, "decay", at_least=0.0, finite=True)
        self.model, self.n, self.m = model, n, m
        self._names = list(_targets(model, targets, exclude=exclude))
        self._dims = nm_dims(model, self._names)
        params = dict(model.named_parameters())
        for k in self._names:
            if params[k].dim() < 2 or params[k].shape[self._dims[k]] % m:
                raise ValueError(f"targets: {k} has shape {tuple(params[k].shape)}; its input dim "
                                 f"({self._dims[k]}) must be divisible by m={m}")

    def masks(self) -> Masks:
        """The current N:M magnitude masks of the selected weights (name → bool tensor of the weight's shape).

        Example:
            >>> net = torch.nn.Linear(4, 2); sr = SRSTE(net, 2, 4)
            >>> with torch.no_grad(): _ = net.weight.copy_(torch.tensor([[4., -1., 3., .5], [0., 2., -5., 1.]]))
            >>> sr.masks()["weight"].int().tolist()   # the bias is not a target (1-D)
            [[1, 0, 1, 0], [0, 1, 1, 0]]
        """
        params = dict(self.model.named_parameters())
        return {k: nm_mask(params[k].detach().abs(), self.n, self.m, dim=self._dims[k]) for k in self._names}

    def forward(self, *args, **kwargs):
        """``model(*args, **kwargs)`` with every selected ``W`` replaced by ``W ⊙ nm(|W|)`` (SR-STE backward).

        Example:
            >>> net = torch.nn.Linear(8, 3); sr = SRSTE(net, 2, 4); x = torch.randn(5, 8)
            >>> W = net.weight * sr.masks()["weight"]
            >>> torch.allclose(sr(x), x @ W.T + net.bias), int((W != 0).sum(1).max())   # 4 of 8 kept per row
            (True, 4)
        """
        params = dict(self.model.named_parameters())
        sub = {k: srste_weight(params[k], self.n, self.m, decay=self.decay, dim=self._dims[k]) for k in self._names}
        return torch.func.functional_call(self.model, sub, args, kwargs, strict=False)
