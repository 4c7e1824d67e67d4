"""K-FAC: the Kronecker-factored approximation of the GGN / Fisher of Linear and Conv2d layers.

For each layer (weight and bias as one block on the bias-augmented input ``[a; 1]``; the
notation of :mod:`overparam.hessian._kfac_stats`) the block is ``A ⊗ G``, acting on the block's
matrix ``M (out, d)`` as ``G M A``, with

* ``"expand"`` (every shared position — sequence step, Conv2d patch — counts as a sample):
  ``A = Σ_{n,t} a_{nt} a_{nt}ᵀ / (N·T)`` and ``G = Σ_{n,t,k} g_{ntk} g_{ntk}ᵀ``;
* ``"reduce"`` (one vector per sample): ``A = Σ_n ā_n ā_nᵀ / N`` with ``ā_n`` the mean of ``a_{nt}``
  over ``t``, and ``G = Σ_{n,k} ĝ_{nk} ĝ_{nk}ᵀ`` with ``ĝ_{nk}`` the sum of ``g_{ntk}`` over ``t``;

``g_{ntk}`` is the loss-factor column ``c_{nk}`` backpropagated to the layer output at position
``t``. Blocks of different layers are zero (block-diagonal). Exact when the output Jacobians and
the loss Hessian do not vary over samples: a single Linear layer with MSE gives the GGN itself;
in general ``GGN_block − K`` is ``Σ_n (a_n a_nᵀ − A) ⊗ (H_n − H̄)`` for one Linear layer with
per-sample output curvature ``H_n`` (mean ``H̄``).

Every spectral quantity is in closed form from the factors' eigendecompositions ``A = Q_A Λ_A Q_Aᵀ``,
``G = Q_G Λ_G Q_Gᵀ``: eigenvalues ``λ_G,i λ_A,j``; :meth:`inverse` ``(K + λI)⁻¹``; :meth:`trace`
``Σ tr(A) tr(G)``; :meth:`logdet`; :meth:`frobenius_norm` ``√Σ ‖A‖²_F ‖G‖²_F``.

An input factor with fewer rows than columns (``N·T < d``: a wide Linear layer on a small batch,
expand or no shared positions) is kept as its rows ``X`` (``A = XᵀX``): products cost
``(M Xᵀ) X``, and the eigenbasis of its range is a thin QR of ``Xᵀ`` plus an ``r × r`` eigh
instead of a ``d × d`` eigh (the benchmark CNN's 4097-column layer on 256 samples). Its null space
has eigenvalue 0 and needs no basis (``1/λ`` in the inverse), except when :meth:`eigh` is asked
for one of its pairs.

Example:
    >>> import torch
    >>> net = torch.nn.Linear(3, 2).double()
    >>> x, y = torch.randn(16, 3, dtype=torch.float64), torch.randn(16, 2, dtype=torch.float64)
    >>> K = kfac(net, "mse", (x, y))
    >>> from overparam.testing.hessian_oracles import dense_ggn
    >>> bool((K.to_dense() - dense_ggn(net, "mse", (x, y))).abs().max() < 1e-12)   # exact here
    True
    >>> v = torch.randn(K.n, dtype=torch.float64)
    >>> bool(((K.shift(0.1) @ (K.inverse(damping=0.1) @ v)) - v).abs().max() < 1e-10)
    True
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ..backend import vec
from ..backend.checks import check_int
from ..backend.random import GeneratorLike, measurement_generator
from ..backend.select import Spec
from ._kfac_stats import FISHER_TYPES, WEIGHT_SHARING, layers_of, n_samples, sweep
from ._model import Objective, rng_guard
from .ggn import LOSSES, ClosedFormLoss
from .eigenbasis import EigenbasisOperator

__all__ = ["KFACOperator", "kfac"]


class KFACOperator(EigenbasisOperator):
    """K-FAC approximation of the GGN (``fisher_type="type-2"``), the Monte-Carlo Fisher (``"mc"``)
    or the empirical Fisher (``"empirical"``) of the Linear and Conv2d layers of a model (PSD).

    Args:
        model: a deterministic ``nn.Module`` (``eval()`` for dropout / BatchNorm); each covered
            layer runs once per forward pass and its output is not modified in place.
        loss_fn: ``"mse"`` / ``F.mse_loss`` / ``nn.MSELoss()`` (outputs ``(N, ...)``) or
            ``"cross_entropy"`` / ``F.cross_entropy`` / ``nn.CrossEntropyLoss()`` (outputs ``(N, C)``,
            int64 targets ``(N,)``), mean reduction.
        data: one ``(inputs, targets)`` batch or an iterable of batches; per-sample mean.
        params: which parameters, a spec of :func:`overparam.select`; default all trainable.
            Every selected parameter must be the weight or bias of an ``nn.Linear`` or ``nn.Conv2d``
            (groups 1, zero padding); anything else is a ``ValueError`` (leave it out with ``exclude``).
        exclude: parameters to leave out, same grammar.
        fisher_type: ``"type-2"`` (exact loss-Hessian factors, one backward pass per output
            entry), ``"mc"`` (``mc_samples`` labels drawn from the model's predictive
            distribution) or ``"empirical"`` (the true targets).
        mc_samples: draws per sample for ``"mc"`` (must be 1 otherwise).
        weight_sharing: ``"expand"`` or ``"reduce"`` (module docstring); equal without shared
            dimensions.
        generator: the ``"mc"`` draws (measurement rule: ``None`` never advances the global RNG).
        check: compare the outputs with a fresh forward pass (a stochastic model raises
            :class:`~overparam.hessian.NonDeterministicModelError`).

    Attributes:
        factors: ``{layer name: (A (d, d), G (out, out))}``.

    Shapes: an ``(n, n)`` operator, ``n`` the selected parameters' total size; ``d`` is a layer's
    input size (+1 with a bias; ``C·kh·kw`` (+1) for Conv2d), ``out`` its output size.

    Reference: Martens and Grosse, "Optimizing neural networks with Kronecker-factored approximate
    curvature", ICML 2015; Grosse and Martens, "A Kronecker-factored approximate Fisher matrix for
    convolution layers", ICML 2016.

    Example (one Linear layer with MSE: K-FAC is the GGN itself):
        >>> from overparam.hessian import ggn
        >>> net = torch.nn.Linear(3, 2).double()
        >>> data = (torch.randn(16, 3, dtype=torch.float64), torch.randn(16, 2, dtype=torch.float64))
        >>> torch.allclose(KFACOperator(net, "mse", data).to_dense(), ggn(net, "mse", data).to_dense())
        True
    """

    def __init__(self, model: nn.Module, loss_fn, data, *, params: Spec = None, exclude: Spec = None,
                 fisher_type: str = "type-2", mc_samples: int = 1, weight_sharing: str = "expand",
                 generator: GeneratorLike = None, check: bool = True):
        loss = ClosedFormLoss.of(loss_fn)
        if loss.reduction != "mean" or loss.ignore_index != -100:
            raise ValueError(f"loss_fn: K-FAC takes the mean-reduced loss without a custom ignore_index, got {loss_fn!r}")
        self.kind = loss.kind
        if fisher_type not in FISHER_TYPES:
            raise ValueError(f"fisher_type must be one of {FISHER_TYPES}, got {fisher_type!r}")
        if weight_sharing not in WEIGHT_SHARING:
            raise ValueError(f"weight_sharing must be one of {WEIGHT_SHARING}, got {weight_sharing!r}")
        check_int(mc_samples, "mc_samples")
        if fisher_type != "mc" and mc_samples != 1:
            raise ValueError(f"mc_samples must be 1 unless fisher_type='mc', got {mc_samples} with {fisher_type!r}")
        if not isinstance(check, bool):
            raise TypeError(f"check must be a bool, got {type(check).__name__}")
        self.fisher_type, self.mc_samples, self.weight_sharing = fisher_type, mc_samples, weight_sharing
        self._generator = measurement_generator(generator)
        self.obj = obj = Objective.build(model, LOSSES[self.kind], data, params, exclude=exclude)
        self.like = tuple(t.shape for t in obj.theta)
        self.dtype, self.device = obj.theta[0].dtype, obj.theta[0].device
        self._layers = layers_of(model, obj.names)
        self._A = [torch.zeros(lay.d, lay.d, dtype=self.dtype, device=self.device) for lay in self._layers]
        self._G = [torch.zeros(lay.out, lay.out, dtype=self.dtype, device=self.device) for lay in self._layers]
        self._rows: list = [[] for _ in self._layers]   # A = XᵀX kept as X while it has fewer rows than columns
        with rng_guard(self.device):
            self._sweep(self._accumulate(n_samples(obj)), check=check)
        self._X = [None if r is None else torch.cat(r) for r in self._rows]
        self._eig: tuple | None = None

    def _sweep(self, consume, *, check: bool) -> None:
        sweep(self.obj, self._layers, self.kind, self.fisher_type, mc_samples=self.mc_samples,
              generator=self._generator, consume=consume, check=check)

    def _accumulate(self, total: int):
        def consume(i: int, a: Tensor, g: Tensor) -> None:
            if self.weight_sharing == "expand":
                a2, g2 = a.reshape(-1, a.shape[-1]) / math.sqrt(total * a.shape[1]), g.reshape(-1, g.shape[-1])
            else:
                a2, g2 = a.mean(1) / math.sqrt(total), g.sum(2).reshape(-1, g.shape[-1])
            rows = self._rows[i]
            if rows is not None and (self.weight_sharing == "expand" or a.shape[1] == 1):
                rows.append(a2)         # the rows are the inputs themselves: A's range is theirs (EK-FAC relies on it)
                if sum(r.shape[0] for r in rows) < a2.shape[1]:
                    a2 = None
                else:
                    a2, self._rows[i] = torch.cat(rows), None
            elif rows is not None:
                self._A[i] += sum(r.mT @ r for r in rows) if rows else 0
                self._rows[i] = None
            if a2 is not None:
                self._A[i] += a2.mT @ a2
            self._G[i] += g2.mT @ g2
        return consume

    @property
    def names(self) -> list[str]:
        """The selected parameters' names, in the order of the operator's vectors.

        Example:
            >>> net = torch.nn.Linear(3, 2).double()
            >>> K = kfac(net, "mse", (torch.randn(16, 3, dtype=torch.float64), torch.randn(16, 2, dtype=torch.float64)))
            >>> K.names
            ['weight', 'bias']
        """
        return list(self.obj.names)

    def _input_factor(self, i: int) -> Tensor:
        X = self._X[i]
        return self._A[i] if X is None else X.mT @ X

    @property
    def factors(self) -> dict[str, tuple[Tensor, Tensor]]:
        """``{layer name: (A (d, d), G (out, out))}``: the input factor (bias-augmented) and the
        output-gradient factor; the block is ``A ⊗ G``.

        Example:
            >>> net = torch.nn.Linear(3, 2).double()
            >>> K = kfac(net, "mse", (torch.randn(16, 3, dtype=torch.float64), torch.randn(16, 2, dtype=torch.float64)))
            >>> A, G = K.factors[""]
            >>> A.shape, G.shape
            (torch.Size([4, 4]), torch.Size([2, 2]))
        """
        return {lay.name: (self._input_factor(i), G) for i, (lay, G) in enumerate(zip(self._layers, self._G))}

    def _eigen(self) -> tuple:
        """Eigenpairs of the factors, once. ``A = XᵀX`` with fewer rows than columns: ``Xᵀ = QR``,
        ``A = Q (R Rᵀ) Qᵀ``, so its range basis costs a thin QR and an ``r × r`` eigh (``r`` rows)."""
        if self._eig is None:
            bases, diags = [], []
            for A, X, G in zip(self._A, self._X, self._G):
                if X is None:
                    la, QA = torch.linalg.eigh(A)
                else:
                    Q, R = torch.linalg.qr(X.mT)
                    la, W = torch.linalg.eigh(R @ R.mT)
                    QA = Q @ W
                lg, QG = torch.linalg.eigh(G)
                bases.append((QG, QA))
                diags.append(lg[:, None] * la[None, :])
            self._eig = (bases, diags)
        return self._eig

    def _bases(self) -> list[tuple[Tensor, Tensor]]:
        return self._eigen()[0]

    def _diags(self) -> list[Tensor]:
        return self._eigen()[1]

    def _rests(self) -> list[float]:
        return [0.0] * len(self._layers)

    def _mm(self, V: vec.Vec) -> vec.Vec:
        out: list = [None] * len(self.like)
        for lay, A, X, G in zip(self._layers, self._A, self._X, self._G):
            M = lay.to_matrix(V)
            lay.from_matrix(G @ (M @ A if X is None else (M @ X.mT) @ X), out)
        return tuple(out)

    def trace(self) -> Tensor:
        """``Σ_blocks tr(A) tr(G)`` (0-dim).

        Example:
            >>> net = torch.nn.Linear(3, 2).double()
            >>> K = kfac(net, "mse", (torch.randn(16, 3, dtype=torch.float64), torch.randn(16, 2, dtype=torch.float64)))
            >>> torch.allclose(K.trace(), K.to_dense().trace())
            True
        """
        return sum((A.trace() if X is None else X.square().sum()) * G.trace()
                   for A, X, G in zip(self._A, self._X, self._G))

    def frobenius_norm(self) -> Tensor:
        """``√Σ_blocks ‖A‖²_F ‖G‖²_F`` (0-dim).

        Example:
            >>> net = torch.nn.Linear(3, 2).double()
            >>> K = kfac(net, "mse", (torch.randn(16, 3, dtype=torch.float64), torch.randn(16, 2, dtype=torch.float64)))
            >>> torch.allclose(K.frobenius_norm(), K.to_dense().norm())
            True
        """
        return torch.stack([(A if X is None else X @ X.mT).square().sum() * G.square().sum()
                            for A, X, G in zip(self._A, self._X, self._G)]).sum().sqrt()


def kfac(model: nn.Module, loss_fn, data, *, params: Spec = None, exclude: Spec = None, fisher_type: str = "type-2",
         mc_samples: int = 1, weight_sharing: str = "expand", generator: GeneratorLike = None,
         check: bool = True) -> KFACOperator:
    """Shorthand for :class:`KFACOperator` ``(model, loss_fn, data, ...)``, same arguments.

    Reference: J. Martens & R. Grosse, "Optimizing Neural Networks with Kronecker-factored Approximate Curvature"
        (ICML 2015); R. Grosse & J. Martens, "A Kronecker-factored approximate Fisher matrix for convolution layers"
        (ICML 2016)

    Example (a damped K-FAC inverse as a preconditioner for a two-layer network):
        >>> net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 2)).double()
        >>> K = kfac(net, "cross_entropy", (torch.randn(32, 3, dtype=torch.float64), torch.randint(0, 2, (32,))))
        >>> P = K.inverse(damping=1e-3)
        >>> K.shape, P.shape
        ((26, 26), (26, 26))
    """
    return KFACOperator(model, loss_fn, data, params=params, exclude=exclude, fisher_type=fisher_type,
                        mc_samples=mc_samples, weight_sharing=weight_sharing, generator=generator, check=check)
