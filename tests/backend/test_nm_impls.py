import itertools
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings, strategies as st

from overparam.backend import nm as N


def _exhaustive_best(g: torch.Tensor, n: int) -> torch.Tensor:
    """Best kept magnitude per group over all C(m, n) patterns."""
    m = g.shape[1]
    pats = torch.tensor([[i in c for i in range(m)] for c in itertools.combinations(range(m), n)], dtype=g.dtype)
    return (g @ pats.T).max(1).values


@settings(max_examples=40, deadline=None)
@given(m=st.sampled_from([2, 4, 8, 16]), data=st.data(), rows=st.integers(1, 5), groups=st.integers(1, 4),
       dtype=st.sampled_from([torch.float32, torch.float16, torch.bfloat16]), impl=st.sampled_from(["reference", "batched"]),
       ties=st.booleans(), seed=st.integers(0, 2**16))
def test_nm_exact_count_and_optimal(m, data, rows, groups, dtype, impl, ties, seed):
    n = data.draw(st.integers(1, m - 1))
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(rows, groups * m, generator=g)
    if ties:
        w = torch.randint(-2, 3, w.shape, generator=g).float()
    w = w.to(dtype)
    mask = N.nm_mask(w.abs(), n, m, impl=impl)
    assert mask.dtype == torch.bool and mask.shape == w.shape
    assert bool((N.nm_groups(mask, m).sum(1) == n).all())  # exactly n per group
    kept = (N.nm_groups(w.abs().double(), m) * N.nm_groups(mask, m)).sum(1)
    best = _exhaustive_best(N.nm_groups(w.abs().double(), m), n)
    assert torch.equal(kept, best)
    # both implementations agree exactly, ties included (earlier index kept)
    other = N.nm_mask(w.abs(), n, m, impl="reference" if impl == "batched" else "batched")
    assert torch.equal(mask, other)


def test_tie_break_keeps_earlier():
    assert N.nm_mask(torch.ones(1, 4), 2, 4).tolist() == [[True, True, False, False]]


def test_m4_equals_best_of_six_patterns():
    w = torch.randn(32, 64, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    mask = N.nm_mask(w.abs(), 2, 4)
    groups = N.nm_groups(w.abs(), 4)
    pats = [c for c in itertools.combinations(range(4), 2)]
    assert len(pats) == 6
    best = torch.stack([groups[:, list(p)].sum(1) for p in pats], 1).max(1).values
    assert torch.allclose((groups * N.nm_groups(mask, 4)).sum(1), best, rtol=0, atol=0)


def test_conv_grouped_along_input_channels():
    w = torch.randn(3, 8, 3, 3, generator=torch.Generator().manual_seed(0))
    mask = N.nm_mask(w.abs(), 2, 4)
    # at every (out, kh, kw), each block of 4 input channels keeps 2
    blocks = mask.permute(0, 2, 3, 1).reshape(3, 3, 3, 2, 4)
    assert (blocks.sum(-1) == 2).all()
    with pytest.raises(ValueError, match="not divisible by M=4"):
        N.nm_mask(torch.randn(3, 6, 3, 3), 2, 4)


@pytest.mark.parametrize("n,m", [(2, 2), (0, 4), (5, 4)])
def test_bad_nm_raises(n, m):
    with pytest.raises(ValueError, match="1 <= N < M"):
        N.nm_mask(torch.rand(4, 4), n, m)


@pytest.mark.parametrize("impl", ["reference", "batched"])
def test_nan_raises(impl):
    with pytest.raises(ValueError, match="NaN"):
        N.nm_mask(torch.tensor([[1.0, 2.0, float("nan"), 1.0]]), 1, 2, impl=impl)


@settings(max_examples=30, deadline=None)
@given(m=st.integers(2, 8), data=st.data(), seed=st.integers(0, 2**16), dtype=st.sampled_from([torch.float32, torch.float16]))
def test_pairwise_and_topk_equal_reference_with_infinities(m, data, seed, dtype):
    """Both batched paths (pairwise ranks for M <= 8, top-k beyond) against the stable sort,
    on scores with heavy ties and ±inf, for every M (not only powers of two)."""
    n = data.draw(st.integers(1, m - 1))
    g = torch.Generator().manual_seed(seed)
    vals = torch.tensor([-float("inf"), -1.0, 0.0, 0.0, 2.0, float("inf")])
    w = vals[torch.randint(0, len(vals), (3, 4 * m), generator=g)].to(dtype)
    ref = N.nm_reference(w, n, m)
    assert torch.equal(N._nm_pairwise(w, n, m), ref)
    assert torch.equal(N._nm_topk(w, n, m), ref)
    assert torch.equal(N.nm_mask(w, n, m, impl="batched"), ref)


def test_nan_raises_on_both_batched_paths():
    for m in (4, 16):
        w = torch.rand(2, m)
        w[1, m - 1] = float("nan")
        with pytest.raises(ValueError, match="NaN"):
            N.nm_mask(w, 2, m, impl="batched")


@pytest.mark.slow
def test_triton_nm_kernel_under_interpreter():
    """The Triton kernel equals the reference; run in a fresh process with TRITON_INTERPRET=1
    (the variable must be set before triton is imported)."""
    pytest.importorskip("triton")
    here = Path(__file__).parent
    env = {**os.environ, "TRITON_INTERPRET": "1", "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(here / "triton_nm_interpreted.py")],
                       env=env, cwd=here.parent.parent, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert " passed" in r.stdout and "skipped" not in r.stdout


def test_compiled_equals_the_reference_bitwise(monkeypatch):
    """The compiled pairwise ranks (M = 3, 4, 8, 16; fp32 and fp16; ties and ±inf; both grouped dims) equal the stable sort.
    Traced with aot_eager (the graph inductor compiles, without generating code: fast), with dynamo told to fail
    rather than fall back to eager when it runs out of recompilations; one inductor test below."""
    monkeypatch.setenv("OVERPARAM_COMPILE_BACKEND", "aot_eager")
    torch._dynamo.reset()
    g = torch.Generator().manual_seed(0)
    vals = torch.tensor([-float("inf"), -1.0, 0.0, 0.0, 2.0, float("inf")])
    with torch._dynamo.config.patch(fail_on_recompile_limit_hit=True, recompile_limit=32):   # one graph per (n, m)
        for n, m, dtype in ((1, 3, torch.float32), (2, 4, torch.float16), (3, 8, torch.float32), (5, 16, torch.float32)):
            w = vals[torch.randint(0, len(vals), (6, 4 * m), generator=g)].to(dtype)
            assert torch.equal(N.nm_mask(w, n, m, impl="compiled"), N.nm_reference(w, n, m)), (n, m)
            wt = w.T.contiguous()
            assert torch.equal(N.nm_mask(wt, n, m, dim=0, impl="compiled"), N.nm_reference(wt, n, m, 0)), (n, m)


@pytest.mark.slow
def test_compiled_with_inductor_equals_the_reference():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(16, 64, generator=g)
    w[2] = w[2].round()                                   # ties
    for n, m in ((2, 4), (4, 16)):
        assert torch.equal(N.nm_mask(w.abs(), n, m, impl="compiled"), N.nm_reference(w.abs(), n, m))
    with pytest.raises(ValueError, match="NaN"):
        N.nm_mask(torch.tensor([[1.0, float("nan"), 0.0, 2.0]]), 2, 4, impl="compiled")


def test_nm_mask_is_registered_with_four_implementations():
    from overparam.backend import dispatch

    assert [i.name for i in dispatch.implementations("nm_mask")] == ["reference", "batched", "compiled", "triton"]
    assert dispatch.choose("nm_mask", device="cpu") is N.nm_batched  # auto off CUDA
    assert dispatch.choose("nm_mask", "reference") is N.nm_reference
