"""The Jacobian ``J = ∂f/∂θ`` of a model's outputs w.r.t. selected parameters, as an operator
(``m × n``: ``m`` = every output entry of every batch, ``n`` = the selected parameters), with
``J v`` and ``Jᵀ u`` products for one vector or a batch of vectors.

One forward graph per batch is kept: ``Jᵀ u`` is a backward pass on it (no new forward), ``B``
vectors at once one batched backward pass (``is_grads_batched``, or ``B`` passes where an
operation has no batching rule). ``J v`` is forward mode (one forward pass with tangents, vmapped
over ``B`` vectors), or the double-vjp trick on the kept graph for models without forward-mode
rules (see :class:`JacobianOperator`).

Example:
    >>> import torch
    >>> from overparam.testing import tanh_mlp
    >>> net = tanh_mlp([3, 4, 2], generator=0)
    >>> J = jacobian(net, torch.randn(5, 3, dtype=torch.float64))
    >>> J.shape, J.out_shape                  # 5 samples x 2 outputs, 3·4 + 4 + 4·2 + 2 parameters
    ((10, 26), torch.Size([5, 2]))
    >>> v = torch.randn(26, dtype=torch.float64)
    >>> u = torch.randn(10, dtype=torch.float64)
    >>> bool(torch.isclose(u @ (J @ v), (J.T @ u) @ v))
    True
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..backend import vec
from ..backend.select import Spec
from ._model import Objective, batched_grad as _batched_grad, check_agree, grad, rng_guard

__all__ = ["JacobianOperator", "jacobian", "as_batches"]


def _no_loss(out: Tensor, target: Tensor) -> Tensor:  # the Objective's loss slot: never called
    raise RuntimeError("a Jacobian has no loss")


def as_batches(data) -> object:
    """``data`` for :class:`~overparam.hessian._model.Objective`: a bare input tensor ``(N, ...)``
    becomes the batch ``(inputs, <no targets>)``; a batch or an iterable of batches is kept."""
    if isinstance(data, Tensor):
        if data.ndim == 0:
            raise ValueError("data must be inputs (N, ...), an (inputs, targets) batch or an iterable of batches, "
                             "got a 0-dim tensor")
        return (data, data.new_empty((data.shape[0], 0)))
    return data


class JacobianOperator:
    """``J = ∂ model(x) / ∂θ`` on all samples, at the parameters the model has at construction.

    Shapes: the outputs of batch ``b`` are ``(n_b, *out)``; all batches together are
    ``out_shape = (N, *out)`` (``m = N·prod(out)`` entries, batches concatenated in order). The
    parameters are the selected ones, ``like`` (``n`` entries in all).

    * ``J @ v`` / :meth:`matvec`: flat ``(n,)`` -> flat ``(m,)``; parameter-shaped tuple ->
      outputs ``out_shape``; ``J @ V`` / :meth:`matmat`: block ``(n, B)`` -> ``(m, B)``, batched tuple
      (entries ``(B, *shape_i)``) -> ``(B, *out_shape)``.
    * ``J.T @ u`` / :meth:`rmatvec`: flat ``(m,)`` or ``out_shape`` -> flat ``(n,)`` or a
      parameter-shaped tuple; :meth:`rmatmat`: ``(m, B)`` -> ``(n, B)``, ``(B, *out_shape)`` -> a
      batched tuple.
    * :meth:`to_dense`: the ``(m, n)`` matrix (small problems).

    ``J v`` / ``J V`` is forward mode (``torch.func.jvp``: one forward pass with tangents,
    vmapped over the vectors: ``jvp_mode == "forward"``). A model with an operation that has no
    forward-mode or batching rule (an old-style ``autograd.Function``, the fused CPU path of
    ``nn.MultiheadAttention``) switches, on the first product that meets it, to double vjps on the
    kept graph (``J v = ∂/∂u ⟨Jᵀu, v⟩``: ``jvp_mode == "double-vjp"``). The fused attention
    kernels (flash / memory-efficient ``scaled_dot_product_attention``) have no double backward:
    with ``attention="math"`` (default, as for every curvature operator) every forward runs under
    the math kernel; ``attention=None`` leaves torch's choice.

    Args:
        model: a deterministic ``nn.Module`` (``eval()`` for dropout / BatchNorm).
        data: inputs ``(N, ...)``, one ``(inputs, targets)`` batch (targets unused) or an
            iterable of batches; every batch's outputs must have the same trailing shape.
        params: which parameters, a spec of :func:`overparam.select`; default all trainable.
        exclude: parameters to leave out, same grammar.
        output: what of the model's output is differentiated (``"auto"``: a tensor, else ``.logits`` or
            the first tensor; a callable; see docs/index.md "Model outputs and inputs").
        attention: ``"math"`` (default) or ``None``, as for :func:`~overparam.hessian.hessian`.
        check: verify at construction that a fresh forward pass reproduces the kept outputs
            (a stochastic or stateful forward raises :class:`NonDeterministicModelError`).

    Example (a Linear layer: ``J (dW, db) = x dWᵀ + db``):
        >>> net = torch.nn.Linear(3, 2).double()
        >>> x = torch.randn(5, 3, dtype=torch.float64)
        >>> J = JacobianOperator(net, x)
        >>> dW, db = torch.randn(2, 3, dtype=torch.float64), torch.randn(2, dtype=torch.float64)
        >>> torch.allclose(J @ (dW, db), x @ dW.T + db)
        True
    """

    def __init__(self, model: nn.Module, data, *, params: Spec = None, exclude: Spec = None, output="auto",
                 attention: str | None = "math", check: bool = True):
        self.obj = obj = Objective.build(model, _no_loss, as_batches(data), params, exclude=exclude, output=output,
                                         attention=attention)
        self.like = tuple(t.shape for t in obj.theta)
        self.dtype, self.device = obj.theta[0].dtype, obj.theta[0].device
        self.attention, self.jvp_mode = attention, "forward"
        with rng_guard(self.device):
            self._graphs = self._build()
            trailing = {tuple(g[1].shape[1:]) for g in self._graphs}
            if len(trailing) > 1:
                raise ValueError(f"data: the batches give outputs of different trailing shapes {sorted(trailing)}")
            if check:
                with torch.no_grad():
                    fresh = tuple(obj.outputs(obj.theta, b) for b in obj.batches)
                check_agree(tuple(g[1].detach() for g in self._graphs), fresh, obj,
                            what="network outputs of fresh forward passes")
        self._sizes = [int(g[1].shape[0]) for g in self._graphs]
        self.out_shape = torch.Size([sum(self._sizes), *self._graphs[0][1].shape[1:]])
        self.out_dtype = self._graphs[0][1].dtype

    def _build(self) -> list:
        """One kept graph per batch: ``[leaves, outputs, u, Jᵀu]``; ``u`` and ``Jᵀu`` (differentiable in
        ``u``, for double vjps) are made on first use (:meth:`_double`)."""
        graphs = []
        for b in self.obj.batches:
            leaves = self.obj.leaves()
            out = self.obj.outputs(leaves, b)
            if not isinstance(out, Tensor) or not out.is_floating_point() or out.ndim == 0:
                raise ValueError("model(inputs) must return a floating-point tensor (n_b, ...), got "
                                 f"{type(out).__name__ if not isinstance(out, Tensor) else (out.dtype, tuple(out.shape))}")
            graphs.append([leaves, out, None, None])
        return graphs

    def _double(self, g: list) -> list:
        """``g`` with its ``u`` and ``Jᵀu = ∂⟨out, u⟩/∂θ`` (one backward pass with graph, kept)."""
        if g[2] is None:
            g[2] = torch.zeros_like(g[1], requires_grad=True)
            g[3] = grad(g[1], g[0], g[2], create_graph=True)
        return g

    # -- shapes ---------------------------------------------------------------------------------
    @property
    def names(self) -> list[str]:
        """Names of the parameters the operator acts on, in order.

        Example:
            >>> net, x = torch.nn.Linear(3, 2).double(), torch.randn(5, 3, dtype=torch.float64); J = jacobian(net, x)
            >>> J.names
            ['weight', 'bias']
        """
        return list(self.obj.names)

    @property
    def n(self) -> int:
        """``n``: the number of selected parameter entries (the columns of ``J``).

        Example:
            >>> net, x = torch.nn.Linear(3, 2).double(), torch.randn(5, 3, dtype=torch.float64); J = jacobian(net, x)
            >>> J.n
            8
        """
        return sum(s.numel() for s in self.like)

    @property
    def m(self) -> int:
        """``m``: the number of output entries of all batches (the rows of ``J``).

        Example:
            >>> net, x = torch.nn.Linear(3, 2).double(), torch.randn(5, 3, dtype=torch.float64); J = jacobian(net, x)
            >>> J.m, J.out_shape
            (10, torch.Size([5, 2]))
        """
        return self.out_shape.numel()

    @property
    def shape(self) -> tuple[int, int]:
        """``(m, n)``.

        Example:
            >>> net, x = torch.nn.Linear(3, 2).double(), torch.randn(5, 3, dtype=torch.float64); J = jacobian(net, x)
            >>> J.shape
            (10, 8)
        """
        return (self.m, self.n)

    @property
    def T(self) -> _Transposed:
        """``Jᵀ`` as an operator (``Jᵀ @ u``): ``(m,)`` -> ``(n,)``.

        Example:
            >>> net, x = torch.nn.Linear(3, 2).double(), torch.randn(5, 3, dtype=torch.float64); J = jacobian(net, x)
            >>> u, v = torch.randn(10, dtype=torch.float64), torch.randn(8, dtype=torch.float64)
            >>> torch.allclose(u @ (J @ v), (J.T @ u) @ v)
            True
        """
        return _Transposed(self)

    def outputs(self) -> Tensor:
        """The model outputs ``out_shape`` at the operator's parameters (detached).

        Example:
            >>> net, x = torch.nn.Linear(3, 2).double(), torch.randn(5, 3, dtype=torch.float64); J = jacobian(net, x)
            >>> torch.equal(J.outputs(), net(x).detach())
            True
        """
        return torch.cat([g[1].detach() for g in self._graphs])

    # -- products on structured vectors ------------------------------------------------------------
    def _jv(self, V: vec.Vec, B: int | None) -> Tensor:
        """``J V`` for a tuple (``B`` None) or a batched tuple; returns ``out_shape`` or ``(B, *out_shape)``."""
        if self.jvp_mode == "forward":
            try:
                return self._jv_forward(V, B)
            except (RuntimeError, NotImplementedError):  # no forward-mode or batching rule, an old-style
                self.jvp_mode = "double-vjp"             # autograd.Function: the kept graphs from now on
        return self._jv_graphs(V, B)

    def _jv_forward(self, V: vec.Vec, B: int | None) -> Tensor:
        """``J V`` by forward mode: one forward pass with tangents per data batch, vmapped over the
        ``B`` vectors of a batched tuple (much cheaper than ``B`` double-vjp products)."""
        res = []
        with torch.no_grad(), rng_guard(self.device):
            for b in self.obj.batches:
                def jv(*v, b=b):
                    return torch.func.jvp(lambda *th: self.obj.outputs(th, b), self.obj.theta, v)[1]
                res.append((jv(*V) if B is None else torch.func.vmap(jv)(*V)).detach())
        return torch.cat(res, dim=0 if B is None else 1)

    def _jv_graphs(self, V: vec.Vec, B: int | None) -> Tensor:
        res = []
        for g in self._graphs:
            leaves, out, u, jtu = self._double(g)
            live = [(j, t) for j, t in zip(jtu, V) if j.requires_grad]
            shape = out.shape if B is None else (B, *out.shape)
            if not live:
                res.append(torch.zeros(shape, dtype=out.dtype, device=out.device))
            elif B is None:
                res.append(torch.autograd.grad([j for j, _ in live], u, [t for _, t in live], retain_graph=True)[0])
            else:
                res.append(_batched_grad([j for j, _ in live], [u], [t for _, t in live], B)[0])
        return torch.cat(res, dim=0 if B is None else 1)

    def _jtu(self, U: Tensor, B: int | None) -> vec.Vec:
        """``Jᵀ U`` for ``U`` of ``out_shape`` (``B`` None) or ``(B, *out_shape)``."""
        res, start = None, 0
        for (leaves, out, _, _), size in zip(self._graphs, self._sizes):
            Ub = U[start:start + size] if B is None else U[:, start:start + size]
            start += size
            g = grad(out, leaves, Ub, retain_graph=True) if B is None else _batched_grad(out, leaves, [Ub], B)
            res = g if res is None else vec.add(res, g)
        return res

    def _check_params(self, v: vec.Vec, batched: bool) -> int | None:
        if len(v) != len(self.like):
            raise ValueError(f"v has {len(v)} entries but the Jacobian acts on {len(self.like)} parameters")
        Bs = set()
        for i, (t, s) in enumerate(zip(v, self.like)):
            got = t.shape[1:] if batched else t.shape
            if got != s:
                raise ValueError(f"v: entry {i} has shape {tuple(t.shape)}, expected {'(B, ) + ' if batched else ''}{tuple(s)}")
            if batched:
                Bs.add(t.shape[0])
        if len(Bs) > 1:
            raise ValueError(f"v: the entries have different batch sizes {sorted(Bs)}")
        return Bs.pop() if batched else None

    def _cast(self, t: Tensor, dtype: torch.dtype, name: str) -> Tensor:
        if not isinstance(t, Tensor) or not t.is_floating_point():
            raise TypeError(f"{name} must be a floating-point tensor, got {type(t).__name__ if not isinstance(t, Tensor) else t.dtype}")
        if t.dtype != dtype:
            raise TypeError(f"{name} has dtype {t.dtype}, the operator's is {dtype}")
        return t

    # -- public products -------------------------------------------------------------------------
    def matvec(self, v):
        """``J v``: flat ``(n,)`` -> ``(m,)``, or a parameter-shaped tuple -> outputs ``out_shape``.

        Example:
            >>> net, x = torch.nn.Linear(3, 2).double(), torch.randn(5, 3, dtype=torch.float64); J = jacobian(net, x)
            >>> J.matvec(torch.ones(8, dtype=torch.float64)).shape, J.matvec((net.weight, net.bias)).shape
            (torch.Size([10]), torch.Size([5, 2]))
        """
        if isinstance(v, Tensor):
            if v.shape != (self.n,):
                raise ValueError(f"v must have shape ({self.n},) or be parameter-shaped, got {tuple(v.shape)}")
            return self._jv(vec.unflatten(self._cast(v, self.dtype, "v"), self.like), None).reshape(-1)
        vs = vec.as_vec(v, name="v")
        self._check_params(vs, batched=False)
        return self._jv(vs, None)

    def matmat(self, V):
        """``J V``: block ``(n, B)`` -> ``(m, B)``, or a batched tuple (entries ``(B, *shape_i)``) -> ``(B, *out_shape)``.

        Example:
            >>> net, x = torch.nn.Linear(3, 2).double(), torch.randn(5, 3, dtype=torch.float64); J = jacobian(net, x)
            >>> V = torch.randn(8, 4, dtype=torch.float64)
            >>> torch.allclose(J.matmat(V), J.to_dense() @ V)
            True
        """
        if isinstance(V, Tensor):
            if V.ndim != 2 or V.shape[0] != self.n:
                raise ValueError(f"V must have shape ({self.n}, B), got {tuple(V.shape)}")
            V = self._cast(V, self.dtype, "V")
            return self._jv(vec.unflatten(V.mT.contiguous(), self.like), V.shape[1]).reshape(V.shape[1], -1).mT
        Vs = vec.as_vec(V, name="V")
        return self._jv(Vs, self._check_params(Vs, batched=True))

    def rmatvec(self, u: Tensor):
        """``Jᵀ u``: flat ``(m,)`` -> ``(n,)``, or ``u`` of ``out_shape`` -> a parameter-shaped tuple.

        Example (``Jᵀ u`` is the gradient of ``⟨model(x), u⟩``):
            >>> net, x = torch.nn.Linear(3, 2).double(), torch.randn(5, 3, dtype=torch.float64); J = jacobian(net, x)
            >>> u = torch.randn(5, 2, dtype=torch.float64)
            >>> gW, gb = J.rmatvec(u)
            >>> torch.allclose(gW, u.T @ x), torch.allclose(gb, u.sum(0))
            (True, True)
        """
        u = self._cast(u, self.out_dtype, "u")
        if u.shape == (self.m,):
            return vec.flatten(self._jtu(u.reshape(self.out_shape), None))
        if u.shape != self.out_shape:
            raise ValueError(f"u must have shape ({self.m},) or {tuple(self.out_shape)}, got {tuple(u.shape)}")
        return self._jtu(u, None)

    def rmatmat(self, U: Tensor):
        """``Jᵀ U``: ``(m, B)`` -> ``(n, B)``, or ``(B, *out_shape)`` -> a batched tuple (entries ``(B, *shape_i)``).

        With 1-D outputs (``out_shape = (N,)``) a 2-D ``U`` is always the flat block ``(m, B)``.

        Example:
            >>> net, x = torch.nn.Linear(3, 2).double(), torch.randn(5, 3, dtype=torch.float64); J = jacobian(net, x)
            >>> U = torch.randn(10, 3, dtype=torch.float64)
            >>> torch.allclose(J.rmatmat(U), J.to_dense().T @ U)
            True
        """
        U = self._cast(U, self.out_dtype, "U")
        if U.ndim == 2 and U.shape[0] == self.m and (len(self.out_shape) == 1 or U.shape[1:] != self.out_shape):
            B = U.shape[1]
            return vec.flatten(self._jtu(U.mT.reshape(B, *self.out_shape), B), batch=True).mT
        if U.ndim != len(self.out_shape) + 1 or U.shape[1:] != self.out_shape:
            raise ValueError(f"U must have shape ({self.m}, B) or (B, *{tuple(self.out_shape)}), got {tuple(U.shape)}")
        return self._jtu(U, U.shape[0])

    def __matmul__(self, x):
        return self.matmat(x) if isinstance(x, Tensor) and x.ndim == 2 else self.matvec(x)

    def to_dense(self, *, chunk: int = 64) -> Tensor:
        """The ``(m, n)`` Jacobian, built from ``Jᵀ`` products ``chunk`` rows at a time (small problems).

        Example (row ``(sample 0, output 0)``: ``x_0`` for ``W[0]``, then zeros, then ``e_0`` for the bias):
            >>> net, x = torch.nn.Linear(3, 2).double(), torch.randn(5, 3, dtype=torch.float64); J = jacobian(net, x)
            >>> torch.allclose(J.to_dense()[0], torch.cat([x[0], torch.zeros(3, dtype=torch.float64),
            ...                                            torch.tensor([1., 0.], dtype=torch.float64)]))
            True
        """
        rows = []
        for s in range(0, self.m, chunk):
            E = torch.zeros(self.m, min(chunk, self.m - s), dtype=self.out_dtype, device=self.device)
            E[torch.arange(s, s + E.shape[1]), torch.arange(E.shape[1])] = 1
            rows.append(self.rmatmat(E).mT)
        return torch.cat(rows, dim=0)

    def __repr__(self) -> str:
        return f"JacobianOperator(m={self.m}, n={self.n}, out_shape={tuple(self.out_shape)}, dtype={self.dtype})"


class _Transposed:
    """``Jᵀ`` of a :class:`JacobianOperator`: ``Jᵀ @ u`` is ``J.rmatvec(u)`` / ``J.rmatmat(U)``."""

    def __init__(self, J: JacobianOperator):
        self.J = J
        self.shape = (J.n, J.m)

    @property
    def T(self) -> JacobianOperator:
        return self.J

    def matvec(self, u):
        return self.J.rmatvec(u)

    def matmat(self, U):
        return self.J.rmatmat(U)

    def __matmul__(self, x):
        if isinstance(x, Tensor) and x.ndim >= 2 and x.shape != self.J.out_shape:
            return self.J.rmatmat(x)
        return self.J.rmatvec(x)

    def to_dense(self, *, chunk: int = 64) -> Tensor:
        return self.J.to_dense(chunk=chunk).mT


def jacobian(model: nn.Module, data, *, params: Spec = None, exclude: Spec = None, output="auto",
             attention: str | None = "math", check: bool = True) -> JacobianOperator:
    """Shorthand for :class:`JacobianOperator` ``(model, data, ...)``, same arguments.

    Example:
        >>> net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 2)).double()
        >>> J = jacobian(net, torch.randn(5, 3, dtype=torch.float64), params="2.*")
        >>> J.shape, J.names
        ((10, 10), ['2.weight', '2.bias'])
    """
    return JacobianOperator(model, data, params=params, exclude=exclude, output=output, attention=attention, check=check)
