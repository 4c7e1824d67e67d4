"""Low-rank matrix completion with Bernoulli sampling.

Each entry of a rank-``r`` ground truth ``M*`` (from :func:`~overparam.problems.ground_truth`)
is observed independently with probability ``p`` (symmetric: the upper triangle is sampled and
mirrored). Losses on the observed set ``Ω``, scaled like the sensing losses so that their
population version is ``½‖LRᵀ − M*‖_F²`` (asymmetric) / ``¼‖XXᵀ − M*‖_F²`` (symmetric)::

    f = 1/(2p) Σ_{(i,j)∈Ω} (LRᵀ − M*)_ij²        (symmetric: 1/(4p) Σ_Ω (XXᵀ − M*)_ij²)

``loss="l1"`` is the mean absolute residual over ``Ω``. ``loss(X, entries=idx)`` evaluates an
unbiased minibatch estimate on the observed entries ``idx`` (indices into ``rows``/``cols``,
e.g. from :meth:`MatrixCompletion.minibatch`), touching only their rows and columns.

Example:
    >>> import overparam as op
    >>> P = op.problems.completion(n=20, r=2, p=0.5, generator=0)
    >>> X = P.init("spectral", rank=2)
    >>> float(P.relative_error(X)) < 1.0
    True
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ..backend.random import GeneratorLike, construction_generator, uniform
from ..backend.checks import check_int
from ._checks import check_factors
from .sensing import _initial_factors, ground_truth

__all__ = ["MatrixCompletion", "completion"]


@dataclass
class MatrixCompletion:
    """``M_star (n1, n2)``; observed entries ``rows, cols (N,)`` (long), ``values (N,)``; ``p``.

    Built by :func:`completion`.

    Reference: G. Zhang, H.-M. Chiu & R. Y. Zhang, "Accelerating SGD for Highly Ill-Conditioned
    Huge-Scale Online Matrix Completion" (2022); T. Tong, C. Ma & Y. Chi (2021).

    Example:
        >>> P = completion(n=5, n2=4, r=1, p=0.5, generator=0)
        >>> P.rows.shape == P.cols.shape == P.values.shape, torch.equal(P.values, P.M_star[P.rows, P.cols])
        (True, True)
    """

    M_star: Tensor
    rows: Tensor
    cols: Tensor
    values: Tensor
    p: float
    rank: int
    symmetric: bool = False
    loss_kind: str = "l2"

    @property
    def shape(self) -> tuple[int, int]:
        """``(n1, n2)``, the shape of ``M*``.

        Example:
            >>> completion(n=5, n2=4, r=1, p=0.5, generator=0).shape
            (5, 4)
        """
        return tuple(self.M_star.shape)

    @property
    def num_observed(self) -> int:
        """``N = |Ω|``, the number of observed entries.

        Example:
            >>> P = completion(n=5, n2=4, r=1, p=0.5, generator=0)
            >>> P.num_observed == int(P.mask.sum()), completion(n=5, r=1, p=1.0, generator=0).num_observed
            (True, 25)
        """
        return self.rows.shape[0]

    @property
    def mask(self) -> Tensor:
        """Boolean ``(n1, n2)`` indicator of ``Ω`` (symmetric problems: a symmetric mask).

        Example:
            >>> m = completion(n=6, r=1, p=0.5, symmetric=True, generator=0).mask
            >>> m.shape, m.dtype, torch.equal(m, m.T)
            (torch.Size([6, 6]), torch.bool, True)
        """
        m = torch.zeros(self.shape, dtype=torch.bool, device=self.M_star.device)
        m[self.rows, self.cols] = True
        return m

    def product(self, X) -> Tensor:
        """``XXᵀ`` or ``LRᵀ`` (dense ``(n1, n2)``) from ``X (n, k)`` or ``(L (n1, k), R (n2, k))`` in
        the problem's dtype and on its device (else a TypeError/ValueError naming ``X``).

        Example:
            >>> P = completion(n=5, n2=4, r=1, p=0.5, generator=0)
            >>> L, R = torch.ones(5, 1, dtype=torch.float64), torch.arange(4.0, dtype=torch.float64)[:, None]
            >>> P.product((L, R))[0]
            tensor([0., 1., 2., 3.], dtype=torch.float64)
        """
        L, R = check_factors(X, self.shape, self.symmetric, self.M_star)
        return L @ R.mT

    def residual(self, X, entries: Tensor | None = None) -> Tensor:
        """``(LRᵀ − M*)`` on the observed entries (all, or the subset ``entries``): ``(N,)`` or ``(len(entries),)``.

        Example:
            >>> P = completion(n=5, n2=4, r=1, p=0.5, generator=0)
            >>> L, R = P.init("small", generator=1)
            >>> r = P.residual((L, R))
            >>> r.shape == P.values.shape, torch.allclose(r, (L @ R.T - P.M_star)[P.rows, P.cols])
            (True, True)
            >>> torch.equal(P.residual((L, R), entries=torch.tensor([2, 0])), r[[2, 0]])
            True
        """
        L, R = check_factors(X, self.shape, self.symmetric, self.M_star)
        i, j, v = self.rows, self.cols, self.values
        if entries is not None:
            i, j, v = i[entries], j[entries], v[entries]
        return (L[i] * R[j]).sum(-1) - v

    def loss(self, X, entries: Tensor | None = None) -> Tensor:
        """The completion loss (see the module docstring), a 0-dim tensor; with ``entries`` an unbiased
        estimate (the mean over the minibatch, scaled by ``N/p``).

        Example:
            >>> P = completion(n=5, n2=4, r=1, p=0.5, generator=0)
            >>> L, R = P.init("small", generator=1)
            >>> r = P.residual((L, R))
            >>> torch.allclose(P.loss((L, R)), 0.5 * r.square().sum() / P.p)
            True
        """
        r = self.residual(X, entries)
        if self.loss_kind == "l1":
            return r.abs().mean()
        c = 0.5 if isinstance(X, tuple) else 0.25
        return c * r.square().mean() * (self.num_observed / self.p)

    def minibatch(self, size: int, *, generator: GeneratorLike = None) -> Tensor:
        """``size`` observed-entry indices drawn uniformly with replacement, ``(size,)`` long.

        ``generator=None`` draws from torch's default generator (the construction rule, docs/index.md).

        Example:
            >>> P = completion(n=5, n2=4, r=1, p=0.5, generator=0)
            >>> idx = P.minibatch(7, generator=0)
            >>> idx.shape, idx.dtype, bool((idx >= 0).all() and (idx < P.num_observed).all())
            (torch.Size([7]), torch.int64, True)
        """
        check_int(size, "size")
        g = construction_generator(generator)
        return torch.randint(0, self.num_observed, (size,), generator=g).to(self.rows.device)

    def relative_error(self, X) -> Tensor:
        """``‖product(X) − M*‖_F / ‖M*‖_F`` over all entries (observed or not), 0-dim.

        Example:
            >>> P = completion(n=5, n2=4, r=1, p=0.5, generator=0)
            >>> U, s, Vh = torch.linalg.svd(P.M_star)
            >>> float(P.relative_error((U[:, :1] * s[0], Vh[:1].T))) < 1e-12
            True
        """
        return torch.linalg.matrix_norm(self.product(X) - self.M_star) / torch.linalg.matrix_norm(self.M_star)

    def init(self, kind: str = "small", *, rank: int | None = None, scale: float = 1e-3,
             generator: GeneratorLike = None):
        """``"small"``: ``scale·G/√n``; ``"spectral"``: top-``rank`` factors of ``P_Ω(M*)/p``.

        ``generator=None`` draws from torch's default generator (the construction rule, docs/index.md).

        Returns:
            ``(L (n1, rank), R (n2, rank))``, or ``X (n, rank)`` for a symmetric problem.

        Example:
            >>> P = completion(n=5, n2=4, r=1, p=0.5, generator=0)
            >>> L, R = P.init("spectral", rank=2)
            >>> L.shape, R.shape
            (torch.Size([5, 2]), torch.Size([4, 2]))
        """
        def observed() -> Tensor:
            Y = torch.zeros_like(self.M_star)
            Y[self.rows, self.cols] = self.values
            return Y / self.p

        return _initial_factors(kind, shape=self.shape, rank=self.rank if rank is None else rank, like=self.M_star,
                                symmetric=self.symmetric, scale=scale, generator=generator, spectral_source=observed)


def completion(n: int, r: int, p: float, *, kappa: float = 1.0, n2: int | None = None, symmetric: bool = False,
               loss: str = "l2", generator: GeneratorLike = None, dtype=torch.float64, device=None) -> MatrixCompletion:
    """Build a matrix-completion problem: entries of ``M* (n, n2)`` observed with probability ``p``.

    ``generator=None`` draws from torch's default generator (the construction rule, docs/index.md).

    Args:
        n, n2: shape (``n2 = n`` by default). r: rank. p: sampling probability in (0, 1].
        kappa: condition number of ``M*``. symmetric: PSD ``M*`` and symmetric ``Ω``.
        loss: ``"l2"`` or ``"l1"``. generator: seeds ``M*`` and ``Ω``.

    Returns:
        a :class:`MatrixCompletion`.

    Reference: G. Zhang, H.-M. Chiu & R. Y. Zhang (NeurIPS 2022); T. Tong, C. Ma & Y. Chi (JMLR 2021).

    Example:
        >>> P = completion(n=30, r=2, p=0.3, kappa=5.0, generator=0)
        >>> 0.2 < P.num_observed / 900 < 0.4, torch.linalg.svdvals(P.M_star)[:2]
        (True, tensor([1.0000, 0.2000], dtype=torch.float64))
    """
    check_int(n, "n")
    if not 0 < p <= 1:
        raise ValueError(f"p must be in (0, 1], got {p}")
    if loss not in ("l2", "l1"):
        raise ValueError(f"loss must be 'l2' or 'l1', got {loss!r}")
    if symmetric and n2 not in (None, n):
        raise ValueError(f"symmetric completion needs a square matrix, got n={n}, n2={n2}")
    g = construction_generator(generator)
    M = ground_truth(n, r, kappa=kappa, n2=n2, symmetric=symmetric, generator=g, dtype=dtype, device=device)
    keep = uniform(M.shape, generator=g) < p
    if symmetric:
        keep = torch.triu(keep)
        keep = keep | keep.mT
    rows, cols = torch.nonzero(keep.to(M.device), as_tuple=True)
    return MatrixCompletion(M_star=M, rows=rows, cols=cols, values=M[rows, cols], p=p, rank=r,
                            symmetric=symmetric, loss_kind=loss)
