"""Every Triton kernel against its reference on a CUDA device, bf16 included (skipped without CUDA;
the same kernels run on CPU under TRITON_INTERPRET=1 in the *_interpreted.py files)."""

import pytest
import torch

pytest.importorskip("triton")
pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")

from overparam.backend.nm import nm_mask  # noqa: E402
from overparam.backend.packed_step import packed_adamw_step, packed_sgd_step  # noqa: E402
from overparam.backend.softmax_ce import softmax_ce_hvp  # noqa: E402
from overparam.backend.sparse24 import nm_compress_24  # noqa: E402

DTYPES = [torch.float32, torch.float16, torch.bfloat16]
TOL = {torch.float32: 1e-6, torch.float16: 2e-3, torch.bfloat16: 2e-2}


@pytest.mark.parametrize("dtype", DTYPES)
def test_nm_mask(dtype):
    s = torch.rand(64, 256, device="cuda").to(dtype)
    for n, m in ((2, 4), (1, 8), (5, 16)):
        assert torch.equal(nm_mask(s, n, m, impl="triton"), nm_mask(s, n, m, impl="reference"))


@pytest.mark.parametrize("dtype", DTYPES)
def test_nm_compress_24(dtype):
    w = torch.randn(64, 256, device="cuda").to(dtype)
    for a, b in zip(nm_compress_24(w, impl="triton"), nm_compress_24(w, impl="reference")):
        assert torch.equal(a, b)


@pytest.mark.parametrize("dtype", DTYPES)
def test_softmax_ce_hvp(dtype):
    z = 3 * torch.randn(4, 33, 5003, device="cuda")
    u = torch.randn_like(z)
    y = torch.randint(0, 5003, (4, 33), device="cuda")
    y[:, ::3] = -100
    got = softmax_ce_hvp(z.to(dtype), u.to(dtype), y, impl="triton").float()
    ref = softmax_ce_hvp(z.to(dtype).float(), u.to(dtype).float(), y, impl="reference")
    assert torch.allclose(got, ref, rtol=TOL[dtype], atol=TOL[dtype] * float(ref.abs().max()))


@pytest.mark.parametrize("dtype", DTYPES)
def test_packed_steps(dtype):
    g = torch.Generator(device="cuda").manual_seed(0)
    p0 = torch.randn(300, 70, device="cuda", generator=g).to(dtype)
    grad = torch.randn(300, 70, device="cuda", generator=g).to(dtype)
    idx = (torch.rand(300 * 70, device="cuda", generator=g) < 0.3).nonzero().squeeze(1)
    out = []
    for impl in ("triton", "reference"):
        p, m, v, b = p0.clone(), torch.zeros(idx.numel(), device="cuda", dtype=dtype), \
            torch.zeros(idx.numel(), device="cuda", dtype=dtype), torch.zeros(idx.numel(), device="cuda", dtype=dtype)
        packed_adamw_step(p, grad, idx, m, v, lr=1e-2, beta1=0.9, beta2=0.99, eps=1e-8, weight_decay=0.1, step=1,
                          impl=impl)
        packed_sgd_step(p, grad, idx, b, lr=1e-2, momentum=0.9, first=True, impl=impl)
        out.append((p.float(), m.float(), v.float(), b.float()))
    for a, c in zip(*out):
        assert torch.allclose(a, c, rtol=TOL[dtype], atol=TOL[dtype])
