"""Over-parameterization by lifting the Burer-Monteiro matrix-sensing problem to tensors
(Ziye Ma, Igor Molybog, Javad Lavaei & Somayeh Sojoudi, ICML 2023, arXiv:2302.07828,
"Over-parametrization via Lifting for Low-rank Matrix Sensing: Conversion of Spurious
Solutions to Strict Saddle Points"; the gradient-descent view over the full tensor space is
Ma, Lavaei & Sojoudi, NeurIPS 2023, arXiv:2310.15549).

Write the symmetric BM problem ``min_X 1/(4m) Σ_i (⟨A_i, XXᵀ⟩ − y_i)²`` over ``w = vec(X)``
(``X (n, r)`` flattened row-major, ``d = n·r``) as ``⟨𝐀_i, wwᵀ⟩`` with ``𝐀_i = sym(A_i) ⊗ I_r`` (the
rank-``r`` problem as a rank-one problem in dimension ``nr``). The order-``l`` lift replaces
``w`` by a tensor ``𝐰 ∈ R^{d^l}`` (``𝐰 = w^{⊗l}`` on the original problem's image) and the
measurements by all ``m^l`` products:

    h(𝐰) = 1/(4 m^l) Σ_{i_1..i_l} (⟨𝐰, (𝐀_{i_1} ⊗ ⋯ ⊗ 𝐀_{i_l}) 𝐰⟩ − y_{i_1} ⋯ y_{i_l})².

With lifted search rank ``s > 1`` the variable is ``s`` such tensors ``𝐰_1..𝐰_s`` (a Burer-Monteiro
factor of the lifted PSD matrix ``𝐖 = Σ_j 𝐰_j 𝐰_jᵀ`` of size ``d^l``, so the search rank is no
longer bounded by ``n``) and each measurement becomes ``Σ_j ⟨𝐰_j, (𝐀_{i_1} ⊗ ⋯ ⊗ 𝐀_{i_l}) 𝐰_j⟩``.

On rank-one tensors ``h(w^{⊗l})`` is a function of ``XXᵀ`` only and vanishes exactly at the
solutions; the variable here ranges over all of ``R^{d^l}`` (not only symmetric or rank-one
tensors), the search space in which the papers show that spurious solutions of the original
problem become strict saddles. :meth:`LiftedSensing.unlift` maps a tensor back to ``X`` by the
partial trace of the lifted matrix: ``G = Σ_j unfold₁(𝐰_j) unfold₁(𝐰_j)ᵀ`` (``d × d``) equals
``‖w‖^{2(l−1)} wwᵀ`` on ``lift(X)``, so ``wwᵀ ≈ G / tr(G)^{(l−1)/l}`` and ``w`` is its scaled leading
eigenvector (exact on ``lift(X)`` up to the sign of ``X``; a truncated-HOSVD approximation, not the
best rank-one part, in general).

Differences from the papers (this is a reading of their setting, not their code): the
``1/(4 m^l)`` normalization is ours (it makes ``order=1`` the problem's own loss; the papers use
an unnormalized squared norm, which changes no stationary point); only symmetric sensing
(``M* = X* X*ᵀ``, as in the papers). Only the abstracts and introductions of the papers could be
read when this was written: the lifted search rank ``s`` is our reading of "an infinite hierarchy
of non-convex problems via the lifting technique and the Burer-Monteiro factorization [whose]
search rank [is not] limited by the dimension of the matrix". Sizes grow as ``s·d^l`` and ``m^l``:
this is for small ``n`` (``s d^l m^l`` up to a few million entries). The constructor computes the
largest tensor a lift needs, ``max(m·d², s·d^l·m^l)`` entries (the lifted ``A_i`` and the widest
intermediate of :meth:`LiftedSensing.measure`), and refuses a lift above ``max_entries`` (default
``10**8``, 0.8 GB in float64) before allocating anything.

Example:
    >>> import torch, overparam as op
    >>> P = op.problems.sensing(n=3, r=1, m=12, generator=0)
    >>> lifted = LiftedSensing(P, rank=1, order=2)
    >>> X = P.init("spectral", rank=1)
    >>> T = lifted.lift(X)
    >>> bool(torch.allclose(lifted.product(T), X @ X.T))
    True
"""

from __future__ import annotations

import string
from dataclasses import dataclass, field

import torch
from torch import Tensor

from ..backend.random import GeneratorLike, gaussian
from .sensing import MatrixSensing

__all__ = ["LiftedSensing"]


@dataclass
class LiftedSensing:
    """The order-``order`` lift of symmetric sensing ``problem`` with factor width ``rank``.

    Args:
        problem: a symmetric :class:`~overparam.problems.sensing.MatrixSensing` (``A (m, n, n)``).
        rank: ``r >= 1``, the width of ``X (n, r)`` (may exceed the true rank).
        order: ``l`` in ``1..6``; ``order=1`` is the original problem.
        search_rank: ``s >= 1``, the number of lifted tensors (Burer-Monteiro rank of the lifted
            matrix); ``1`` gives one tensor of shape ``(d,) * order``.
        max_entries: the most entries one tensor of the lift may have (default ``10**8``); a lift
            needing ``max(m·d², s·d^l·m^l)`` entries above it raises ``ValueError`` before any
            allocation. Raise it on purpose for a larger lift.

    Attributes:
        lifted_A: ``(m, d, d)``, the ``sym(A_i) ⊗ I_r`` (``sym A = (A + Aᵀ)/2``); ``d = n · rank``.
        shape: the variable's shape, ``(d,) * order`` (``s = 1``) or ``(d,) * order + (s,)``.

    Reference: Z. Ma, I. Molybog, J. Lavaei & S. Sojoudi, "Over-parametrization via Lifting for
    Low-rank Matrix Sensing: Conversion of Spurious Solutions to Strict Saddle Points" (ICML 2023).

    Example:
        >>> import overparam as op
        >>> P = op.problems.sensing(n=3, r=1, m=8, generator=0)
        >>> lifted = LiftedSensing(P, rank=2, order=2)
        >>> T = lifted.init(scale=0.1, generator=0)
        >>> T.shape, lifted.measure(T).shape, lifted.unlift(T).shape
        (torch.Size([6, 6]), torch.Size([8, 8]), torch.Size([3, 2]))
    """

    problem: MatrixSensing
    rank: int
    order: int = 2
    search_rank: int = 1
    max_entries: int = 10**8
    lifted_A: Tensor = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.problem, MatrixSensing):
            raise TypeError(f"problem must be an overparam.problems.MatrixSensing, got {type(self.problem).__name__}")
        if not self.problem.symmetric:
            raise ValueError("problem: lifting is defined here for symmetric sensing (M* = X* X*ᵀ)")
        for name in ("rank", "search_rank"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be an int >= 1, got {v!r}")
        if isinstance(self.order, bool) or not isinstance(self.order, int) or not 1 <= self.order <= 6:
            raise ValueError(f"order must be an int in [1, 6], got {self.order!r}")
        self._check_size()
        A = self.problem.A
        A = (A + A.mT) / 2  # ⟨A, XXᵀ⟩ = ⟨sym A, XXᵀ⟩; the lift needs symmetric A_i (else a stationary X
        eye = torch.eye(self.rank, dtype=A.dtype, device=A.device)  # of the original is not one of the lift)
        self.lifted_A = torch.stack([torch.kron(a, eye) for a in A])

    def _check_size(self) -> None:
        """Refuse a lift whose largest tensor exceeds ``max_entries`` (Python ints: no overflow)."""
        cap = self.max_entries
        if isinstance(cap, bool) or not isinstance(cap, int) or cap < 1:
            raise ValueError(f"max_entries must be an int >= 1, got {cap!r}")
        m, d, s, l = self.problem.A.shape[0], self.n * self.rank, self.search_rank, self.order
        entries = max(m * d * d, s * d**l * m**l)
        if entries > cap:
            raise ValueError(
                f"rank={self.rank}, order={l}, search_rank={s} (n={self.n}, m={m}) need a tensor of "
                f"{entries:.3e} entries (max(m·d², s·d^order·m^order), d = n·rank), above "
                f"max_entries={cap:.3e}: lower rank, order or search_rank, or pass a larger max_entries")

    @property
    def n(self) -> int:
        """``n``, the side of the symmetric ``M* (n, n)``.

        Example:
            >>> from overparam.problems import sensing
            >>> P = sensing(n=3, r=1, m=5, generator=0)
            >>> LiftedSensing(P, rank=2).n
            3
        """
        return self.problem.shape[0]

    @property
    def d(self) -> int:
        """``d = n · rank``, the length of ``w = vec(X)``.

        Example:
            >>> from overparam.problems import sensing
            >>> P = sensing(n=3, r=1, m=5, generator=0)
            >>> LiftedSensing(P, rank=2).d
            6
        """
        return self.n * self.rank

    @property
    def shape(self) -> tuple[int, ...]:
        """The variable's shape: ``(d,) * order``, plus a trailing ``(search_rank,)`` when it exceeds 1.

        Example:
            >>> from overparam.problems import sensing
            >>> P = sensing(n=3, r=1, m=5, generator=0)
            >>> LiftedSensing(P, rank=1, order=3).shape, LiftedSensing(P, rank=1, order=2, search_rank=4).shape
            ((3, 3, 3), (3, 3, 4))
        """
        return (self.d,) * self.order + ((self.search_rank,) if self.search_rank > 1 else ())

    def _columns(self, T: Tensor) -> Tensor:
        """``T`` with a trailing search-rank axis ``(d,)*order + (s,)`` (a view)."""
        if tuple(T.shape) != self.shape:
            raise ValueError(f"T must have shape {self.shape}, got {tuple(T.shape)}")
        return T if self.search_rank > 1 else T.unsqueeze(-1)

    def lift(self, X: Tensor) -> Tensor:
        """``vec(X)^{⊗l}``: ``X (n, rank) -> shape`` (for ``s > 1`` in the first of the ``s``
        tensors, the others zero: the same point of the lifted matrix space).

        Example:
            >>> from overparam.problems import sensing
            >>> P = sensing(n=3, r=1, m=5, generator=0)
            >>> lifted = LiftedSensing(P, rank=1, order=2)
            >>> X = torch.tensor([[1.0], [2.0], [3.0]], dtype=torch.float64)
            >>> torch.equal(lifted.lift(X), torch.outer(X[:, 0], X[:, 0]))  # w ⊗ w
            True
        """
        if tuple(X.shape) != (self.n, self.rank):
            raise ValueError(f"X must have shape {(self.n, self.rank)}, got {tuple(X.shape)}")
        w = X.reshape(-1)
        T = w
        for _ in range(self.order - 1):
            T = T.unsqueeze(-1) * w
        if self.search_rank == 1:
            return T
        return torch.cat([T.unsqueeze(-1), T.new_zeros(T.shape + (self.search_rank - 1,))], dim=-1)

    def measure(self, T: Tensor) -> Tensor:
        """``Σ_j ⟨𝐰_j, (𝐀_{i_1} ⊗ ⋯ ⊗ 𝐀_{i_l}) 𝐰_j⟩`` for all index tuples: ``shape -> (m,)*l``.

        Example:
            >>> from overparam.problems import sensing
            >>> P = sensing(n=3, r=1, m=5, generator=0)
            >>> lifted = LiftedSensing(P, rank=1, order=2)
            >>> X = P.init("spectral")
            >>> y = P.measure(X @ X.T)  # on lift(X) the lifted measurements are products y_i y_j
            >>> torch.allclose(lifted.measure(lifted.lift(X)), torch.outer(y, y))
            True
        """
        T = self._columns(T)
        letters = iter(string.ascii_letters)
        a = [next(letters) for _ in range(self.order)]
        c = [next(letters) for _ in range(self.order)]
        i = [next(letters) for _ in range(self.order)]
        j = next(letters)
        spec = ",".join(["".join(a) + j] + [i[k] + a[k] + c[k] for k in range(self.order)] + ["".join(c) + j])
        return torch.einsum(f"{spec}->{''.join(i)}", T, *([self.lifted_A] * self.order), T)

    def targets(self) -> Tensor:
        """``y_{i_1} ⋯ y_{i_l}``: ``(m,) * order``.

        Example:
            >>> from overparam.problems import sensing
            >>> P = sensing(n=3, r=1, m=5, generator=0)
            >>> t = LiftedSensing(P, rank=1, order=3).targets()
            >>> t.shape, torch.allclose(t[1, 2, 4], P.y[1] * P.y[2] * P.y[4])
            (torch.Size([5, 5, 5]), True)
        """
        y = self.problem.y
        out = y
        for _ in range(self.order - 1):
            out = out.unsqueeze(-1) * y
        return out

    def loss(self, T: Tensor) -> Tensor:
        """``h(𝐰) = 1/(4 m^l) ‖measure(𝐰) − targets‖²`` (``order=1`` is the problem's own loss); 0-dim.

        Example:
            >>> from overparam.problems import sensing
            >>> P = sensing(n=3, r=1, m=5, generator=0)
            >>> X = P.init("spectral")
            >>> torch.allclose(LiftedSensing(P, rank=1, order=1).loss(X.reshape(-1)), P.loss(X))
            True
            >>> U, s, _ = torch.linalg.svd(P.M_star)
            >>> lifted = LiftedSensing(P, rank=1, order=2)
            >>> float(lifted.loss(lifted.lift(U[:, :1] * s[0].sqrt()))) < 1e-28  # zero at the lifted truth
            True
        """
        r = self.measure(T) - self.targets()
        return 0.25 * r.square().mean()

    def unlift(self, T: Tensor) -> Tensor:
        """``X (n, rank)`` by the partial trace of the lifted matrix: ``G = M Mᵀ`` for the mode-1
        unfolding ``M (d, d^{l-1}·s)`` of ``T``, ``wwᵀ ≈ G / tr(G)^{(l−1)/l}``, ``w`` its scaled
        leading eigenvector. Exact on ``T = lift(X)`` up to the sign of ``X``.

        Example:
            >>> from overparam.problems import sensing
            >>> P = sensing(n=3, r=1, m=5, generator=0)
            >>> lifted = LiftedSensing(P, rank=2, order=3)
            >>> X = torch.tensor([[1.0, 0.5], [-2.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
            >>> Xb = lifted.unlift(lifted.lift(X))
            >>> Xb.shape, torch.allclose(Xb, X) or torch.allclose(Xb, -X)
            (torch.Size([3, 2]), True)
        """
        M = self._columns(T).reshape(self.d, -1)
        G = M @ M.mT
        evals, evecs = torch.linalg.eigh(G)
        tr = torch.clamp(torch.trace(G), min=torch.finfo(G.dtype).tiny)
        w = evecs[:, -1] * (torch.clamp(evals[-1], min=0) / tr ** ((self.order - 1) / self.order)).sqrt()
        return w.reshape(self.n, self.rank)

    def product(self, T: Tensor) -> Tensor:
        """The ``(n, n)`` matrix ``XXᵀ`` of ``X = unlift(T)``.

        Example:
            >>> from overparam.problems import sensing
            >>> P = sensing(n=3, r=1, m=5, generator=0)
            >>> lifted = LiftedSensing(P, rank=1, order=2)
            >>> X = torch.tensor([[1.0], [2.0], [-1.0]], dtype=torch.float64)
            >>> torch.allclose(lifted.product(lifted.lift(X)), X @ X.T)
            True
        """
        X = self.unlift(T)
        return X @ X.mT

    def init(self, *, scale: float = 1e-2, generator: GeneratorLike = None) -> Tensor:
        """A small Gaussian variable of :attr:`shape` (entries ``N(0, scale²)``).

        ``generator=None`` draws from torch's default generator (the construction rule, docs/index.md).

        Example:
            >>> from overparam.problems import sensing
            >>> P = sensing(n=3, r=1, m=5, generator=0)
            >>> lifted = LiftedSensing(P, rank=2, order=2, search_rank=3)
            >>> T = lifted.init(scale=0.1, generator=0)
            >>> T.shape, T.dtype, torch.equal(T, lifted.init(scale=0.1, generator=0))
            (torch.Size([6, 6, 3]), torch.float64, True)
        """
        A = self.lifted_A
        return scale * gaussian(self.shape, generator=generator, dtype=A.dtype, device=A.device)
