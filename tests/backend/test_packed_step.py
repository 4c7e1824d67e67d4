"""Packed optimizer steps against torch's own optimizers run on the kept entries alone (fp64)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch._dynamo

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
    for routine in ("packed_adamw_step", "packed_sgd_step"):
        assert [i.name for i in dispatch.implementations(routine)] == ["reference", "compiled", "triton"]
        assert dispatch.choose(routine, device="cpu").__name__.endswith("_reference")   # compiling costs seconds: opt-in
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


# ---- the torch.compile variant: traced with aot_eager (the same graph, no code generation: fast), one inductor test


@pytest.fixture
def aot_eager(monkeypatch):
    """Compile with aot_eager; hitting dynamo's recompile limit (a silent eager fallback) fails the test."""
    monkeypatch.setenv("OVERPARAM_COMPILE_BACKEND", "aot_eager")
    with torch._dynamo.config.patch(recompile_limit=64, fail_on_recompile_limit_hit=True):
        yield


def _run_adamw(impl, dtype, dense, amsgrad=True, decoupled=True, weight_decay=0.1, steps=4, lrs=None):
    p0, grads, idx = _problem(2)
    p, idx = p0.to(dtype), None if dense else idx
    k = p.numel() if dense else idx.numel()
    m, v, vm = (torch.zeros(k, dtype=dtype) for _ in range(3))
    for t, g in enumerate(grads[:steps], 1):
        packed_adamw_step(p, g.to(dtype), idx, m, v, vm if amsgrad else None, lr=(lrs or [0.05] * steps)[t - 1],
                          beta1=0.8, beta2=0.9, eps=1e-6, weight_decay=weight_decay, step=t, decoupled=decoupled,
                          impl=impl)
    return p, m, v, vm


def _run_sgd(impl, dtype, dense, steps=4, **kw):
    p0, grads, idx = _problem(3)
    p, idx = p0.to(dtype), None if dense else idx
    b = torch.full((p.numel() if dense else idx.numel(),), float("nan"), dtype=dtype)   # torch.empty: never read
    for t, g in enumerate(grads[:steps]):
        packed_sgd_step(p, g.to(dtype), idx, b if kw.get("momentum") else None, lr=0.1, first=t == 0, impl=impl, **kw)
    return p, b


def _close(got, ref, tol):
    for a, b in zip(got, ref):
        assert a.dtype == b.dtype
        assert torch.allclose(a, b, rtol=tol, atol=tol, equal_nan=True), float((a - b).abs().nan_to_num().max())


@pytest.mark.parametrize("dense, kw", [(False, dict()), (True, dict(amsgrad=False, decoupled=False)),
                                       (False, dict(weight_decay=0.0, amsgrad=False))])
def test_compiled_adamw_equals_the_reference(aot_eager, dense, kw):
    _close(_run_adamw("compiled", torch.float64, dense, **kw), _run_adamw("reference", torch.float64, dense, **kw), 1e-12)


@pytest.mark.parametrize("dense, kw", [(False, dict(momentum=0.9, dampening=0.2, weight_decay=0.05)),
                                       (True, dict(momentum=0.7, nesterov=True)), (False, dict(weight_decay=0.01))])
def test_compiled_sgd_equals_the_reference(aot_eager, dense, kw):
    _close(_run_sgd("compiled", torch.float64, dense, **kw), _run_sgd("reference", torch.float64, dense, **kw), 1e-12)


def test_compiled_steps_never_recompile(aot_eager):
    """Step number, learning rate, the first-step flag and the number of kept entries are inputs, not constants."""
    _run_adamw("compiled", torch.float64, False, steps=1)
    _run_sgd("compiled", torch.float64, False, steps=1, momentum=0.9)
    with torch._dynamo.config.patch(error_on_recompile=True):
        _run_adamw("compiled", torch.float64, False, lrs=[0.05, 0.04, 0.03, 0.01])
        _run_sgd("compiled", torch.float64, False, momentum=0.9)
        p = torch.randn(5, 11, dtype=torch.float64)    # another parameter of the same rank: another shape and K
        idx = (torch.arange(55) % 3 == 0).nonzero().squeeze(1)
        m, v = torch.zeros(19, dtype=torch.float64), torch.zeros(19, dtype=torch.float64)
        packed_adamw_step(p, p.clone(), idx, m, v, v.clone(), lr=0.1, beta1=0.9, beta2=0.99, eps=1e-8,
                          weight_decay=0.1, step=7, impl="compiled")


def test_compiled_non_contiguous_param(aot_eager):
    p0, grads, idx = _problem(4)
    ps = [p0.t().contiguous().t() for _ in range(2)]                 # column-major: not contiguous
    state = [[torch.zeros(idx.numel(), dtype=D) for _ in range(2)] for _ in range(2)]
    for p, (m, v), impl in zip(ps, state, ("reference", "compiled")):
        packed_adamw_step(p, grads[0], idx, m, v, lr=0.1, beta1=0.9, beta2=0.99, eps=1e-8, weight_decay=0.1, step=1,
                          impl=impl)
    assert not ps[1].is_contiguous()
    _close((ps[1], *state[1]), (ps[0], *state[0]), 1e-12)


@pytest.mark.slow
def test_compiled_with_inductor_fp32():
    """The generated code (inductor), fp32 to 1e-6."""
    with torch._dynamo.config.patch(fail_on_recompile_limit_hit=True):
        _close(_run_adamw("compiled", torch.float32, False), _run_adamw("reference", torch.float32, False), 1e-6)
        kw = dict(momentum=0.9, nesterov=True, weight_decay=0.01)
        _close(_run_sgd("compiled", torch.float32, False, **kw), _run_sgd("reference", torch.float32, False, **kw), 1e-6)
