"""Low-rank matrix sensing with Gaussian measurements.

Observe ``y_i = <A_i, M*>`` for ``i = 1..m`` with ``A_i`` i.i.d. standard Gaussian ``(n1, n2)``
and a rank-``r`` ground truth ``M*`` with condition number ``κ`` (singular values linearly
spaced from 1 down to ``1/κ``, as in Tong, Ma & Chi). Losses, as in that literature:

* symmetric (``M* = X* X*ᵀ`` PSD, factor ``X (n, k)``): ``f(X) = 1/(4m) ‖𝒜(XXᵀ) − y‖²``,
  whose population version is ``¼ ‖XXᵀ − M*‖_F²`` and gradient ≈ ``(XXᵀ − M*) X``;
* asymmetric (factors ``L (n1, k)``, ``R (n2, k)``): ``f(L, R) = 1/(2m) ‖𝒜(LRᵀ) − y‖²``.

``loss="l1"`` uses the mean absolute residual instead (robust recovery).

Example:
    >>> import overparam as op
    >>> P = op.problems.sensing(n=10, r=2, m=200, generator=0)
    >>> X = P.init("small", rank=4, scale=1e-3, generator=1)
    >>> P.loss(X).shape, bool(P.relative_error(X) > 0.99)
    (torch.Size([]), True)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ..backend.random import GeneratorLike, construction_generator, gaussian, orthonormal, uniform
from ..backend.checks import check_float, check_floats, check_int, check_rank, check_real
from ._checks import check_factors, check_tensor

__all__ = ["MatrixSensing", "sensing", "ground_truth", "small_factors", "spectral_factors"]


def ground_truth(n: int, r: int, *, kappa: float = 1.0, n2: int | None = None, symmetric: bool = True,
                 generator: GeneratorLike = None, dtype=torch.float64, device=None) -> Tensor:
    """A rank-``r`` matrix ``(n, n2)`` with singular values ``linspace(1, 1/κ, r)``; PSD when symmetric.

    ``generator=None`` draws from torch's default generator (the construction rule, docs/index.md).

    Example:
        >>> torch.linalg.svdvals(ground_truth(5, 2, kappa=4.0, generator=0))[:3].round(decimals=6)
        tensor([1.0000, 0.2500, 0.0000], dtype=torch.float64)
    """
    check_int(n, "n")
    if n2 is not None:
        check_int(n2, "n2")
    check_int(r, "r")
    if r > min(n, n2 or n):
        raise ValueError(f"r must be in [1, min(n, n2)] = [1, {min(n, n2 or n)}], got {r}")
    if not kappa >= 1:
        raise ValueError(f"kappa must be >= 1, got {kappa}")
    g = construction_generator(generator)
    s = torch.linspace(1.0, 1.0 / kappa, r, dtype=dtype, device=device)
    U = orthonormal(n, r, generator=g, dtype=dtype, device=device)
    if symmetric:
        return (U * s) @ U.mT
    V = orthonormal(n2 or n, r, generator=g, dtype=dtype, device=device)
    return (U * s) @ V.mT


@dataclass
class MatrixSensing:
    """A sensing instance. ``A``: ``(m, n1, n2)``; ``y``: ``(m,)``; ``M_star``: ``(n1, n2)``.

    Built by :func:`sensing`; ``outlier_mask`` ``(m,)`` marks corrupted measurements (None without).

    Reference: T. Tong, C. Ma & Y. Chi, "Accelerating Ill-Conditioned Low-Rank Matrix Estimation via
    Scaled Gradient Descent" (2021) (the setting and losses); J. Ma & S. Fattahi (2022) for ``l1`` with outliers.

    Example:
        >>> P = sensing(n=4, r=1, m=30, generator=0)
        >>> P.A.shape, P.y.shape, P.M_star.shape, P.rank, P.symmetric
        (torch.Size([30, 4, 4]), torch.Size([30]), torch.Size([4, 4]), 1, True)
        >>> torch.allclose(P.y, P.measure(P.M_star))  # noiseless
        True
    """

    A: Tensor
    y: Tensor
    M_star: Tensor
    rank: int
    symmetric: bool = True
    loss_kind: str = "l2"
    outlier_mask: Tensor | None = None

    @property
    def m(self) -> int:
        """The number of measurements ``m``.

        Example:
            >>> sensing(n=4, r=1, m=30, generator=0).m
            30
        """
        return self.A.shape[0]

    @property
    def shape(self) -> tuple[int, int]:
        """``(n1, n2)``, the shape of ``M*``.

        Example:
            >>> sensing(n=4, n2=6, r=1, m=30, symmetric=False, generator=0).shape
            (4, 6)
        """
        return tuple(self.M_star.shape)

    def measure(self, M: Tensor) -> Tensor:
        """``𝒜(M) = (<A_i, M>)_i``: ``(n1, n2) -> (m,)``, or batched ``(b, n1, n2) -> (b, m)``.

        Example:
            >>> P = sensing(n=4, r=1, m=30, generator=0)
            >>> M = torch.eye(4, dtype=torch.float64)
            >>> torch.allclose(P.measure(M)[0], (P.A[0] * M).sum()), P.measure(torch.stack([M, M])).shape
            (True, torch.Size([2, 30]))
        """
        check_tensor(M, "M", self.shape, self.M_star, batched=True)
        flat = self.A.reshape(self.m, -1)
        return M.reshape(*M.shape[:-2], -1) @ flat.mT

    def product(self, X: Tensor | tuple[Tensor, Tensor]) -> Tensor:
        """The matrix a factorization represents: ``XXᵀ`` (``X (..., n, k)``) or ``LRᵀ``
        (``L (..., n1, k)``, ``R (..., n2, k)``), in the problem's dtype and on its device
        (else a TypeError/ValueError naming ``X``; nothing is cast).

        Example:
            >>> P = sensing(n=4, r=1, m=30, generator=0)
            >>> X = torch.ones(4, 2, dtype=torch.float64)
            >>> P.product(X)[0]  # X Xᵀ: every entry is k = 2
            tensor([2., 2., 2., 2.], dtype=torch.float64)
        """
        L, R = check_factors(X, self.shape, self.symmetric, self.M_star, batched=True)
        return L @ R.mT

    def residual(self, X) -> Tensor:
        """``𝒜(product(X)) − y``: ``(m,)`` (``(b, m)`` for batched factors).

        Example:
            >>> P = sensing(n=4, r=1, m=30, generator=0)
            >>> X = P.init("spectral", rank=1)
            >>> P.residual(X).shape, float(P.residual(torch.zeros(4, 1, dtype=torch.float64)).add(P.y).abs().max())
            (torch.Size([30]), 0.0)
        """
        return self.measure(self.product(X)) - self.y

    def loss(self, X) -> Tensor:
        """``1/(4m)‖r‖²`` (symmetric) / ``1/(2m)‖r‖²`` (asymmetric), or ``1/m ‖r‖₁`` for ``l1``;
        a 0-dim tensor (``(b,)`` for batched factors), differentiable in ``X``.

        Example:
            >>> P = sensing(n=4, r=1, m=30, generator=0)
            >>> X0 = torch.zeros(4, 1, dtype=torch.float64)
            >>> torch.allclose(P.loss(X0), P.y.square().mean() / 4)
            True
            >>> U, s, _ = torch.linalg.svd(P.M_star)
            >>> float(P.loss(U[:, :1] * s[:1].sqrt())) < 1e-25  # zero at the truth
            True
        """
        r = self.residual(X)
        if self.loss_kind == "l1":
            return r.abs().mean(-1)
        c = 0.25 if not isinstance(X, tuple) else 0.5
        return c * r.square().mean(-1)

    def relative_error(self, X) -> Tensor:
        """``‖product(X) − M*‖_F / ‖M*‖_F``: 0-dim (``(b,)`` batched).

        Example:
            >>> P = sensing(n=4, r=1, m=30, generator=0)
            >>> float(P.relative_error(torch.zeros(4, 1, dtype=torch.float64)))
            1.0
        """
        D = self.product(X) - self.M_star
        return torch.linalg.matrix_norm(D) / torch.linalg.matrix_norm(self.M_star)

    def init(self, kind: str = "small", *, rank: int | None = None, scale: float = 1e-3,
             generator: GeneratorLike = None) -> Tensor | tuple[Tensor, Tensor]:
        """Initial factor(s) of width ``rank`` (default: the true rank).

        * ``"small"``: ``scale · G / √n`` with ``G`` standard Gaussian (small random init);
        * ``"spectral"``: top-``rank`` part of ``𝒜*(y) = (1/m) Σ y_i A_i`` (spectral init).

        ``generator=None`` draws from torch's default generator (the construction rule, docs/index.md).

        Returns:
            ``X (n, rank)`` (symmetric) or ``(L (n1, rank), R (n2, rank))``.

        Example:
            >>> P = sensing(n=4, r=1, m=30, generator=0)
            >>> X = P.init("small", rank=3, scale=1e-3, generator=1)
            >>> X.shape, float(X.norm()) < 1e-2
            (torch.Size([4, 3]), True)
            >>> L, R = sensing(n=4, r=1, m=30, symmetric=False, generator=0).init("spectral")
            >>> L.shape, R.shape
            (torch.Size([4, 1]), torch.Size([4, 1]))
        """
        return _initial_factors(kind, shape=self.shape, rank=self.rank if rank is None else rank, like=self.M_star,
                                symmetric=self.symmetric, scale=scale, generator=generator,
                                spectral_source=lambda: torch.einsum("m,mij->ij", self.y, self.A) / self.m)


def _initial_factors(kind: str, *, shape: tuple[int, int], rank: int, like: Tensor, symmetric: bool, scale: float,
                     generator: GeneratorLike, spectral_source) -> Tensor | tuple[Tensor, Tensor]:
    """The two initialisations every matrix problem offers: ``"small"`` (:func:`small_factors`) or
    ``"spectral"`` (:func:`spectral_factors` of the matrix ``spectral_source()`` builds)."""
    if kind == "small":
        return small_factors(shape, rank, like=like, scale=scale, symmetric=symmetric, generator=generator)
    if kind == "spectral":
        return spectral_factors(spectral_source(), rank, symmetric)
    raise ValueError(f"kind must be 'small' or 'spectral', got {kind!r}")


def small_factors(shape: tuple[int, int], k: int, *, like: Tensor, scale: float = 1e-3, symmetric: bool = True,
                  generator: GeneratorLike = None) -> Tensor | tuple[Tensor, Tensor]:
    """``scale · G / √n`` with ``G`` standard Gaussian: ``X (n, k)`` or ``(L (n1, k), R (n2, k))``,
    in the dtype and on the device of ``like``.

    ``generator=None`` draws from torch's default generator (the construction rule, docs/index.md).

    Example:
        >>> L, R = small_factors((5, 3), 2, like=torch.zeros(5, 3), symmetric=False, generator=0)
        >>> L.shape, R.shape
        (torch.Size([5, 2]), torch.Size([3, 2]))
    """
    n1, n2 = shape
    check_rank(k, name="k (rank)")
    check_real(scale, "scale", at_least=0.0)
    check_float(like, "like")
    dt, dev = like.dtype, like.device
    g = construction_generator(generator)
    L = scale * gaussian((n1, k), generator=g, dtype=dt, device=dev) / n1**0.5
    if symmetric:
        return L
    return L, scale * gaussian((n2, k), generator=g, dtype=dt, device=dev) / n2**0.5


def spectral_factors(Y: Tensor, k: int, symmetric: bool) -> Tensor | tuple[Tensor, Tensor]:
    """Top-``k`` factors of a surrogate ``Y (n1, n2)`` of ``M*``: ``V√λ₊`` (symmetric) or ``(U√Σ, V√Σ)``.

    Example:
        >>> spectral_factors(torch.diag(torch.tensor([4.0, 1.0])), 1, True)
        tensor([[2.],
                [0.]])
    """
    check_floats({"Y": Y}, finite=True)
    if Y.ndim != 2:
        raise ValueError(f"Y must be a matrix (n1, n2), got shape {tuple(Y.shape)}")
    n1, n2 = Y.shape
    check_rank(k, (n1, n2), name="k (rank)", at_most_min=True)
    if symmetric:
        evals, evecs = torch.linalg.eigh((Y + Y.mT) / 2)
        top = evals[-k:].clamp_min(0)
        return evecs[:, -k:] * top.sqrt()
    U, S, Vh = torch.linalg.svd(Y)
    return U[:, :k] * S[:k].sqrt(), Vh[:k].mT * S[:k].sqrt()


def sensing(n: int, r: int, m: int, *, kappa: float = 1.0, n2: int | None = None, symmetric: bool = True,
            loss: str = "l2", outliers: float = 0.0, noise: str = "sparse", outlier_scale: float = 10.0,
            generator: GeneratorLike = None, dtype=torch.float64, device=None) -> MatrixSensing:
    """Build a Gaussian matrix-sensing problem.

    ``generator=None`` draws from torch's default generator (the construction rule, docs/index.md).

    Args:
        n, n2: matrix shape ``(n, n2)`` (``n2 = n`` by default; symmetric needs ``n2 = n``).
        r: true rank. m: number of measurements. kappa: condition number of ``M*``.
        loss: ``"l2"`` or ``"l1"``.
        outliers: fraction ``p ∈ [0, 1)`` of corrupted measurements (each independently with
            probability ``p``; the set is ``outlier_mask``), ``y_i = <A_i, M*> + s_i`` with
            ``noise="sparse"``: arbitrary large ``s_i = outlier_scale · std(y) · u_i``, ``u_i ~ U[-1, 1]``;
            ``noise="gaussian"``: ``s_i ~ N(0, (outlier_scale · std(y))²)``.
        generator: seeds ``M*``, the ``A_i`` and the outliers.

    Returns:
        a :class:`MatrixSensing` with ``A (m, n, n2)``, noiseless ``y (m,)``.

    Reference: T. Tong, C. Ma & Y. Chi (2021) (ill-conditioned ``M*``); J. Ma & S. Fattahi (2022) (outliers).

    Example:
        >>> P = sensing(n=5, r=2, m=40, kappa=10.0, outliers=0.2, generator=0)
        >>> torch.linalg.svdvals(P.M_star)[:2]  # linspace(1, 1/κ, r)
        tensor([1.0000, 0.1000], dtype=torch.float64)
        >>> bad = P.outlier_mask
        >>> torch.allclose(P.y[~bad], P.measure(P.M_star)[~bad]), bool((P.y[bad] != P.measure(P.M_star)[bad]).all())
        (True, True)
    """
    check_int(n, "n")
    check_int(m, "m")
    if symmetric and n2 not in (None, n):
        raise ValueError(f"symmetric sensing needs a square matrix, got n={n}, n2={n2}")
    if loss not in ("l2", "l1"):
        raise ValueError(f"loss must be 'l2' or 'l1', got {loss!r}")
    if not 0 <= outliers < 1:
        raise ValueError(f"outliers must be a fraction in [0, 1), got {outliers}")
    if noise not in ("sparse", "gaussian"):
        raise ValueError(f"noise must be 'sparse' or 'gaussian', got {noise!r}")
    check_real(outlier_scale, "outlier_scale", at_least=0.0)
    g = construction_generator(generator)
    M = ground_truth(n, r, kappa=kappa, n2=n2, symmetric=symmetric, generator=g, dtype=dtype, device=device)
    A = gaussian((m, n, n2 or n), generator=g, dtype=dtype, device=device)
    P = MatrixSensing(A=A, y=torch.zeros(m, dtype=dtype, device=device), M_star=M, rank=r, symmetric=symmetric, loss_kind=loss)
    P.y = P.measure(M)
    if outliers:
        sc = outlier_scale * float(P.y.std())
        mask = uniform((m,), generator=g, dtype=dtype, device=device) < outliers
        if noise == "sparse":
            s = sc * uniform((m,), low=-1.0, high=1.0, generator=g, dtype=dtype, device=device)
        else:
            s = sc * gaussian((m,), generator=g, dtype=dtype, device=device)
        P.y = P.y + torch.where(mask, s, torch.zeros_like(s))
        P.outlier_mask = mask
    return P
