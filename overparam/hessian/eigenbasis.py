"""A block-diagonal symmetric operator whose blocks are diagonal in a Kronecker eigenbasis: the
shape K-FAC, its damped inverse and EK-FAC share, with every spectral quantity (eigenvalues,
trace, Frobenius norm, log-determinant, inverse, eigenpairs) in closed form.

On a block's matrix ``M (out, d)`` the operator is ``rest·M + Q_G ((Q_Gᵀ M Q_A) ∘ (D − rest)) Q_Aᵀ``
with orthonormal ``Q_G (out, r_G)``, ``Q_A (d, r_A)``, eigenvalues ``D (r_G, r_A)`` and ``rest`` the
eigenvalue on the complement of a partial basis.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..backend import vec
from ..backend.checks import check_int, check_real
from ..backend.linalg import NotPositiveDefiniteError
from ._kfac_stats import Layer
from .lanczos import Eigen
from .operators import Operator

__all__ = ["EigenbasisOperator"]


class EigenbasisOperator(Operator):
    """Block-diagonal, each block diagonal in a Kronecker eigenbasis: on a block's matrix ``M (out, d)``,
    ``rest·M + Q_G ((Q_Gᵀ M Q_A) ∘ (D − rest)) Q_Aᵀ`` with orthonormal ``Q_G (out, r_G)``, ``Q_A (d, r_A)``,
    eigenvalues ``D (r_G, r_A)``, and ``rest`` the eigenvalue on the complement of the partial basis
    (none when ``r_G = out`` and ``r_A = d``). K-FAC's inverse, EK-FAC."""

    def __init__(self, layers: list[Layer], like, dtype, device, bases: list[tuple[Tensor, Tensor]], diags: list[Tensor],
                 rests: list[float]):
        self._layers, self.like, self.dtype, self.device = layers, tuple(like), dtype, device
        self._basis, self._diag, self._rest = bases, diags, rests

    def _bases(self) -> list[tuple[Tensor, Tensor]]:
        return self._basis

    def _diags(self) -> list[Tensor]:
        return self._diag

    def _rests(self) -> list[float]:
        return self._rest

    def _blocks(self):
        """``(layer, (Q_G, Q_A), D, rest, size of the complement)`` per block."""
        for lay, Q, D, rest in zip(self._layers, self._bases(), self._diags(), self._rests()):
            yield lay, Q, D, rest, lay.out * lay.d - D.numel()

    def _mm(self, V: vec.Vec) -> vec.Vec:
        out: list = [None] * len(self.like)
        for lay, (QG, QA), D, rest, count in self._blocks():
            M = lay.to_matrix(V)
            P = QG.mT @ M @ QA
            if count == 0 or rest == 0:
                lay.from_matrix(QG @ (P * D) @ QA.mT, out)
            else:
                lay.from_matrix(rest * M + QG @ (P * (D - rest)) @ QA.mT, out)
        return tuple(out)

    def _mv(self, v: vec.Vec) -> vec.Vec:
        return tuple(t[0] for t in self._mm(tuple(t[None] for t in v)))

    # -- closed forms --------------------------------------------------------------------------
    def _values(self, blocks) -> Tensor:
        return torch.cat([torch.cat([D.reshape(-1), D.new_full((count,), rest)]) for _, _, D, rest, count in blocks])

    def eigenvalues(self) -> Tensor:
        """All ``n`` eigenvalues, descending ``(n,)``.

        Example:
            >>> from overparam.hessian import kfac
            >>> net = torch.nn.Linear(3, 2).double()
            >>> K = kfac(net, "mse", (torch.randn(16, 3, dtype=torch.float64), torch.randn(16, 2, dtype=torch.float64)))
            >>> torch.allclose(K.eigenvalues(), torch.linalg.eigvalsh(K.to_dense()).flip(0))
            True
        """
        return self._values(self._blocks()).sort(descending=True).values

    def trace(self) -> Tensor:
        """``tr K`` (0-dim), in closed form from the eigenvalues.

        Example:
            >>> from overparam.hessian import kfac
            >>> net = torch.nn.Linear(3, 2).double()
            >>> K = kfac(net, "mse", (torch.randn(16, 3, dtype=torch.float64), torch.randn(16, 2, dtype=torch.float64)))
            >>> torch.allclose(EigenbasisOperator.trace(K), K.to_dense().trace())
            True
        """
        return sum(D.sum() + count * rest for _, _, D, rest, count in self._blocks())

    def frobenius_norm(self) -> Tensor:
        """``‖K‖_F`` (0-dim), in closed form from the eigenvalues.

        Example:
            >>> from overparam.hessian import kfac
            >>> net = torch.nn.Linear(3, 2).double()
            >>> K = kfac(net, "mse", (torch.randn(16, 3, dtype=torch.float64), torch.randn(16, 2, dtype=torch.float64)))
            >>> torch.allclose(EigenbasisOperator.frobenius_norm(K), K.to_dense().norm())
            True
        """
        return torch.stack([D.square().sum() + count * rest ** 2 for _, _, D, rest, count in self._blocks()]).sum().sqrt()

    def _damped(self, damping: float) -> tuple[list[Tensor], list[float]]:
        check_real(damping, "damping", at_least=0.0, finite=True)
        diags, rests, low = [], [], float("inf")
        for _, _, D, rest, count in self._blocks():
            diags.append(D + damping)
            rests.append(rest + damping)
            low = min(low, float(diags[-1].min()), rest + damping if count else float("inf"))
        if low <= 0:
            raise NotPositiveDefiniteError(f"K + damping·I is singular or indefinite (smallest eigenvalue {low:.3e}); "
                                           "pass damping > 0")
        return diags, rests

    def logdet(self, damping: float = 0.0) -> Tensor:
        """``log det(K + damping·I)`` (0-dim); a ``NotPositiveDefiniteError`` when that matrix is singular.

        Example:
            >>> from overparam.hessian import kfac
            >>> net = torch.nn.Linear(3, 2).double()
            >>> K = kfac(net, "mse", (torch.randn(16, 3, dtype=torch.float64), torch.randn(16, 2, dtype=torch.float64)))
            >>> torch.allclose(K.logdet(0.1), torch.logdet(K.to_dense() + 0.1 * torch.eye(K.n, dtype=torch.float64)))
            True
        """
        diags, rests = self._damped(damping)
        return sum(D.log().sum() + b[4] * math.log(r) if b[4] else D.log().sum()
                   for D, r, b in zip(diags, rests, self._blocks()))

    def inverse(self, damping: float = 0.0) -> EigenbasisOperator:
        """``(K + damping·I)⁻¹`` as an operator, exact (eigenvalues ``1/(λ + damping)``); a
        ``NotPositiveDefiniteError`` when ``K + damping·I`` is singular.

        Example:
            >>> from overparam.hessian import kfac
            >>> net = torch.nn.Linear(3, 2).double()
            >>> K = kfac(net, "mse", (torch.randn(16, 3, dtype=torch.float64), torch.randn(16, 2, dtype=torch.float64)))
            >>> I = torch.eye(K.n, dtype=torch.float64)
            >>> torch.allclose(K.inverse(0.1).to_dense() @ (K.to_dense() + 0.1 * I), I)
            True
        """
        diags, rests = self._damped(damping)
        return EigenbasisOperator(self._layers, self.like, self.dtype, self.device, self._bases(),
                                  [1.0 / D for D in diags], [1.0 / r for r in rests])

    def eigh(self, k: int | None = None) -> Eigen:
        """The ``k`` largest eigenpairs (all ``n`` for ``k=None``; ``n²`` memory) in closed form, as an
        :class:`~overparam.hessian.Eigen` (values descending, vectors parameter-shaped with entries
        ``(k, *shape)``, residuals ``‖K x − λ x‖`` from one product).

        Example:
            >>> from overparam.hessian import kfac
            >>> net = torch.nn.Linear(3, 2).double()
            >>> K = kfac(net, "mse", (torch.randn(16, 3, dtype=torch.float64), torch.randn(16, 2, dtype=torch.float64)))
            >>> top = K.eigh(2)
            >>> torch.allclose(top.values, torch.linalg.eigvalsh(K.to_dense())[-2:].flip(0)), bool(top.residuals.max() < 1e-10)
            (True, True)
        """
        k = self.n if k is None else check_int(k, "k")
        if k > self.n:
            raise ValueError(f"k must be at most n={self.n}, got {k}")
        blocks = list(self._blocks())
        values, idx = self._values(blocks).topk(k)
        starts = torch.tensor([0] + [b[2].numel() + b[4] for b in blocks]).cumsum(0)
        if any(b[4] and bool(((idx >= s + b[2].numel()) & (idx < e)).any()) for b, s, e in zip(blocks, starts, starts[1:])):
            blocks = [(lay, (_complete(QG), _complete(QA)), _pad(D, lay.out, lay.d, rest), rest, 0)
                      for lay, (QG, QA), D, rest, _ in blocks]        # a complement eigenvector is wanted
            values, idx = self._values(blocks).topk(k)
        entries = [torch.zeros(k, *s, dtype=self.dtype, device=self.device) for s in self.like]
        start = 0
        for lay, (QG, QA), D, _, count in blocks:
            pos = ((idx >= start) & (idx < start + D.numel())).nonzero().squeeze(1)
            o, j = (idx[pos] - start).div(D.shape[1], rounding_mode="floor"), (idx[pos] - start) % D.shape[1]
            tmp: list = [None] * len(self.like)
            lay.from_matrix(QG[:, o].mT[:, :, None] * QA[:, j].mT[:, None, :], tmp)
            for i, _ in lay.slots:
                entries[i][pos] = tmp[i]
            start += D.numel() + count
        vectors = tuple(entries)
        resid = vec.flatten(vec.sub(self._mm(vectors), tuple(values.reshape(-1, *[1] * len(s)) * e
                                                               for s, e in zip(self.like, vectors))), batch=True)
        return Eigen(values, vectors, resid.norm(dim=1), n_matvecs=k)


def _complete(Q: Tensor) -> Tensor:
    """``Q (m, r)`` with orthonormal columns, extended to an orthonormal basis ``(m, m)``."""
    if Q.shape[1] == Q.shape[0]:
        return Q
    return torch.cat([Q, torch.linalg.qr(Q, mode="complete").Q[:, Q.shape[1]:]], dim=1)


def _pad(D: Tensor, rows: int, cols: int, rest: float) -> Tensor:
    out = D.new_full((rows, cols), rest)
    out[: D.shape[0], : D.shape[1]] = D
    return out
