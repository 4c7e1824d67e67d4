"""Element-wise (Hadamard) and Kronecker over-parameterizations of a weight.

Each module's ``forward()`` returns the dense weight it represents:

* :class:`Hadamard`: ``w = u_1 ⊙ ⋯ ⊙ u_N`` (depth ``N``; ``N = 2`` is ``u ⊙ v``);
  keys ``factors.0`` ... ``factors.{N-1}``, each of the weight's shape.
* :class:`HadamardDifference`: ``w = u^{⊙N} − v^{⊙N}`` (``N = 2``: ``u⊙u − v⊙v``, the sparse
  recovery parameterization); keys ``u``, ``v``.
* :class:`LowRankHadamard`: ``W = (L₁R₁ᵀ) ⊙ (L₂R₂ᵀ)`` (FedPara / LoHa), rank up to ``k²`` with
  ``2k(m+n)`` parameters; keys ``left1, right1, left2, right2``.
* :class:`Kronecker`: ``W = C ⊗ (L Rᵀ)`` (LoKr); keys ``kron (a1, a2)``, ``left (b1, k)``,
  ``right (b2, k)`` with ``(m, n) = (a1·b1, a2·b2)``.

Example:
    >>> import torch
    >>> w = torch.tensor([1.0, -2.0, 0.0])
    >>> bool(torch.allclose(HadamardDifference(w.shape, weight=w)(), w))
    True
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ..backend.random import GeneratorLike, construction_generator, gaussian
from .functional import _check_scale, _shape2, check_rank

__all__ = ["Hadamard", "HadamardDifference", "LowRankHadamard", "Kronecker", "kron_split"]


def _check_depth(depth: int) -> int:
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 1:
        raise ValueError(f"depth must be an int >= 1, got {depth!r}")
    return depth


def _check_weight(weight: Tensor | None, shape) -> None:
    if weight is not None and tuple(weight.shape) != tuple(shape):
        raise ValueError(f"weight must have shape {tuple(shape)}, got {tuple(weight.shape)}")


class Hadamard(nn.Module):
    """``w = u_1 ⊙ ⋯ ⊙ u_N`` of any shape.

    ``generator=None`` draws from torch's default generator (the construction rule, docs/index.md).

    Args:
        shape: the weight's shape.
        depth: ``N >= 1``.
        weight: factor this weight exactly (``u_1 = sign(w)|w|^{1/N}``, others ``|w|^{1/N}``).
        scale: without ``weight``, every factor starts at the constant ``scale`` (``init="constant"``)
            or at ``scale ·`` Gaussian (``init="small"``).

    Reference: P. D. Hoff, "Lasso, fractional norm and structured sparse estimation using a Hadamard product
        parametrization" (Comput. Stat. Data Anal. 2017)

    Example:
        >>> h = Hadamard((2, 3), depth=3, scale=0.5)
        >>> float(h()[0, 0].detach())
        0.125
    """

    def __init__(self, shape, *, depth: int = 2, weight: Tensor | None = None, init: str = "constant",
                 scale: float = 1e-2, generator: GeneratorLike = None, dtype: torch.dtype | None = None,
                 device=None) -> None:
        super().__init__()
        self.shape, self.depth = tuple(shape), _check_depth(depth)
        _check_weight(weight, self.shape)
        if weight is None:
            _check_scale(scale)       # scale 0 would start every factor at 0, a point GD never leaves
        if weight is not None:
            root = weight.detach().abs() ** (1.0 / depth)
            fs = [torch.sign(weight.detach()) * root] + [root.clone() for _ in range(depth - 1)]
        elif init == "constant":
            fs = [torch.full(self.shape, float(scale), dtype=dtype, device=device) for _ in range(depth)]
        elif init == "small":
            g = construction_generator(generator)
            fs = [scale * gaussian(self.shape, generator=g, dtype=dtype, device=device) for _ in range(depth)]
        else:
            raise ValueError(f"init must be 'constant' or 'small', got {init!r}")
        self.factors = nn.ParameterList([nn.Parameter(f) for f in fs])

    def forward(self) -> Tensor:
        """The weight ``u_1 ⊙ ⋯ ⊙ u_N`` (of ``shape``).

        Example:
            >>> w = torch.tensor([-8.0, 0.0, 27.0])
            >>> h = Hadamard((3,), depth=3, weight=w)
            >>> torch.allclose(h(), w), h.factors[1].tolist()  # u_2 = |w|^(1/3)
            (True, [2.0, 0.0, 3.0])
        """
        w = self.factors[0]
        for f in list(self.factors)[1:]:
            w = w * f
        return w


class HadamardDifference(nn.Module):
    """``w = u^{⊙N} − v^{⊙N}`` (``N = 2`` by default), e.g. for sparse regression.

    Args:
        shape: the weight's shape. depth: ``N >= 1``.
        scale: ``α``: without ``weight``, ``u = v = α`` (so ``w = 0``); with ``weight``,
            ``u = (w₊ + α^N)^{1/N}``, ``v = (w₋ + α^N)^{1/N}`` (exact, and no zero entry).

    Reference: T. Vaškevičius, V. Kanade & P. Rebeschini, "Implicit Regularization for Optimal Sparse Recovery"
        (NeurIPS 2019) (the u⊙u − v⊙v parameterization).

    Example:
        >>> float(HadamardDifference((3,), scale=0.1)().detach().abs().max())
        0.0
    """

    def __init__(self, shape, *, depth: int = 2, weight: Tensor | None = None, scale: float = 1e-2,
                 dtype: torch.dtype | None = None, device=None) -> None:
        super().__init__()
        self.shape, self.depth = tuple(shape), _check_depth(depth)
        _check_weight(weight, self.shape)
        if not scale > 0:
            raise ValueError(f"scale must be > 0, got {scale}")
        if weight is None:
            u = torch.full(self.shape, float(scale), dtype=dtype, device=device)
            v = u.clone()
        else:
            w, a = weight.detach(), float(scale) ** depth
            u, v = (w.clamp_min(0) + a) ** (1.0 / depth), ((-w).clamp_min(0) + a) ** (1.0 / depth)
        self.u, self.v = nn.Parameter(u), nn.Parameter(v)

    def forward(self) -> Tensor:
        """The weight ``u^{⊙N} − v^{⊙N}`` (of ``shape``).

        Reference: the ``β = u ⊙ u − v ⊙ v`` parameterization of sparse regression (T. Vaškevičius,
        V. Kanade & P. Rebeschini, "Implicit Regularization for Optimal Sparse Recovery", 2019; see
        also "Sparse linear regression: a new parameterization with benign overfitting").

        Example:
            >>> w = torch.tensor([1.5, 0.0, -2.0], dtype=torch.float64)
            >>> h = HadamardDifference((3,), weight=w, scale=0.1)
            >>> torch.allclose(h(), w), bool((h.u > 0).all() and (h.v > 0).all())
            (True, True)
        """
        return self.u**self.depth - self.v**self.depth


class LowRankHadamard(nn.Module):
    """``W (m, n) = (L₁R₁ᵀ) ⊙ (L₂R₂ᵀ)`` with ``L_i (m, k)``, ``R_i (n, k)`` (FedPara, LoHa).

    ``generator=None`` draws from torch's default generator (the construction rule, docs/index.md).

    Args:
        shape: ``(m, n)``. rank: ``1 <= k <= min(m, n)``; the product has rank up to ``k²``.
        scale: factors start at ``scale ·`` Gaussian.
        zero_init: start ``L₂ = 0`` so that ``W = 0`` (the LoHa adapter init).

    Reference: N. Hyeon-Woo, M. Ye-Bin & T.-H. Oh, "FedPara: Low-Rank Hadamard Product for Communication-Efficient
        Federated Learning" (ICLR 2022); LoHa (LyCORIS).

    Example:
        >>> W = LowRankHadamard((9, 9), rank=3, scale=1.0, generator=0, dtype=torch.float64)()
        >>> int(torch.linalg.matrix_rank(W))
        9
    """

    def __init__(self, shape: tuple[int, int], rank: int, *, scale: float = 1e-1, zero_init: bool = False,
                 generator: GeneratorLike = None, dtype: torch.dtype | None = None, device=None) -> None:
        super().__init__()
        self.shape = _shape2(tuple(shape))
        self.rank = check_rank(rank, self.shape, at_most_min=True)
        _check_scale(scale)
        g = construction_generator(generator)
        m, n = self.shape

        def draw(rows):
            return nn.Parameter(scale * gaussian((rows, rank), generator=g, dtype=dtype, device=device))

        self.left1, self.right1, self.left2, self.right2 = draw(m), draw(n), draw(m), draw(n)
        if zero_init:
            with torch.no_grad():
                self.left2.zero_()

    def forward(self) -> Tensor:
        """The ``(m, n)`` weight ``(L₁R₁ᵀ) ⊙ (L₂R₂ᵀ)``.

        Reference: N. Hyeon-Woo, M. Ye-Bin & T.-H. Oh, "FedPara: Low-Rank Hadamard Product for
        Communication-Efficient Federated Learning" (2022).

        Example:
            >>> m = LowRankHadamard((4, 5), rank=2, generator=0)
            >>> torch.equal(m(), (m.left1 @ m.right1.T) * (m.left2 @ m.right2.T))
            True
            >>> float(LowRankHadamard((4, 5), rank=2, zero_init=True, generator=0)().detach().abs().max())
            0.0
        """
        return (self.left1 @ self.right1.mT) * (self.left2 @ self.right2.mT)


def kron_split(n: int, factor: int = -1) -> tuple[int, int]:
    """Split ``n = a · b`` with ``a <= b``: ``a`` the largest divisor of ``n`` that is ``<= √n``
    (and ``<= factor`` when ``factor >= 1``; ``factor <= 0`` means no cap).

    Example:
        >>> kron_split(12), kron_split(12, factor=2), kron_split(12, factor=5)
        ((3, 4), (2, 6), (3, 4))
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be an int >= 1, got {n!r}")
    if isinstance(factor, bool) or not isinstance(factor, int):
        raise ValueError(f"factor must be an int (<= 0: no cap), got {factor!r}")
    cap = math.isqrt(n) if factor <= 0 else min(factor, math.isqrt(n))
    a = max(d for d in range(1, cap + 1) if n % d == 0)
    return a, n // a


class Kronecker(nn.Module):
    """``W (m, n) = C ⊗ (L Rᵀ)`` with ``C (a1, a2)``, ``L (b1, k)``, ``R (b2, k)`` (LoKr).

    ``generator=None`` draws from torch's default generator (the construction rule, docs/index.md).

    Args:
        shape: ``(m, n)``; ``m = a1·b1`` and ``n = a2·b2`` by :func:`kron_split` with ``factor``.
        rank: ``1 <= k <= min(b1, b2)`` (``L Rᵀ`` has no higher rank).
        zero_init: start ``L = 0`` so that ``W = 0`` (adapter init).

    Reference: LoKr: S.-Y. Yeh et al., "Navigating Text-To-Image Customization: From LyCORIS Fine-Tuning to Model
        Evaluation" (ICLR 2024).

    Example:
        >>> Kronecker((12, 8), rank=2, generator=0)().shape
        torch.Size([12, 8])
    """

    def __init__(self, shape: tuple[int, int], rank: int, *, factor: int = -1, scale: float = 1e-1,
                 zero_init: bool = False, generator: GeneratorLike = None, dtype: torch.dtype | None = None,
                 device=None) -> None:
        super().__init__()
        self.shape = _shape2(tuple(shape))
        _check_scale(scale)
        (a1, b1), (a2, b2) = kron_split(self.shape[0], factor), kron_split(self.shape[1], factor)
        self.rank = check_rank(rank, (b1, b2), at_most_min=True)
        g = construction_generator(generator)
        self.kron = nn.Parameter(scale * gaussian((a1, a2), generator=g, dtype=dtype, device=device))
        self.left = nn.Parameter(scale * gaussian((b1, rank), generator=g, dtype=dtype, device=device))
        self.right = nn.Parameter(scale * gaussian((b2, rank), generator=g, dtype=dtype, device=device))
        if zero_init:
            with torch.no_grad():
                self.left.zero_()

    def forward(self) -> Tensor:
        """The ``(m, n)`` weight ``C ⊗ (L Rᵀ)`` (``torch.kron``).

        Reference: LoKr, S.-Y. Yeh et al., "Navigating Text-To-Image Customization: From LyCORIS
        Fine-Tuning to Model Evaluation" (2024).

        Example:
            >>> m = Kronecker((6, 4), rank=1, generator=0)  # C (2, 2), L (3, 1), R (2, 1)
            >>> W = m()
            >>> W.shape, torch.equal(W[3:, 2:], m.kron[1, 1] * (m.left @ m.right.T))  # block (1, 1)
            (torch.Size([6, 4]), True)
        """
        return torch.kron(self.kron, self.left @ self.right.mT)
