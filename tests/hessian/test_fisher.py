"""Empirical and Monte-Carlo Fisher operators against dense fp64 oracles built from per-row loss
gradients (plain autograd), on ``(N, C)`` and sequence ``(B, T, V)`` outputs with ignored targets."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import overparam.hessian as oh
from overparam.testing import assert_no_side_effects, max_rel_error
from overparam.testing.hessian_oracles import dense_ggn
from overparam.backend.vec import flatten as vec_flat
from _sequences import V, dense_token_ggn, row_gradients, seq_case


def _keep(y):
    return y.reshape(-1) != -100


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_empirical_fisher_is_the_mean_outer_product_of_row_gradients(reduction):
    net, ids, y = seq_case(0)
    R = row_gradients(net, ids, y)[_keep(y)]
    want = R.mT @ R / (R.shape[0] if reduction == "mean" else 1)
    with assert_no_side_effects(net):
        E = oh.empirical_fisher(net, "cross_entropy", (ids, y), reduction=reduction)
        got = E.to_dense()
    assert max_rel_error(got, want) < 1e-12


def test_empirical_fisher_mse_and_loader():
    net, ids, y = seq_case(1, mse=True, batch=3)
    R = row_gradients(net, ids, y, mse=True)
    E = oh.empirical_fisher(net, nn.MSELoss(), [(ids[:1], y[:1]), (ids[1:], y[1:])])
    assert max_rel_error(E.to_dense(), R.mT @ R / y.numel()) < 1e-12


def test_empirical_fisher_on_the_shared_curvature_models(case):
    net, (x, y) = case.model, case.batch
    fn = F.cross_entropy if case.loss == "cross_entropy" else F.mse_loss
    from overparam.testing.oracles import jacobian_of, loss_of_flat
    f, th = loss_of_flat(net, lambda o, t: fn(o, t, reduction="none").reshape(len(t), -1).sum(-1), (x, y))
    R = jacobian_of(f, th)
    c = len(y) if case.loss == "cross_entropy" else y.numel()
    assert max_rel_error(oh.empirical_fisher(net, case.loss, (x, y)).to_dense(), R.mT @ R / c) < 1e-10


def test_mc_fisher_equals_the_empirical_fisher_of_its_drawn_targets():
    """One draw per row: the MC Fisher is the empirical Fisher of the sampled labels (same generator)."""
    net, ids, y = seq_case(2)
    M = oh.mc_fisher(net, "cross_entropy", (ids, y), mc_samples=1, generator=7)
    logits = net(ids).detach().reshape(-1, V)
    drawn = torch.multinomial(torch.softmax(logits, -1), 1, replacement=True,
                              generator=torch.Generator().manual_seed(7)).reshape(y.shape)
    drawn = torch.where(y == -100, y, drawn)  # ignored rows stay ignored
    R = row_gradients(net, ids, drawn)[_keep(y)]
    assert max_rel_error(M.to_dense(), R.mT @ R / R.shape[0]) < 1e-12


def test_mc_fisher_expectation_is_the_ggn_exactly():
    """``E_ŷ[g gᵀ] = Σ_k p_k g_k g_kᵀ`` (every class, weighted by the model's probability), from
    per-(row, class) gradients, equals the dense GGN; so the MC Fisher is unbiased for it."""
    net, ids, y = seq_case(3)
    keep = _keep(y)
    p = torch.softmax(net(ids).detach().reshape(-1, V), -1)[keep]
    expect = 0
    for k in range(V):
        Rk = row_gradients(net, ids, torch.full_like(y, k))[keep]
        expect = expect + (Rk * p[:, k:k + 1]).mT @ Rk
    G = dense_token_ggn(net, ids, y)
    assert max_rel_error(expect / int(keep.sum()), G) < 1e-12
    assert max_rel_error(oh.ggn(net, "cross_entropy", (ids, y)).to_dense(), G) < 1e-12


@pytest.mark.parametrize("loss", ["cross_entropy", "mse"])
def test_mc_fisher_converges_to_the_ggn(loss):
    net, ids, y = seq_case(4, mse=loss == "mse")
    G = oh.ggn(net, loss, (ids, y)).to_dense()
    errs = [float(max_rel_error(oh.mc_fisher(net, loss, (ids, y), mc_samples=s, generator=s).to_dense(), G))
            for s in (4, 4096)]
    assert errs[1] < 0.05 and errs[1] < errs[0] / 8  # 1/√S: 32× fewer errors expected, 8× demanded


def test_mc_fisher_reproducible_and_leaves_the_global_rng_alone():
    net, ids, y = seq_case(5)
    torch.manual_seed(3)
    state = torch.get_rng_state()
    a = oh.mc_fisher(net, "cross_entropy", (ids, y), mc_samples=3).to_dense()
    assert torch.equal(torch.get_rng_state(), state)
    b = oh.mc_fisher(net, "cross_entropy", (ids, y), mc_samples=3).to_dense()
    assert torch.equal(a, b)
    torch.manual_seed(4)
    assert not torch.equal(a, oh.mc_fisher(net, "cross_entropy", (ids, y), mc_samples=3).to_dense())
    c = oh.mc_fisher(net, "cross_entropy", (ids, y), mc_samples=3, generator=11).to_dense()
    d = oh.mc_fisher(net, "cross_entropy", (ids, y), mc_samples=3, generator=torch.Generator().manual_seed(11))
    assert torch.equal(c, d.to_dense())


def test_fisher_operators_work_with_every_solver():
    net, ids, y = seq_case(6)
    for A in (oh.empirical_fisher(net, "cross_entropy", (ids, y)),
              oh.mc_fisher(net, "cross_entropy", (ids, y), mc_samples=2, generator=0)):
        dense = A.to_dense()
        assert max_rel_error(dense, dense.mT) < 1e-14
        top = torch.linalg.eigvalsh(dense)[-2:].flip(0)
        eig = oh.lanczos(A, k=2, generator=0)
        torch.testing.assert_close(eig.values, top, rtol=1e-8, atol=0)
        torch.testing.assert_close(vec_flat(oh.diagonal(A, probes=None).mean), dense.diagonal(), rtol=1e-10, atol=0)
        est = oh.hutchinson(A, probes=64, generator=0)
        assert abs(float(est.mean) - float(dense.trace())) < 5 * float(est.stderr)


def test_fisher_arguments_are_checked():
    net, ids, y = seq_case(7)
    with pytest.raises(ValueError, match="mc_samples"):
        oh.mc_fisher(net, "cross_entropy", (ids, y), mc_samples=0)
    with pytest.raises(ValueError, match="loss_fn"):
        oh.empirical_fisher(net, F.l1_loss, (ids, y))
    with pytest.raises(TypeError, match="generator"):
        oh.mc_fisher(net, "cross_entropy", (ids, y), generator="seed")
    x, t = torch.randn(4, 3, dtype=torch.float64), torch.randint(0, 2, (4,))
    lin = nn.Linear(3, 2).double()
    assert max_rel_error(oh.empirical_fisher(lin, "cross_entropy", (x, t), params="bias").to_dense(),
                         oh.empirical_fisher(lin, "cross_entropy", (x, t)).to_dense()[-2:, -2:]) < 1e-14
    assert dense_ggn(lin, "cross_entropy", (x, t)).shape == (8, 8)


@pytest.mark.parametrize("loss", ["cross_entropy", "mse"])
def test_fisher_and_ggn_agree_with_curvlinops(loss):
    """Cross-check against curvlinops where it is installed (the benchmark extra's anchor): the
    GGN and the empirical Fisher exactly, the MC Fisher through its shared expectation (the two
    libraries draw different samples), on a ragged two-batch loader with mean reduction."""
    cl = pytest.importorskip("curvlinops")
    from overparam.testing import tanh_mlp
    net = tanh_mlp([4, 6, 3], generator=0)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(11, 4, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (11,), generator=g) if loss == "cross_entropy" else torch.randn(11, 3, generator=g,
                                                                                          dtype=torch.float64)
    module = nn.CrossEntropyLoss() if loss == "cross_entropy" else nn.MSELoss()
    loader = [(x[:6], y[:6]), (x[6:], y[6:])]
    params = list(net.parameters())
    eye = torch.eye(sum(p.numel() for p in params), dtype=torch.float64)
    theirs = {name: cls(net, module, params, loader) @ eye
              for name, cls in (("ggn", cl.GGNLinearOperator), ("ef", cl.EFLinearOperator))}
    assert max_rel_error(oh.ggn(net, module, loader).to_dense(), theirs["ggn"]) < 1e-12
    assert max_rel_error(oh.empirical_fisher(net, module, loader).to_dense(), theirs["ef"]) < 1e-12
    mc_theirs = cl.FisherMCLinearOperator(net, module, params, loader, mc_samples=4000) @ eye
    mc_ours = oh.mc_fisher(net, module, loader, mc_samples=4000, generator=0).to_dense()
    assert max_rel_error(mc_theirs, theirs["ggn"]) < 0.05 and max_rel_error(mc_ours, theirs["ggn"]) < 0.05
