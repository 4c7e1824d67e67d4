"""Packed optimizer steps against torch's own optimizers run on the kept entries alone (fp64)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from overparam.backend import dispatch
from overparam.backend.packed_step import packed_adamw_step, packed_sgd_step

D = torch.float64


def _problem(seed=0):
    g = torch.Generator().manual_seed(seed)
    p0 = torch.randn(6, 7, generator=g, dtype=D)
    grads = [torch.randn(6, 7, generator=g, dtype=D) for _ in range(4)]
    idx = (torch.rand(42, generator=g) < 0.4).nonzero().squeeze(1)
    return p0, grads, idx


@pytest.mark.parametrize("dense", [False, True])
@pytest.mark.parametrize("kw", [dict(weight_decay=0.1), dict(weight_decay=0.1, amsgrad=True), dict(weight_decay=0.0)])
@pytest.mark.parametrize("decoupled", [True, False])
def test_adamw_equals_torch_on_the_kept_entries(dense, kw, decoupled):
    p0, grads, idx = _problem()
    idx = None if dense else idx
    kept = p0.reshape(-1) if dense else p0.reshape(-1)[idx]
    ref = kept.clone().requires_grad_()
    opt = (torch.optim.AdamW if decoupled else torch.optim.Adam)([ref], lr=0.05, betas=(0.8, 0.9), eps=1e-6, **kw)
    p = p0.clone()
    k = p.numel() if dense else idx.numel()
    m, v, vm = (torch.zeros(k, dtype=D) for _ in range(3))
    for t, g in enumerate(grads, 1):
        ref.grad = g.reshape(-1) if dense else g.reshape(-1)[idx]
        opt.step()
        packed_adamw_step(p, g, idx, m, v, vm if kw.get("amsgrad") else None, lr=0.05, beta1=0.8, beta2=0.9, eps=1e-6,
                          weight_decay=kw["weight_decay"], step=t, decoupled=decoupled, impl="reference")
    got = p.reshape(-1) if dense else p.reshape(-1)[idx]
    assert torch.allclose(got, ref.detach(), rtol=1e-13, atol=1e-15)
    if not dense:
        rest = torch.ones(42, dtype=torch.bool)
        rest[idx] = False
        assert torch.equal(p.reshape(-1)[rest], p0.reshape(-1)[rest])   # pruned entries untouched


@pytest.mark.parametrize("dense", [False, True])
@pytest.mark.parametrize("kw", [dict(), dict(momentum=0.9), dict(momentum=0.9, dampening=0.2, weight_decay=0.05),
                                dict(momentum=0.7, nesterov=True, weight_decay=0.01)])
def test_sgd_equals_torch_on_the_kept_entries(dense, kw):
    p0, grads, idx = _problem(1)
    idx = None if dense else idx
    kept = p0.reshape(-1) if dense else p0.reshape(-1)[idx]
    ref = kept.clone().requires_grad_()
    opt = torch.optim.SGD([ref], lr=0.1, **kw)
    p = p0.clone()
    b = torch.zeros(p.numel() if dense else idx.numel(), dtype=D) if kw.get("momentum") else None
    for t, g in enumerate(grads):
        ref.grad = g.reshape(-1) if dense else g.reshape(-1)[idx]
        opt.step()
        packed_sgd_step(p, g, idx, b, lr=0.1, first=t == 0, impl="reference", **kw)
    got = p.reshape(-1) if dense else p.reshape(-1)[idx]
    assert torch.allclose(got, ref.detach(), rtol=1e-13, atol=1e-15)


def test_registered_and_bad_inputs():
    assert [i.name for i in dispatch.implementations("packed_adamw_step")] == ["reference", "triton"]
    assert [i.name for i in dispatch.implementations("packed_sgd_step")] == ["reference", "triton"]
    p = torch.zeros(4)
    with pytest.raises(ValueError, match="exp_avg must hold 2 entries"):
        packed_adamw_step(p, p, torch.tensor([0, 1]), torch.zeros(3), torch.zeros(2), lr=0.1, beta1=0.9, beta2=0.9,
                          eps=1e-8, weight_decay=0.0, step=1)
    with pytest.raises(TypeError, match="index must be a 1-D int64"):
        packed_sgd_step(p, p, torch.tensor([0.0]), None, lr=0.1)
    with pytest.raises(ValueError, match="grad must be a tensor of param's shape"):
        packed_sgd_step(p, torch.zeros(3), None, None, lr=0.1)
    with pytest.raises(ValueError, match="momentum_buffer"):
        packed_sgd_step(p, p, None, None, lr=0.1, momentum=0.9)


def test_triton_kernels_under_interpreter():
    """The Triton kernels equal the references (fp32 1e-6, fp16); a fresh process with TRITON_INTERPRET=1."""
    pytest.importorskip("triton")
    here = Path(__file__).parent
    env = {**os.environ, "TRITON_INTERPRET": "1", "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                        str(here / "triton_packed_step_interpreted.py")], env=env, capture_output=True, text=True,
                       cwd=here.parents[1], timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert " passed" in r.stdout and "skipped" not in r.stdout.splitlines()[-1]
