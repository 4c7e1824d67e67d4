"""overparam.hessian.jacobian: J and Jᵀ products against a dense fp64 Jacobian (autograd rows,
itself checked against central differences of the outputs), on every shared test model."""

import warnings

import pytest
import torch
from torch import nn

import overparam.hessian as oh
from overparam.backend import vec
from overparam.backend.random import gaussian
from overparam.hessian.jacobian import _batched_grad
from overparam.testing import assert_no_side_effects, max_rel_error
from overparam.testing.hessian_oracles import CURVATURE_MODELS, curvature_case
from overparam.testing.oracles import jacobian_of, outputs_of_flat

D = torch.float64


def dense_jacobian(model, x):
    f, theta = outputs_of_flat(model, x)
    return jacobian_of(f, theta), f, theta


def fd_jacobian(f, theta, step=1e-6):
    eye = torch.eye(theta.numel(), dtype=D)
    with torch.no_grad():
        return torch.stack([(f(theta + step * e) - f(theta - step * e)).reshape(-1) / (2 * step) for e in eye], dim=1)


@pytest.mark.parametrize("name", CURVATURE_MODELS)
def test_products_match_the_dense_oracle(name):
    c = curvature_case(name, batch_size=5, generator=CURVATURE_MODELS.index(name))
    Jd, f, theta = dense_jacobian(c.model, c.batch[0])
    # the oracle itself: central differences of the outputs (error O(h²) + O(eps/h))
    assert max_rel_error(fd_jacobian(f, theta), Jd) < 1e-7
    with assert_no_side_effects(c.model):
        J = oh.jacobian(c.model, c.batch)
        V = gaussian((J.n, 3), generator=0, dtype=D)
        U = gaussian((J.m, 4), generator=1, dtype=D)
        assert J.shape == tuple(Jd.shape)
        assert max_rel_error(J @ V, Jd @ V) < 1e-10 and J.jvp_mode == "forward"
        assert not (J @ V).requires_grad
        assert max_rel_error(J.T @ U, Jd.T @ U) < 1e-10
        assert max_rel_error(J @ V[:, 0], Jd @ V[:, 0]) < 1e-10
        assert max_rel_error(J.T @ U[:, 0], Jd.T @ U[:, 0]) < 1e-10
        assert max_rel_error(J.to_dense(chunk=7), Jd) < 1e-10
        assert max_rel_error(J.T.to_dense(), Jd.T) < 1e-10


def test_structured_forms_and_batches():
    c = curvature_case("attention_net", batch_size=6, generator=1)
    J = oh.jacobian(c.model, c.batch)
    Jd = J.to_dense()
    V = gaussian((3, J.n), generator=2, dtype=D)
    Vs = vec.unflatten(V, J.like)                      # batched tuple (3, *shape_i)
    out = J.matmat(Vs)
    assert out.shape == (3, *J.out_shape) == (3, 6, 3)
    assert max_rel_error(out.reshape(3, -1), (Jd @ V.T).T) < 1e-12
    one = J.matvec(tuple(t[0] for t in Vs))
    assert one.shape == J.out_shape and max_rel_error(one.reshape(-1), Jd @ V[0]) < 1e-12
    U = gaussian((2, *J.out_shape), generator=3, dtype=D)
    back = J.rmatmat(U)
    assert vec.shapes(back) == tuple(torch.Size([2, *s]) for s in J.like)
    assert max_rel_error(vec.flatten(back, batch=True), U.reshape(2, -1) @ Jd) < 1e-12
    assert max_rel_error(vec.flatten(J.rmatvec(U[0])), Jd.T @ U[0].reshape(-1)) < 1e-12
    assert torch.equal(J.outputs(), c.model(c.batch[0]).detach())


def test_loader_inputs_and_selection():
    c = curvature_case("ln_gelu_mlp", batch_size=7, generator=3)
    x, y = c.batch
    Jd, _, _ = dense_jacobian(c.model, x)
    J = oh.jacobian(c.model, [(x[:4], y[:4]), (x[4:], y[4:])])         # ragged loader
    assert J.out_shape == (7, 2) and max_rel_error(J.to_dense(), Jd) < 1e-12
    assert max_rel_error(oh.jacobian(c.model, x).to_dense(), Jd) < 1e-12  # bare inputs
    names = [k for k, _ in c.model.named_parameters()]
    sizes = [p.numel() for _, p in c.model.named_parameters()]
    Js = oh.jacobian(c.model, x, params="3", exclude="3.bias")              # the last Linear's weight
    i = names.index("3.weight")
    start = sum(sizes[:i])
    assert Js.names == ["3.weight"]
    assert max_rel_error(Js.to_dense(), Jd[:, start:start + sizes[i]]) < 1e-12


class _NoVmap(torch.autograd.Function):
    """tanh with a backward that has no batching rule (a Python float out of a tensor)."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return torch.tanh(x)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return g * (1 - torch.tanh(x) ** 2) * float(g.new_ones(()).sum())


class _Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(3, 4).double(), nn.Linear(4, 2).double()

    def forward(self, x):
        return self.b(_NoVmap.apply(self.a(x)))


def test_batched_products_fall_back_to_a_loop_without_a_batching_rule():
    torch.manual_seed(0)
    net = _Net()
    x = torch.randn(5, 3, dtype=D)
    J = oh.jacobian(net, x)
    Jd, _, _ = dense_jacobian(net, x)
    V, U = torch.randn(J.n, 3, dtype=D), torch.randn(J.m, 3, dtype=D)
    assert max_rel_error(J @ V, Jd @ V) < 1e-12 and max_rel_error(J.T @ U, Jd.T @ U) < 1e-12
    assert J.jvp_mode == "double-vjp"           # an old-style autograd.Function: no torch.func transforms
    leaf = torch.ones(3, dtype=D, requires_grad=True)
    out = _NoVmap.apply(leaf)
    seeds = torch.eye(3, dtype=D)
    assert torch.allclose(_batched_grad(out, [leaf], [seeds], 3)[0], torch.diag(1 - torch.tanh(leaf.detach()) ** 2))


def test_bad_input_is_refused():
    c = curvature_case("tanh_mlp", batch_size=4, generator=0)
    J = oh.jacobian(c.model, c.batch)
    with pytest.raises(ValueError, match="v must have shape"):
        J @ torch.ones(J.n + 1, dtype=D)
    with pytest.raises(ValueError, match="V must have shape"):
        J.matmat(torch.ones(J.n + 1, 2, dtype=D))
    with pytest.raises(ValueError, match="u must have shape"):
        J.rmatvec(torch.ones(J.m + 1, dtype=D))
    with pytest.raises(TypeError, match="v has dtype"):
        J @ torch.ones(J.n, dtype=torch.float32)
    with pytest.raises(ValueError, match="v: entry 0"):
        J.matvec(tuple(torch.ones(2, 2, dtype=D) for _ in J.like))
    with pytest.raises(ValueError, match="data"):
        oh.jacobian(c.model, torch.tensor(1.0, dtype=D))
    drop = nn.Sequential(nn.Linear(3, 4), nn.Dropout(0.5), nn.Linear(4, 2)).double()
    with pytest.raises(oh.NonDeterministicModelError):
        oh.jacobian(drop, c.batch[0])


@pytest.mark.parametrize("name", ["small_cnn", "ln_gelu_mlp", "attention_net", "embedding_net"])
def test_agrees_with_curvlinops(name):
    curvlinops = pytest.importorskip("curvlinops")
    c = curvature_case(name, batch_size=5, generator=7)
    params = [p for p in c.model.parameters() if p.requires_grad]
    data = [c.batch]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        CJ = curvlinops.JacobianLinearOperator(c.model, params, data)
        CJT = curvlinops.TransposedJacobianLinearOperator(c.model, params, data)
    J = oh.jacobian(c.model, c.batch)
    V = gaussian((J.n, 3), generator=0, dtype=D)
    U = gaussian((J.m, 3), generator=1, dtype=D)
    assert max_rel_error(J @ V, CJ @ V) < 1e-10
    assert max_rel_error(J.T @ U, CJT @ U) < 1e-10


class _MHA(nn.Module):
    def __init__(self):
        super().__init__()
        self.attn, self.head = nn.MultiheadAttention(8, 2, batch_first=True), nn.Linear(8, 2)

    def forward(self, x):
        return self.head(self.attn(x, x, x, need_weights=False)[0].mean(dim=1))


def test_fused_attention_runs_under_the_math_kernel():
    torch.manual_seed(0)
    net = _MHA().double().eval()                  # SDPA would pick a fused CPU kernel: no double backward
    x = torch.randn(3, 5, 8, dtype=D)
    J = oh.jacobian(net, x)
    Jd, _, _ = dense_jacobian(net, x)
    U = torch.randn(J.m, 2, dtype=D)
    assert J.attention == "math" and max_rel_error(J.T @ U, Jd.T @ U) < 1e-12
    V = torch.randn(J.n, 2, dtype=D)
    assert max_rel_error(J @ V, Jd @ V) < 1e-10                 # no forward-mode rule: double vjps ...
    assert J.jvp_mode == "double-vjp"                           # ... which the math kernel can differentiate
    assert max_rel_error(J.T @ U, Jd.T @ U) < 1e-12 and max_rel_error(J @ V[:, 0], Jd @ V[:, 0]) < 1e-10
    J2 = oh.jacobian(net, x, attention=None)                   # torch's fused kernel: J v has no route
    with pytest.raises((RuntimeError, NotImplementedError)):
        J2 @ V


def test_one_dimensional_outputs_read_a_square_block_as_flat():
    torch.manual_seed(1)
    net = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 1), nn.Flatten(0)).double()   # outputs (N,)
    x = torch.randn(5, 3, dtype=D)
    J = oh.jacobian(net, x)
    Jd, _, _ = dense_jacobian(net, x)
    U = torch.randn(5, 5, dtype=D)                    # (m, B) with B = m = N
    assert J.out_shape == (5,) and max_rel_error(J.T @ U, Jd.T @ U) < 1e-12
    assert max_rel_error(oh.ntk(net, x).to_dense(), Jd @ Jd.T) < 1e-12
