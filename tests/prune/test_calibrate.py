"""Calibration driver: streamed statistics against the
concatenated inputs, sequential vs parallel inputs, blocks, restore on error, bad input."""

import pytest
import torch
from torch import nn

from overparam.prune.calibrate import PrunedMatrix, calibrate, collect_stats

D = torch.float64


def test_stats_stream_over_batches_and_equal_the_concatenated_gram():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 3)).double()
    xs = [torch.randn(n, 2, 5, dtype=D) for n in (3, 4, 6)]          # (batch, seq, features) inputs
    stats = collect_stats(net, [(x, None) for x in xs])
    X0 = torch.cat([x.reshape(-1, 5) for x in xs])
    X2 = torch.tanh(net[0](X0))
    torch.testing.assert_close(stats["0.weight"].gram, X0.T @ X0)
    torch.testing.assert_close(stats["2.weight"].gram, X2.T @ X2)
    torch.testing.assert_close(stats["2.weight"].norms, X2.norm(dim=0))
    assert stats["0.weight"].rows == 26
    f32 = collect_stats(net, [(x, None) for x in xs], dtype=torch.float32, gram=False)["2.weight"]
    assert f32.gram is None and f32.sq_norms.dtype == torch.float32


def _record(calls):
    def rule(name, W, stats):
        calls[name] = stats.gram.clone()
        mask = torch.zeros_like(W, dtype=torch.bool)
        mask[:, 0] = True                        # keep only the first input of every row
        return PrunedMatrix(W, mask)
    return rule


@pytest.mark.parametrize("sequential", [True, False])
def test_sequential_fits_each_layer_on_the_pruned_inputs(sequential):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 2)).double()
    x = torch.randn(20, 4, dtype=D)
    dense_h = torch.tanh(net[0](x)).detach()
    calls = {}
    masks = calibrate(net, (x, None), _record(calls), sequential=sequential)
    pruned_h = torch.tanh(net[0](x)).detach()
    h = pruned_h if sequential else dense_h
    torch.testing.assert_close(calls["2.weight"], h.T @ h)
    assert not torch.allclose(dense_h, pruned_h)
    assert [int(m.sum()) for m in masks.values()] == [6, 2]


def test_blocks_group_layers_and_bad_blocks_are_refused():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 4)), nn.Linear(4, 2)).double()
    x = torch.randn(10, 4, dtype=D)
    calls = {}
    calibrate(net, (x, None), _record(calls), blocks="0")
    assert list(calls) == ["0.0.weight", "0.2.weight", "1.weight"]
    with pytest.raises(ValueError, match="blocks: 'nomatch'"):
        calibrate(net, (x, None), _record({}), blocks="nomatch")
    shared = nn.Linear(4, 4).double()
    twice = nn.Sequential(shared, nn.Tanh(), shared)
    with pytest.raises(ValueError, match="more than once"):
        calibrate(twice, (x, None), _record({}))


def test_a_block_is_calibrated_on_one_dense_forward():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 3))).double()
    x = torch.randn(12, 4, dtype=D)
    h = torch.tanh(net[0][0](x)).detach()
    calls = {}
    calibrate(net, (x, None), _record(calls), blocks="0")
    torch.testing.assert_close(calls["0.2.weight"], h.T @ h)


def test_bad_input_gives_clear_errors_and_restores_the_model():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 2)).double()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    with pytest.raises(ValueError, match="data"):
        collect_stats(net, (torch.randn(4, 5, dtype=D), None))            # 20 numbers: reshapes to (5, 4) but is wrong
    with pytest.raises(ValueError, match="data"):
        calibrate(net, torch.randn(4, 4, dtype=D), _record({}))             # a bare tensor is not a batch

    def fail_second(name, W, stats):
        if name == "2.weight":
            raise RuntimeError("boom")
        return PrunedMatrix(W * 0, torch.zeros_like(W, dtype=torch.bool))
    with pytest.raises(RuntimeError, match="boom"):
        calibrate(net, (torch.randn(8, 4, dtype=D), None), fail_second)
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    drop = nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.1))
    with pytest.raises(ValueError, match="model.*eval"):
        collect_stats(drop, (torch.randn(3, 4), None))
    with pytest.raises(TypeError, match="rule"):
        calibrate(net, (torch.randn(8, 4, dtype=D), None), lambda n, W, s: W)
    with pytest.raises(ValueError, match="dtype"):
        collect_stats(net, (torch.randn(3, 4, dtype=D), None), dtype=torch.float16)
    grouped = nn.Sequential(nn.Conv1d(4, 4, 1, groups=2))
    with pytest.raises(ValueError, match="grouped"):
        collect_stats(grouped, (torch.randn(2, 4, 3), None))


def test_dict_and_tuple_inputs_reach_the_model():
    class Two(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(3, 2)

        def forward(self, x, scale=1.0):
            return self.a(x * scale)

    m = Two().double()
    x = torch.randn(5, 3, dtype=D)
    g1 = collect_stats(m, ((x, torch.tensor(2.0, dtype=D)), None))["a.weight"].gram
    g2 = collect_stats(m, ({"x": x, "scale": torch.tensor(2.0, dtype=D)}, None))["a.weight"].gram
    torch.testing.assert_close(g1, 4 * x.T @ x)
    torch.testing.assert_close(g2, g1)


def test_layer_sparsities_exact_names_win_over_suffix_keys():
    from overparam.prune.calibrate import layer_sparsities
    net = nn.ModuleDict({"fc": nn.Linear(2, 2), "enc": nn.ModuleDict({"fc": nn.Linear(2, 2)})})
    got = layer_sparsities(net, 0.5, overrides={"fc.weight": 0.1, "enc.fc.weight": 0.7})
    assert got == {"fc.weight": 0.1, "enc.fc.weight": 0.7}
    assert layer_sparsities(net, 0.5, overrides={"enc": 0.3}) == {"fc.weight": 0.5, "enc.fc.weight": 0.3}
    assert layer_sparsities(net, None, 2, 4) is None
    with pytest.raises(ValueError, match="overrides"):
        layer_sparsities(net, None, 2, 4, overrides={"fc": 0.1})
    with pytest.raises(ValueError, match="overrides"):
        layer_sparsities(net, 0.5, overrides={"nomatch": 0.1})
