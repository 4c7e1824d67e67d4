"""EK-FAC (George et al. 2018): K-FAC's Kronecker eigenbasis with the eigenvalues re-fitted.

In the eigenbasis ``Q = Q_A ⊗ Q_G`` of a :class:`~overparam.hessian.KFACOperator` block, K-FAC's
diagonal ``λ_G,i λ_A,j`` is replaced by the second moment of the per-sample gradients projected
onto it:

    ``D_ij = Σ_{n,k} (q_G,iᵀ (Σ_t g_{ntk} a_{nt}ᵀ) q_A,j)²``

(true per-sample gradients, summed over shared positions ``t``, whichever ``weight_sharing``
chose the basis). For ``fisher_type="type-2"`` this is ``diag(Qᵀ GGN_block Q)``: the best
approximation of the GGN block, in Frobenius norm, that is diagonal in ``Q``. The operator is
``Q diag(D) Qᵀ`` per block; trace, log-determinant, Frobenius norm, eigenpairs and the damped
inverse follow in closed form from ``D``. Building it takes two passes over the data (factors,
then ``D``); ``"mc"`` draws fresh labels in the second pass from the same generator.

Example:
    >>> import torch
    >>> from overparam.testing import tanh_mlp
    >>> net = tanh_mlp([3, 5, 2], generator=0)
    >>> x, y = torch.randn(16, 3, dtype=torch.float64), torch.randint(0, 2, (16,))
    >>> E = ekfac(net, "cross_entropy", (x, y))
    >>> bool(abs(E.trace() - E.to_dense().trace()) < 1e-12)
    True
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..backend import vec
from ..backend.random import GeneratorLike
from ..backend.select import Spec
from ._model import rng_guard
from .eigenbasis import EigenbasisOperator
from .kfac import KFACOperator

__all__ = ["EKFACOperator", "ekfac"]


class EKFACOperator(KFACOperator):
    """EK-FAC approximation of the GGN / Fisher of the Linear and Conv2d layers of a model (PSD).

    Takes the arguments of :class:`~overparam.hessian.KFACOperator`. Attributes: ``factors``
    (K-FAC's ``{layer: (A, G)}``, which define the basis) and ``corrected``
    (``{layer: D (out, d)}``).

    Shapes: an ``(n, n)`` operator, as :class:`~overparam.hessian.KFACOperator`.

    Reference: George, Laurent, Bouthillier, Ballas and Vincent, "Fast approximate natural gradient
    descent in a Kronecker-factored eigenbasis", NeurIPS 2018.

    Example (EK-FAC is at least as close to the GGN as K-FAC in Frobenius norm):
        >>> from overparam.hessian import ggn, kfac
        >>> net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 2)).double()
        >>> data = (torch.randn(32, 3, dtype=torch.float64), torch.randint(0, 2, (32,)))
        >>> G = ggn(net, "cross_entropy", data).to_dense()
        >>> E, K = EKFACOperator(net, "cross_entropy", data).to_dense(), kfac(net, "cross_entropy", data).to_dense()
        >>> bool((E - G).norm() <= (K - G).norm() + 1e-12)
        True
    """

    def __init__(self, model: nn.Module, loss_fn, data, *, params: Spec = None, exclude: Spec = None,
                 fisher_type: str = "type-2", mc_samples: int = 1, weight_sharing: str = "expand",
                 generator: GeneratorLike = None, check: bool = True):
        super().__init__(model, loss_fn, data, params=params, exclude=exclude, fisher_type=fisher_type,
                         mc_samples=mc_samples, weight_sharing=weight_sharing, generator=generator, check=check)
        bases = KFACOperator._bases(self)
        self._D = [torch.zeros(QG.shape[1], QA.shape[1], dtype=self.dtype, device=self.device) for QG, QA in bases]

        def consume(i: int, a: Tensor, g: Tensor) -> None:
            QG, QA = bases[i]
            ar, gr = a @ QA, g @ QG                      # (n, T, d), (K, n, T, out)
            if a.shape[1] == 1:                          # one position: the per-sample gradient is rank one
                self._D[i] += torch.einsum("kno,ni->oi", gr[:, :, 0].square(), ar[:, 0].square())
            else:
                for gk in gr:
                    self._D[i] += torch.einsum("nto,nti->noi", gk, ar).square().sum(0)

        with rng_guard(self.device):
            self._sweep(consume, check=False)

    @property
    def corrected(self) -> dict[str, Tensor]:
        """``{layer name: D (out, d)}``: the re-fitted eigenvalues in the Kronecker eigenbasis.

        Example:
            >>> net = torch.nn.Linear(3, 2).double()
            >>> E = ekfac(net, "mse", (torch.randn(8, 3, dtype=torch.float64), torch.randn(8, 2, dtype=torch.float64)))
            >>> E.corrected[""].shape, torch.allclose(E.corrected[""].sum(), E.trace())
            (torch.Size([2, 4]), True)
        """
        return {lay.name: D for lay, D in zip(self._layers, self._D)}

    def _diags(self) -> list[Tensor]:
        return self._D

    def _mm(self, V: vec.Vec) -> vec.Vec:
        return EigenbasisOperator._mm(self, V)

    trace = EigenbasisOperator.trace
    frobenius_norm = EigenbasisOperator.frobenius_norm


def ekfac(model: nn.Module, loss_fn, data, *, params: Spec = None, exclude: Spec = None, fisher_type: str = "type-2",
          mc_samples: int = 1, weight_sharing: str = "expand", generator: GeneratorLike = None,
          check: bool = True) -> EKFACOperator:
    """Shorthand for :class:`EKFACOperator` ``(model, loss_fn, data, ...)``, same arguments.

    Reference: T. George et al., "Fast Approximate Natural Gradient Descent in a Kronecker-factored Eigenbasis"
        (NeurIPS 2018)

    Example:
        >>> net = torch.nn.Linear(3, 2).double()
        >>> E = ekfac(net, "mse", (torch.randn(8, 3, dtype=torch.float64), torch.randn(8, 2, dtype=torch.float64)))
        >>> E.shape, bool(E.eigenvalues().min() >= 0)
        ((8, 8), True)
    """
    return EKFACOperator(model, loss_fn, data, params=params, exclude=exclude, fisher_type=fisher_type,
                         mc_samples=mc_samples, weight_sharing=weight_sharing, generator=generator, check=check)
