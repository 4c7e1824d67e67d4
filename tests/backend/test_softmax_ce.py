"""softmax_ce_hvp: the CE Hessian in the logits times a vector, against finite differences of
F.cross_entropy's gradient (fp64), and every implementation against the reference."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from overparam.backend import dispatch
from overparam.backend.softmax_ce import softmax_ce_hvp

D = torch.float64


def _fd(z, u, y, reduction, h=1e-6):
    """Central differences of the gradient of F.cross_entropy along u (the oracle)."""
    def grad(zz):
        zz = zz.clone().requires_grad_()
        loss = F.cross_entropy(zz.reshape(-1, zz.shape[-1]), y.reshape(-1), ignore_index=-100, reduction=reduction) \
            if y is not None else F.cross_entropy(zz.reshape(-1, zz.shape[-1]),
                                                  torch.zeros(zz.shape[:-1], dtype=torch.long).reshape(-1), reduction=reduction)
        return torch.autograd.grad(loss, zz)[0]
    return (grad(z + h * u) - grad(z - h * u)) / (2 * h)


@given(n=st.integers(1, 6), t=st.integers(1, 4), v=st.integers(2, 9), seed=st.integers(0, 10**6),
       reduction=st.sampled_from(["mean", "sum"]), drop=st.booleans())
@settings(max_examples=40, deadline=None)
def test_reference_equals_finite_differences(n, t, v, seed, reduction, drop):
    g = torch.Generator().manual_seed(seed)
    z = 2 * torch.randn(n, t, v, generator=g, dtype=D)
    u = torch.randn(n, t, v, generator=g, dtype=D)
    y = torch.randint(0, v, (n, t), generator=g)
    if drop:
        y[torch.rand(n, t, generator=g) < 0.4] = -100
        y[0, 0] = 1  # keep at least one row
    got = softmax_ce_hvp(z, u, y, reduction=reduction, impl="reference")
    assert torch.allclose(got, _fd(z, u, y, reduction), rtol=1e-7, atol=1e-9)


def test_no_target_counts_every_row_and_rows_sum_to_zero():
    g = torch.Generator().manual_seed(0)
    z, u = torch.randn(5, 7, generator=g, dtype=D), torch.randn(5, 7, generator=g, dtype=D)
    got = softmax_ce_hvp(z, u, impl="reference")
    assert torch.allclose(got, _fd(z, u, None, "mean"), rtol=1e-7, atol=1e-9)
    assert float(got.sum(-1).abs().max()) < 1e-15
    # the closed form: p ⊙ (u − <p, u>) / N
    p = torch.softmax(z, -1)
    assert torch.allclose(got, p * (u - (p * u).sum(-1, keepdim=True)) / 5, rtol=1e-14, atol=0)


@pytest.mark.slow
def test_compiled_equals_reference():
    g = torch.Generator().manual_seed(1)
    for dtype, tol in ((torch.float32, 1e-6), (D, 1e-12)):
        z = 3 * torch.randn(2, 6, 257, generator=g).to(dtype)
        u = torch.randn(2, 6, 257, generator=g).to(dtype)
        y = torch.randint(0, 257, (2, 6), generator=g)
        y[0, 1:4] = -100
        for tgt in (y, None):
            ref = softmax_ce_hvp(z, u, tgt, impl="reference")
            got = softmax_ce_hvp(z, u, tgt, impl="compiled")
            assert got.dtype == dtype
            assert torch.allclose(got, ref, rtol=tol, atol=tol * float(ref.abs().max())), dtype


def test_implementations_are_registered_and_auto_is_the_reference_on_cpu():
    names = [i.name for i in dispatch.implementations("softmax_ce_hvp")]
    assert names == ["reference", "compiled", "triton"]
    assert dispatch.choose("softmax_ce_hvp", device="cpu").__name__ == "softmax_ce_reference"  # compiling costs seconds: opt-in


def test_triton_kernel_under_interpreter():
    """The Triton kernel equals the reference (fp32 to 1e-6, fp16); run in a fresh process with TRITON_INTERPRET=1."""
    pytest.importorskip("triton")
    here = Path(__file__).parent
    env = {**os.environ, "TRITON_INTERPRET": "1", "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                        str(here / "triton_softmax_ce_interpreted.py")], env=env, capture_output=True, text=True,
                       cwd=here.parents[1], timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert " passed" in r.stdout and "skipped" not in r.stdout.splitlines()[-1]


def test_bad_arguments():
    z = torch.zeros(2, 3)
    with pytest.raises(ValueError, match="u must have the logits' shape"):
        softmax_ce_hvp(z, torch.zeros(2, 4))
    with pytest.raises(ValueError, match="target must have shape"):
        softmax_ce_hvp(z, z, torch.zeros(3, dtype=torch.long))
    with pytest.raises(TypeError, match="target must be an int64"):
        softmax_ce_hvp(z, z, torch.zeros(2))
    with pytest.raises(ValueError, match="outside"):
        softmax_ce_hvp(z, z, torch.tensor([0, 3]))
    with pytest.raises(ValueError, match="reduction"):
        softmax_ce_hvp(z, z, reduction="none")
    with pytest.raises(TypeError, match="ignore_index"):
        softmax_ce_hvp(z, z, ignore_index=1.5)
    with pytest.raises(TypeError, match="logits"):
        softmax_ce_hvp(torch.zeros(2, 3, dtype=torch.long), z)
