"""2:4 compression and selection+compression: exhaustive over quads, round trips, the Triton kernel."""

import itertools
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch._dynamo

from overparam.backend import dispatch
from overparam.backend.sparse24 import compress_24, decompress_24, nm_compress_24


def _all_quads():
    """Every quad over {-2, -1, 0, 1, 2} (625), laid out 4 quads per 16-wide row (padded with one quad)."""
    quads = torch.tensor(list(itertools.product([-2.0, -1.0, 0.0, 1.0, 2.0], repeat=4)))
    quads = torch.cat([quads, torch.zeros(3, 4)])           # 628 quads = 157 rows of 4
    return quads.reshape(-1, 16)


def test_selection_keeps_the_two_largest_magnitudes_earliest_on_ties():
    w = _all_quads()
    mask, values, meta = nm_compress_24(w, impl="reference")
    for q, mq in zip(w.reshape(-1, 4), mask.reshape(-1, 4)):
        order = sorted(range(4), key=lambda i: (-abs(float(q[i])), i))   # the rank rule, by hand
        assert mq.tolist() == [i in order[:2] for i in range(4)]
    assert torch.equal(decompress_24(values, meta, 16), torch.where(mask, w, torch.zeros(())))


def test_compress_stores_nonzeros_first_then_earliest_zeros():
    w = torch.tensor([[0.0, 0.0, 0.0, 5.0] * 4, [0.0, 0.0, 0.0, 0.0] * 4, [3.0, 0.0, 2.0, 0.0] * 4])
    values, meta = compress_24(w)
    assert values[0, :2].tolist() == [0.0, 5.0] and values[2, :2].tolist() == [3.0, 2.0]
    code0 = int(meta[0, 0]) & 0xF
    assert (code0 & 3, code0 >> 2) == (0, 3)          # positions 0 (earliest zero) and 3 (the non-zero)
    assert (int(meta[1, 0]) & 0xF) == (0 | (1 << 2))  # all zeros: positions 0 and 1
    for r in range(3):
        assert torch.equal(decompress_24(values[r:r + 1], meta[r:r + 1], 16), w[r:r + 1])


def test_registered_and_bad_inputs():
    assert [i.name for i in dispatch.implementations("nm_compress_24")] == ["reference", "compiled", "triton"]
    assert dispatch.choose("nm_compress_24", device="cpu").__name__ == "nm_compress_24_reference"  # compiling: opt-in
    with pytest.raises(ValueError, match="divisible by 16"):
        nm_compress_24(torch.zeros(2, 8))
    with pytest.raises(ValueError, match="2-D"):
        nm_compress_24(torch.zeros(16))
    for impl in ("reference", "compiled"):             # the compiled variant checks eagerly, before compiling
        with pytest.raises(ValueError, match="NaN"):
            nm_compress_24(torch.full((1, 16), float("nan")), impl=impl)
        with pytest.raises(ValueError, match="divisible by 16"):
            nm_compress_24(torch.zeros(2, 8), impl=impl)
    with pytest.raises(ValueError, match="more than 2 non-zeros"):
        compress_24(torch.ones(1, 16))
    with pytest.raises(ValueError, match="invalid quad code"):
        decompress_24(torch.ones(1, 8), torch.zeros(1, 1, dtype=torch.int16), 16)
    with pytest.raises(TypeError, match="w must be"):
        compress_24([[1.0] * 16])


def test_triton_kernel_under_interpreter():
    """The fused Triton kernel equals the reference exactly; run in a fresh process with TRITON_INTERPRET=1."""
    pytest.importorskip("triton")
    here = Path(__file__).parent
    env = {**os.environ, "TRITON_INTERPRET": "1", "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                        str(here / "triton_sparse24_interpreted.py")], env=env, capture_output=True, text=True,
                       cwd=here.parents[1], timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert " passed" in r.stdout and "skipped" not in r.stdout.splitlines()[-1]


def _bits(t):
    return t.view({2: torch.int16, 4: torch.int32, 8: torch.int64}[t.element_size()]) if t.is_floating_point() else t


def _assert_bitwise(got, ref):
    for a, b in zip(got, ref):
        assert a.dtype == b.dtype and a.shape == b.shape and torch.equal(_bits(a), _bits(b))


def test_compiled_equals_the_reference_bitwise_on_every_quad(monkeypatch, dtype=torch.float32):
    """Every quad over {−2, −1, −0, 0, 1, 2} (ties, signed zeros, all-zero quads): mask, values (to the bit) and meta.
    Traced with aot_eager (the same graph as inductor's, no code generation); one inductor test below."""
    monkeypatch.setenv("OVERPARAM_COMPILE_BACKEND", "aot_eager")
    quads = torch.tensor(list(itertools.product([-2.0, -1.0, -0.0, 0.0, 1.0, 2.0], repeat=4)))   # 1296 = 324 rows
    w = quads.reshape(-1, 16).to(dtype)
    with torch._dynamo.config.patch(fail_on_recompile_limit_hit=True):
        _assert_bitwise(nm_compress_24(w, impl="compiled"), nm_compress_24(w, impl="reference"))


@pytest.mark.slow
def test_compiled_with_inductor_equals_the_reference_bitwise():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(24, 48, generator=g)
    w[:, ::5] = 0.0
    w[3] = w[3].abs().round()                            # ties
    with torch._dynamo.config.patch(fail_on_recompile_limit_hit=True):
        _assert_bitwise(nm_compress_24(w, impl="compiled"), nm_compress_24(w, impl="reference"))
