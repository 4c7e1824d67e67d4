import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from overparam.backend.checks import check_float, check_fraction


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_check_float_returns_float_tensors_unchanged(dtype):
    x = torch.ones(2, dtype=dtype)
    assert check_float(x, "x") is x


@pytest.mark.parametrize("bad,kind", [(torch.ones(2, dtype=torch.int64), "floating-point"),
                                      (torch.ones(2, dtype=torch.bool), "floating-point"),
                                      ([1.0, 2.0], "torch.Tensor"), (3.0, "torch.Tensor")])
def test_check_float_names_the_argument(bad, kind):
    with pytest.raises(TypeError, match=f"scores must be a {kind}"):
        check_float(bad, "scores")


@given(st.floats(allow_nan=True, allow_infinity=True), st.booleans(), st.booleans())
def test_check_fraction_accepts_exactly_the_interval(v, low_open, high_open):
    inside = (v > 0 if low_open else v >= 0) and (v < 1 if high_open else v <= 1)
    if inside:
        assert check_fraction(v, "p", low_open=low_open, high_open=high_open) == v
    else:
        with pytest.raises(ValueError, match="p must be in"):
            check_fraction(v, "p", low_open=low_open, high_open=high_open)


def test_check_fraction_rejects_non_numbers():
    for bad in (True, "0.5", None, torch.tensor(0.5)):
        with pytest.raises(TypeError, match="sparsity must be a float"):
            check_fraction(bad, "sparsity")
