"""Inverse operators: solve ``(A + λI) x = b`` for any symmetric operator ``A`` (Hessian, GGN,
NTK, K-FAC, a dense matrix), and wrap the solve as an operator ``(A + λI)⁻¹``.

* :func:`cg`: preconditioned conjugate gradient (``A + λI`` positive definite), one or several
  right-hand sides at once (one batched product per iteration), residual replacement at the
  end so the reported residual is the true one;
* :func:`neumann`: the Neumann series ``α Σ_j (I − α(A + λI))^j b`` (Richardson iteration; the
  LiSSA-style inverse of influence functions), ``α`` from the top eigenvalue by default;
* :func:`inverse`: ``(A + λI)⁻¹`` as an :class:`InverseOperator` by ``"cg"``, ``"neumann"``,
  or exactly for small operators (``"cholesky"``, ``"eigh"`` on the dense matrix).

Every solve returns a :class:`Solve` with the residual history.

Example (natural gradient ``(F + λI)⁻¹ g`` with the GGN as the Fisher):
    >>> import torch
    >>> import overparam as op
    >>> net = op.testing.tanh_mlp([3, 6, 2], generator=0)
    >>> x, y = torch.randn(16, 3, dtype=torch.float64), torch.randint(0, 2, (16,))
    >>> G = op.hessian.ggn(net, "cross_entropy", (x, y))
    >>> g = op.hessian.gradient(net, torch.nn.functional.cross_entropy, (x, y))
    >>> res = cg(G, g, damping=1e-3, tol=1e-10)
    >>> res.converged, bool(res.residuals[-1] <= 1e-10), list(res.x) == list(g)   # keyed like the gradient
    (True, True, True)
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
from torch import Tensor

from ..backend import vec
from ..backend.checks import check_int, check_real
from ..backend.linalg import NotPositiveDefiniteError
from ..backend.random import GeneratorLike
from .lanczos import lanczos
from .operators import Operator, as_operator

__all__ = ["Solve", "cg", "neumann", "InverseOperator", "inverse"]


@dataclass
class Solve:
    """The result of an iterative solve of ``(A + λI) x = b``.

    Attributes:
        x: the solution, in the form of ``b`` (flat ``(n,)``, a block ``(n, B)``, parameter-shaped or a dict).
        residuals: relative residuals ``‖b − (A + λI) x_k‖ / ‖b‖``, ``(iterations + 1,)`` (or
            ``(iterations + 1, B)`` for a block), the first for the start ``x_0``, the last for ``x``.
        n_matvecs: products with ``A`` used (``B`` vectors in a block count once).
        converged: whether every final residual is ``<= tol``.

    Example:
        >>> res = cg(torch.diag(torch.tensor([1., 2., 4.], dtype=torch.float64)), torch.ones(3, dtype=torch.float64))
        >>> res.x, res.converged, bool(res.residuals[-1] < 1e-12)  # three iterations for three eigenvalues
        (tensor([1.0000, 0.5000, 0.2500], dtype=torch.float64), True, True)
    """

    x: Tensor | vec.Vec | dict[str, Tensor]
    residuals: Tensor
    n_matvecs: int
    converged: bool


def _as_block(op: Operator, b, name: str = "b"):
    """``b`` as an ``(n, B)`` block and a function turning an ``(n, B)`` solution back into ``b``'s form."""
    if isinstance(b, Tensor):
        if not b.is_floating_point():
            raise TypeError(f"{name} must be floating point, got {b.dtype}")
        if b.shape == (op.n,):
            return b[:, None], lambda X: X[:, 0]
        if b.ndim == 2 and b.shape[0] == op.n and b.shape[1] >= 1:
            return b, lambda X: X
        raise ValueError(f"{name} must have shape ({op.n},) or ({op.n}, B), or be parameter-shaped, got {tuple(b.shape)}")
    keys = list(b) if isinstance(b, Mapping) else None
    bs = vec.as_vec(b.values() if keys is not None else b, name=name)
    if vec.shapes(bs) != tuple(op.like):
        raise ValueError(f"{name} has entry shapes {vec.shapes(bs)}, the operator acts on {tuple(op.like)}")
    if keys is not None:  # {name: tensor}, as op.hessian.gradient returns: the solution is keyed alike
        return vec.flatten(bs)[:, None], lambda X: dict(zip(keys, vec.unflatten(X[:, 0], op.like)))
    return vec.flatten(bs)[:, None], lambda X: vec.unflatten(X[:, 0], op.like)


def _prepare(A, b, damping: float, tol: float, max_iters: int | None, name: str = "b"):
    op = as_operator(A)
    check_real(damping, "damping", at_least=0.0, finite=True)
    check_real(tol, "tol", above=0.0, finite=True)
    if max_iters is not None:
        check_int(max_iters, "max_iters")
    B, back = _as_block(op, b, name)
    if B.dtype != op.dtype:
        raise TypeError(f"{name} has dtype {B.dtype} but A has dtype {op.dtype}: cast one of them")
    if not bool(torch.isfinite(B).all()):
        raise ValueError(f"{name} holds NaN or inf")
    bn = torch.linalg.vector_norm(B, dim=0)
    return op, B.to(op.device), back, torch.where(bn > 0, bn, torch.ones_like(bn))


def _product(op: Operator, damping: float) -> Callable[[Tensor], Tensor]:
    def apply(X: Tensor) -> Tensor:
        AX = op.matmat(X)
        if not bool(torch.isfinite(AX).all()):
            raise ValueError("A @ x is not finite: A holds NaN/inf, or overflows")
        return AX + damping * X if damping else AX
    return apply


def _preconditioner(M, op: Operator, vector: bool) -> Callable[[Tensor], Tensor]:
    if M is None:
        return lambda R: R
    if isinstance(M, (Operator, Tensor)):
        Mop = as_operator(M)
        if Mop.n != op.n:
            raise ValueError(f"preconditioner acts on vectors of size {Mop.n}, A on {op.n}")
        return Mop.matmat
    if not callable(M):
        raise TypeError(f"preconditioner must be None, an Operator, a tensor or a callable, got {type(M).__name__}")
    if vector:
        return lambda R: M(R[:, 0])[:, None]
    return M


def _finish(name: str, hist: list[Tensor], count: int, tol: float, X: Tensor, back) -> Solve:
    residuals = torch.stack(hist)
    converged = bool((residuals[-1] <= tol).all())
    if not converged:
        warnings.warn(f"{name} did not reach tol={tol:.1e} in {len(hist) - 1} iterations (relative residual "
                      f"{float(residuals[-1].max()):.2e}); raise max_iters, add damping or a preconditioner",
                      RuntimeWarning, stacklevel=3)
    return Solve(back(X), residuals if residuals.shape[1] > 1 else residuals[:, 0], count, converged)


def cg(A, b, *, damping: float = 0.0, tol: float = 1e-8, max_iters: int | None = None, preconditioner=None,
       x0=None) -> Solve:
    """Solve ``(A + λI) x = b`` by (preconditioned) conjugate gradients.

    Args:
        A: a symmetric operator (anything :func:`~overparam.hessian.as_operator` accepts) with
            ``A + λI`` positive definite (a PSD GGN or NTK with ``damping > 0``, say).
        b: flat ``(n,)``, a block ``(n, B)`` (``B`` independent solves, one batched product per
            iteration), a parameter-shaped tuple or a ``{name: tensor}`` dict (as
            :func:`~overparam.hessian.gradient` returns); ``x`` comes back in the same form.
        damping: ``λ >= 0``.
        tol: stop when ``‖b − (A + λI) x‖ <= tol·‖b‖`` (for every column), checked on the true
            residual (one extra product) before returning.
        max_iters: iteration budget (default ``min(2n, 10000)``); a RuntimeWarning and
            ``converged=False`` when it runs out.
        preconditioner: ``M ≈ (A + λI)⁻¹``, symmetric positive definite: an Operator (e.g. an
            exact :func:`inverse` of a K-FAC or diagonal approximation), a dense ``(n, n)``
            tensor, or a function of a flat residual (``(n,)``, or ``(n, B)`` for a block ``b``).
        x0: start, in the form of ``b`` (default zero).

    Returns:
        :class:`Solve`.

    Raises:
        NotPositiveDefiniteError: a direction of non-positive curvature ``pᵀ(A + λI)p <= 0``
            was met (``A`` is indefinite, e.g. a Hessian away from a minimum): raise ``damping``.

    Reference: M. R. Hestenes & E. Stiefel, "Methods of Conjugate Gradients for Solving Linear Systems" (J. Res. NBS
        1952)

    Example (an influence function ``−∇ℓ_testᵀ (H + λI)⁻¹ ∇ℓ_train``, for several training points at once):
        >>> import torch
        >>> H = torch.diag(torch.tensor([1.0, 2.0, 4.0], dtype=torch.float64))
        >>> g_train = torch.tensor([[1.0, 0.0], [2.0, 2.0], [4.0, 0.0]], dtype=torch.float64)   # (n, B)
        >>> s = cg(H, g_train, damping=0.0).x
        >>> g_test = torch.ones(3, dtype=torch.float64)
        >>> (-g_test @ s).tolist()
        [-3.0, -1.0]
    """
    op, B, back, bn = _prepare(A, b, damping, tol, max_iters)
    vector = B.shape[1] == 1 and not (isinstance(b, Tensor) and b.ndim == 2)
    apply, M = _product(op, damping), _preconditioner(preconditioner, op, vector)
    budget = min(2 * op.n, 10_000) if max_iters is None else max_iters
    if x0 is None:
        X, R, count = torch.zeros_like(B), B.clone(), 0
    else:
        X = _as_block(op, x0, "x0")[0].to(device=op.device, dtype=op.dtype).clone()
        R, count = B - apply(X), 1
    hist = [torch.linalg.vector_norm(R, dim=0) / bn]
    Z = M(R)
    P, rz = Z.clone(), (R * Z).sum(0)
    it = 0
    while True:
        if bool((hist[-1] <= tol).all()) or it >= budget:
            Rtrue = B - apply(X)  # residual replacement: the recurrence drifts from the true residual
            count += 1
            hist[-1] = torch.linalg.vector_norm(Rtrue, dim=0) / bn
            if bool((hist[-1] <= tol).all()) or it >= budget:
                break
            R = Rtrue
            Z = M(R)
            P, rz = Z.clone(), (R * Z).sum(0)
        active = hist[-1] > tol
        AP = apply(P)
        count += 1
        it += 1
        pAp = (P * AP).sum(0)
        if bool((active & (pAp <= 0)).any()):
            raise NotPositiveDefiniteError(
                f"A + λI (damping={damping}) is not positive definite: CG met pᵀ(A + λI)p = "
                f"{float(pAp[active].min()):.3e} <= 0 at iteration {it}; raise damping")
        alpha = torch.where(active, rz / torch.where(active, pAp, torch.ones_like(pAp)), torch.zeros_like(rz))
        X = X + alpha * P
        R = R - alpha * AP
        Z = M(R)
        rz_new = (R * Z).sum(0)
        beta = torch.where(active, rz_new / torch.where(rz != 0, rz, torch.ones_like(rz)), torch.zeros_like(rz))
        P, rz = Z + beta * P, rz_new
        hist.append(torch.linalg.vector_norm(R, dim=0) / bn)
    return _finish("cg", hist, count, tol, X, back)


def neumann(A, b, *, damping: float = 0.0, scale: float | None = None, tol: float = 1e-8, max_iters: int = 1000,
            generator: GeneratorLike = None) -> Solve:
    """Solve ``(A + λI) x = b`` by the Neumann series ``x = α Σ_j (I − α(A + λI))^j b``
    (Richardson iteration ``x_{k+1} = x_k + α(b − (A + λI) x_k)``, one product per term).

    It converges when ``A + λI`` is positive definite and ``0 < α < 2/λ_max(A + λI)``, at the
    rate ``1 − α λ_min`` per term, so it is slow on ill-conditioned operators (use :func:`cg`);
    truncated after a few terms it is the LiSSA-style approximate inverse of influence functions.

    Args:
        A, b, damping, tol: as for :func:`cg` (``b`` flat, a block or parameter-shaped).
        scale: ``α``; default ``1/λ_max(A + λI)`` with ``λ_max`` from :func:`~overparam.hessian.lanczos`
            (its products are counted in ``n_matvecs``).
        max_iters: number of terms at most.
        generator: for the Lanczos start vector when ``scale`` is None (measurement rule:
            ``None`` never advances the global RNG).

    Reference: N. Agarwal, B. Bullins & E. Hazan, "Second-Order Stochastic Optimization for Machine Learning in
        Linear Time" (LiSSA, JMLR 2017)

    Example:
        >>> A = torch.diag(torch.tensor([1.0, 2.0], dtype=torch.float64))
        >>> res = neumann(A, torch.ones(2, dtype=torch.float64), damping=1.0, tol=1e-12, generator=0)
        >>> res.x.round(decimals=9).tolist(), res.converged
        ([0.5, 0.333333333], True)
    """
    op, B, back, bn = _prepare(A, b, damping, tol, max_iters)
    apply, count = _product(op, damping), 0
    if scale is None:
        eig = lanczos(op, k=1, which="LA", tol=1e-4, criterion="value", generator=generator)
        top = float(eig.values[0]) + damping
        count += eig.n_matvecs
        if not top > 0:
            raise NotPositiveDefiniteError(f"A + λI (damping={damping}) has top eigenvalue {top:.3e} <= 0: the Neumann "
                                           "series needs it positive definite")
        scale = 1.0 / top
    check_real(scale, "scale", above=0.0, finite=True)
    X = torch.zeros_like(B)
    R = B.clone()
    hist = [torch.linalg.vector_norm(R, dim=0) / bn]
    for _ in range(max_iters):
        if bool((hist[-1] <= tol).all()):
            break
        X = X + scale * R
        R = B - apply(X)
        count += 1
        hist.append(torch.linalg.vector_norm(R, dim=0) / bn)
        if not math.isfinite(float(hist[-1].max())) or float(hist[-1].max()) > 1e12:
            raise ValueError(f"the Neumann series diverges (relative residual {float(hist[-1].max()):.2e}): scale="
                             f"{scale:.3e} exceeds 2/λ_max(A + λI), or A + λI is not positive definite")
    return _finish("neumann", hist, count, tol, X, back)


class InverseOperator(Operator):
    """``(A + λI)⁻¹`` as a symmetric operator on ``A``'s vectors (so it composes: ``lanczos`` on
    it finds the smallest eigenvalues of ``A + λI``, ``trace`` its inverse trace, ``B @ inv @ v`` …).

    Args:
        A: the operator (anything :func:`~overparam.hessian.as_operator` accepts).
        damping: ``λ >= 0``.
        method: ``"cg"`` (each product a :func:`cg` solve, block right-hand sides batched),
            ``"neumann"`` (:func:`neumann`), or exact, on the dense ``(n, n)`` matrix (small
            operators): ``"cholesky"`` (``A + λI`` positive definite) or ``"eigh"`` (any non-singular
            ``A + λI``; the eigenpairs are kept in ``eigenvalues`` / ``eigenvectors``).
        **options: keyword arguments of :func:`cg` / :func:`neumann` (``tol``, ``max_iters``,
            ``preconditioner``, ``scale``, ``generator``); every product is a block solve, so a
            function preconditioner gets blocks ``(n, B)``.

    Attributes:
        last: the :class:`Solve` of the latest product (iterative methods), else None.

    Example:
        >>> A = torch.diag(torch.tensor([1.0, 3.0], dtype=torch.float64))
        >>> inverse(A, damping=1.0, method="eigh") @ torch.ones(2, dtype=torch.float64)
        tensor([0.5000, 0.2500], dtype=torch.float64)
    """

    METHODS = ("cg", "neumann", "cholesky", "eigh")

    def __init__(self, A, *, damping: float = 0.0, method: str = "cg", **options):
        self.op = op = as_operator(A)
        self.damping = check_real(damping, "damping", at_least=0.0, finite=True)
        if method not in self.METHODS:
            raise ValueError(f"method must be one of {self.METHODS}, got {method!r}")
        allowed = {"cg": {"tol", "max_iters", "preconditioner"}, "neumann": {"tol", "max_iters", "scale", "generator"}}
        extra = set(options) - allowed.get(method, set())
        if extra:
            raise TypeError(f"options {sorted(extra)} do not apply to method={method!r}")
        self.method, self.options, self.last = method, options, None
        self.like, self.dtype, self.device = op.like, op.dtype, op.device
        self.eigenvalues = self.eigenvectors = self._chol = None
        if method in ("cholesky", "eigh"):
            D = op.to_dense()
            D = (D + D.mT) / 2 + self.damping * torch.eye(op.n, dtype=op.dtype, device=op.device)
            if method == "eigh":
                w, Q = torch.linalg.eigh(D)
                floor = op.n * torch.finfo(op.dtype).eps * float(w.abs().max())
                if float(w.abs().min()) <= floor:
                    raise ValueError(f"A + λI (damping={damping}) is singular (smallest |eigenvalue| "
                                     f"{float(w.abs().min()):.2e}): raise damping")
                self.eigenvalues, self.eigenvectors = w, Q
            else:
                L, info = torch.linalg.cholesky_ex(D)
                if int(info) != 0:
                    raise NotPositiveDefiniteError(f"A + λI (damping={damping}) is not positive definite: use "
                                                   "method='eigh' for an indefinite A, or raise damping")
                self._chol = L

    def _solve(self, X: Tensor) -> Tensor:
        """``(A + λI)⁻¹ X`` for a flat block ``(n, B)``."""
        if self.method == "eigh":
            Q = self.eigenvectors
            return Q @ ((Q.mT @ X) / self.eigenvalues[:, None])
        if self.method == "cholesky":
            return torch.cholesky_solve(X, self._chol)
        fn = cg if self.method == "cg" else neumann
        self.last = fn(self.op, X, damping=self.damping, **self.options)
        return self.last.x

    def _mv(self, v: vec.Vec) -> vec.Vec:
        return vec.unflatten(self._solve(vec.flatten(v)[:, None])[:, 0], self.like)

    def _mm(self, V: vec.Vec) -> vec.Vec:
        return vec.unflatten(self._solve(vec.flatten(V, batch=True).mT).mT.contiguous(), self.like)


def inverse(A, *, damping: float = 0.0, method: str = "cg", **options) -> InverseOperator:
    """Shorthand for :class:`InverseOperator` ``(A, ...)``, same arguments.

    Example (the CG inverse agrees with the exact one):
        >>> from overparam.testing import symmetric_with_spectrum
        >>> A = symmetric_with_spectrum([4., 2., 1., 0.5], generator=0)
        >>> v = torch.ones(4, dtype=torch.float64)
        >>> torch.allclose(inverse(A, damping=0.1, tol=1e-12) @ v, inverse(A, damping=0.1, method="cholesky") @ v)
        True
    """
    return InverseOperator(A, damping=damping, method=method, **options)
