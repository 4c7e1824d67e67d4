"""Deep linear products ``W = W_N ⋯ W_1`` (Arora, Cohen & Hazan 2018, "On the Optimization of
Deep Networks: Implicit Acceleration by Overparameterization").

* :func:`init_balanced_deep`: factors with ``W_{j+1}ᵀ W_{j+1} = W_j W_jᵀ`` whose product is a
  given (or random) end-to-end matrix;
* :class:`DeepLinear`: a module holding ``W_1 … W_N`` (any widths) with ``forward(x) = x Wᵀ``;
* :func:`depth_preconditioner`: ``Σ_j (WWᵀ)^{(j−1)/N} G (WᵀW)^{(N−j)/N}``, the end-to-end
  update that GD on balanced factors performs (to first order in the step size).

``state_dict`` keys of :class:`DeepLinear`: ``factors.0 (d_1, d_0)``, ..., ``factors.{N-1}``.

Example:
    >>> import torch
    >>> net = DeepLinear([4, 6, 6, 3], scale=0.5, generator=0, dtype=torch.float64)
    >>> net(torch.zeros(2, 4, dtype=torch.float64)).shape
    torch.Size([2, 3])
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ..backend.checks import check_float
from ..backend.random import GeneratorLike, construction_generator, gaussian
from ._checks import check_finite, check_same_dtype
from .functional import product

__all__ = ["init_balanced_deep", "DeepLinear", "depth_preconditioner", "psd_power"]


def _check_dims(dims: Sequence[int]) -> list[int]:
    dims = list(dims)
    if len(dims) < 2 or any(isinstance(d, bool) or not isinstance(d, int) or d < 1 for d in dims):
        raise ValueError(f"dims must be >= 2 positive ints [d_0, ..., d_N], got {dims!r}")
    return dims


def init_balanced_deep(dims: Sequence[int], *, end_to_end: Tensor | None = None, scale: float = 1e-2,
                       generator: GeneratorLike = None, dtype: torch.dtype | None = None, device=None) -> list[Tensor]:
    """Balanced factors ``[W_1 (d_1, d_0), ..., W_N (d_N, d_{N-1})]`` (Arora et al.'s procedure).

    Take ``A = end_to_end`` (default: ``scale · G / √d_0`` with ``G`` Gaussian ``(d_N, d_0)``),
    its SVD ``A = U Σ Vᵀ`` truncated to ``q = min(dims)``, and set ``W_N ≃ U Σ^{1/N}``,
    ``W_j ≃ Σ^{1/N}`` (1 < j < N), ``W_1 ≃ Σ^{1/N} Vᵀ``, where ``≃`` pads with zeros to the widths.
    Then ``W_{j+1}ᵀW_{j+1} = W_jW_jᵀ`` and the product is the rank-``q`` truncation of ``A``.

    ``generator=None`` draws from torch's default generator (the construction rule, docs/index.md).

    Reference: S. Arora, N. Cohen & E. Hazan, "On the Optimization of Deep Networks: Implicit Acceleration by
        Overparameterization" (ICML 2018).

    Example:
        >>> Ws = init_balanced_deep([3, 5, 4], scale=1.0, generator=0, dtype=torch.float64)
        >>> bool(torch.allclose(Ws[1].T @ Ws[1], Ws[0] @ Ws[0].T))
        True
    """
    dims = _check_dims(dims)
    N = len(dims) - 1
    if end_to_end is None:
        if not scale > 0:
            raise ValueError(f"scale must be > 0, got {scale}")
        g = construction_generator(generator)
        A = scale * gaussian((dims[-1], dims[0]), generator=g, dtype=dtype, device=device) / dims[0] ** 0.5
    else:
        A = end_to_end
        if tuple(A.shape) != (dims[-1], dims[0]):
            raise ValueError(f"end_to_end must have shape {(dims[-1], dims[0])}, got {tuple(A.shape)}")
    U, S, Vh = torch.linalg.svd(A, full_matrices=False)
    q = min(dims)
    root = S[:q] ** (1.0 / N)
    out = []
    for j in range(1, N + 1):
        Wj = A.new_zeros(dims[j], dims[j - 1])
        if N == 1:
            core = (U[:, :q] * S[:q]) @ Vh[:q]
        elif j == N:
            core = U[:, :q] * root
        elif j == 1:
            core = root[:, None] * Vh[:q]
        else:
            core = torch.diag(root)
        Wj[: core.shape[0], : core.shape[1]] = core
        out.append(Wj)
    return out


class DeepLinear(nn.Module):
    """A depth-``N`` linear network ``x ↦ x (W_N ⋯ W_1)ᵀ`` with balanced init.

    ``generator=None`` draws from torch's default generator (the construction rule, docs/index.md).

    Args:
        dims: ``[d_0 (input), d_1, ..., d_N (output)]``; hidden widths may differ.
        end_to_end: optional ``(d_N, d_0)`` matrix the product starts at (else random, size ``scale``).
        scale, generator, dtype, device: see :func:`init_balanced_deep`.

    Reference: S. Arora, N. Cohen & E. Hazan, "On the Optimization of Deep Networks: Implicit Acceleration by
        Overparameterization" (ICML 2018).

    Example:
        >>> net = DeepLinear([3, 8, 2], scale=0.1, generator=0)
        >>> net.weight.shape
        torch.Size([2, 3])
    """

    def __init__(self, dims: Sequence[int], *, end_to_end: Tensor | None = None, scale: float = 1e-2,
                 generator: GeneratorLike = None, dtype: torch.dtype | None = None, device=None) -> None:
        super().__init__()
        self.dims = _check_dims(dims)
        Ws = init_balanced_deep(self.dims, end_to_end=end_to_end, scale=scale, generator=generator, dtype=dtype,
                                device=device)
        self.factors = nn.ParameterList([nn.Parameter(W) for W in Ws])

    @property
    def depth(self) -> int:
        """The number ``N`` of factors (``len(dims) - 1``).

        Example:
            >>> DeepLinear([3, 8, 8, 2], generator=0).depth
            3
        """
        return len(self.factors)

    @property
    def weight(self) -> Tensor:
        """The end-to-end ``(d_N, d_0)`` matrix ``W_N ⋯ W_1``.

        Example:
            >>> W = torch.tensor([[1.0, 2.0, 3.0], [0.0, 1.0, -1.0]], dtype=torch.float64)
            >>> net = DeepLinear([3, 4, 2], end_to_end=W, generator=0)
            >>> torch.allclose(net.weight, W)  # a balanced factorization of W
            True
        """
        return product(list(self.factors))

    def forward(self, x: Tensor) -> Tensor:
        """``x (..., d_0)`` → ``x W_1ᵀ ⋯ W_Nᵀ`` of shape ``(..., d_N)`` (factor by factor).

        Reference: S. Arora, N. Cohen & E. Hazan, "On the Optimization of Deep Networks: Implicit
        Acceleration by Overparameterization" (2018).

        Example:
            >>> net = DeepLinear([3, 8, 2], scale=0.1, generator=0)
            >>> x = torch.ones(5, 3)
            >>> net(x).shape, torch.allclose(net(x), x @ net.weight.T, atol=1e-7)
            (torch.Size([5, 2]), True)
        """
        for W in self.factors:
            x = x @ W.mT
        return x

    def extra_repr(self) -> str:
        return f"dims={self.dims}"


def psd_power(M: Tensor, p: float) -> Tensor:
    """``M^p`` of a symmetric PSD ``M (n, n)`` by eigendecomposition (eigenvalues clipped at 0).

    Example:
        >>> psd_power(torch.diag(torch.tensor([4., 9.])), 0.5)
        tensor([[2., 0.],
                [0., 3.]])
    """
    check_float(M, "M")
    if M.ndim != 2 or M.shape[0] != M.shape[1]:
        raise ValueError(f"M must be a square matrix (n, n), got shape {tuple(M.shape)}")
    check_finite(M, "M")
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not math.isfinite(p):
        raise ValueError(f"p must be a finite number, got {p!r}")
    if p == 0:
        return torch.eye(M.shape[-1], dtype=M.dtype, device=M.device)
    evals, evecs = torch.linalg.eigh((M + M.mT) / 2)
    return (evecs * evals.clamp_min(0) ** p) @ evecs.mT


def depth_preconditioner(W: Tensor, grad: Tensor, depth: int) -> Tensor:
    """``Σ_{j=1}^{N} (WWᵀ)^{(j−1)/N} ∇ (WᵀW)^{(N−j)/N}`` for ``W, ∇ (m, n)``.

    GD with step ``η`` on balanced factors of depth ``N`` moves the end-to-end matrix by
    ``−η`` times this (Arora et al. 2018, Theorem 1), up to ``O(η²)``.

    Reference: S. Arora, N. Cohen & E. Hazan, "On the Optimization of Deep Networks: Implicit Acceleration by
        Overparameterization" (ICML 2018).

    Example:
        >>> W = torch.eye(2, dtype=torch.float64) * 4
        >>> depth_preconditioner(W, torch.ones(2, 2, dtype=torch.float64), 2)[0, 0]
        tensor(8., dtype=torch.float64)
    """
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 1:
        raise ValueError(f"depth must be an int >= 1, got {depth!r}")
    check_float(W, "W")
    check_float(grad, "grad")
    check_same_dtype(W, grad, ("W", "grad"))
    check_finite(W, "W")
    if W.shape != grad.shape:
        raise ValueError(f"W {tuple(W.shape)} and grad {tuple(grad.shape)} must have the same shape")
    left, right = W @ W.mT, W.mT @ W
    out = torch.zeros_like(grad)
    for j in range(1, depth + 1):
        out = out + psd_power(left, (j - 1) / depth) @ grad @ psd_power(right, (depth - j) / depth)
    return out
