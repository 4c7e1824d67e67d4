"""Symmetric linear operators on parameter-shaped vectors, and their sums, multiples and shifts.

An :class:`Operator` knows the shapes of the vectors it acts on (``like``) and applies itself
to

* a flat vector ``(n,)`` -> ``(n,)``, or a parameter-shaped vector (tuple) -> tuple: :meth:`matvec`;
* a block ``(n, B)`` -> ``(n, B)``, or a batched tuple (entries ``(B, *shape_i)``): :meth:`matmat`.

``A @ x`` dispatches on ``x``. Every solver in :mod:`overparam.hessian` accepts an Operator,
a dense symmetric tensor ``(n, n)``, or any object with ``.matvec`` / ``@`` and ``.shape``
(see :func:`as_operator`).

Example:
    >>> import torch
    >>> A = as_operator(torch.diag(torch.tensor([1., 2., 3.])))
    >>> (2 * A + A.shift(1.0)) @ torch.ones(3)
    tensor([ 4.,  7., 10.])
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence

import torch
from torch import Tensor

from ..backend import vec
from ..backend.checks import check_real

__all__ = ["Operator", "DenseOperator", "FunctionOperator", "SumOperator", "ScaledOperator", "IdentityOperator",
           "as_operator"]


class Operator:
    """A symmetric linear operator ``(n, n)`` on parameter-shaped vectors.

    Subclasses set ``like`` (the entries' shapes), ``dtype``, ``device`` and implement
    ``_mv(v: Vec) -> Vec``; ``_mm`` (batched tuples) defaults to a loop over ``_mv``. Operators
    add, subtract, negate, scale by Python numbers and :meth:`shift`.

    Example:
        >>> class Twice(Operator):
        ...     like, dtype, device = (torch.Size([2]), torch.Size([1])), torch.float64, torch.device("cpu")
        ...     def _mv(self, v):
        ...         return tuple(2 * t for t in v)
        >>> A = Twice()
        >>> A.shape, A @ torch.ones(3, dtype=torch.float64)
        ((3, 3), tensor([2., 2., 2.], dtype=torch.float64))
    """

    like: tuple[torch.Size, ...]
    dtype: torch.dtype
    device: torch.device
    space = None  # a backend.sharded.ShardedSpace when flat vectors hold this rank's coordinates only

    # -- to implement -------------------------------------------------------------------------
    def _mv(self, v: vec.Vec) -> vec.Vec:
        raise NotImplementedError

    def _mm(self, V: vec.Vec) -> vec.Vec:
        return vec.stack([self._mv(v) for v in vec.unstack(V)])

    # -- public ---------------------------------------------------------------------------------
    @property
    def n(self) -> int:
        """The dimension ``n``: the total number of entries of a vector the operator acts on.

        Example:
            >>> IdentityOperator([(2, 3), (4,)]).n
            10
        """
        return sum(s.numel() for s in self.like)

    @property
    def global_n(self) -> int:
        """The dimension over all ranks: ``n`` for plain vectors, ``space.n`` when the operator acts on
        sharded vectors (each rank then holds ``n`` of the ``space.n`` coordinates).

        Example:
            >>> IdentityOperator([(2, 3), (4,)]).global_n
            10
        """
        return self.n if self.space is None else self.space.n

    @property
    def shape(self) -> tuple[int, int]:
        """``(n, n)``, as for a matrix.

        Example:
            >>> as_operator(torch.eye(3)).shape
            (3, 3)
        """
        return (self.n, self.n)

    def _check_vec(self, v: vec.Vec, batched: bool) -> None:
        if len(v) != len(self.like):
            raise ValueError(f"vector has {len(v)} entries but the operator acts on {len(self.like)} parameters")
        for i, (t, s) in enumerate(zip(v, self.like)):
            got = t.shape[1:] if batched else t.shape
            if got != s:
                raise ValueError(f"entry {i} has shape {tuple(t.shape)}, expected {'(B, ) + ' if batched else ''}{tuple(s)}")

    def matvec(self, v: Tensor | Sequence[Tensor]) -> Tensor | vec.Vec:
        """``A v`` for a flat ``(n,)`` tensor (returns ``(n,)``) or a parameter-shaped tuple (returns a tuple).

        Example:
            >>> I = IdentityOperator([(2,), (1,)])
            >>> I.matvec(torch.arange(3.0, dtype=torch.float64))
            tensor([0., 1., 2.], dtype=torch.float64)
            >>> [t.shape for t in I.matvec((torch.ones(2), torch.ones(1)))]
            [torch.Size([2]), torch.Size([1])]
        """
        if isinstance(v, Tensor):
            if v.shape != (self.n,):
                raise ValueError(f"flat vector must have shape ({self.n},), got {tuple(v.shape)}")
            return vec.flatten(self._mv(vec.unflatten(v, self.like)))
        vs = vec.as_vec(v, name="v")
        self._check_vec(vs, batched=False)
        return self._mv(vs)

    def matmat(self, V: Tensor | Sequence[Tensor]) -> Tensor | vec.Vec:
        """``A V`` for a block ``(n, B)`` (returns ``(n, B)``) or a batched tuple (entries ``(B, *shape_i)``).

        Example:
            >>> A = as_operator(torch.diag(torch.tensor([1., 2.])))
            >>> A.matmat(torch.ones(2, 3))
            tensor([[1., 1., 1.],
                    [2., 2., 2.]])
        """
        if isinstance(V, Tensor):
            if V.ndim != 2 or V.shape[0] != self.n:
                raise ValueError(f"block must have shape ({self.n}, B), got {tuple(V.shape)}")
            out = self._mm(vec.unflatten(V.mT.contiguous(), self.like))
            return vec.flatten(out, batch=True).mT
        Vs = vec.as_vec(V, name="V")
        self._check_vec(Vs, batched=True)
        return self._mm(Vs)

    def __matmul__(self, x):
        if isinstance(x, Tensor) and x.ndim == 2:
            return self.matmat(x)
        return self.matvec(x)

    def to_dense(self, *, chunk: int = 64) -> Tensor:
        """The ``(n, n)`` matrix, built ``chunk`` columns at a time (for small problems).

        Example:
            >>> (3 * IdentityOperator([(2,)])).to_dense()
            tensor([[3., 0.],
                    [0., 3.]], dtype=torch.float64)
        """
        n = self.n
        cols = []
        for s in range(0, n, chunk):
            E = torch.zeros(n, min(chunk, n - s), dtype=self.dtype, device=self.device)
            E[torch.arange(s, s + E.shape[1]), torch.arange(E.shape[1])] = 1
            cols.append(self.matmat(E))
        return torch.cat(cols, dim=1)

    def shift(self, sigma: float) -> Operator:
        """``A + σ I``, an operator of the same shape.

        Example:
            >>> as_operator(torch.zeros(2, 2)).shift(0.5) @ torch.ones(2)
            tensor([0.5000, 0.5000])
        """
        return SumOperator([self, ScaledOperator(IdentityOperator.like_op(self), sigma)])

    def __add__(self, other):
        if not isinstance(other, Operator):
            return NotImplemented
        return SumOperator([self, other])

    def __sub__(self, other):
        if not isinstance(other, Operator):
            return NotImplemented
        return SumOperator([self, ScaledOperator(other, -1.0)])

    def __mul__(self, a):
        if isinstance(a, (int, float)) and not isinstance(a, bool):
            return ScaledOperator(self, float(a))
        return NotImplemented

    __rmul__ = __mul__

    def __neg__(self):
        return ScaledOperator(self, -1.0)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(n={self.n}, dtype={self.dtype})"


def _check_compatible(ops: Sequence[Operator]) -> None:
    first = ops[0]
    for o in ops[1:]:
        if tuple(o.like) != tuple(first.like):
            raise ValueError(f"operators act on different parameter shapes: {first.like} vs {o.like}")


class SumOperator(Operator):
    """``A_1 + … + A_k`` of operators on the same parameter shapes (``A + B`` builds one).

    Example:
        >>> I = IdentityOperator([(2,)])
        >>> SumOperator([I, I, I]) @ torch.ones(2, dtype=torch.float64)
        tensor([3., 3.], dtype=torch.float64)
    """

    def __init__(self, ops: Sequence[Operator]):
        ops = list(ops)
        if not ops or not all(isinstance(o, Operator) for o in ops):
            raise TypeError("ops must be a non-empty list of Operators")
        _check_compatible(ops)
        self.ops, self.like, self.dtype, self.device = ops, ops[0].like, ops[0].dtype, ops[0].device
        self.space = next((o.space for o in ops if o.space is not None), None)

    def _mv(self, v):
        out = self.ops[0]._mv(v)
        for o in self.ops[1:]:
            out = vec.add(out, o._mv(v))
        return out

    def _mm(self, V):
        out = self.ops[0]._mm(V)
        for o in self.ops[1:]:
            out = vec.add(out, o._mm(V))
        return out


class ScaledOperator(Operator):
    """``a · A`` for a Python number ``a`` (``a * A`` builds one).

    Example:
        >>> ScaledOperator(IdentityOperator([(2,)]), -2.0) @ torch.ones(2, dtype=torch.float64)
        tensor([-2., -2.], dtype=torch.float64)
    """

    def __init__(self, op: Operator, a: float):
        if not isinstance(op, Operator):
            raise TypeError(f"op must be an Operator, got {type(op).__name__}")
        if isinstance(a, bool) or not isinstance(a, numbers.Real):  # the operator algebra's own contract
            raise ValueError(f"a must be a finite real number, got {a!r}")
        check_real(a, "a", finite=True)
        self.op, self.a, self.like, self.dtype, self.device = op, float(a), op.like, op.dtype, op.device
        self.space = op.space

    def _mv(self, v):
        return vec.scale(self.a, self.op._mv(v))

    def _mm(self, V):
        return vec.scale(self.a, self.op._mm(V))


class IdentityOperator(Operator):
    """The identity on vectors shaped like ``like`` (a sequence of entry shapes; ``n`` = their total size).

    Example:
        >>> I = IdentityOperator([(2, 2), (3,)])
        >>> I.n, bool((I.to_dense() == torch.eye(7, dtype=torch.float64)).all())
        (7, True)
    """

    def __init__(self, like: Sequence[torch.Size], *, dtype=torch.float64, device=None):
        self.like = tuple(torch.Size(s) for s in like)
        self.dtype, self.device = dtype, torch.device(device) if device is not None else torch.device("cpu")

    @classmethod
    def like_op(cls, op: Operator) -> IdentityOperator:
        """The identity on the vectors ``op`` acts on (same entry shapes, dtype and device).

        Example:
            >>> IdentityOperator.like_op(as_operator(torch.eye(3))).shape
            (3, 3)
        """
        out = cls(op.like, dtype=op.dtype, device=op.device)
        out.space = op.space
        return out

    def _mv(self, v):
        return tuple(t.clone() for t in v)

    def _mm(self, V):
        return tuple(t.clone() for t in V)


class DenseOperator(Operator):
    """A dense symmetric ``(n, n)`` tensor as an operator on flat vectors (symmetry is checked
    to ``1e3·eps`` relative, since every solver here assumes it).

    Example:
        >>> DenseOperator(torch.tensor([[2., 1.], [1., 2.]])) @ torch.tensor([1., -1.])
        tensor([ 1., -1.])
    """

    def __init__(self, A: Tensor):
        if not isinstance(A, Tensor) or A.ndim != 2 or A.shape[0] != A.shape[1]:
            raise ValueError(f"A must be a square 2-D tensor, got {getattr(A, 'shape', type(A).__name__)}")
        if A.shape[0] == 0:
            raise ValueError("A must be at least 1 x 1, got an empty (0, 0) tensor")
        if not A.is_floating_point():
            raise TypeError(f"A must be floating point, got {A.dtype}")
        if not bool(torch.isfinite(A).all()):
            raise ValueError("A holds NaN or inf entries; the solvers need a finite matrix")
        scale = A.abs().max()
        if bool((A - A.mT).abs().max() > 1e3 * torch.finfo(A.dtype).eps * scale):
            raise ValueError("A is not symmetric; the solvers in overparam.hessian need a symmetric operator")
        self.A, self.like, self.dtype, self.device = A, (torch.Size([A.shape[0]]),), A.dtype, A.device

    def _mv(self, v):
        return (self.A @ v[0],)

    def _mm(self, V):
        return ((self.A @ V[0].mT).mT,)

    def to_dense(self, *, chunk: int = 64) -> Tensor:
        """The wrapped ``(n, n)`` tensor itself (no copy; ``chunk`` is unused).

        Example:
            >>> A = torch.eye(2)
            >>> DenseOperator(A).to_dense() is A
            True
        """
        return self.A


class FunctionOperator(Operator):
    """Wraps a function on flat vectors ``(n,) -> (n,)`` (or any object with ``.matvec`` or ``@``).

    Example:
        >>> A = FunctionOperator(lambda v: v.flip(0), 3)
        >>> A @ torch.tensor([1., 2., 3.], dtype=torch.float64)
        tensor([3., 2., 1.], dtype=torch.float64)
    """

    def __init__(self, fn, n: int, *, dtype=torch.float64, device=None):
        if not callable(fn):
            raise TypeError("fn must be callable")
        if not isinstance(n, int) or n < 1:
            raise ValueError(f"n must be a positive int, got {n!r}")
        self.fn, self.like = fn, (torch.Size([n]),)
        self.dtype, self.device = dtype, torch.device(device) if device is not None else torch.device("cpu")

    def _mv(self, v):
        return (self.fn(v[0]),)


def as_operator(A, *, n: int | None = None, dtype: torch.dtype | None = None) -> Operator:
    """Turn ``A`` into an :class:`Operator`.

    Args:
        A: an Operator (returned as is), a dense symmetric tensor ``(n, n)``, or an object with
            ``.matvec(v)`` or ``A @ v`` on flat ``(n,)`` tensors (then ``n`` comes from ``A.shape``
            or the ``n`` argument), or a plain function ``v -> A v``.
        n: the dimension when ``A`` has no ``shape`` (if given for a sized ``A``, it must agree).
        dtype: the dtype of probe vectors for function-like ``A`` (default float64; for a tensor
            or operator it must equal theirs).

    Example:
        >>> as_operator(lambda v: 2 * v, n=3).matvec(torch.ones(3, dtype=torch.float64))
        tensor([2., 2., 2.], dtype=torch.float64)
    """
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
        raise ValueError(f"n must be a positive int, got {n!r}")
    if dtype is not None and not isinstance(dtype, torch.dtype):
        raise TypeError(f"dtype must be a torch.dtype, got {type(dtype).__name__}")
    if isinstance(A, (Operator, Tensor)):
        op = A if isinstance(A, Operator) else DenseOperator(A)
        if n is not None and n != op.n:
            raise ValueError(f"n={n} contradicts A, which acts on vectors of size {op.n}")
        if dtype is not None and dtype != op.dtype:
            raise ValueError(f"dtype={dtype} contradicts A's dtype {op.dtype} (dtype is for function-like A; cast A instead)")
        return op
    if hasattr(A, "matvec"):
        fn = A.matvec
    elif hasattr(A, "__matmul__") and not callable(A):
        fn = A.__matmul__
    elif callable(A):
        fn = A
    else:
        raise TypeError(f"A must be an Operator, a tensor, or have .matvec / @; got {type(A).__name__}")
    shape = getattr(A, "shape", None)
    if shape is not None and n is not None and int(shape[0]) != n:
        raise ValueError(f"n={n} contradicts A.shape {tuple(shape)}")
    if n is None:
        if shape is None:
            raise ValueError("n is required when A has no .shape")
        n = int(shape[0])
    return FunctionOperator(fn, n, dtype=dtype or getattr(A, "dtype", None) or torch.float64,
                            device=getattr(A, "device", None))
