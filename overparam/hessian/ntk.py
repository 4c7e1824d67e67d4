"""The empirical neural tangent kernel ``K = J Jᵀ`` (``m × m``, on the outputs of all samples)
as a symmetric operator, so every solver of :mod:`overparam.hessian` applies (its top
eigenvalues by :func:`~overparam.hessian.lanczos`, its trace by Hutch++, solves by CG).

The entry ``K[(i, a), (j, b)] = ⟨∂f_a(x_i)/∂θ, ∂f_b(x_j)/∂θ⟩`` pairs output ``a`` of sample
``i`` with output ``b`` of sample ``j`` (outputs ``(N, *out)`` flattened to ``C = prod(out)``
per sample). Besides products: the dense kernel (:meth:`NTKOperator.to_dense`), its
per-sample blocks ``(N, C, C)`` and its per-output kernels ``(C, N, N)``
(:meth:`NTKOperator.blocks`), from ``m`` products with ``Jᵀ`` (small problems).

Example:
    >>> import torch
    >>> from overparam.testing import tanh_mlp
    >>> net = tanh_mlp([3, 8, 2], generator=0)
    >>> K = ntk(net, torch.randn(6, 3, dtype=torch.float64))
    >>> K.shape, K.blocks("sample").shape, K.blocks("output").shape
    ((12, 12), torch.Size([6, 2, 2]), torch.Size([2, 6, 6]))
    >>> from overparam.hessian import lanczos
    >>> top = lanczos(K, k=2, generator=0).values
    >>> bool(torch.allclose(top, torch.linalg.eigvalsh(K.to_dense()).flip(0)[:2], rtol=1e-8))
    True
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..backend import vec
from ..backend.checks import check_int
from ..backend.select import Spec
from .jacobian import JacobianOperator
from .operators import Operator

__all__ = ["NTKOperator", "ntk"]


class NTKOperator(Operator):
    """``K = J Jᵀ`` for the model-output Jacobian ``J`` of :class:`~overparam.hessian.JacobianOperator`
    (PSD, ``m × m``); it acts on vectors shaped like the outputs, ``like = (out_shape,)``: a
    flat ``(m,)``, or a 1-tuple holding an ``out_shape`` tensor. Each product is one ``Jᵀ`` and
    one ``J`` product (batched for blocks).

    Args:
        model, data, params, exclude, check: as for :class:`~overparam.hessian.JacobianOperator`
            (``data``: inputs, an ``(inputs, targets)`` batch or an iterable of batches).

    Attributes:
        jacobian: the underlying :class:`~overparam.hessian.JacobianOperator`.

    Reference: Jacot, Gabriel and Hongler, "Neural tangent kernel: convergence and generalization in
    neural networks", NeurIPS 2018.

    Example (a Linear layer: ``K[(i, a), (j, b)] = δ_ab (x_iᵀ x_j + 1)``):
        >>> net = torch.nn.Linear(3, 2).double()
        >>> x = torch.randn(4, 3, dtype=torch.float64)
        >>> K = NTKOperator(net, x)
        >>> torch.allclose(K.blocks("output")[0], x @ x.T + 1), K.shape
        (True, (8, 8))
    """

    def __init__(self, model: nn.Module, data, *, params: Spec = None, exclude: Spec = None, output="auto",
                 attention: str | None = "math", check: bool = True):
        self.jacobian = J = JacobianOperator(model, data, params=params, exclude=exclude, output=output,
                                             attention=attention, check=check)
        self.like = (J.out_shape,)
        self.dtype, self.device = J.out_dtype, J.device

    @property
    def names(self) -> list[str]:
        """Names of the parameters of the Jacobian, in order.

        Example:
            >>> net = torch.nn.Linear(3, 2).double()
            >>> x = torch.randn(4, 3, dtype=torch.float64)
            >>> K = ntk(net, x)
            >>> K.names
            ['weight', 'bias']
        """
        return self.jacobian.names

    def _mv(self, v: vec.Vec) -> vec.Vec:
        J = self.jacobian
        return (J._jv(J._jtu(v[0], None), None),)

    def _mm(self, V: vec.Vec) -> vec.Vec:
        J, B = self.jacobian, V[0].shape[0]
        return (J._jv(J._jtu(V[0], B), B),)

    def _jacobian_rows(self, rows: Tensor, chunk: int) -> Tensor:
        """``J[rows]`` as ``(len(rows), n)``, ``chunk`` rows per batched ``Jᵀ`` product."""
        J, out = self.jacobian, []
        for s in range(0, len(rows), chunk):
            r = rows[s:s + chunk]
            E = torch.zeros(J.m, len(r), dtype=self.dtype, device=self.device)
            E[r, torch.arange(len(r), device=self.device)] = 1
            out.append(J.rmatmat(E).mT)
        return torch.cat(out)

    def to_dense(self, *, chunk: int = 64) -> Tensor:
        """The dense ``(m, m)`` kernel ``J Jᵀ`` from the dense ``J`` (``m`` products with ``Jᵀ``).

        Example:
            >>> net = torch.nn.Linear(3, 2).double()
            >>> x = torch.randn(4, 3, dtype=torch.float64)
            >>> K = ntk(net, x)
            >>> J = K.jacobian.to_dense()
            >>> torch.allclose(K.to_dense(), J @ J.T)
            True
        """
        check_int(chunk, "chunk")
        Jd = self._jacobian_rows(torch.arange(self.n, device=self.device), chunk)
        return Jd @ Jd.mT

    def blocks(self, by: str = "sample", *, chunk: int = 64) -> Tensor:
        """Diagonal blocks of the kernel.

        Args:
            by: ``"sample"``: ``(N, C, C)``, block ``i`` = ``J_i J_iᵀ`` (the outputs of sample ``i``
                against each other); ``"output"``: ``(C, N, N)``, kernel ``a`` = ``J_a J_aᵀ`` (output
                ``a`` of every sample against output ``a`` of every sample, the scalar NTK of output ``a``).
            chunk: rows of ``J`` per batched ``Jᵀ`` product (memory ``chunk × n``).

        Example (for a Linear layer the outputs do not interact: each sample's block is diagonal):
            >>> net = torch.nn.Linear(3, 2).double()
            >>> x = torch.randn(4, 3, dtype=torch.float64)
            >>> K = ntk(net, x)
            >>> S = K.blocks("sample")
            >>> S.shape, torch.allclose(S[0], (x[0] @ x[0] + 1) * torch.eye(2, dtype=torch.float64))
            (torch.Size([4, 2, 2]), True)
        """
        check_int(chunk, "chunk")
        N = self.like[0][0]
        C = self.n // N
        idx = torch.arange(self.n, device=self.device).reshape(N, C)
        if by == "sample":
            per = max(1, chunk // C)  # samples per chunk
            out = []
            for s in range(0, N, per):
                Jr = self._jacobian_rows(idx[s:s + per].reshape(-1), chunk).reshape(-1, C, self.jacobian.n)
                out.append(Jr @ Jr.mT)
            return torch.cat(out)
        if by == "output":
            out = []
            for a in range(C):
                Jr = self._jacobian_rows(idx[:, a], chunk)
                out.append(Jr @ Jr.mT)
            return torch.stack(out)
        raise ValueError(f"by must be 'sample' or 'output', got {by!r}")


def ntk(model: nn.Module, data, *, params: Spec = None, exclude: Spec = None, output="auto",
        attention: str | None = "math", check: bool = True) -> NTKOperator:
    """Shorthand for :class:`NTKOperator` ``(model, data, ...)``, same arguments.

    Reference: A. Jacot, F. Gabriel & C. Hongler, "Neural Tangent Kernel: Convergence and Generalization in Neural
        Networks" (NeurIPS 2018)

    Example:
        >>> net = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2)).double()
        >>> K = ntk(net, torch.randn(5, 3, dtype=torch.float64))
        >>> K.shape, bool(torch.linalg.eigvalsh(K.to_dense()).min() > -1e-10)  # PSD
        ((10, 10), True)
    """
    return NTKOperator(model, data, params=params, exclude=exclude, output=output, attention=attention, check=check)
