"""overparam.hessian.ntk: the empirical NTK J Jᵀ against the dense fp64 Jacobian oracle."""

import pytest
import torch

import overparam.hessian as oh
from overparam.backend.random import gaussian
from overparam.testing import assert_no_side_effects, max_rel_error
from overparam.testing.hessian_oracles import CURVATURE_MODELS, curvature_case
from overparam.testing.oracles import jacobian_of, outputs_of_flat

D = torch.float64


def dense_ntk(model, x):
    f, theta = outputs_of_flat(model, x)
    Jd = jacobian_of(f, theta)
    return Jd @ Jd.T


@pytest.mark.parametrize("name", ["tanh_mlp", "small_cnn", "ln_gelu_mlp", "attention_net", "embedding_net"])
def test_ntk_matches_the_dense_oracle(name):
    c = curvature_case(name, batch_size=6, generator=CURVATURE_MODELS.index(name))
    Kd = dense_ntk(c.model, c.batch[0])
    with assert_no_side_effects(c.model):
        K = oh.ntk(c.model, c.batch)
        V = gaussian((K.n, 3), generator=0, dtype=D)
        assert K.shape == tuple(Kd.shape)
        assert max_rel_error(K @ V, Kd @ V) < 1e-10
        assert max_rel_error(K @ V[:, 0], Kd @ V[:, 0]) < 1e-10
        assert max_rel_error(K.to_dense(chunk=5), Kd) < 1e-10
        top = oh.lanczos(K, k=3, generator=0, tol=1e-12)
    ref = torch.linalg.eigvalsh(Kd).flip(0)[:3]
    assert max_rel_error(top.values, ref) < 1e-10


def test_per_sample_and_per_output_blocks():
    c = curvature_case("ln_gelu_mlp", batch_size=5, generator=2)        # outputs (5, 2)
    Kd = dense_ntk(c.model, c.batch[0]).reshape(5, 2, 5, 2)
    K = oh.ntk(c.model, c.batch)
    S = K.blocks("sample", chunk=3)
    assert S.shape == (5, 2, 2)
    assert max_rel_error(S, torch.stack([Kd[i, :, i, :] for i in range(5)])) < 1e-12
    O = K.blocks("output")
    assert O.shape == (2, 5, 5)
    assert max_rel_error(O, torch.stack([Kd[:, a, :, a] for a in range(2)])) < 1e-12
    with pytest.raises(ValueError, match="by must be"):
        K.blocks("layer")


def test_ntk_over_batches_and_a_parameter_subset():
    c = curvature_case("small_cnn", batch_size=6, generator=4)
    x, y = c.batch
    f, theta = outputs_of_flat(c.model, x)
    Jd = jacobian_of(f, theta)
    K = oh.ntk(c.model, [(x[:2], y[:2]), (x[2:], y[2:])], params="4")   # the Linear head: columns at the end
    k = K.jacobian.n
    assert max_rel_error(K.to_dense(), Jd[:, -k:] @ Jd[:, -k:].T) < 1e-12
    v = gaussian((K.n,), generator=1, dtype=D)
    assert max_rel_error(K @ v, Jd[:, -k:] @ (Jd[:, -k:].T @ v)) < 1e-12
