"""Assertion helpers with messages that say what went wrong, and by how much."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator

import torch
from torch import Tensor, nn

from ..backend import vec
from ..backend.checks import check_float, check_real

__all__ = ["assert_vec_close", "assert_orthonormal", "assert_no_side_effects", "max_rel_error"]


def max_rel_error(actual: Tensor, expected: Tensor) -> float:
    """``max |a - e| / max(|e|)`` (0 when both are zero): the worst entry-wise error relative to the
    largest entry of ``expected``.

    Args:
        actual: tensor of any shape ``(...)``.
        expected: tensor broadcastable with ``actual``; a zero ``expected`` gives the absolute error.

    Returns:
        A Python float.

    Example:
        >>> max_rel_error(torch.tensor([1.0, 2.1]), torch.tensor([1.0, 2.0]))  # 0.1 / 2
        0.04999995231628418
        >>> max_rel_error(torch.zeros(2), torch.zeros(2))
        0.0
    """
    for name, t in (("actual", actual), ("expected", expected)):
        if not isinstance(t, Tensor):
            raise TypeError(f"{name} must be a tensor, got {type(t).__name__}")
        if t.numel() == 0:
            raise ValueError(f"{name} is empty")
    scale = expected.abs().max()
    err = (actual - expected).abs().max()
    return float(err / scale) if scale > 0 else float(err)


def assert_vec_close(actual: Iterable[Tensor], expected: Iterable[Tensor], *, rtol: float, atol: float = 0.0) -> None:
    """Entry-wise ``torch.testing.assert_close`` over two parameter-shaped vectors (lists of tensors
    with matching shapes); the message names the first entry that differs.

    Example:
        >>> a = [torch.ones(2, 3), torch.zeros(4)]
        >>> assert_vec_close(a, [torch.ones(2, 3), torch.zeros(4)], rtol=1e-6)
        >>> assert_vec_close(a, [torch.ones(2, 3), torch.ones(4)], rtol=1e-6)
        Traceback (most recent call last):
        ...
        AssertionError: entry 1: ...
    """
    a, e = vec.as_vec(actual, name="actual"), vec.as_vec(expected, name="expected")
    check_real(rtol, "rtol", at_least=0.0)
    check_real(atol, "atol", at_least=0.0)
    assert len(a) == len(e), f"vectors have {len(a)} and {len(e)} entries"
    for i, (x, y) in enumerate(zip(a, e)):
        try:
            torch.testing.assert_close(x, y, rtol=rtol, atol=atol)
        except AssertionError as err:
            raise AssertionError(f"entry {i}: {err}") from None


def assert_orthonormal(Q: Tensor, *, atol: float) -> None:
    """``‖QᵀQ − I‖_max <= atol`` for ``Q`` of shape ``(..., n, k)`` (orthonormal columns).

    Example:
        >>> Q, _ = torch.linalg.qr(torch.randn(5, 3, dtype=torch.float64))
        >>> assert_orthonormal(Q, atol=1e-12)
        >>> assert_orthonormal(2 * Q, atol=1e-12)
        Traceback (most recent call last):
        ...
        AssertionError: QᵀQ deviates from I by 3.000e+00 > 1.0e-12
    """
    check_float(Q, "Q")
    eye = torch.eye(Q.shape[-1], dtype=Q.dtype, device=Q.device)
    err = float((Q.mT @ Q - eye).abs().max()) if Q.shape[-1] else 0.0
    assert err <= atol, f"QᵀQ deviates from I by {err:.3e} > {atol:.1e}"


def _modes(model: nn.Module) -> dict[str, bool]:
    return {name: m.training for name, m in model.named_modules()}


@contextlib.contextmanager
def assert_no_side_effects(model: nn.Module | None = None, *, check_rng: bool = True) -> Iterator[None]:
    """Check that the body leaves the global CPU (and CUDA) RNG state, the model's train/eval
    flags and its ``state_dict`` keys exactly as they were.

    Example:
        >>> net = torch.nn.Linear(2, 2)
        >>> with assert_no_side_effects(net):
        ...     _ = net(torch.zeros(1, 2))
    """
    rng = torch.get_rng_state()
    cuda_rng = torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else None
    modes = _modes(model) if model is not None else None
    keys = list(model.state_dict().keys()) if model is not None else None
    yield
    if check_rng:
        assert torch.equal(rng, torch.get_rng_state()), "the global CPU RNG state changed"
        if cuda_rng is not None:
            after = torch.cuda.get_rng_state_all()
            assert all(torch.equal(a, b) for a, b in zip(cuda_rng, after)), "a CUDA RNG state changed"
    if model is not None:
        assert _modes(model) == modes, "train/eval flags changed"
        assert list(model.state_dict().keys()) == keys, "state_dict keys changed"
