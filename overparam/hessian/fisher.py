"""Empirical and Monte-Carlo Fisher matrices of an MSE or cross-entropy loss, as operators.

With the rows ``f_r``, the per-row losses ``ℓ_r`` and the normalization ``c`` of
:mod:`overparam.hessian.ggn` (``reduction="mean"``: ``c`` = 1/number of non-ignored targets for
cross-entropy, 1/number of output entries for MSE; ``"sum"``: ``c = 1``), and the per-row
gradients ``g_r = ∇_θ ℓ_r = J_rᵀ e_r`` where ``e_r = ∇_f ℓ_r``:

* **empirical Fisher** ``F_emp = c Σ_r g_r g_rᵀ`` with the data's targets
  (``e_r = softmax(f_r) − onehot(y_r)`` for cross-entropy, ``e_r = 2 (f_r − y_r)`` for MSE);
* **Monte-Carlo Fisher** ``F_MC = (c/S) Σ_r Σ_s J_rᵀ e_rs e_rsᵀ J_r`` with ``S = mc_samples``
  targets drawn from the model's own predictive distribution at construction: ``ŷ ~
  Categorical(softmax(f_r))`` (cross-entropy), ``ŷ ~ N(f_r, I/2)`` (MSE, the Gaussian whose
  negative log-likelihood is ``ℓ_r`` up to a constant). Its expectation is the GGN exactly:
  ``E[e eᵀ] = diag(p) − p pᵀ`` resp. ``2 I``.

Ignored targets (``ignore_index``) drop their rows from both. A product costs what a GGN product
costs (one double-vjp ``Jv``, an output-space outer product, one vjp ``Jᵀw``), never a
per-sample gradient. The draws are made once, so the operator is a fixed symmetric PSD matrix
that every solver (:func:`~overparam.hessian.lanczos`, :func:`~overparam.hessian.hutchinson`, ...)
accepts.

Example:
    >>> import torch
    >>> from overparam.testing import tanh_mlp
    >>> net = tanh_mlp([3, 4, 2], generator=0)
    >>> x, y = torch.randn(8, 3, dtype=torch.float64), torch.randint(0, 2, (8,))
    >>> E = empirical_fisher(net, "cross_entropy", (x, y))
    >>> M = mc_fisher(net, "cross_entropy", (x, y), mc_samples=4, generator=0)
    >>> E.n == M.n == 26, bool(torch.linalg.eigvalsh(M.to_dense()).min() > -1e-12)
    (True, True)
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ..backend.checks import check_int
from ..backend.random import GeneratorLike, gaussian, measurement_generator
from ..backend.select import Spec
from .ggn import OutputCurvature, row_chunks

__all__ = ["EmpiricalFisherOperator", "empirical_fisher", "MCFisherOperator", "mc_fisher"]


def _outer_product(loss_kind: str, f: Tensor, e, jv: Tensor) -> Tensor:
    """``(1/S) Σ_s e_rs ⟨e_rs, jv_r⟩`` row by row, ``(R, C)``. ``e`` is, for cross-entropy, the
    class indices ``k (R, S)`` of ``e_rs = p_r − onehot(k_rs)``; for MSE the tensor ``(S, R, C)``."""
    if loss_kind == "cross_entropy":  # written into jv, the softmax formed over row chunks (as the GGN's)
        for rows in row_chunks(f):
            p, j, k = torch.softmax(f[rows].detach(), dim=-1), jv[rows], e[rows]
            a = torch.linalg.vecdot(p, j).unsqueeze(-1) - j.gather(1, k)     # ⟨e_rs, jv_r⟩, (rows, S)
            j.copy_(p.mul_(a.sum(1, keepdim=True))).scatter_add_(1, k, -a).div_(k.shape[1])
        return jv
    return (e * torch.linalg.vecdot(e, jv).unsqueeze(-1)).mean(0)


class EmpiricalFisherOperator(OutputCurvature):
    """The empirical Fisher ``c Σ_r g_r g_rᵀ`` (module docstring of :mod:`overparam.hessian.fisher`).

    Args:
        model, loss_fn, data, params, exclude, reduction, ignore_index, output, attention, check:
            as for :class:`~overparam.hessian.GGNOperator` (``loss_fn``: MSE or cross-entropy).

    Shapes: an ``(n, n)`` operator, ``n`` the selected parameters' total size.

    Reference: Kunstner, Balles and Hennig, "Limitations of the empirical Fisher approximation for
    natural gradient descent", NeurIPS 2019.

    Example (per-row gradients of a linear model with MSE: ``g_r = 2 (f_r − y_r) x_r``):
        >>> net = torch.nn.Linear(2, 1, bias=False).double()
        >>> x, y = torch.randn(8, 2, dtype=torch.float64), torch.randn(8, 1, dtype=torch.float64)
        >>> g = 2 * (net(x) - y).detach() * x
        >>> torch.allclose(EmpiricalFisherOperator(net, "mse", (x, y)).to_dense(), g.T @ g / 8)
        True
    """

    def _prepare(self) -> None:
        self._e = []
        for f, t, keep in self._rows:
            if self.loss.kind == "cross_entropy":
                self._e.append(torch.where(keep, t, 0).unsqueeze(1))    # ignored rows: any class, masked later
            else:
                self._e.append((2 * (f - t)).unsqueeze(0))

    def _output_product(self, i: int, f: Tensor, t: Tensor, jv: Tensor) -> Tensor:
        return _outer_product(self.loss.kind, f, self._e[i], jv)


class MCFisherOperator(OutputCurvature):
    """The Monte-Carlo Fisher with ``mc_samples`` model-drawn targets per row (module docstring
    of :mod:`overparam.hessian.fisher`); its expectation is the GGN.

    Args:
        model, loss_fn, data, params, exclude, reduction, ignore_index, output, attention, check:
            as for :class:`~overparam.hessian.GGNOperator` (``loss_fn``: MSE or cross-entropy).
        mc_samples: targets drawn per row (``S >= 1``); the error of the estimate falls as ``1/√S``.
        generator: a ``torch.Generator`` or int seed for the draws; None: a seed derived from the
            global RNG state, which is read and never advanced (the measurement rule).

    Shapes: an ``(n, n)`` operator, ``n`` the selected parameters' total size.

    Reference: Martens, "New insights and perspectives on the natural gradient method", JMLR 2020.

    Example (the average of many draws approaches the GGN):
        >>> net = torch.nn.Linear(2, 2, bias=False).double()
        >>> x, y = torch.randn(8, 2, dtype=torch.float64), torch.randint(0, 2, (8,))
        >>> F = MCFisherOperator(net, "cross_entropy", (x, y), mc_samples=400, generator=0).to_dense()
        >>> from overparam.hessian import ggn
        >>> G = ggn(net, "cross_entropy", (x, y)).to_dense()
        >>> bool((F - G).norm() < 0.1 * G.norm())
        True
    """

    def __init__(self, model: nn.Module, loss_fn, data, *, mc_samples: int = 1, generator: GeneratorLike = None,
                 params: Spec = None, exclude: Spec = None, reduction: str | None = None,
                 ignore_index: int | None = None, output="auto", attention: str | None = "math", check: bool = True):
        self.mc_samples = check_int(mc_samples, "mc_samples")
        self._generator = measurement_generator(generator)
        super().__init__(model, loss_fn, data, params=params, exclude=exclude, reduction=reduction,
                         ignore_index=ignore_index, output=output, attention=attention, check=check)

    def _prepare(self) -> None:
        g, S, self._e = self._generator, self.mc_samples, []
        for f, _, _ in self._rows:
            if self.loss.kind == "cross_entropy":
                p = torch.softmax(f.detach().to(torch.float64), dim=-1).cpu()
                self._e.append(torch.multinomial(p, S, replacement=True, generator=g).to(f.device))
            else:  # e = 2 (f − ŷ), ŷ ~ N(f, I/2): e = −√2 ε
                self._e.append(-math.sqrt(2.0) * gaussian((S, *f.shape), generator=g, dtype=f.dtype, device=f.device))
        del self._generator

    def _output_product(self, i: int, f: Tensor, t: Tensor, jv: Tensor) -> Tensor:
        return _outer_product(self.loss.kind, f, self._e[i], jv)


def empirical_fisher(model: nn.Module, loss_fn, data, *, params: Spec = None, exclude: Spec = None,
                     reduction: str | None = None, ignore_index: int | None = None, output="auto",
                     attention: str | None = "math", check: bool = True) -> EmpiricalFisherOperator:
    """Shorthand for :class:`EmpiricalFisherOperator` ``(model, loss_fn, data, ...)``, same arguments.

    Reference: F. Kunstner, L. Balles & P. Hennig, "Limitations of the Empirical Fisher Approximation for Natural
        Gradient Descent" (NeurIPS 2019)

    Example (sequence logits ``(B, T, V)``, targets ``(B, T)`` with ``-100`` dropped):
        >>> net = torch.nn.Sequential(torch.nn.Embedding(5, 3), torch.nn.Linear(3, 5)).double()
        >>> ids = torch.tensor([[1, 2, 3], [4, 0, 1]])
        >>> labels = torch.tensor([[2, 3, -100], [0, 1, 2]])
        >>> E = empirical_fisher(net, "cross_entropy", (ids, labels))
        >>> E.n, (E @ torch.ones(E.n, dtype=torch.float64)).shape
        (35, torch.Size([35]))
    """
    return EmpiricalFisherOperator(model, loss_fn, data, params=params, exclude=exclude, reduction=reduction,
                                   ignore_index=ignore_index, output=output, attention=attention, check=check)


def mc_fisher(model: nn.Module, loss_fn, data, *, mc_samples: int = 1, generator: GeneratorLike = None,
              params: Spec = None, exclude: Spec = None, reduction: str | None = None, ignore_index: int | None = None,
              output="auto", attention: str | None = "math", check: bool = True) -> MCFisherOperator:
    """Shorthand for :class:`MCFisherOperator` ``(model, loss_fn, data, ...)``, same arguments.

    Reference: F. Kunstner, L. Balles & P. Hennig, "Limitations of the Empirical Fisher Approximation for Natural
        Gradient Descent" (NeurIPS 2019)

    Example:
        >>> net = torch.nn.Linear(3, 2).double()
        >>> x, y = torch.randn(6, 3, dtype=torch.float64), torch.randn(6, 2, dtype=torch.float64)
        >>> a = mc_fisher(net, "mse", (x, y), mc_samples=2, generator=0).to_dense()
        >>> torch.equal(a, mc_fisher(net, "mse", (x, y), mc_samples=2, generator=0).to_dense())
        True
    """
    return MCFisherOperator(model, loss_fn, data, mc_samples=mc_samples, generator=generator, params=params,
                            exclude=exclude, reduction=reduction, ignore_index=ignore_index, output=output,
                            attention=attention, check=check)
