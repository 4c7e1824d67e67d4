"""Over-parameterization by lifting the Burer-Monteiro matrix-sensing problem to tensors
(Ziye Ma, Igor Molybog, Javad Lavaei & Somayeh Sojoudi, ICML 2023, arXiv:2302.07828,
"Over-parametrization via Lifting for Low-rank Matrix Sensing: Conversion of Spurious
Solutions to Strict Saddle Points"; the gradient-descent view over the full tensor space is
Ma, Lavaei & Sojoudi, NeurIPS 2023, arXiv:2310.15549).

Write the symmetric BM problem ``min_X 1/(4m) Σ_i (⟨A_i, XXᵀ⟩ − y_i)²`` over ``w = vec(X)``
(``X (n, r)`` flattened row-major, ``d = n·r``) as ``⟨𝐀_i, wwᵀ⟩`` with ``𝐀_i = A_i ⊗ I_r`` (the
rank-``r`` problem as a rank-one problem in dimension ``nr``). The order-``l`` lift replaces
``w`` by a tensor ``𝐰 ∈ R^{d^l}`` (``𝐰 = w^{⊗l}`` on the original problem's image) and the
measurements by all ``m^l`` products:

    h(𝐰) = 1/(4 m^l) Σ_{i_1..i_l} (⟨𝐰, (𝐀_{i_1} ⊗ ⋯ ⊗ 𝐀_{i_l}) 𝐰⟩ − y_{i_1} ⋯ y_{i_l})².

On rank-one tensors ``h(w^{⊗l})`` is a function of ``XXᵀ`` only and vanishes exactly at the
solutions; the variable here ranges over all of ``R^{d^l}`` (not only symmetric or rank-one
tensors), the search space in which the papers show that spurious solutions of the original
problem become strict saddles. :meth:`LiftedSensing.unlift` maps a tensor back to ``X`` by a
symmetric rank-one approximation (leading left singular vector of the mode-1 unfolding, i.e. a
truncated HOSVD: exact on ``lift(X)``, quasi-optimal, not the best rank-one part, in general).

Differences from the papers (this is a reading of their setting, not their code): the
``1/(4 m^l)`` normalization is ours (it makes ``order=1`` the problem's own loss; the papers use
an unnormalized squared norm, which changes no stationary point); the lifted variable is one
tensor, i.e. lifted search rank one (the ICML paper also combines the lift with a larger
Burer-Monteiro search rank on the lifted variable, not implemented here); only symmetric sensing
(``M* = X* X*ᵀ``, as in the papers). Sizes grow as ``d^l`` and ``m^l``: this is for small ``n``
(``d^l m^l`` up to a few million entries).

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
from ..problems.sensing import MatrixSensing
from .functional import check_rank

__all__ = ["LiftedSensing"]


@dataclass
class LiftedSensing:
    """The order-``order`` lift of symmetric sensing ``problem`` with factor width ``rank``.

    Args:
        problem: a symmetric :class:`~overparam.problems.sensing.MatrixSensing` (``A (m, n, n)``).
        rank: ``r >= 1``, the width of ``X (n, r)`` (may exceed the true rank).
        order: ``l`` in ``1..6``; ``order=1`` is the original problem.

    Attributes:
        lifted_A: ``(m, d, d)``, the ``A_i ⊗ I_r``; ``d = n · rank``.
        shape: the tensor variable's shape ``(d,) * order``.

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
    lifted_A: Tensor = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.problem, MatrixSensing):
            raise TypeError(f"problem must be an overparam.problems.MatrixSensing, got {type(self.problem).__name__}")
        if not self.problem.symmetric:
            raise ValueError("problem: lifting is defined here for symmetric sensing (M* = X* X*ᵀ)")
        check_rank(self.rank)
        if isinstance(self.order, bool) or not isinstance(self.order, int) or not 1 <= self.order <= 6:
            raise ValueError(f"order must be an int in [1, 6], got {self.order!r}")
        A = self.problem.A
        eye = torch.eye(self.rank, dtype=A.dtype, device=A.device)
        self.lifted_A = torch.stack([torch.kron(a, eye) for a in A])

    @property
    def n(self) -> int:
        return self.problem.shape[0]

    @property
    def d(self) -> int:
        return self.n * self.rank

    @property
    def shape(self) -> tuple[int, ...]:
        return (self.d,) * self.order

    def lift(self, X: Tensor) -> Tensor:
        """``vec(X)^{⊗l}``: ``X (n, rank) -> (d,) * order``."""
        if tuple(X.shape) != (self.n, self.rank):
            raise ValueError(f"X must have shape {(self.n, self.rank)}, got {tuple(X.shape)}")
        w = X.reshape(-1)
        T = w
        for _ in range(self.order - 1):
            T = T.unsqueeze(-1) * w
        return T

    def measure(self, T: Tensor) -> Tensor:
        """``⟨𝐰, (𝐀_{i_1} ⊗ ⋯ ⊗ 𝐀_{i_l}) 𝐰⟩`` for all index tuples: ``(d,)*l -> (m,)*l``."""
        if tuple(T.shape) != self.shape:
            raise ValueError(f"T must have shape {self.shape}, got {tuple(T.shape)}")
        letters = iter(string.ascii_letters)
        a = [next(letters) for _ in range(self.order)]
        c = [next(letters) for _ in range(self.order)]
        i = [next(letters) for _ in range(self.order)]
        spec = ",".join(["".join(a)] + [i[k] + a[k] + c[k] for k in range(self.order)] + ["".join(c)])
        return torch.einsum(f"{spec}->{''.join(i)}", T, *([self.lifted_A] * self.order), T)

    def targets(self) -> Tensor:
        """``y_{i_1} ⋯ y_{i_l}``: ``(m,) * order``."""
        y = self.problem.y
        out = y
        for _ in range(self.order - 1):
            out = out.unsqueeze(-1) * y
        return out

    def loss(self, T: Tensor) -> Tensor:
        """``h(𝐰) = 1/(4 m^l) ‖measure(𝐰) − targets‖²`` (``order=1`` is the problem's own loss)."""
        r = self.measure(T) - self.targets()
        return 0.25 * r.square().mean()

    def unlift(self, T: Tensor) -> Tensor:
        """``X (n, rank)`` from a symmetric rank-one approximation ``c · u^{⊗l}`` of ``T (d,)*l``:
        ``u`` the top left singular vector of the mode-1 unfolding, ``c = T(u, …, u)``,
        ``w = |c|^{1/l} u`` (times ``sign c`` for odd ``l``). Exact on ``T = lift(X)`` up to the
        sign of ``X``; for other tensors a truncated-HOSVD approximation, not the best one."""
        if tuple(T.shape) != self.shape:
            raise ValueError(f"T must have shape {self.shape}, got {tuple(T.shape)}")
        M = T.reshape(self.d, -1)
        u = torch.linalg.svd(M, full_matrices=False).U[:, 0]
        c = T
        for _ in range(self.order):
            c = c @ u
        mag = c.abs() ** (1.0 / self.order)
        w = mag * u * (torch.sign(c) if self.order % 2 == 1 else 1.0)
        return w.reshape(self.n, self.rank)

    def product(self, T: Tensor) -> Tensor:
        """The matrix ``XXᵀ`` of ``X = unlift(T)``."""
        X = self.unlift(T)
        return X @ X.mT

    def init(self, *, scale: float = 1e-2, generator: GeneratorLike = None) -> Tensor:
        """A small Gaussian tensor ``(d,) * order`` (entries ``N(0, scale²)``)."""
        A = self.lifted_A
        return scale * gaussian(self.shape, generator=generator, dtype=A.dtype, device=A.device)
