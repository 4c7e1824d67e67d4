"""Packed masked optimizers equal the dense masked step (masked() + torch SGD/AdamW) and store (1 - s)x the state."""

import copy

import pytest
import torch
from torch import nn

import overparam as op
from overparam.prune import PackedAdamW, PackedSGD, masked, state_bytes

D = torch.float64


def _net(seed=0, dtype=D):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(12, 16), nn.Tanh(), nn.Linear(16, 5)).to(dtype)


def _data(dtype=D):
    g = torch.Generator().manual_seed(1)
    return torch.randn(32, 12, generator=g, dtype=dtype), torch.randn(32, 5, generator=g, dtype=dtype)


def _train(net, opt, steps, x, y, hook=None):
    for t in range(steps):
        if hook:
            hook(t)
        opt.zero_grad()
        ((net(x) - y) ** 2).mean().backward()
        opt.step()


CASES = [
    ("sgd", dict(lr=0.1)),
    ("sgd", dict(lr=0.1, momentum=0.9, weight_decay=1e-2)),
    ("sgd", dict(lr=0.05, momentum=0.8, nesterov=True)),
    ("sgd", dict(lr=0.05, momentum=0.8, dampening=0.3)),
    ("adamw", dict(lr=1e-2)),
    ("adamw", dict(lr=1e-2, weight_decay=0.1, betas=(0.8, 0.95))),
    ("adamw", dict(lr=1e-2, amsgrad=True)),
    ("adam", dict(lr=1e-2, weight_decay=0.1)),
]


def _pair(kind, kw, net_a, net_b, masks):
    dense_cls = {"sgd": torch.optim.SGD, "adamw": torch.optim.AdamW, "adam": torch.optim.Adam}[kind]
    dense_kw = dict(kw)
    if kind == "adamw" and "weight_decay" not in kw:
        dense_kw["weight_decay"] = 1e-2  # the same default as PackedAdamW
    dense = dense_cls(net_a.parameters(), **dense_kw, foreach=False)
    if kind == "sgd":
        packed = PackedSGD(net_b.named_parameters(), masks, **kw)
    else:
        packed = PackedAdamW(net_b.named_parameters(), masks, decoupled=kind == "adamw",
                             **({"weight_decay": 0.0} if kind == "adam" and "weight_decay" not in kw else {}), **kw)
    return dense, packed


@pytest.mark.parametrize("kind,kw", CASES)
def test_iterates_equal_the_dense_masked_step_fp64(kind, kw):
    a, x_y = _net(), _data()
    b = copy.deepcopy(a)
    masks = op.prune.magnitude(a, 0.8)
    dense, packed = _pair(kind, kw, a, b, masks)
    with masked(a, masks, optimizer=dense):
        _train(a, dense, 6, *x_y)
    _train(b, packed, 6, *x_y)
    for (n, pa), pb in zip(a.named_parameters(), b.parameters()):
        assert float((pa - pb).abs().max()) <= 1e-12 * max(1.0, float(pa.detach().abs().max())), n
    for n, m in masks.items():
        assert (dict(b.named_parameters())[n][~m] == 0).all()
    # the packed state holds only the kept entries
    w = b[0].weight
    key = "momentum_buffer" if kind == "sgd" else "exp_avg"
    if key in packed.state[w]:
        assert packed.state[w][key].numel() == int(masks["0.weight"].sum())


def test_fp32_within_1e6():
    a = _net(dtype=torch.float32)
    b = copy.deepcopy(a)
    x, y = _data(torch.float32)
    masks = op.prune.magnitude(a, 0.5)
    dense = torch.optim.AdamW(a.parameters(), lr=1e-2)
    with masked(a, masks, optimizer=dense):
        _train(a, dense, 10, x, y)
    _train(b, PackedAdamW(b.named_parameters(), masks, lr=1e-2), 10, x, y)
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.allclose(pa, pb, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("kind", ["sgd", "adamw"])
def test_masks_changing_between_steps_match_the_dense_masked_step(kind):
    """Gradual pruning then regrowth: set_masks_ re-packs state as re-masking the dense state does."""
    a, (x, y) = _net(), _data()
    b = copy.deepcopy(a)
    m1 = op.prune.magnitude(a, 0.5)
    kw = dict(lr=0.05, momentum=0.9) if kind == "sgd" else dict(lr=1e-2)
    dense, packed = _pair(kind, kw, a, b, m1)
    g = torch.Generator().manual_seed(5)
    m2 = {k: v & (torch.rand(v.shape, generator=g) < 0.7) for k, v in m1.items()}             # prune more
    m3 = {k: v | (torch.rand(v.shape, generator=g) < 0.2) for k, v in m2.items()}             # regrow some
    schedule = {0: m1, 3: m2, 6: m3}
    handle = [masked(a, m1, optimizer=dense)]

    def dense_hook(t):
        if t in schedule and t:
            handle[0].remove()
            handle[0] = masked(a, schedule[t], optimizer=dense)

    _train(a, dense, 9, x, y, dense_hook)
    handle[0].remove()
    _train(b, packed, 9, x, y, lambda t: packed.set_masks_(schedule[t]) if t in schedule and t else None)
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert float((pa - pb).abs().max()) <= 1e-12
    # the regrown entries of a dense optimizer restarted from zero state; the packed state equals the dense one
    w_a, w_b = a[0].weight, b[0].weight
    key = "momentum_buffer" if kind == "sgd" else "exp_avg_sq"
    assert torch.allclose(dense.state[w_a][key][m3["0.weight"]], packed.state[w_b][key], rtol=0, atol=1e-14)


def test_state_dict_round_trip_and_memory():
    a, (x, y) = _net(), _data()
    masks = op.prune.magnitude(a, 0.8)
    opt = PackedAdamW(a.named_parameters(), masks, lr=1e-2)
    _train(a, opt, 3, x, y)
    sd = copy.deepcopy(opt.state_dict())
    b = copy.deepcopy(a)
    opt_b = PackedAdamW(b.named_parameters(), masks, lr=1e-2)
    opt_b.load_state_dict(sd)
    _train(a, opt, 2, x, y)
    _train(b, opt_b, 2, x, y)
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(pa, pb)
    dense = torch.optim.AdamW(copy.deepcopy(a).parameters(), lr=1e-2)
    c = copy.deepcopy(a)
    dense = torch.optim.AdamW(c.parameters(), lr=1e-2)
    _train(c, dense, 1, x, y)
    kept = sum(int(m.sum()) for m in masks.values())
    total_masked = sum(m.numel() for m in masks.values())
    other = sum(p.numel() for n, p in a.named_parameters() if n not in masks)
    expected = 2 * 8 * (kept + other) + 4 * 4  # exp_avg + exp_avg_sq in fp64, 4 fp32 step counters
    assert state_bytes(opt) == expected
    assert state_bytes(opt) < 0.35 * state_bytes(dense)
    assert state_bytes(dense) == 2 * 8 * (total_masked + other) + 4 * 4
    bad = PackedAdamW(copy.deepcopy(a).named_parameters(), op.prune.magnitude(a, 0.5), lr=1e-2)
    with pytest.raises(ValueError, match="current mask keeps"):
        bad.load_state_dict(sd)


def test_bad_arguments():
    net = _net()
    masks = op.prune.magnitude(net, 0.5)
    with pytest.raises(TypeError, match="named"):
        PackedAdamW(net.parameters(), masks)
    with pytest.raises(ValueError, match="names no parameter"):
        PackedSGD(net.named_parameters(), {"nope": torch.ones(2, dtype=torch.bool)})
    with pytest.raises(TypeError, match="bool"):
        PackedSGD(net.named_parameters(), {"0.weight": torch.ones(16, 12)})
    with pytest.raises(ValueError, match="lr"):
        PackedSGD(net.named_parameters(), masks, lr=-1.0)
    with pytest.raises(ValueError, match="betas"):
        PackedAdamW(net.named_parameters(), masks, betas=(0.9, 1.0))
    with pytest.raises(ValueError, match="nesterov"):
        PackedSGD(net.named_parameters(), masks, nesterov=True)
    with pytest.raises(TypeError, match="optimizer"):
        state_bytes(net)
