"""Run only in a subprocess with TRITON_INTERPRET=1 (see test_nm_impls.py)."""

import os

import pytest
import torch

from overparam.backend.nm import nm_mask

pytestmark = pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") != "1", reason="needs TRITON_INTERPRET=1")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("n,m", [(1, 2), (2, 4), (3, 4), (4, 8), (5, 16)])
@pytest.mark.parametrize("ties", [False, True])
def test_triton_equals_reference(dtype, n, m, ties):
    g = torch.Generator().manual_seed(n * 31 + m)
    shape = (5, 3 * m, 3) if m <= 4 else (3, 2 * m)  # Conv-like (out, in, k) and Linear
    s = torch.randint(0, 3, shape, generator=g).to(dtype) if ties else torch.rand(shape, generator=g).to(dtype)
    got = nm_mask(s, n, m, impl="triton")
    assert torch.equal(got, nm_mask(s, n, m, impl="reference"))


def test_triton_rejects_bf16_and_odd_m():
    with pytest.raises(TypeError, match="float32 or float16"):
        nm_mask(torch.rand(2, 4, dtype=torch.bfloat16), 2, 4, impl="triton")
    with pytest.raises(ValueError, match="power of two"):
        nm_mask(torch.rand(2, 6), 2, 3, impl="triton")
