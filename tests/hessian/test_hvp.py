import pytest
import torch
from torch import nn

import overparam.hessian as oh
from overparam.backend import vec
from overparam.backend.random import construction_generator, gaussian, probes_like
from overparam.testing import assert_no_side_effects, dense_hessian, max_rel_error, tanh_mlp
from overparam.testing.hessian_oracles import loss_hessian_closed_forms

F = nn.functional


@pytest.mark.parametrize("backend", ["double_backward", "jvp"])
def test_hvp_matches_dense_hessian(model_case, backend):
    model, loss_fn, batch = model_case
    Hd = dense_hessian(model, loss_fn, batch)
    with assert_no_side_effects(model):
        H = oh.hessian(model, loss_fn, batch, backend=backend)
        V = gaussian((H.n, 3), generator=0, dtype=torch.float64)
        got = H @ V
        one = H @ V[:, 0]
    torch.testing.assert_close(got, Hd @ V, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(one, Hd @ V[:, 0], rtol=1e-10, atol=1e-12)
    assert max_rel_error(H.to_dense(), Hd) < 1e-10


def test_backends_agree_and_symmetric(model_case):
    model, loss_fn, batch = model_case
    Hs = {b: oh.hessian(model, loss_fn, batch, backend=b) for b in ("double_backward", "jvp")}
    u, v = (gaussian((Hs["jvp"].n,), generator=s, dtype=torch.float64) for s in (1, 2))
    a, b = Hs["double_backward"] @ v, Hs["jvp"] @ v
    assert max_rel_error(a, b) < 1e-12
    assert abs(float(u @ a - v @ (Hs["jvp"] @ u))) < 1e-12 * float(a.norm() * u.norm())


def test_finite_differences_second_order():
    model = tanh_mlp([3, 6, 2], generator=0)
    batch = (gaussian((10, 3), generator=1, dtype=torch.float64), gaussian((10, 2), generator=2, dtype=torch.float64))
    Hd = dense_hessian(model, F.mse_loss, batch)
    v = gaussian((Hd.shape[0],), generator=3, dtype=torch.float64)
    errs = []
    for h in (1e-2, 5e-3, 2.5e-3):
        H = oh.hessian(model, F.mse_loss, batch, backend="finite_difference", fd_step=h, check=False)
        errs.append(float((H @ v - Hd @ v).norm()))
    ratios = [errs[0] / errs[1], errs[1] / errs[2]]
    assert all(3.6 < r < 4.4 for r in ratios), (errs, ratios)  # O(h²): halving h quarters the error
    H = oh.hessian(model, F.mse_loss, batch, backend="finite_difference")  # default step
    assert max_rel_error(H @ v, Hd @ v) < 1e-8


def test_closed_form_mse_and_logistic():
    g = construction_generator(0)
    X = gaussian((30, 5), generator=g, dtype=torch.float64)
    w = gaussian((5,), generator=g, dtype=torch.float64)
    lin = nn.utils.skip_init(nn.Linear, 5, 1, bias=False, dtype=torch.float64)
    with torch.no_grad():
        lin.weight.copy_(w[None])
    y = gaussian((30, 1), generator=g, dtype=torch.float64)
    H = oh.hessian(lin, F.mse_loss, (X, y)).to_dense()
    torch.testing.assert_close(H, loss_hessian_closed_forms(X, y, w, "mse"), rtol=1e-12, atol=1e-14)
    t = (y > 0).to(torch.float64)
    H = oh.hessian(lin, F.binary_cross_entropy_with_logits, (X, t)).to_dense()
    torch.testing.assert_close(H, loss_hessian_closed_forms(X, t, w, "logistic"), rtol=1e-12, atol=1e-14)


def test_loader_per_sample_average_over_ragged_batches():
    model = tanh_mlp([3, 4, 1], generator=0)
    x, y = gaussian((11, 3), generator=1, dtype=torch.float64), gaussian((11, 1), generator=2, dtype=torch.float64)
    loader = [(x[:4], y[:4]), (x[4:8], y[4:8]), (x[8:], y[8:])]  # sizes 4, 4, 3
    Hd = dense_hessian(model, F.mse_loss, (x, y))
    v = gaussian((Hd.shape[0],), generator=3, dtype=torch.float64)
    for backend in ("double_backward", "jvp"):
        for retain in (True, False):
            H = oh.hessian(model, F.mse_loss, loader, backend=backend, retain_graph=retain)
            assert max_rel_error(H @ v, Hd @ v) < 1e-12
    Hs = oh.hessian(model, lambda o, t: F.mse_loss(o, t, reduction="sum"), loader, reduction="sum")
    assert max_rel_error(Hs @ v, 11 * (Hd @ v)) < 1e-12


def test_parameter_shaped_vectors_and_restriction():
    model = tanh_mlp([3, 5, 2], generator=0)
    batch = (gaussian((9, 3), generator=1, dtype=torch.float64), gaussian((9, 2), generator=2, dtype=torch.float64))
    Hd = dense_hessian(model, F.mse_loss, batch)
    H = oh.hessian(model, F.mse_loss, batch)
    v = probes_like(list(model.parameters()), generator=4)
    out = H @ v
    assert isinstance(out, tuple) and vec.shapes(out) == vec.shapes(v)
    assert max_rel_error(vec.flatten(out), Hd @ vec.flatten(v)) < 1e-12
    Vb = probes_like(list(model.parameters()), n=3, generator=5)
    outb = H.matmat(Vb)
    assert max_rel_error(vec.flatten(outb, batch=True), vec.flatten(Vb, batch=True) @ Hd) < 1e-12
    sub = H.restrict("2.*")  # last layer: 5*2 + 2 = 12 parameters, the trailing block of Hd
    assert sub.names == ["2.weight", "2.bias"]
    torch.testing.assert_close(sub.to_dense(), Hd[-12:, -12:], rtol=1e-12, atol=1e-14)
    blocks = oh.blocks(model, F.mse_loss, batch)
    assert list(blocks) == ["0", "2"]
    torch.testing.assert_close(blocks["0"].to_dense(), Hd[:20, :20], rtol=1e-12, atol=1e-14)
    pred = oh.hessian(model, F.mse_loss, batch, params=lambda k, p: k.endswith("bias"))
    idx = torch.tensor(list(range(15, 20)) + list(range(30, 32)))
    torch.testing.assert_close(pred.to_dense(), Hd[idx][:, idx], rtol=1e-12, atol=1e-14)


def test_bad_input_errors():
    model = tanh_mlp([3, 4, 1], generator=0)
    batch = (torch.zeros(4, 3, dtype=torch.float64), torch.zeros(4, 1, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"params: 'nope\.\*' matches no parameter"):
        oh.hessian(model, F.mse_loss, batch, params="nope.*")
    with pytest.raises(ValueError, match="exclude: 'nope' matches no parameter"):
        oh.hessian(model, F.mse_loss, batch, exclude="nope")
    with pytest.raises(ValueError, match="selects no trainable parameter"):
        oh.hessian(model, F.mse_loss, batch, exclude=nn.Linear)
    with pytest.raises(TypeError, match="params"):
        oh.hessian(model, F.mse_loss, batch, params=3)
    with pytest.raises(TypeError, match="model"):
        oh.hessian(lambda x: x, F.mse_loss, batch)
    with pytest.raises(ValueError, match="backend"):
        oh.hessian(model, F.mse_loss, batch, backend="magic")
    with pytest.raises(TypeError, match="data"):
        oh.hessian(model, F.mse_loss, 3)
    H = oh.hessian(model, F.mse_loss, batch)
    with pytest.raises(ValueError, match="shape"):
        H @ torch.zeros(3, dtype=torch.float64)


class _Noisy(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = tanh_mlp([3, 2], generator=0)

    def forward(self, x):
        return self.lin(x) * (1 + 0.1 * torch.rand(()))  # a custom stochastic layer (global RNG)


def test_nondeterministic_models_raise_and_flags_unchanged():
    batch = (gaussian((6, 3), generator=1, dtype=torch.float64), gaussian((6, 2), generator=2, dtype=torch.float64))
    drop = nn.Sequential(tanh_mlp([3, 2], generator=0), nn.Dropout(0.5))
    with assert_no_side_effects(drop):
        with pytest.raises(oh.NonDeterministicModelError, match="Dropout"):
            oh.hessian(drop, F.mse_loss, batch)
        with pytest.raises(oh.NonDeterministicModelError):
            oh.ggn(drop, F.mse_loss, batch)
    assert drop.training  # untouched
    bn = nn.Sequential(tanh_mlp([3, 2], generator=0), nn.BatchNorm1d(2).double())
    state = {k: v.clone() for k, v in bn.state_dict().items()}
    with pytest.raises(oh.NonDeterministicModelError, match="BatchNorm"):
        oh.hessian(bn, F.mse_loss, batch)
    assert all(torch.equal(state[k], v) for k, v in bn.state_dict().items())  # running stats untouched
    noisy = _Noisy()
    with assert_no_side_effects(noisy):  # the check restores the global RNG
        with pytest.raises(oh.NonDeterministicModelError, match="differ"):
            oh.hessian(noisy, F.mse_loss, batch)
    drop.eval()
    oh.hessian(drop, F.mse_loss, batch)  # eval mode is fine


def test_real_dataloader_with_ragged_last_batch():
    from torch.utils.data import DataLoader, TensorDataset

    model = tanh_mlp([3, 4, 1], generator=0)
    x, y = gaussian((11, 3), generator=1, dtype=torch.float64), gaussian((11, 1), generator=2, dtype=torch.float64)
    loader = DataLoader(TensorDataset(x, y), batch_size=4)  # sizes 4, 4, 3
    Hd = dense_hessian(model, F.mse_loss, (x, y))
    v = gaussian((Hd.shape[0],), generator=3, dtype=torch.float64)
    assert max_rel_error(oh.hessian(model, F.mse_loss, loader) @ v, Hd @ v) < 1e-12
    full = oh.epsilon_sharpness(model, F.mse_loss, (x, y), rho=0.05, steps=5, generator=0)
    loaded = oh.epsilon_sharpness(model, F.mse_loss, loader, rho=0.05, steps=5, generator=0)
    assert abs(float(full.value - loaded.value)) < 1e-12 * float(full.value)


@pytest.mark.parametrize("backend", ["double_backward", "jvp"])
def test_construction_check_rejects_non_finite_and_catches_a_stochastic_forward(backend):
    batch = (gaussian((6, 3), generator=1, dtype=torch.float64), gaussian((6, 2), generator=2, dtype=torch.float64))
    net = tanh_mlp([3, 4, 2], generator=0)  # (a NaN in a linear model's weight leaves its MSE Hessian finite)
    with torch.no_grad():
        net[0].weight[0, 0] = float("nan")
    with pytest.raises(ValueError, match="not finite"):
        oh.hessian(net, F.mse_loss, batch, backend=backend)
    noisy = _Noisy()
    with assert_no_side_effects(noisy):
        with pytest.raises(oh.NonDeterministicModelError, match="differ|random numbers"):
            oh.hessian(noisy, F.mse_loss, batch, backend=backend)
        oh.hessian(noisy, F.mse_loss, batch, backend=backend, check=False)  # opted out: no error


def test_ggn_construction_check_compares_fresh_outputs():
    batch = (gaussian((6, 3), generator=1, dtype=torch.float64), gaussian((6, 2), generator=2, dtype=torch.float64))
    noisy = _Noisy()
    with assert_no_side_effects(noisy):
        with pytest.raises(oh.NonDeterministicModelError, match="differ"):
            oh.ggn(noisy, F.mse_loss, batch)
    net = tanh_mlp([3, 4, 2], generator=0)
    with torch.no_grad():
        net[0].weight[0, 0] = float("nan")
    with pytest.raises(ValueError, match="not finite"):
        oh.ggn(net, F.mse_loss, batch)


class _WarmUp(nn.Module):
    """Deterministic, but its first forward differs (a cache filled on the first call, say)."""

    def __init__(self):
        super().__init__()
        self.lin = tanh_mlp([3, 2], generator=0)
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        return self.lin(x) * (1.5 if self.calls == 1 else 1.0)


def test_kept_graph_is_checked_against_a_fresh_forward():
    # every product of the double-backward backend reuses the graph of the first forward: the check
    # must compare that graph (not two later forwards, which agree here) with a fresh pass
    batch = (gaussian((6, 3), generator=1, dtype=torch.float64), gaussian((6, 2), generator=2, dtype=torch.float64))
    with pytest.raises(oh.NonDeterministicModelError, match="differ"):
        oh.hessian(_WarmUp(), F.mse_loss, batch, backend="double_backward")
    warm = _WarmUp()
    warm(batch[0])
    oh.hessian(warm, F.mse_loss, batch, backend="double_backward")  # past the first call: consistent


def test_product_check_used_where_reductions_are_not_exact(monkeypatch):
    # on GPUs the kept graph is checked with two Hessian-vector products (kept vs fresh graph) instead of gradients
    import overparam.hessian.hvp_backends as hvp_mod

    monkeypatch.setattr(hvp_mod, "_exact_reductions", lambda device: False)
    batch = (gaussian((6, 3), generator=1, dtype=torch.float64), gaussian((6, 2), generator=2, dtype=torch.float64))
    calls = []
    monkeypatch.setattr(hvp_mod.Objective, "grad", lambda self, theta: calls.append(1))
    with pytest.raises(oh.NonDeterministicModelError, match="Hessian-vector products"):
        oh.hessian(_WarmUp(), F.mse_loss, batch, backend="double_backward")
    with pytest.raises(oh.NonDeterministicModelError, match="Hessian-vector products"):
        oh.hessian(_Noisy(), F.mse_loss, batch, backend="double_backward")
    oh.hessian(tanh_mlp([3, 4, 2], generator=0), F.mse_loss, batch, backend="double_backward")
    assert not calls  # no gradient comparison on this path


def _spectral_net():
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return nn.Sequential(nn.utils.parametrizations.spectral_norm(nn.Linear(3, 4)), nn.Tanh(), nn.Linear(4, 1)).double()


@pytest.mark.parametrize("backend", ["jvp", "double_backward"])
def test_stateful_forward_without_forward_ad_rule(backend):
    """spectral_norm's power iteration runs in train mode (an out= op with no forward-mode rule,
    and an in-place buffer update): both backends refuse it with the same clear error; with the
    check off the jvp backend falls back to reverse-over-reverse instead of crashing, and the
    model's own buffers are never touched."""
    x, y = gaussian((8, 3), generator=1, dtype=torch.float64), gaussian((8, 1), generator=2, dtype=torch.float64)
    net = _spectral_net()
    bufs = {k: b.clone() for k, b in net.named_buffers()}
    with pytest.raises(oh.NonDeterministicModelError, match="stateful"):
        oh.hessian(net, nn.functional.mse_loss, (x, y), backend=backend)
    H = oh.hessian(net, nn.functional.mse_loss, (x, y), backend="jvp", check=False)
    v = gaussian((H.n,), generator=0, dtype=torch.float64)
    hv = H @ v
    assert H.jvp_mode == "reverse-over-reverse"
    ref = oh.hessian(net.eval(), nn.functional.mse_loss, (x, y)) @ v  # the power iteration has about converged:
    torch.testing.assert_close(hv, ref, rtol=1e-3, atol=1e-6)  # the same operator up to its last update
    assert all(torch.equal(b, bufs[k]) for k, b in net.named_buffers())


def test_params_and_exclude_are_selection_specs_and_blocks_select_exactly():
    # "0.weight" as a string spec would also select "1.0.weight" (a dotted suffix): blocks and restrict
    # must pass on exactly the names they mean
    net = nn.Sequential(tanh_mlp([3, 4], generator=0)[0], nn.Tanh(), nn.Sequential(tanh_mlp([4, 2], generator=1)[0]))
    names = [k for k, _ in net.named_parameters()]
    assert names == ["0.weight", "0.bias", "2.0.weight", "2.0.bias"]
    batch = (gaussian((7, 3), generator=2, dtype=torch.float64), gaussian((7, 2), generator=3, dtype=torch.float64))
    Hd = dense_hessian(net, F.mse_loss, batch)
    sizes = dict(zip(names, [12, 4, 8, 2]))
    offs = dict(zip(names, torch.tensor([0, 12, 16, 24]).tolist()))

    def idx(ks):
        return torch.cat([torch.arange(offs[k], offs[k] + sizes[k]) for k in ks])

    H = oh.hessian(net, F.mse_loss, batch)
    bl = oh.blocks(net, F.mse_loss, batch, exclude="bias")
    assert {k: b.names for k, b in bl.items()} == {"0": ["0.weight"], "2.0": ["2.0.weight"]}
    torch.testing.assert_close(bl["2.0"].to_dense(), Hd[idx(["2.0.weight"])][:, idx(["2.0.weight"])], rtol=1e-12, atol=1e-14)
    for spec, exclude, want in ((nn.Linear, "2", ["0.weight", "0.bias"]), ("weight", None, ["0.weight", "2.0.weight"]),
                                (["2.0.bias", "0"], "0.weight", ["0.bias", "2.0.bias"])):
        sub = oh.hessian(net, F.mse_loss, batch, params=spec, exclude=exclude)
        assert sub.names == want
        torch.testing.assert_close(sub.to_dense(), Hd[idx(want)][:, idx(want)], rtol=1e-12, atol=1e-14)
        assert H.restrict(spec, exclude=exclude).names == want
    only = oh.hessian(net, F.mse_loss, batch, params="0.*")  # a glob spans the whole name: not "2.0.*"
    assert only.names == ["0.weight", "0.bias"]
    with pytest.raises(ValueError, match="not among this operator's parameters"):
        only.restrict("weight")
    assert only.restrict("0.*", exclude="bias").names == ["0.weight"]
    s = oh.epsilon_sharpness(net, F.mse_loss, batch, rho=0.05, steps=2, params="2", exclude="bias", generator=0)
    assert [t.shape for t in s.delta] == [torch.Size([2, 4])]
