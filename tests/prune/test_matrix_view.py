"""A layer as a matrix: Linear, Conv1d/2d/3d (every padding mode, stride, dilation) equal
``input_rows(x) @ weight_matrix.T + bias``; the weight round-trips; columns are (kernel position, channel)."""

import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from overparam.prune.matrix_view import _matrix_to_weight, input_rows, weight_matrix

D = torch.float64


@settings(max_examples=15, deadline=None)
@given(nd=st.integers(1, 3), k=st.integers(1, 3), stride=st.integers(1, 2), pad=st.integers(0, 2),
       dil=st.integers(1, 2), mode=st.sampled_from(["zeros", "reflect", "circular", "replicate"]))
def test_conv_equals_rows_times_weight_matrix(nd, k, stride, pad, dil, mode):
    conv = getattr(nn, f"Conv{nd}d")(3, 4, k, stride=stride, padding=pad, dilation=dil, padding_mode=mode).double()
    x = torch.randn(2, 3, *([6] * nd), dtype=D)
    y = conv(x)
    rows = input_rows(conv, x)
    got = rows @ weight_matrix(conv).T + conv.bias
    torch.testing.assert_close(got, y.movedim(1, -1).reshape(-1, 4), rtol=1e-12, atol=1e-12)
    # columns are (kernel position, channel): consecutive columns = consecutive input channels
    assert torch.equal(weight_matrix(conv)[:, :3], conv.weight.detach().reshape(4, 3, -1)[:, :, 0])


def test_linear_rows_and_round_trip():
    lin = nn.Linear(3, 2).double()
    x = torch.randn(4, 5, 3, dtype=D)
    torch.testing.assert_close(input_rows(lin, x) @ weight_matrix(lin).T + lin.bias, lin(x).reshape(-1, 2))
    conv = nn.Conv2d(3, 4, 2).double()
    assert torch.equal(_matrix_to_weight(conv, weight_matrix(conv)), conv.weight.detach())
