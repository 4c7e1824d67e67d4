"""Run only in a subprocess with TRITON_INTERPRET=1 (see test_softmax_ce.py)."""

import os

import pytest
import torch

from overparam.backend.softmax_ce import softmax_ce_hvp

pytestmark = pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") != "1", reason="needs TRITON_INTERPRET=1")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("shape", [(3, 7), (2, 3, 1500), (1, 1)])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_triton_equals_reference(dtype, shape, reduction):
    g = torch.Generator().manual_seed(sum(shape))
    z = (3 * torch.randn(shape, generator=g)).to(dtype)
    u = torch.randn(shape, generator=g).to(dtype)
    y = torch.randint(0, shape[-1], shape[:-1], generator=g)
    y.view(-1)[::2] = -100
    got = softmax_ce_hvp(z, u, y, reduction=reduction, impl="triton")
    ref = softmax_ce_hvp(z.float(), u.float(), y, reduction=reduction, impl="reference")
    assert got.dtype == dtype
    tol = 1e-6 if dtype == torch.float32 else 2e-3
    assert torch.allclose(got.float(), ref, rtol=tol, atol=tol * float(ref.abs().max().clamp_min(1e-30)))
    assert (got.reshape(-1, shape[-1])[::2] == 0).all()


def test_triton_rejects_fp64():
    with pytest.raises(TypeError, match="fp64"):
        softmax_ce_hvp(torch.zeros(2, 3, dtype=torch.float64), torch.zeros(2, 3, dtype=torch.float64), impl="triton")
