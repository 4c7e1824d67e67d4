"""Seeded test cases: matrices with a prescribed spectrum and small models, all built from
an explicit generator so that a failing case can be rebuilt from its seed."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ..backend.checks import check_int, check_rank, check_real
from ..backend.random import GeneratorLike, construction_generator, gaussian, orthonormal

__all__ = ["random_orthogonal", "symmetric_with_spectrum", "ill_conditioned", "tanh_mlp"]


def random_orthogonal(n: int, *, generator: GeneratorLike = None, dtype=torch.float64) -> Tensor:
    """A Haar-random orthogonal ``(n, n)`` matrix: :func:`overparam.backend.random.orthonormal` with ``k = n``.

    ``generator=None`` draws from torch's default generator (the construction rule, docs/index.md).

    Example:
        >>> Q = random_orthogonal(4, generator=0)
        >>> Q.shape, torch.allclose(Q.T @ Q, torch.eye(4, dtype=torch.float64))
        (torch.Size([4, 4]), True)
        >>> torch.equal(Q, random_orthogonal(4, generator=0))  # rebuilt from its seed
        True
    """
    return orthonormal(n, n, generator=generator, dtype=dtype)


def symmetric_with_spectrum(eigenvalues: Sequence[float] | Tensor, *, generator: GeneratorLike = None,
                            dtype=torch.float64) -> Tensor:
    """``Q diag(λ) Qᵀ`` with a random orthogonal ``Q``: a symmetric matrix with known eigenvalues.

    ``generator=None`` draws from torch's default generator (the construction rule, docs/index.md).

    Example:
        >>> A = symmetric_with_spectrum([3.0, -1.0, 0.5], generator=0)
        >>> torch.linalg.eigvalsh(A)
        tensor([-1.0000,  0.5000,  3.0000], dtype=torch.float64)
    """
    lam = torch.as_tensor(eigenvalues, dtype=dtype)
    Q = random_orthogonal(lam.numel(), generator=generator, dtype=dtype)
    return (Q * lam) @ Q.mT


def ill_conditioned(n: int, k: int, cond: float, *, generator: GeneratorLike = None, dtype=torch.float64) -> Tensor:
    """An ``(n, k)`` matrix with singular values log-spaced from 1 to ``1/cond``.

    ``generator=None`` draws from torch's default generator (the construction rule, docs/index.md).

    Example:
        >>> A = ill_conditioned(5, 3, 100.0, generator=0)
        >>> A.shape
        torch.Size([5, 3])
        >>> torch.linalg.svdvals(A)
        tensor([1.0000, 0.1000, 0.0100], dtype=torch.float64)
    """
    check_int(n, "n")
    check_rank(k, (n,), name="k", at_most_min=True)
    check_real(cond, "cond", above=0.0)
    g = construction_generator(generator)
    U = random_orthogonal(n, generator=g, dtype=dtype)[:, :k]
    V = random_orthogonal(k, generator=g, dtype=dtype)
    s = torch.logspace(0, -torch.log10(torch.tensor(float(cond))).item(), k, dtype=dtype)
    return (U * s) @ V.mT


def tanh_mlp(sizes: Sequence[int], *, generator: GeneratorLike = None, dtype=torch.float64) -> nn.Sequential:
    """A tanh MLP ``Linear → tanh → … → Linear`` with weights drawn from ``generator``.

    ``sizes = (d_0, ..., d_L)`` gives ``L`` linear layers mapping ``(batch, d_0)`` to ``(batch, d_L)``;
    weights are ``N(0, 1/fan_in)``, biases ``N(0, 0.01)``.
    ``generator=None`` draws from torch's default generator (the construction rule, docs/index.md).

    Example:
        >>> net = tanh_mlp([3, 5, 2], generator=0)
        >>> [type(m).__name__ for m in net], net[0].weight.shape, net[0].weight.dtype
        (['Linear', 'Tanh', 'Linear'], torch.Size([5, 3]), torch.float64)
        >>> net(torch.zeros(4, 3, dtype=torch.float64)).shape
        torch.Size([4, 2])
    """
    g = construction_generator(generator)
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        lin = nn.utils.skip_init(nn.Linear, a, b, dtype=dtype)  # no draw from the global RNG
        with torch.no_grad():
            lin.weight.copy_(gaussian((b, a), generator=g, dtype=dtype) / a**0.5)
            lin.bias.copy_(gaussian((b,), generator=g, dtype=dtype) * 0.1)
        layers.append(lin)
        if i < len(sizes) - 2:
            layers.append(nn.Tanh())
    return nn.Sequential(*layers)
