import pytest
import torch
from torch import nn

from overparam.scaling import coord_check, plot_coord_check

F = nn.functional


def mlp(w):
    return nn.Sequential(nn.Linear(8, w), nn.ReLU(), nn.Linear(w, w), nn.ReLU(), nn.Linear(w, 4))


@pytest.fixture(scope="module")
def data():
    g = torch.Generator().manual_seed(0)
    return torch.randn(128, 8, generator=g), torch.randint(0, 4, (128,), generator=g)


def _mean_slopes(checks, which="delta"):
    return {k: sum(c.slopes(which)[k] for c in checks) / len(checks) for k in checks[0].slopes()}


@pytest.mark.parametrize("optimizer,lr", [("adam", 1e-2), ("sgd", 0.2)])
def test_mup_is_flat_and_sp_blows_up(data, optimizer, lr):
    widths = [64, 128, 256, 512]
    run = lambda param, s: coord_check(mlp, F.cross_entropy, data, widths=widths, parameterization=param,  # noqa: E731
                                       lr=lr, steps=3, optimizer=optimizer, generator=s)
    mus, sps = [run("mup", s) for s in range(4)], [run("sp", s) for s in range(4)]
    mu = mus[0]
    assert mu.modules == ["0", "2", "4"] and mu.delta.shape == (4, 4, 3) and mu.losses.shape == (4, 4)
    # slopes averaged over 4 init seeds (one seed's read-out slope varies by ±0.2).
    # μP: every layer's output and its change are Θ(1) in width (finite-width corrections: the
    # read-out's W₀·Δh part decays like 1/√width, so the slope is slightly negative at these widths)
    # (measured, seeds 0-3: Adam 0.00/-0.07/-0.22, SGD -0.04/-0.20/-0.39 for the three layers)
    m, sp = _mean_slopes(mus), _mean_slopes(sps)
    assert all(abs(s) < 0.45 for s in m.values()), m
    assert all(abs(s) < 0.45 for s in _mean_slopes(mus, "rms").values())
    # SP with a width-independent LR: the hidden and read-out changes grow with the width
    # (measured, seeds 0-3: Adam 0.94/0.57, SGD 0.75/0.80)
    assert sp["2"] > 0.6 and sp["4"] > 0.45, sp
    assert sp["4"] - m["4"] > 0.6 and sp["2"] - m["2"] > 0.8, (sp, m)
    assert torch.all(mu.delta[:, 0] == 0) and torch.all(mu.delta[:, 1:] > 0)
    assert "slope" in str(mu)


def test_global_rng_untouched_and_errors(data):
    state = torch.random.get_rng_state()
    a = coord_check(mlp, F.cross_entropy, data, widths=[16, 32], steps=1, generator=4)
    b = coord_check(mlp, F.cross_entropy, data, widths=[16, 32], steps=1, generator=4)
    assert torch.equal(torch.random.get_rng_state(), state) and torch.equal(a.delta, b.delta)
    assert coord_check(mlp, F.cross_entropy, data, widths=[16, 32], steps=1, modules=["4"]).modules == ["4"]
    assert coord_check(mlp, F.cross_entropy, data, widths=[16, 32], steps=1, modules="4").modules == ["4"]
    with pytest.raises(ValueError, match="widths"):
        coord_check(mlp, F.cross_entropy, data, widths=[16])
    with pytest.raises(ValueError, match="steps"):
        coord_check(mlp, F.cross_entropy, data, widths=[16, 32], steps=0)
    with pytest.raises(ValueError, match="modules: 'nothing' matches no module"):
        coord_check(mlp, F.cross_entropy, data, widths=[16, 32], modules=["4", "nothing"])
    with pytest.raises(ValueError, match="modules: .* selects no module that owns parameters"):
        coord_check(mlp, F.cross_entropy, data, widths=[16, 32], modules=nn.ReLU)
    with pytest.raises(ValueError, match="which"):
        a.slopes("l1")


def test_plot(data, tmp_path):
    plt = pytest.importorskip("matplotlib.pyplot")
    cc = coord_check(mlp, F.cross_entropy, data, widths=[16, 32], steps=2)
    axes = plot_coord_check(cc)
    assert len(axes) == 3
    plt.savefig(tmp_path / "cc.png")
    plt.close("all")


def test_order_seed_hooks_and_step0_oracle(data):
    """Widths in any order give the sorted result; the seed matters; the hooks are removed from
    the user's modules; step 0 equals the plan-initialized model evaluated directly."""
    built = {}

    def make(w):
        built[w] = mlp(w)
        return built[w]
    a = coord_check(make, F.cross_entropy, data, widths=[32, 16], steps=1, generator=4)
    assert a.widths == [16, 32] and all(not m._forward_hooks for net in built.values() for m in net.modules())
    b = coord_check(mlp, F.cross_entropy, data, widths=[16, 32], steps=1, generator=4)
    assert torch.equal(a.delta, b.delta) and torch.equal(a.rms, b.rms)
    c = coord_check(mlp, F.cross_entropy, data, widths=[16, 32], steps=1, generator=5)
    assert not torch.equal(c.rms[:, 0], b.rms[:, 0])
    from overparam.scaling import plan
    with torch.random.fork_rng():
        torch.manual_seed(4)
        net = mlp(32)
    p = plan(net, base=mlp(16), delta=mlp(32))
    p.init_(net, generator=4)
    x, y = data
    with torch.no_grad():
        out = net(x)
    torch.testing.assert_close(b.rms[1, 0, 2], out.double().pow(2).mean().sqrt())
    torch.testing.assert_close(b.losses[1, 0], F.cross_entropy(out, y).double())


@pytest.mark.parametrize("kw,err,match", [
    (dict(widths=[16, 16, 32]), ValueError, "widths"), (dict(widths=16), TypeError, "widths"),
    (dict(widths=[16, 32.0]), ValueError, "widths"), (dict(base_width=0), ValueError, "base_width"),
    (dict(modules=4), TypeError, "modules"), (dict(generator=1.5), TypeError, "generator"), (dict(make_model="mlp"), TypeError, "make_model"),
    (dict(data="xy"), ValueError, "data"), (dict(loss_fn=None), TypeError, "loss_fn"),
    (dict(lr=-1.0), ValueError, "lr"), (dict(optimizer="lion"), ValueError, "optimizer"),
])
def test_bad_input(data, kw, err, match):
    args = dict(make_model=mlp, widths=[16, 32], data=data, loss_fn=F.cross_entropy) | kw
    with pytest.raises(err, match=match):
        coord_check(args.pop("make_model"), args.pop("loss_fn"), args.pop("data"), steps=1, **args)


def test_modules_takes_the_shared_selection_grammar(data):
    """Types, globs, predicates and containers select the same recorded modules as their names."""
    def run(spec):
        return coord_check(mlp, F.cross_entropy, data, widths=[16, 32], steps=1, modules=spec, generator=3)
    by_name = run(["2", "4"])
    for spec in (nn.Linear, "*", lambda n, m: isinstance(m, nn.Linear)):
        assert run(spec).modules == ["0", "2", "4"]
    for spec in ("[24]", lambda n, m: n in ("2", "4")):
        cc = run(spec)
        assert cc.modules == ["2", "4"] and torch.equal(cc.delta, by_name.delta)


def test_signature_follows_the_dialect():
    """(make_model, loss_fn, data, *, widths=...): widths and generator are keyword-only, generator defaults to None."""
    import inspect
    sig = inspect.signature(coord_check)
    assert list(sig.parameters)[:3] == ["make_model", "loss_fn", "data"]
    assert sig.parameters["widths"].kind is inspect.Parameter.KEYWORD_ONLY
    assert sig.parameters["generator"].kind is inspect.Parameter.KEYWORD_ONLY
    assert sig.parameters["generator"].default is None
