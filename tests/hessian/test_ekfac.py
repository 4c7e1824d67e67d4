"""EK-FAC (overparam/hessian/ekfac.py) against the dense fp64 oracle ``Q diag(Qᵀ C Q) Qᵀ`` per block
(tests/hessian/_kfac_oracle.py), its optimality in the K-FAC eigenbasis, and curvlinops."""

from __future__ import annotations

import pytest
import torch
from _kfac_oracle import block_index, dense_curvature, dense_ekfac
from test_kfac import MODELS, _like, batch, covered, mlp
from torch import nn

import overparam as op
from overparam.testing import assert_no_side_effects, max_rel_error
from overparam.testing.hessian_oracles import dense_ggn

D = torch.float64
TOL = 1e-10


@pytest.mark.parametrize("name", ["mlp", "cnn", "seq"])
@pytest.mark.parametrize("sharing", ["expand", "reduce"])
def test_ekfac_equals_the_dense_oracle(name, sharing):
    """16 samples: every A is full rank, so the eigenbasis is unique up to signs (with a null space,
    EK-FAC-reduce depends on the basis chosen inside it)."""
    net, data = MODELS[name](), batch(name, "cross_entropy", n=16)
    E = op.hessian.ekfac(net, "cross_entropy", data, weight_sharing=sharing)
    oracle = dense_ekfac(net, "cross_entropy", data, E.names, _like(net, E.names), weight_sharing=sharing)
    assert max_rel_error(E.to_dense(), oracle) < TOL


@pytest.mark.parametrize("kind,fisher", [("mse", "type-2"), ("cross_entropy", "empirical"), ("mse", "empirical")])
def test_ekfac_other_losses_and_fisher_types(kind, fisher):
    net, data = MODELS["cnn"](), batch("cnn", kind, n=16)
    E = op.hessian.ekfac(net, kind, data, fisher_type=fisher)
    oracle = dense_ekfac(net, kind, data, E.names, _like(net, E.names), fisher=fisher)
    assert max_rel_error(E.to_dense(), oracle) < TOL


def test_the_curvature_oracle_is_the_ggn():
    net, data = MODELS["cnn"](), batch("cnn", "cross_entropy")
    assert max_rel_error(dense_curvature(net, "cross_entropy", data), dense_ggn(net, "cross_entropy", data)) < 1e-12


def test_ekfac_is_the_best_diagonal_in_the_kfac_eigenbasis():
    """Per block, ``‖C − EK-FAC‖_F ≤ ‖C − K-FAC‖_F``, and the traces of C and EK-FAC agree."""
    net, data = MODELS["seq"](), batch("seq", "cross_entropy", n=6)
    E = op.hessian.ekfac(net, "cross_entropy", data)
    K = op.hessian.kfac(net, "cross_entropy", data)
    C, Ed, Kd = dense_ggn(net, "cross_entropy", data), E.to_dense(), K.to_dense()
    for m in (net[0], net[3]):
        i = block_index(net, m, E.names, _like(net, E.names))
        blk = lambda M: M[i[:, None], i[None, :]]  # noqa: E731
        assert float((blk(C) - blk(Ed)).norm()) < float((blk(C) - blk(Kd)).norm())
        assert abs(float(blk(C).trace() - blk(Ed).trace())) < TOL * float(blk(C).trace())


def test_exact_for_a_single_linear_layer_with_mse():
    g = torch.Generator().manual_seed(3)
    net = nn.Linear(4, 3).to(D)
    x, y = torch.randn(7, 4, generator=g, dtype=D), torch.randn(7, 3, generator=g, dtype=D)
    assert max_rel_error(op.hessian.ekfac(net, "mse", (x, y)).to_dense(), dense_ggn(net, "mse", (x, y))) < 1e-12


def test_monte_carlo_is_reproducible_and_leaves_the_rng_alone():
    net, data = mlp(), batch("mlp", "cross_entropy")
    with assert_no_side_effects(net):
        a = op.hessian.ekfac(net, "cross_entropy", data, fisher_type="mc", mc_samples=4, generator=0).to_dense()
        b = op.hessian.ekfac(net, "cross_entropy", data, fisher_type="mc", mc_samples=4, generator=0).to_dense()
        op.hessian.ekfac(net, "cross_entropy", data, fisher_type="mc")
    assert torch.equal(a, b)


@pytest.mark.parametrize("ctor", ["KFACLinearOperator", "EKFACLinearOperator"])
@pytest.mark.parametrize("name,sharing,fisher", [("cnn", "expand", "type-2"), ("seq", "reduce", "type-2"),
                                                 ("mlp", "expand", "empirical")])
def test_matches_curvlinops(ctor, name, sharing, fisher):
    """Runs where curvlinops is installed (it is not a dependency): same model, data, settings."""
    curvlinops = pytest.importorskip("curvlinops")
    net, data = MODELS[name](), batch(name, "cross_entropy", n=6)
    ours = (op.hessian.kfac if ctor == "KFACLinearOperator" else op.hessian.ekfac)(
        net, "cross_entropy", data, weight_sharing=sharing, fisher_type=fisher)
    pd = dict(net.named_parameters())
    theirs = getattr(curvlinops, ctor)(net, nn.CrossEntropyLoss(), [pd[k] for k in ours.names], [data],
                                       fisher_type=fisher, kfac_approx=sharing, separate_weight_and_bias=False)
    dense = theirs @ torch.eye(ours.n, dtype=D)
    assert max_rel_error(ours.to_dense(), dense) < TOL


def _distinct(M: torch.Tensor) -> bool:
    ev = torch.linalg.eigvalsh(M)
    return bool((ev.diff() > 1e-8 * ev.abs().max()).all())


@pytest.mark.parametrize("sharing", ["expand", "reduce"])
def test_matches_curvlinops_on_the_shared_models(case, sharing):
    """The Linear/Conv2d layers of the LayerNorm, attention, BatchNorm and embedding models too.

    EK-FAC is compared on the blocks whose factors have distinct eigenvalues: elsewhere its basis,
    and so the operator, is not unique (attention's key projection under "reduce": the sum over
    positions of the key gradients is zero by softmax's shift invariance, so ``G`` has a null space
    that the per-sample gradients do not vanish on)."""
    curvlinops = pytest.importorskip("curvlinops")
    net, loss = case.model, {"mse": nn.MSELoss(), "cross_entropy": nn.CrossEntropyLoss()}[case.loss]
    pd = dict(net.named_parameters())
    for ours_ctor, ctor in ((op.hessian.kfac, curvlinops.KFACLinearOperator), (op.hessian.ekfac, curvlinops.EKFACLinearOperator)):
        ours = ours_ctor(net, case.loss, case.batch, params=covered(net), weight_sharing=sharing)
        theirs = ctor(net, loss, [pd[k] for k in ours.names], [case.batch], fisher_type="type-2", kfac_approx=sharing,
                      separate_weight_and_bias=False)
        mine, dense = ours.to_dense(), theirs @ torch.eye(ours.n, dtype=D)
        if ours_ctor is op.hessian.kfac:
            assert max_rel_error(mine, dense) < TOL
            continue
        compared = 0
        for layer, (A, G) in ours.factors.items():
            if not (_distinct(A) and _distinct(G)):
                continue
            i = block_index(net, net.get_submodule(layer), ours.names, _like(net, ours.names))
            assert max_rel_error(mine[i[:, None], i[None, :]], dense[i[:, None], i[None, :]]) < TOL
            compared += 1
        assert compared >= 1
