"""overparam.hessian.spectra: per-block spectra against the blocks of the dense fp64 Hessian."""

import pytest
import torch
from torch import nn

import overparam.hessian as oh
from overparam.testing import assert_no_side_effects, dense_hessian, max_rel_error
from overparam.testing.hessian_oracles import curvature_case

D = torch.float64


def _block_slices(model):
    out, start = {}, 0
    for k, p in model.named_parameters():
        mod = k.rpartition(".")[0]
        s = out.setdefault(mod, [start, start])
        s[1] = start + p.numel()
        start += p.numel()
    return out


def test_block_spectra_match_the_dense_hessian_blocks():
    c = curvature_case("ln_gelu_mlp", batch_size=8, generator=1)
    Hd = dense_hessian(c.model, c.loss_fn, c.batch)
    with assert_no_side_effects(c.model):
        table = oh.block_spectra(c.model, c.loss_fn, c.batch, k=2, probes=10, tol=1e-10, generator=0)
    slices = _block_slices(c.model)
    assert [r.name for r in table] == list(slices)
    for row in table:
        a, b = slices[row.name]
        blk = Hd[a:b, a:b]
        assert row.size == b - a and row.params == [k for k, _ in c.model.named_parameters()
                                                     if k.rpartition(".")[0] == row.name]
        assert max_rel_error(row.top, torch.linalg.eigvalsh(blk).flip(0)[:2]) < 1e-8
        tr = float(torch.trace(blk))
        if row.size <= 10:               # exact
            assert float(row.trace.stderr) == 0 and abs(float(row.trace.mean) - tr) < 1e-10 * max(1.0, abs(tr))
        else:                            # Hutch++: within 5 standard errors (and a stderr that is an honest one)
            assert abs(float(row.trace.mean) - tr) <= 5 * float(row.trace.stderr) + 1e-12
    assert table["3"].size == 10
    text = table.to_text()
    assert text.count("\n") == len(table) + 1 and "| 1.body.1 |" in text


def test_small_blocks_get_every_eigenvalue_and_which_is_honoured():
    net = nn.Sequential(nn.Linear(2, 3), nn.Tanh(), nn.Linear(3, 1)).double()
    torch.manual_seed(0)
    x, y = torch.randn(10, 2, dtype=D), torch.randn(10, 1, dtype=D)
    Hd = dense_hessian(net, nn.functional.mse_loss, (x, y))
    table = oh.block_spectra(net, nn.functional.mse_loss, (x, y), k=6, which="SA", tol=1e-10, generator=0)
    assert len(table) == 2 and table["2"].top.shape == (4,)        # 4 parameters: all of them
    assert max_rel_error(table["2"].top, torch.linalg.eigvalsh(Hd[9:, 9:])) < 1e-8
    assert max_rel_error(table["0"].top, torch.linalg.eigvalsh(Hd[:9, :9])[:6]) < 1e-8
    only = oh.block_spectra(net, nn.functional.mse_loss, (x, y), k=2, params="2.weight", generator=0)
    assert [r.params for r in only] == [["2.weight"]]
    with pytest.raises(KeyError, match="no block named"):
        only["0"]
    with pytest.raises(ValueError, match="largest block"):
        oh.block_spectra(net, nn.functional.mse_loss, (x, y), k=10)
    with pytest.raises(ValueError, match="probes"):
        oh.block_spectra(net, nn.functional.mse_loss, (x, y), probes=2)
