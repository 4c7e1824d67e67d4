"""The 2:4 (and fp32 1:2) semi-structured format: validation, pure-torch compress/decompress,
and the hand-off to ``torch.sparse.to_sparse_semi_structured`` on CUDA.

``to_sparse_semi_structured`` silently corrupts a tensor that is not 2:4, so
:func:`to_semi_structured` validates first and refuses otherwise. Along the last dimension,
every quad of 4 entries may hold at most 2 non-zeros; for float32 the hardware pattern is
1:2 (at most one non-zero in every pair), which is also a valid 2:4 pattern.

The CPU format of :func:`compress` is ``values (rows, cols/2)`` (the two kept entries of each
quad, in order) and ``meta (rows, cols/16)`` int16, four 4-bit quad codes per int16, each code
holding the two 2-bit positions (low bits = first). It is the layout of NVIDIA's sparse
metadata before the CUTLASS interleave. A quad with fewer than 2 non-zeros stores zeros at
its first free positions; :func:`decompress` is the bit-exact inverse on validated input
(a ``-0.0`` at a position that is not stored comes back as ``+0.0``).

These functions take the weight as the computation's matrix ``(out, in)``: an ``nn.Linear``
weight as it is, a transformers ``Conv1D`` weight (stored ``(in, out)``, whose N:M masks from
:func:`~overparam.prune.nm.nm_masks` run along storage dim 0) as
``overparam.backend.layers.layout_of(module).as_matrix(weight)``, i.e. ``weight.T``.

Example:
    >>> import torch
    >>> w = torch.tensor([[0., 1.5, 0., -2., 3., 0., 0., 0.] * 2])
    >>> values, meta = compress(w)
    >>> values.tolist()
    [[1.5, -2.0, 3.0, 0.0, 1.5, -2.0, 3.0, 0.0]]
    >>> torch.equal(decompress(values, meta, w.shape[1]), w)
    True
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..backend.sparse24 import compress_24, decompress_24

__all__ = ["pattern_for", "validate", "is_semi_structured", "compress", "decompress", "to_semi_structured"]


def pattern_for(dtype: torch.dtype) -> tuple[int, int]:
    """``(1, 2)`` for float32, ``(2, 4)`` otherwise."""
    return (1, 2) if dtype == torch.float32 else (2, 4)


def _pattern(w: Tensor, pattern) -> tuple[int, int]:
    """``pattern`` (default :func:`pattern_for`) checked: a pair of ints ``1 <= n < m``; ``w`` a tensor."""
    if not isinstance(w, Tensor):
        raise TypeError(f"w must be a torch.Tensor, got {type(w).__name__}")
    if pattern is None:
        return pattern_for(w.dtype)
    ok = isinstance(pattern, tuple) and len(pattern) == 2 and all(
        isinstance(v, int) and not isinstance(v, bool) for v in pattern)
    if not ok or not 1 <= pattern[0] < pattern[1]:
        raise ValueError(f"pattern must be a pair of ints (n, m) with 1 <= n < m, got {pattern!r}")
    return pattern


def _violations(w: Tensor, n: int, m: int) -> Tensor:
    if w.dim() != 2 or w.numel() == 0:
        raise ValueError(f"w must be a non-empty 2-D tensor (semi-structured tensors are 2-D), got shape {tuple(w.shape)}")
    if w.shape[1] % m:
        raise ValueError(f"the last dimension of w ({w.shape[1]}) must be divisible by {m}")
    return ((w.reshape(w.shape[0], w.shape[1] // m, m) != 0).sum(-1) > n)


def is_semi_structured(w: Tensor, *, pattern: tuple[int, int] | None = None) -> bool:
    """Whether every group along the last dim of 2-D ``w`` has at most ``n`` non-zeros (a NaN counts
    as a non-zero: only the zero pattern is read).

    Example:
        >>> is_semi_structured(torch.tensor([[1., 1., 0., 0.]], dtype=torch.float16))
        True
    """
    n, m = _pattern(w, pattern)
    return not bool(_violations(w, n, m).any())


def validate(w: Tensor, *, pattern: tuple[int, int] | None = None) -> None:
    """Raise ``ValueError`` naming the first offending group unless ``w`` is semi-structured.

    Example:
        >>> validate(torch.tensor([[1., 0., 2., 0.]], dtype=torch.float16))  # 2:4: fine
        >>> try:
        ...     validate(torch.tensor([[1., 1., 2., 0.]], dtype=torch.float16))
        ... except ValueError as e:
        ...     print(e)
        w is not 2:4 sparse: row 0, columns 0..3 hold 3 non-zeros (1 bad groups in all)
    """
    n, m = _pattern(w, pattern)
    bad = _violations(w, n, m)
    if bool(bad.any()):
        r, g = (int(i) for i in bad.nonzero()[0])
        raise ValueError(
            f"w is not {n}:{m} sparse: row {r}, columns {g * m}..{g * m + m - 1} hold "
            f"{int((w[r, g * m:(g + 1) * m] != 0).sum())} non-zeros ({int(bad.sum())} bad groups in all)"
        )


def compress(w: Tensor) -> tuple[Tensor, Tensor]:
    """2:4 compress a validated 2-D ``(rows, cols)`` tensor, ``cols % 16 == 0``
    (:func:`overparam.backend.sparse24.compress_24` after :func:`validate`).

    Returns:
        ``values (rows, cols/2)`` with ``w``'s dtype and ``meta (rows, cols/16)`` int16.

    Example:
        >>> w = torch.tensor([[1., 0., 2., 0.] * 4, [0., 3., 0., 4.] * 4])
        >>> values, meta = compress(w)
        >>> values.shape, meta.shape, meta.dtype, values[1, :2].tolist()
        (torch.Size([2, 8]), torch.Size([2, 1]), torch.int16, [3.0, 4.0])
    """
    validate(w, pattern=(2, 4))
    return compress_24(w)


def decompress(values: Tensor, meta: Tensor, cols: int) -> Tensor:
    """Inverse of :func:`compress`: the dense ``(rows, cols)`` tensor
    (:func:`overparam.backend.sparse24.decompress_24`).

    Args:
        values: ``(rows, cols/2)``; meta: ``(rows, cols/16)`` int16; cols: the dense width, a
            positive multiple of 16 that must agree with both shapes.

    Example (a round trip is exact):
        >>> w = torch.tensor([[1., 0., 2., 0.] * 4, [0., 3., 0., 4.] * 4])
        >>> torch.equal(decompress(*compress(w), 16), w)
        True
    """
    return decompress_24(values, meta, cols)


def to_semi_structured(w: Tensor):
    """Validate ``w`` (2:4, or 1:2 for float32) and convert it with
    ``torch.sparse.to_sparse_semi_structured``; CUDA only (the format needs sparse tensor cores).

    Raises:
        ValueError: ``w`` is not semi-structured (nothing is converted).
        RuntimeError: ``w`` is not on a CUDA device.

    Reference: A. Mishra et al., "Accelerating Sparse Deep Neural Networks" (arXiv:2104.08378, 2021): the 2:4
        pattern of sparse tensor cores

    Example (on CPU the validation runs, the conversion is refused):
        >>> try:
        ...     to_semi_structured(torch.tensor([[1., 0., 2., 0.] * 4] * 32, dtype=torch.float16))
        ... except RuntimeError as e:
        ...     print(str(e).split(";")[0])
        to_sparse_semi_structured needs a CUDA tensor
    """
    validate(w)
    if w.device.type != "cuda":
        raise RuntimeError("to_sparse_semi_structured needs a CUDA tensor; use compress()/decompress() on CPU")
    from torch.sparse import to_sparse_semi_structured

    return to_sparse_semi_structured(w.contiguous())     # a Conv1D's (out, in) matrix is a transposed view
