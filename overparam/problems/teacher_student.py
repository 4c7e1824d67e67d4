"""Two-layer teacher-student regression: ``y = Σ_j a*_j σ(w*_jᵀ x)``.

The teacher has ``k*`` hidden units with orthonormal weight rows ``W* (k*, d)`` (``d >= k*``)
and unit output weights ``a* = 1``; inputs are standard Gaussian. A student of width
``k >= k*`` has parameters ``(W (k, d), a (k,))`` and output ``f(x) = σ(W x)ᵀ a``; the loss is
``1/(2N) Σ (f(x_i) − y_i)²`` (``loss="l1"``: mean ``|f − y|``). With ``σ(z) = z²`` the
problem is symmetric matrix sensing with rank-one measurements ``x xᵀ`` (``M* = W*ᵀW*``).

Example:
    >>> import overparam as op
    >>> P = op.problems.teacher_student(d=5, teacher_width=2, samples=100, generator=0)
    >>> W, a = P.init("small", rank=4, scale=0.1, generator=1)
    >>> W.shape, a.shape
    (torch.Size([4, 5]), torch.Size([4]))
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ..backend.random import GeneratorLike, construction_generator, gaussian, orthonormal
from ..backend.checks import check_int
from ._checks import check_tensor

__all__ = ["TeacherStudent", "teacher_student", "ACTIVATIONS"]

ACTIVATIONS = {"relu": torch.relu, "tanh": torch.tanh, "quadratic": torch.square}


@dataclass
class TeacherStudent:
    """Training ``X (N, d)``, ``y (N,)``; held-out ``X_test (N_test, d)``, ``y_test``; teacher ``W_star``, ``a_star``.
    Built by :func:`teacher_student`.

    Reference: the two-layer teacher-student setting of over-parameterization studies; with the
    quadratic activation it is symmetric matrix sensing with rank-one measurements (e.g. Y. Li, T. Ma
    & H. Zhang, "Algorithmic Regularization in Over-parameterized Matrix Sensing and Neural Networks
    with Quadratic Activations", 2018).

    Example:
        >>> P = teacher_student(d=4, teacher_width=2, samples=30, test_samples=50, generator=0)
        >>> P.X.shape, P.y.shape, P.X_test.shape, P.W_star.shape, P.a_star.tolist()
        (torch.Size([30, 4]), torch.Size([30]), torch.Size([50, 4]), torch.Size([2, 4]), [1.0, 1.0])
    """

    X: Tensor
    y: Tensor
    X_test: Tensor
    y_test: Tensor
    W_star: Tensor
    a_star: Tensor
    activation: str = "quadratic"
    loss_kind: str = "l2"

    def forward(self, params: tuple[Tensor, Tensor], X: Tensor) -> Tensor:
        """``σ(X Wᵀ) a``: ``(N, d) -> (N,)`` for a student ``params = (W (k, d), a (k,))`` in the
        problem's dtype and on its device (else a TypeError/ValueError naming the argument).

        Example:
            >>> P = teacher_student(d=4, teacher_width=2, samples=30, test_samples=50, generator=0)
            >>> torch.allclose(P.forward((P.W_star, P.a_star), P.X), P.y)  # the teacher
            True
            >>> P.forward((torch.ones(3, 4, dtype=torch.float64), torch.ones(3, dtype=torch.float64)), P.X[:2]).shape
            torch.Size([2])
        """
        if not (isinstance(params, tuple) and len(params) == 2):
            raise TypeError(f"params must be a pair (W (k, d), a (k,)), got {type(params).__name__}")
        d = self.X.shape[1]
        W = check_tensor(params[0], "params[0] (W)", (None, d), self.X)
        a = check_tensor(params[1], "params[1] (a)", (W.shape[0],), self.X)
        check_tensor(X, "X", (None, d), self.X)
        return ACTIVATIONS[self.activation](X @ W.mT) @ a

    def loss(self, params: tuple[Tensor, Tensor]) -> Tensor:
        """Training loss ``1/(2N) Σ (f(x_i) − y_i)²`` (``loss="l1"``: mean ``|f − y|``), 0-dim.

        Example:
            >>> P = teacher_student(d=4, teacher_width=2, samples=30, test_samples=50, generator=0)
            >>> float(P.loss((P.W_star, P.a_star)))
            0.0
            >>> zero = (torch.zeros(2, 4, dtype=torch.float64), torch.zeros(2, dtype=torch.float64))
            >>> torch.allclose(P.loss(zero), 0.5 * P.y.square().mean())
            True
        """
        r = self.forward(params, self.X) - self.y
        return r.abs().mean() if self.loss_kind == "l1" else 0.5 * r.square().mean()

    def relative_error(self, params: tuple[Tensor, Tensor]) -> Tensor:
        """Held-out ``‖f − f*‖ / ‖f*‖`` over ``X_test`` (0-dim).

        Example:
            >>> P = teacher_student(d=4, teacher_width=2, samples=30, test_samples=50, generator=0)
            >>> W, a = P.W_star, P.a_star
            >>> float(P.relative_error((W, a))), float(P.relative_error((W, 2 * a)))  # f = 2 f*
            (0.0, 1.0)
        """
        return torch.linalg.vector_norm(self.forward(params, self.X_test) - self.y_test) / torch.linalg.vector_norm(self.y_test)

    def init(self, kind: str = "small", *, rank: int | None = None, scale: float = 1e-3,
             generator: GeneratorLike = None) -> tuple[Tensor, Tensor]:
        """Student of width ``rank`` (default the teacher's).

        * ``"small"``: ``W = scale·G/√d``, ``a = scale·G/√k``;
        * ``"spectral"`` (quadratic activation only): rows ``√λ_j v_j`` from the top-``rank``
          eigenpairs of ``(1/2N) Σ y_i (x_i x_iᵀ − I)`` (an unbiased estimate of ``W*ᵀ diag(a*) W*``), ``a = 1``.

        ``generator=None`` draws from torch's default generator (the construction rule, docs/index.md).

        Returns:
            ``(W (rank, d), a (rank,))``.

        Example:
            >>> P = teacher_student(d=4, teacher_width=2, samples=4000, test_samples=10, generator=0)
            >>> W, a = P.init("spectral")
            >>> W.shape, a.tolist(), bool(torch.dist(W.T @ W, P.W_star.T @ P.W_star) < 0.2)
            (torch.Size([2, 4]), [1.0, 1.0], True)
        """
        k = self.W_star.shape[0] if rank is None else rank
        d = self.X.shape[1]
        if k < 1:
            raise ValueError(f"rank must be >= 1, got {k}")
        dt, dev = self.X.dtype, self.X.device
        if kind == "small":
            g = construction_generator(generator)
            return (scale * gaussian((k, d), generator=g, dtype=dt, device=dev) / d**0.5,
                    scale * gaussian((k,), generator=g, dtype=dt, device=dev) / k**0.5)
        if kind == "spectral":
            if self.activation != "quadratic":
                raise ValueError("spectral init is defined for activation='quadratic' only")
            if k > d:
                raise ValueError(f"rank must be <= d = {d} for spectral init, got {k}")
            N = self.X.shape[0]
            M = (self.X.mT * self.y) @ self.X / (2 * N) - self.y.mean() / 2 * torch.eye(d, dtype=dt, device=dev)
            evals, evecs = torch.linalg.eigh(M)
            return (evecs[:, -k:] * evals[-k:].clamp_min(0).sqrt()).mT.contiguous(), torch.ones(k, dtype=dt, device=dev)
        raise ValueError(f"kind must be 'small' or 'spectral', got {kind!r}")


def teacher_student(d: int, teacher_width: int, samples: int, *, activation: str = "quadratic", test_samples: int = 1000,
                    loss: str = "l2", generator: GeneratorLike = None, dtype=torch.float64, device=None) -> TeacherStudent:
    """Build a two-layer teacher-student problem (see the module docstring).

    ``generator=None`` draws from torch's default generator (the construction rule, docs/index.md).

    Args:
        d: input dimension. teacher_width: ``k* ∈ [1, d]``. samples, test_samples: ``N``, ``N_test``.
        activation: ``"quadratic"``, ``"relu"`` or ``"tanh"``. loss: ``"l2"`` or ``"l1"``.

    Returns:
        a :class:`TeacherStudent`.

    Example:
        >>> P = teacher_student(d=6, teacher_width=3, samples=20, activation="relu", generator=0)
        >>> torch.allclose(P.W_star @ P.W_star.T, torch.eye(3, dtype=torch.float64))  # orthonormal rows
        True
        >>> torch.allclose(P.y, torch.relu(P.X @ P.W_star.T).sum(1))
        True
    """
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
    check_int(d, "d")
    check_int(teacher_width, "teacher_width")
    check_int(samples, "samples")
    check_int(test_samples, "test_samples")
    if not 1 <= teacher_width <= d:
        raise ValueError(f"teacher_width must be in [1, d] = [1, {d}], got {teacher_width}")
    if loss not in ("l2", "l1"):
        raise ValueError(f"loss must be 'l2' or 'l1', got {loss!r}")
    g = construction_generator(generator)
    Q = orthonormal(d, teacher_width, generator=g, dtype=dtype, device=device)
    W, a = Q.mT.contiguous(), torch.ones(teacher_width, dtype=dtype, device=device)
    X = gaussian((samples, d), generator=g, dtype=dtype, device=device)
    Xt = gaussian((test_samples, d), generator=g, dtype=dtype, device=device)
    act = ACTIVATIONS[activation]
    return TeacherStudent(X=X, y=act(X @ W.mT) @ a, X_test=Xt, y_test=act(Xt @ W.mT) @ a, W_star=W, a_star=a,
                          activation=activation, loss_kind=loss)
