"""Run only in a subprocess with TRITON_INTERPRET=1 (see test_packed_step.py)."""

import os

import pytest
import torch

from overparam.backend.packed_step import packed_adamw_step, packed_sgd_step

pytestmark = pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") != "1", reason="needs TRITON_INTERPRET=1")


def _setup(dtype, dense):
    g = torch.Generator().manual_seed(3)
    p = torch.randn(37, 29, generator=g).to(dtype)
    grad = torch.randn(37, 29, generator=g).to(dtype)
    idx = None if dense else (torch.rand(37 * 29, generator=g) < 0.3).nonzero().squeeze(1)
    k = p.numel() if dense else idx.numel()
    state = [torch.rand(k, generator=g).to(dtype) for _ in range(3)]
    return p, grad, idx, state


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("dense", [False, True])
@pytest.mark.parametrize("decoupled,amsgrad", [(True, False), (False, False), (True, True)])
def test_adamw_triton_equals_reference(dtype, dense, decoupled, amsgrad):
    out = []
    for impl in ("triton", "reference"):
        p, grad, idx, (m, v, vm) = _setup(dtype, dense)
        packed_adamw_step(p, grad, idx, m, v, vm if amsgrad else None, lr=1e-2, beta1=0.9, beta2=0.99, eps=1e-8,
                          weight_decay=0.1, step=3, decoupled=decoupled, impl=impl)
        out.append((p, m, v, vm))
    tol = 1e-6 if dtype == torch.float32 else 2e-3
    for a, b in zip(*out):
        assert torch.allclose(a.float(), b.float(), rtol=tol, atol=tol)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("dense", [False, True])
@pytest.mark.parametrize("kw", [dict(), dict(momentum=0.9, first=True), dict(momentum=0.9, dampening=0.1, weight_decay=0.01),
                                dict(momentum=0.8, nesterov=True)])
def test_sgd_triton_equals_reference(dtype, dense, kw):
    out = []
    for impl in ("triton", "reference"):
        p, grad, idx, (b, _, _) = _setup(dtype, dense)
        packed_sgd_step(p, grad, idx, b if kw.get("momentum") else None, lr=0.1, impl=impl, **kw)
        out.append((p, b))
    tol = 1e-6 if dtype == torch.float32 else 2e-3
    for a, c in zip(*out):
        assert torch.allclose(a.float(), c.float(), rtol=tol, atol=tol)
