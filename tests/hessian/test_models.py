"""overparam.hessian's operators on every shared test model (Linear+tanh, CNN, eval-mode BatchNorm,
LayerNorm+GELU, attention, embedding) against the dense autograd oracles, in fp64."""

import pytest
import torch

import overparam.hessian as oh
from overparam.backend.random import gaussian
from overparam.testing import assert_no_side_effects, dense_hessian, max_rel_error
from overparam.testing.hessian_oracles import dense_ggn

# exact backends agree with the oracle to rounding; central differences to O(h²) with h = eps^(1/3)
TOL = {"double_backward": 1e-10, "jvp": 1e-10, "finite_difference": 1e-6}


def test_every_backend_is_tolerated():
    assert set(TOL) == set(oh.BACKENDS)


@pytest.mark.parametrize("backend", oh.BACKENDS)
def test_hessian_products_match_the_dense_oracle(case, backend):
    Hd = dense_hessian(case.model, case.loss_fn, case.batch)
    with assert_no_side_effects(case.model):
        H = oh.hessian(case.model, case.loss_fn, case.batch, backend=backend)
        V = gaussian((H.n, 3), generator=0, dtype=torch.float64)
        got = H @ V
    assert got.shape == (Hd.shape[0], 3)
    assert max_rel_error(got, Hd @ V) < TOL[backend], backend


def test_ggn_matches_the_dense_oracle(case):
    Gd = dense_ggn(case.model, case.loss, case.batch)
    with assert_no_side_effects(case.model):
        G = oh.ggn(case.model, case.loss, case.batch).to_dense()
    assert max_rel_error(G, Gd) < 1e-12
    assert float(torch.linalg.eigvalsh(G).min()) > -1e-12 * float(G.abs().max())  # PSD


def test_the_models_have_curvature_in_every_parameter(case):
    # a case whose Hessian ignored some parameters (a dead branch) would test less than it claims
    H = dense_hessian(case.model, case.loss_fn, case.batch)
    names = [k for k, _ in case.model.named_parameters()]
    sizes = [p.numel() for p in case.model.parameters()]
    rows = torch.split(H.abs().amax(1), sizes)
    dead = [k for k, r in zip(names, rows) if float(r.max()) == 0]
    assert not dead, f"parameters without curvature: {dead}"
