"""The 2:4 compressed format, and 2:4 selection fused with compression.

Format (the layout of NVIDIA's sparse metadata before the CUTLASS interleave): a 2-D
``(rows, cols)`` tensor, ``cols % 16 == 0``, whose every quad of 4 entries along the last
dimension holds at most 2 non-zeros, is stored as ``values (rows, cols/2)`` (the two kept
entries of each quad, in position order) and ``meta (rows, cols/16)`` int16 (four 4-bit quad
codes per int16, lowest first; a code holds the two 2-bit positions, low bits = first). The
stored positions are the quad's non-zeros first, then its earliest zeros.

:func:`nm_compress_24` selects the 2 largest-magnitude entries of every quad (ties: the earlier
position, the rank rule of :func:`~overparam.backend.nm.nm_mask`) and compresses in one call:
routine ``"nm_compress_24"`` with implementations ``"reference"`` (``nm_mask`` then
:func:`compress_24` of the masked weight), ``"compiled"`` (one sort-free program under
``torch.compile``, opt-in) and ``"triton"`` (one kernel that reads every quad
once and writes the mask, values and metadata; ``"auto"`` on CUDA, on CPU only under
``TRITON_INTERPRET=1``). They agree exactly (tests).

Example:
    >>> w = torch.tensor([[0., 1.5, 0., -2., 3., 0., 0., 0.] * 2])
    >>> values, meta = compress_24(w)
    >>> values.tolist()
    [[1.5, -2.0, 3.0, 0.0, 1.5, -2.0, 3.0, 0.0]]
    >>> torch.equal(decompress_24(values, meta, w.shape[1]), w)
    True
"""

from __future__ import annotations

import torch
from torch import Tensor

from . import dispatch
from .checks import check_float
from .compiled import compile_unavailable, lazy_compile
from .nm import _pairwise_ranks, nm_mask

__all__ = ["compress_24", "decompress_24", "nm_compress_24"]


def _check_2d(w: Tensor, name: str = "w") -> None:
    if not isinstance(w, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(w).__name__}")
    if w.dim() != 2 or w.numel() == 0:
        raise ValueError(f"{name} must be a non-empty 2-D tensor, got shape {tuple(w.shape)}")
    if w.shape[1] % 16:
        raise ValueError(f"the last dimension of {name} must be divisible by 16, got {w.shape[1]}")


def compress_24(w: Tensor) -> tuple[Tensor, Tensor]:
    """2:4 compress a 2-D ``(rows, cols)`` tensor with at most 2 non-zeros per quad, ``cols % 16 == 0``.

    Returns:
        ``values (rows, cols/2)`` in ``w``'s dtype and ``meta (rows, cols/16)`` int16.
    """
    _check_2d(w)
    rows, cols = w.shape
    q = w.reshape(rows, cols // 4, 4)
    nz = q != 0
    if bool((nz.sum(-1) > 2).any()):
        raise ValueError("w is not 2:4 sparse: a quad holds more than 2 non-zeros")
    # positions of the 2 kept entries: non-zeros first, then the earliest zeros, in position order
    key = (~nz).to(torch.int64) * 4 + torch.arange(4, device=w.device)
    idx = torch.sort(torch.topk(key, 2, dim=-1, largest=False).indices, dim=-1).values  # (rows, cols/4, 2)
    values = torch.gather(q, -1, idx).reshape(rows, cols // 2)
    return values, _pack_meta(idx)


def _pack_meta(idx: Tensor) -> Tensor:
    """``meta (rows, cols/16)`` int16 from the kept positions ``idx (rows, cols/4, 2)`` (increasing, int64)."""
    rows = idx.shape[0]
    code = (idx[..., 0] | (idx[..., 1] << 2)).reshape(rows, -1, 4)
    packed = code[..., 0] | (code[..., 1] << 4) | (code[..., 2] << 8) | (code[..., 3] << 12)
    return torch.where(packed >= 2**15, packed - 2**16, packed).to(torch.int16)  # the same 16 bits, signed


def decompress_24(values: Tensor, meta: Tensor, cols: int) -> Tensor:
    """Inverse of :func:`compress_24`: the dense ``(rows, cols)`` tensor.

    Args:
        values: ``(rows, cols/2)``; meta: ``(rows, cols/16)`` int16; cols: the dense width, a
            positive multiple of 16 that must agree with both shapes.
    """
    if isinstance(cols, bool) or not isinstance(cols, int) or cols < 16 or cols % 16:
        raise ValueError(f"cols must be a positive multiple of 16, got {cols!r}")
    for name, x in (("values", values), ("meta", meta)):
        if not isinstance(x, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if values.dim() != 2 or meta.dim() != 2:
        raise ValueError(f"values and meta must be 2-D, got {tuple(values.shape)} and {tuple(meta.shape)}")
    rows = values.shape[0]
    if meta.dtype != torch.int16:
        raise TypeError(f"meta must be int16, got {meta.dtype}")
    if values.shape[1] != cols // 2 or meta.shape != (rows, cols // 16):
        raise ValueError(f"cols={cols} does not match values {tuple(values.shape)} and meta {tuple(meta.shape)}: "
                         f"cols = 2 × values.shape[1] = {2 * values.shape[1]} and 16 × meta.shape[1] = "
                         f"{16 * meta.shape[1]}")
    packed = meta.to(torch.int64) & 0xFFFF
    shifts = torch.tensor([0, 4, 8, 12], device=meta.device)
    code = ((packed.unsqueeze(-1) >> shifts) & 0xF).reshape(rows, cols // 4)
    idx = torch.stack([code & 3, (code >> 2) & 3], -1)
    if bool((idx[..., 0] >= idx[..., 1]).any()):
        raise ValueError("meta holds an invalid quad code (the two stored positions must be increasing)")
    out = torch.zeros(rows, cols // 4, 4, dtype=values.dtype, device=values.device)
    out.scatter_(-1, idx, values.reshape(rows, cols // 4, 2))
    return out.reshape(rows, cols)


@dispatch.register("nm_compress_24", "reference")
def nm_compress_24_reference(w: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """``mask = nm_mask(|w|, 2, 4)`` along the last dim, then :func:`compress_24` of ``w ⊙ mask``."""
    _check_weight(w)
    mask = nm_mask(w.abs(), 2, 4, dim=1, impl="reference")
    values, meta = compress_24(torch.where(mask, w, torch.zeros((), dtype=w.dtype, device=w.device)))
    return mask, values, meta


def _check_weight(w: Tensor) -> None:
    _check_2d(w)
    check_float(w, "w")
    if bool(torch.isnan(w).any()):
        raise ValueError("w contains NaN")


def _select_compress(w: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """The fused selection + compression as one tensor program (no sort, no data-dependent branch):
    the pairwise ranks of :func:`~overparam.backend.nm.nm_mask`'s ``"batched"`` implementation
    (``nm._pairwise_ranks``) give the mask, whose two kept positions per quad are exactly the
    positions :func:`compress_24` stores (the kept entries are the quad's non-zeros, completed by its
    earliest zeros)."""
    rows, cols = w.shape
    ranks = _pairwise_ranks(w.abs().reshape(-1, 4))
    kept = torch.stack([r < 2 for r in ranks], 1).reshape(rows, cols // 4, 4)   # 2.2× faster than stack-then-compare
    pos = torch.arange(4, device=w.device)
    idx = torch.stack([torch.where(kept, pos, 4).amin(-1), torch.where(kept, pos, -1).amax(-1)], -1)
    values = torch.gather(w.reshape(rows, cols // 4, 4), -1, idx).reshape(rows, cols // 2)
    return kept.reshape(rows, cols), values, _pack_meta(idx)


_select_compress_compiled = lazy_compile(_select_compress)


@dispatch.register("nm_compress_24", "compiled", available=compile_unavailable)
def nm_compress_24_compiled(w: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """:func:`nm_compress_24_reference` as one ``torch.compile``'d program (the first call compiles, seconds);
    equal to it bit for bit."""
    _check_weight(w)
    return _select_compress_compiled(w)


def nm_compress_24(w: Tensor, *, impl: str | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """Select 2:4 by magnitude along the last dimension and compress, in one call.

    Args:
        w: ``(rows, cols)`` float weight (the computation's ``(out, in)`` matrix), ``cols % 16 == 0``.
        impl: ``"reference"``, ``"compiled"``, ``"triton"`` or None/``"auto"``.

    Returns:
        ``(mask (rows, cols) bool, values (rows, cols/2), meta (rows, cols/16) int16)``:
        ``decompress_24(values, meta, cols) == w ⊙ mask``.

    Example:
        >>> w = torch.tensor([[4., -1., 3., 0.5] * 4])
        >>> mask, values, meta = nm_compress_24(w)
        >>> mask[0, :4].tolist(), values[0, :2].tolist()
        ([True, False, True, False], [4.0, 3.0])
    """
    return dispatch.call("nm_compress_24", w, impl=impl)
