import pytest
import torch
from hypothesis import given, settings, strategies as st

from overparam.prune import semistructured as SS
from overparam.prune.nm import nm_mask


@settings(max_examples=30, deadline=None)
@given(rows=st.integers(1, 6), blocks=st.integers(1, 3), seed=st.integers(0, 999),
       dtype=st.sampled_from([torch.float16, torch.bfloat16, torch.float32, torch.float64]), n=st.integers(0, 2))
def test_compress_decompress_bit_exact(rows, blocks, seed, dtype, n):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(rows, 16 * blocks, generator=g).to(dtype)
    if n:
        w = w * nm_mask(torch.rand(w.shape, generator=g), n, 4)
    else:
        w = torch.zeros_like(w)
    w = w.masked_fill(w == 0, 0.0)  # +0.0 everywhere pruned (a dropped -0.0 comes back as +0.0)
    vals, meta = SS.compress(w)
    assert vals.shape == (rows, 8 * blocks) and meta.dtype == torch.int16 and meta.shape == (rows, blocks)
    back = SS.decompress(vals, meta, w.shape[1])
    ity = {2: torch.int16, 4: torch.int32, 8: torch.int64}[dtype.itemsize]
    assert torch.equal(back.view(ity), w.view(ity))  # bit-exact


def test_validator_rejects_three_in_a_quad():
    w = torch.zeros(4, 16, dtype=torch.float16)
    w[2, 4:7] = 1.0
    assert not SS.is_semi_structured(w)
    with pytest.raises(ValueError, match="row 2, columns 4..7 hold 3 non-zeros"):
        SS.validate(w)
    with pytest.raises(ValueError, match="not 2:4"):
        SS.compress(w)
    with pytest.raises(ValueError, match="not 2:4"):
        SS.to_semi_structured(w)
    w[2, 4] = 0.0
    SS.validate(w)


@settings(max_examples=30, deadline=None)
@given(bits=st.lists(st.booleans(), min_size=4, max_size=4))
def test_every_quad_pattern(bits):
    w = torch.tensor([bits * 4], dtype=torch.float16)
    assert SS.is_semi_structured(w) == (sum(bits) <= 2)


def test_fp32_is_one_two():
    w = torch.tensor([[1.0, 0.0, 1.0, 0.0]])
    assert SS.is_semi_structured(w)
    w = torch.tensor([[1.0, 1.0, 0.0, 0.0]])
    assert not SS.is_semi_structured(w)  # 2:4 but not 1:2
    with pytest.raises(ValueError, match="not 1:2"):
        SS.validate(w)


def test_nan_counts_as_nonzero():
    w = torch.tensor([[float("nan"), 1.0, 1.0, 0.0]], dtype=torch.float16)
    assert not SS.is_semi_structured(w)


def test_cpu_handoff_refused_after_validation():
    w = torch.zeros(32, 64, dtype=torch.float16)
    with pytest.raises(RuntimeError, match="CUDA"):
        SS.to_semi_structured(w)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_handoff_matches_dense():
    w = torch.randn(64, 64, dtype=torch.float16, device="cuda")
    w = w * nm_mask(w.abs().float(), 2, 4)
    sp = SS.to_semi_structured(w)
    x = torch.randn(64, 32, dtype=torch.float16, device="cuda")
    torch.testing.assert_close(sp @ x, w @ x)


def test_a_transposed_storage_is_compressed_through_its_matrix_view():
    """A transformers Conv1D stores (in, out); its N:M mask runs along dim 0, so the (out, in)
    matrix view ``w.T`` (non-contiguous) is the 2:4 tensor to compress."""
    g = torch.Generator().manual_seed(0)
    stored = torch.randn(32, 16, generator=g, dtype=torch.float16)                     # (in, out)
    stored = stored * nm_mask(stored.abs().float(), 2, 4, dim=0)
    view = stored.T
    assert not view.is_contiguous() and SS.is_semi_structured(view)
    assert not SS.is_semi_structured(stored)                                           # not along the storage rows
    vals, meta = SS.compress(view)
    assert torch.equal(SS.decompress(vals, meta, 32), view)
    if torch.cuda.is_available():
        sp = SS.to_semi_structured(view.cuda())
        x = torch.randn(32, 8, dtype=torch.float16, device="cuda")
        torch.testing.assert_close(sp @ x, view.cuda() @ x)


@pytest.mark.parametrize("pattern", [(4, 2), (2, 2), (0, 4), (2,), [2, 4], (2.0, 4), (True, 4)])
def test_bad_pattern_refused(pattern):
    """Issue 20: N > M was accepted (and answered True)."""
    w = torch.zeros(2, 8)
    with pytest.raises(ValueError, match="pattern"):
        SS.validate(w, pattern=pattern)
    with pytest.raises(ValueError, match="pattern"):
        SS.is_semi_structured(w, pattern=pattern)


def test_decompress_names_cols():
    """Issue 20: a wrong cols never mentioned cols."""
    w = torch.tensor([[0., 1., 0., 2.] * 4] * 3)
    values, meta = SS.compress(w)
    for cols in (12, 32, 0, -16, 16.0):
        with pytest.raises(ValueError, match="cols"):
            SS.decompress(values, meta, cols)
    with pytest.raises(TypeError, match="meta must be int16"):
        SS.decompress(values, meta.to(torch.int32), 16)
    assert torch.equal(SS.decompress(values, meta, 16), w)
