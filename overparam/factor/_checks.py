"""Argument checks shared by the factor modules (the generic ones live in ``backend.checks``)."""

from __future__ import annotations

import torch
from torch import Tensor, nn


def check_module(model, name: str = "model") -> nn.Module:
    """``model`` unchanged, or a ``TypeError`` naming ``name`` unless it is an ``nn.Module``."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"{name} must be an nn.Module, got {type(model).__name__}")
    return model


def check_finite(x: Tensor, name: str) -> Tensor:
    """``x`` unchanged, or a ``ValueError`` naming ``name`` if it holds NaN or inf (an SVD or
    eigendecomposition of it would fail or return garbage)."""
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} holds NaN or inf entries; it must be finite")
    return x


def check_same_dtype(a: Tensor, b: Tensor, names: tuple[str, str]) -> None:
    """A ``TypeError`` naming both arguments unless ``a`` and ``b`` share a dtype."""
    if a.dtype != b.dtype:
        raise TypeError(f"{names[0]} and {names[1]} must have the same dtype, got {a.dtype} and {b.dtype}")
