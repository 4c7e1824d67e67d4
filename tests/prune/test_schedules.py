import functools

import pytest
import torch

from overparam.prune import schedules as Sch


def test_cubic_formula_and_quantization():
    f = functools.partial(Sch.cubic, final=0.9, initial=0.1, begin=10, end=110, every=20)
    assert f(0) == 0.1 and f(10) == 0.1 and f(500) == pytest.approx(0.9)
    for t in range(10, 111):
        tq = 10 + ((t - 10) // 20) * 20
        assert f(t) == pytest.approx(0.9 + (0.1 - 0.9) * (1 - (tq - 10) / 100) ** 3, abs=1e-15)
    vals = [f(t) for t in range(0, 200)]
    assert all(b >= a for a, b in zip(vals, vals[1:]))


def test_iterative_and_exponential():
    assert Sch.iterative(0.2, 3) == pytest.approx([0.2, 0.36, 0.488])
    e = Sch.exponential(0.999, 3)
    assert e[-1] == pytest.approx(0.999) and e[0] == pytest.approx(0.9)
    with pytest.raises(ValueError, match="rounds"):
        Sch.iterative(0.2, 0)
    with pytest.raises(ValueError, match="rate"):
        Sch.iterative(1.2, 3)
    with pytest.raises(ValueError, match="end > begin"):
        Sch.cubic(3, final=0.5, begin=5, end=5)


def test_gradual_pruner_monotone_and_zero():
    g = torch.Generator().manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(8, 32), torch.nn.ReLU(), torch.nn.Linear(32, 4))
    opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
    x, y = torch.randn(64, 8, generator=g), torch.randn(64, 4, generator=g)
    gp = Sch.GradualPruner(net, opt, functools.partial(Sch.cubic, final=0.8, begin=5, end=45, every=10))
    prev = None
    for t in range(60):
        opt.zero_grad()
        torch.nn.functional.mse_loss(net(x), y).backward()
        opt.step()
        m = gp.step(t)
        if m is not None and prev is not None:
            assert all(bool((m[k] <= prev[k]).all()) for k in m)
        prev = m
    assert [s for _, s in gp.history][-1] == pytest.approx(0.8)
    assert [t for t, _ in gp.history] == [15, 25, 35, 45]  # s = 0 at t0 = 5: nothing to prune
    for k, p in net.named_parameters():
        if k in prev:
            assert (p[~prev[k]] == 0).all()
    gp.remove()


def test_bad_schedule_scope_and_begin_refused_by_name():
    net = torch.nn.Linear(4, 4)
    with pytest.raises(TypeError, match="schedule must be callable"):
        Sch.GradualPruner(net, None, 0.5)
    with pytest.raises(ValueError, match="scope"):
        Sch.GradualPruner(net, None, lambda t: 0.5, scope="per_layer")
    with pytest.raises(ValueError, match="begin >= 0"):
        Sch.cubic(3, final=0.5, begin=-1, end=10)
