"""conv_rows (overparam/backend/patches.py): ``conv(x) = rows @ W_matᵀ + b`` for Conv1d/2d/3d, both
column orders, against the convolution itself and against ``F.unfold`` (2-D)."""

import pytest
import torch
import torch.nn.functional as F

from overparam.backend.patches import conv_rows

D = torch.float64


@pytest.mark.parametrize("cls,kw", [(torch.nn.Conv1d, dict(stride=2, padding=1)), (torch.nn.Conv1d, dict(padding="same", dilation=2)),
                                    (torch.nn.Conv2d, dict(stride=(1, 2), padding=(1, 0), dilation=(2, 1))),
                                    (torch.nn.Conv2d, dict(padding=1, padding_mode="reflect")),
                                    (torch.nn.Conv3d, dict(stride=2, padding=1))])
def test_rows_times_the_weight_matrix_is_the_convolution(cls, kw):
    torch.manual_seed(0)
    conv = cls(3, 4, 3, **kw).double()
    nd = conv.weight.ndim - 2
    x = torch.randn((2, 3) + (6,) * nd, dtype=D)
    want = conv(x).movedim(1, -1).reshape(-1, 4)
    W = conv.weight.detach()
    got = conv_rows(conv, x) @ W.reshape(4, -1).T + conv.bias.detach()
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    km = W.movedim(1, -1).reshape(4, -1)                            # (out, k..., c) -> kernel-major columns
    torch.testing.assert_close(conv_rows(conv, x, order="kernel_major") @ km.T + conv.bias.detach(), want,
                               rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(conv_rows(conv, x[0]), conv_rows(conv, x[:1]))      # unbatched input


def test_channel_major_rows_are_unfold():
    conv = torch.nn.Conv2d(2, 3, (2, 3), stride=2, padding=1, dilation=(1, 2)).double()
    x = torch.randn(2, 2, 7, 8, dtype=D)
    ref = F.unfold(x, conv.kernel_size, conv.dilation, conv.padding, conv.stride).transpose(1, 2).reshape(-1, 12)
    torch.testing.assert_close(conv_rows(conv, x), ref, rtol=0, atol=0)


def test_errors():
    with pytest.raises(TypeError, match="conv must be"):
        conv_rows(torch.nn.Linear(2, 2), torch.zeros(2, 2))
    with pytest.raises(TypeError, match="conv must be"):
        conv_rows(torch.nn.ConvTranspose1d(2, 2, 3), torch.zeros(1, 2, 5))
    with pytest.raises(ValueError, match="groups=2"):
        conv_rows(torch.nn.Conv1d(2, 2, 3, groups=2), torch.zeros(1, 2, 5))
    with pytest.raises(ValueError, match="order"):
        conv_rows(torch.nn.Conv1d(2, 2, 3), torch.zeros(1, 2, 5), order="x")
    with pytest.raises(ValueError, match="x has shape"):
        conv_rows(torch.nn.Conv1d(2, 2, 3), torch.zeros(1, 3, 5))
