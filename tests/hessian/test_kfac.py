"""K-FAC (overparam/hessian/kfac.py) against dense fp64 oracles built from the definitions
(tests/hessian/_kfac_oracle.py), its exact case, its documented deviation, and its closed forms."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from _kfac_oracle import block_index, dense_kfac, factors
from torch import nn

import overparam as op
from overparam.backend.linalg import NotPositiveDefiniteError
from overparam.backend.random import fan_in_normal_
from overparam.testing import assert_no_side_effects, max_rel_error
from overparam.testing.hessian_oracles import dense_ggn

D = torch.float64
TOL = 1e-10


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def mlp():
    return fan_in_normal_(nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 4), nn.Tanh(), nn.Linear(4, 3)).to(D),
                          generator=0)


def cnn():
    return fan_in_normal_(nn.Sequential(nn.Conv2d(1, 2, 3, padding=1, stride=2), nn.Tanh(), nn.Conv2d(2, 3, 2, dilation=1),
                                        nn.Tanh(), nn.Flatten(), nn.Linear(12, 3)).to(D), generator=1)


def seq():  # a Linear shared over T = 3 positions (weight sharing), then a head on the flattened sequence
    return fan_in_normal_(nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Flatten(), nn.Linear(12, 3)).to(D), generator=2)


def batch(name, kind, n=5, seed=0):
    g = _gen(seed)
    x = {"mlp": (n, 3), "cnn": (n, 1, 6, 6), "seq": (n, 3, 3)}[name]
    x = torch.randn(*x, generator=g, dtype=D)
    y = torch.randint(0, 3, (n,), generator=g) if kind == "cross_entropy" else torch.randn(n, 3, generator=g, dtype=D)
    return x, y


MODELS = {"mlp": mlp, "cnn": cnn, "seq": seq}


def covered(net):
    """The params spec of the Linear and Conv2d layers the model has (a type matching nothing is an error)."""
    return [t for t in (nn.Linear, nn.Conv2d) if any(isinstance(m, t) for m in net.modules())]


def _like(net, names):
    pd = dict(net.named_parameters())
    return [pd[k].shape for k in names]


@pytest.mark.parametrize("name", ["mlp", "cnn", "seq"])
@pytest.mark.parametrize("kind", ["cross_entropy", "mse"])
@pytest.mark.parametrize("sharing", ["expand", "reduce"])
def test_kfac_equals_the_dense_oracle(name, kind, sharing):
    net, data = MODELS[name](), batch(name, kind)
    K = op.hessian.kfac(net, kind, data, weight_sharing=sharing)
    oracle = dense_kfac(net, kind, data, K.names, _like(net, K.names), weight_sharing=sharing)
    assert max_rel_error(K.to_dense(), oracle) < TOL


@pytest.mark.parametrize("name", ["mlp", "cnn"])
def test_empirical_fisher_kfac_equals_the_dense_oracle(name):
    net, data = MODELS[name](), batch(name, "cross_entropy")
    K = op.hessian.kfac(net, F.cross_entropy, data, fisher_type="empirical")
    oracle = dense_kfac(net, "cross_entropy", data, K.names, _like(net, K.names), fisher="empirical")
    assert max_rel_error(K.to_dense(), oracle) < TOL
    net, data = mlp(), batch("mlp", "mse")
    K = op.hessian.kfac(net, nn.MSELoss(), data, fisher_type="empirical")
    assert max_rel_error(K.to_dense(), dense_kfac(net, "mse", data, K.names, _like(net, K.names), fisher="empirical")) < TOL


@pytest.mark.parametrize("spec", [dict(exclude="bias"), dict(params="bias"), dict(params=["0", "5.weight"])])
def test_parameter_subsets_take_the_matching_rows_of_the_augmented_factors(spec):
    net, data = cnn(), batch("cnn", "cross_entropy")
    K = op.hessian.kfac(net, "cross_entropy", data, **spec)
    assert max_rel_error(K.to_dense(), dense_kfac(net, "cross_entropy", data, K.names, _like(net, K.names))) < TOL


def test_factors_equal_the_oracle_factors():
    net, data = seq(), batch("seq", "cross_entropy")
    K = op.hessian.kfac(net, "cross_entropy", data, weight_sharing="reduce")
    for (m, A, G), (name, (Ak, Gk)) in zip(factors(net, "cross_entropy", data, weight_sharing="reduce"), K.factors.items()):
        assert net.get_submodule(name) is m
        assert max_rel_error(Ak, A) < TOL and max_rel_error(Gk, G) < TOL


def test_exact_for_a_single_linear_layer_with_mse():
    g = _gen(3)
    net = nn.Linear(4, 3).to(D)
    x, y = torch.randn(7, 4, generator=g, dtype=D), torch.randn(7, 3, generator=g, dtype=D)
    assert max_rel_error(op.hessian.kfac(net, "mse", (x, y)).to_dense(), dense_ggn(net, "mse", (x, y))) < 1e-12
    # with a shared dimension (outputs (N, T, C)) K-FAC-expand is exact too
    xs, ys = torch.randn(7, 5, 4, generator=g, dtype=D), torch.randn(7, 5, 3, generator=g, dtype=D)
    assert max_rel_error(op.hessian.kfac(net, "mse", (xs, ys)).to_dense(), dense_ggn(net, "mse", (xs, ys))) < 1e-12


def test_documented_deviation_single_linear_cross_entropy():
    """``GGN − K = Σ_n (a_n a_nᵀ − A) ⊗ (H_n − H̄)`` (module docstring), and it is not zero."""
    g = _gen(4)
    net = nn.Linear(3, 4, bias=False).to(D)
    x, y = torch.randn(6, 3, generator=g, dtype=D), torch.randint(0, 4, (6,), generator=g)
    K = op.hessian.kfac(net, "cross_entropy", (x, y)).to_dense()
    p = torch.softmax(net(x), -1).detach()
    H = [(torch.diag(pn) - pn[:, None] * pn[None, :]) / 6 for pn in p]
    A, Hbar = x.T @ x / 6, sum(H) / 6
    dev = sum(torch.kron(Hn - Hbar, x[n, :, None] * x[n, None, :] - A) for n, Hn in enumerate(H))
    G = dense_ggn(net, "cross_entropy", (x, y))
    assert max_rel_error(G - K, dev) < TOL
    assert float((G - K).abs().max()) > 1e-3 * float(G.abs().max())


def test_block_diagonal_where_the_ggn_is_not():
    net, data = mlp(), batch("mlp", "cross_entropy")
    K = op.hessian.kfac(net, "cross_entropy", data)
    Kd, G = K.to_dense(), dense_ggn(net, "cross_entropy", data)
    i0 = block_index(net, net[0], K.names, _like(net, K.names))
    i2 = block_index(net, net[2], K.names, _like(net, K.names))
    assert float(Kd[i0[:, None], i2[None, :]].abs().max()) == 0.0
    assert float(G[i0[:, None], i2[None, :]].abs().max()) > 1e-4


@pytest.mark.parametrize("ctor", [op.hessian.kfac, op.hessian.ekfac])
def test_closed_forms_equal_dense(ctor):
    net, data = cnn(), batch("cnn", "cross_entropy", n=6)
    K = ctor(net, "cross_entropy", data)
    Kd = K.to_dense()
    I = torch.eye(K.n, dtype=D)
    assert abs(float(K.trace()) - float(Kd.trace())) < TOL * float(Kd.trace())
    assert abs(float(K.frobenius_norm()) - float(torch.linalg.matrix_norm(Kd))) < TOL * float(Kd.norm())
    for lam in (1e-3, 0.5):
        assert abs(float(K.logdet(lam)) - float(torch.logdet(Kd + lam * I))) < TOL * K.n
        assert max_rel_error(K.inverse(damping=lam).to_dense(), torch.linalg.inv(Kd + lam * I)) < TOL
    ev = torch.linalg.eigvalsh(Kd).flip(0)
    assert max_rel_error(K.eigenvalues(), ev) < TOL
    e = K.eigh(4)
    assert max_rel_error(e.values, ev[:4]) < TOL
    Q = e.matrix()
    assert max_rel_error(Q.T @ Q, torch.eye(4, dtype=D)) < 1e-12
    assert max_rel_error(Kd @ Q, Q * e.values) < TOL
    assert float(e.residuals.max()) < 1e-12 * float(ev[0])
    # all n pairs: the 13-column Linear block has 6 samples, so its input factor is kept as a
    # range basis (a thin QR) and the eigenvectors of its null space come from completing it
    assert K._X[-1] is not None and K._bases()[-1][1].shape == (13, 6)
    full = K.eigh()
    Q = full.matrix()
    assert max_rel_error(Q.T @ Q, I) < 1e-12 and max_rel_error(Kd @ Q, Q * full.values) < TOL


def test_inverse_applies_to_every_vector_form_and_solvers_take_it():
    net, data = mlp(), batch("mlp", "cross_entropy")
    K = op.hessian.kfac(net, "cross_entropy", data)
    Kinv = K.inverse(damping=0.1)
    v = torch.randn(K.n, generator=_gen(5), dtype=D)
    assert max_rel_error(K.shift(0.1) @ (Kinv @ v), v) < 1e-12
    V = torch.randn(K.n, 3, generator=_gen(6), dtype=D)
    assert max_rel_error(Kinv @ V, torch.stack([Kinv @ c for c in V.T], 1)) < 1e-14
    tup = op.backend.vec.unflatten(v, K.like)
    assert max_rel_error(op.backend.vec.flatten(Kinv @ tup), Kinv @ v) < 1e-14
    top = op.hessian.lanczos(K, k=2, generator=0, tol=1e-10)
    assert max_rel_error(top.values, K.eigenvalues()[:2]) < 1e-8


def test_several_batches_equal_one_concatenated_batch():
    net = seq()
    (x1, y1), (x2, y2) = batch("seq", "cross_entropy", n=4, seed=1), batch("seq", "cross_entropy", n=3, seed=2)
    for sharing in ("expand", "reduce"):
        K2 = op.hessian.kfac(net, "cross_entropy", [(x1, y1), (x2, y2)], weight_sharing=sharing).to_dense()
        K1 = op.hessian.kfac(net, "cross_entropy", (torch.cat([x1, x2]), torch.cat([y1, y2])), weight_sharing=sharing)
        assert max_rel_error(K2, K1.to_dense()) < 1e-12


@pytest.mark.parametrize("kind", ["cross_entropy", "mse"])
def test_monte_carlo_fisher_converges_to_type_2_and_is_reproducible(kind):
    net, data = mlp(), batch("mlp", kind, n=4)
    exact = op.hessian.kfac(net, kind, data).to_dense()
    with assert_no_side_effects(net):
        mc = op.hessian.kfac(net, kind, data, fisher_type="mc", mc_samples=3000, generator=0).to_dense()
        again = op.hessian.kfac(net, kind, data, fisher_type="mc", mc_samples=3000, generator=0).to_dense()
        other = op.hessian.kfac(net, kind, data, fisher_type="mc", mc_samples=3000, generator=1).to_dense()
        op.hessian.kfac(net, kind, data, fisher_type="mc")      # generator=None: the global RNG is not advanced
    assert torch.equal(mc, again) and not torch.equal(mc, other)
    assert max_rel_error(mc, exact) < 0.08


def test_bad_arguments_are_refused_by_name():
    net, data = mlp(), batch("mlp", "cross_entropy")
    for kw, word in [(dict(fisher_type="ef"), "fisher_type"), (dict(weight_sharing="sum"), "weight_sharing"),
                     (dict(mc_samples=2), "mc_samples"), (dict(fisher_type="mc", mc_samples=0), "mc_samples")]:
        with pytest.raises(ValueError, match=word):
            op.hessian.kfac(net, "cross_entropy", data, **kw)
    with pytest.raises(ValueError, match="loss_fn"):
        op.hessian.kfac(net, F.l1_loss, data)
    ln = nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4), nn.Linear(4, 3)).to(D)
    with pytest.raises(ValueError, match="params.*LayerNorm"):
        op.hessian.kfac(ln, "cross_entropy", data)
    op.hessian.kfac(ln, "cross_entropy", data, exclude=nn.LayerNorm)        # fine without it
    grouped = nn.Sequential(nn.Conv2d(2, 2, 3, groups=2), nn.Flatten(), nn.Linear(8, 3)).to(D)
    with pytest.raises(ValueError, match="groups"):
        op.hessian.kfac(grouped, "cross_entropy", (torch.randn(2, 2, 4, 4, dtype=D), torch.tensor([0, 1])))
    lin = nn.Linear(3, 3).to(D)
    with pytest.raises(ValueError, match="twice"):
        op.hessian.kfac(nn.Sequential(lin, nn.Tanh(), lin), "cross_entropy", data)
    with pytest.raises(ValueError, match="in place"):
        op.hessian.kfac(nn.Sequential(nn.Linear(3, 4), nn.ReLU(inplace=True), nn.Linear(4, 3)).to(D), "cross_entropy", data)
    with pytest.raises(ValueError, match="outputs"):
        op.hessian.kfac(net, "cross_entropy", (data[0], data[1].double()))
    K = op.hessian.kfac(net, "cross_entropy", data, exclude="4")   # last layer left out: the rest is still PSD
    with pytest.raises(ValueError, match="damping"):
        K.inverse(damping=-1.0)
    with pytest.raises(ValueError, match="k must"):
        K.eigh(K.n + 1)
    single = op.hessian.kfac(nn.Linear(3, 5).to(D), "cross_entropy", (data[0][:2], data[1][:2]))
    with pytest.raises(NotPositiveDefiniteError):   # rank-deficient with 2 samples
        single.inverse()


def test_refuses_stochastic_models_and_leaves_hooks_alone():
    net = nn.Sequential(nn.Linear(3, 4), nn.Dropout(0.5), nn.Linear(4, 3)).to(D)
    with pytest.raises(op.hessian.NonDeterministicModelError):
        op.hessian.kfac(net, "cross_entropy", batch("mlp", "cross_entropy"))
    net = mlp()
    with assert_no_side_effects(net):
        op.hessian.kfac(net, "cross_entropy", batch("mlp", "cross_entropy"))
    assert all(not m._forward_hooks for m in net.modules())


def test_reduce_gradient_factor_is_the_ggn_bias_block(case):
    """On every shared test model (LayerNorm, attention, eval BatchNorm, embedding, CNN): the bias
    column of the augmented input is 1, so each layer's bias block of the dense GGN is
    ``Σ_n (Σ_t J_tᵀ) H_n (Σ_t J_t)``: K-FAC-reduce's ``G`` by definition."""
    net = case.model
    K = op.hessian.kfac(net, case.loss, case.batch, params=covered(net), weight_sharing="reduce")
    names = [k for k, p in net.named_parameters() if p.requires_grad]
    offsets = dict(zip(names, torch.tensor([0] + [dict(net.named_parameters())[k].numel() for k in names]).cumsum(0)))
    C = dense_ggn(net, case.loss, case.batch)
    for layer, (_, G) in K.factors.items():
        o = int(offsets[f"{layer}.bias"])
        assert max_rel_error(G, C[o:o + G.shape[0], o:o + G.shape[0]]) < TOL
