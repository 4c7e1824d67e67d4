"""Run only in a subprocess with TRITON_INTERPRET=1 (see test_sparse24.py)."""

import os

import pytest
import torch

from overparam.backend.sparse24 import decompress_24, nm_compress_24

pytestmark = pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") != "1", reason="needs TRITON_INTERPRET=1")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("kind", ["random", "ties", "zeros"])
def test_triton_equals_reference(dtype, kind):
    g = torch.Generator().manual_seed(7)
    shape = (9, 48)
    if kind == "random":
        w = torch.randn(shape, generator=g)
    elif kind == "ties":
        w = torch.randint(-2, 3, shape, generator=g).float()
    else:
        w = torch.randn(shape, generator=g) * (torch.rand(shape, generator=g) < 0.3)
    w = w.to(dtype)
    m1, v1, c1 = nm_compress_24(w, impl="triton")
    m2, v2, c2 = nm_compress_24(w, impl="reference")
    assert torch.equal(m1, m2) and torch.equal(v1, v2) and torch.equal(c1, c2)
    assert torch.equal(decompress_24(v1, c1, shape[1]), torch.where(m1, w, torch.zeros((), dtype=dtype)))
