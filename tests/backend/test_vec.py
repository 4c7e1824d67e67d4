"""vec ops against flatten-then-torch oracles, over shapes (empty and scalar included) and dtypes."""

import hypothesis.strategies as st
import pytest
import torch
from hypothesis import given, settings

from overparam.backend import vec

shape_st = st.lists(st.integers(0, 4), min_size=0, max_size=3).map(tuple)  # () is a scalar, 0 gives empty
shapes_st = st.lists(shape_st, min_size=1, max_size=5)
dtype_st = st.sampled_from([torch.float32, torch.float64])


def _vec(shapes, dtype, seed, batch=None):
    g = torch.Generator().manual_seed(seed)
    lead = () if batch is None else (batch,)
    return tuple(torch.randn((*lead, *s), generator=g, dtype=torch.float64).to(dtype) for s in shapes)


def _flat(x):
    return torch.cat([t.reshape(-1).double() for t in x])


def _tol(dtype):
    return dict(rtol=1e-5, atol=1e-5) if dtype == torch.float32 else dict(rtol=1e-12, atol=1e-12)


@settings(max_examples=60, deadline=None)
@given(shapes_st, dtype_st, st.integers(0, 10_000))
def test_dot_norm_match_flat_oracle(shapes, dtype, seed):
    x, y = _vec(shapes, dtype, seed), _vec(shapes, dtype, seed + 1)
    d, n = vec.dot(x, y), vec.norm(x)
    assert d.dtype == dtype and d.ndim == 0 and n.ndim == 0
    torch.testing.assert_close(d.double(), _flat(x) @ _flat(y), **_tol(dtype))
    torch.testing.assert_close(n.double(), _flat(x).norm(), **_tol(dtype))


@settings(max_examples=60, deadline=None)
@given(shapes_st, dtype_st, st.integers(0, 10_000), st.floats(-3, 3))
def test_axpy_scale_add_sub(shapes, dtype, seed, a):
    x, y = _vec(shapes, dtype, seed), _vec(shapes, dtype, seed + 1)
    fx, fy = _flat(x), _flat(y)
    torch.testing.assert_close(_flat(vec.axpy(a, x, y)), a * fx + fy, **_tol(dtype))
    torch.testing.assert_close(_flat(vec.axpy(torch.tensor(a, dtype=dtype), x, y)), a * fx + fy, **_tol(dtype))
    torch.testing.assert_close(_flat(vec.scale(a, x)), a * fx, **_tol(dtype))
    torch.testing.assert_close(_flat(vec.add(x, y)), fx + fy, **_tol(dtype))
    torch.testing.assert_close(_flat(vec.sub(x, y)), fx - fy, **_tol(dtype))
    out = vec.axpy_(a, x, y)
    assert all(o is t for o, t in zip(out, y))
    torch.testing.assert_close(_flat(y), a * fx + fy, **_tol(dtype))


@settings(max_examples=60, deadline=None)
@given(shapes_st, dtype_st, st.integers(0, 10_000), st.integers(1, 4))
def test_flatten_unflatten_roundtrip_single_and_batched(shapes, dtype, seed, b):
    x = _vec(shapes, dtype, seed)
    f = vec.flatten(x)
    assert f.shape == (sum(torch.Size(s).numel() for s in shapes),) and f.dtype == dtype
    back = vec.unflatten(f, x)
    assert all(torch.equal(u, v) for u, v in zip(back, x))
    xb = _vec(shapes, dtype, seed, batch=b)
    fb = vec.flatten(xb, batch=True)
    assert fb.shape == (b, f.numel())
    for i, row in enumerate(vec.unstack(xb)):
        assert torch.equal(fb[i], vec.flatten(row))
    backb = vec.unflatten(fb, x)
    assert all(torch.equal(u, v) for u, v in zip(backb, xb))


def test_stack_unstack_inverse():
    x = _vec([(2, 3), (), (0,)], torch.float64, 0)
    y = _vec([(2, 3), (), (0,)], torch.float64, 1)
    s = vec.stack([x, y])
    assert [tuple(t.shape) for t in s] == [(2, 2, 3), (2,), (2, 0)]
    u = vec.unstack(s)
    assert all(torch.equal(a, b) for a, b in zip(u[1], y))


def test_copy_zeros_numel_shapes():
    x = _vec([(2, 3), (4,)], torch.float32, 0)
    z = vec.zeros_like(x)
    assert vec.numel(z) == 10 and vec.shapes(z) == (torch.Size([2, 3]), torch.Size([4]))
    assert float(vec.norm(z)) == 0
    vec.copy_(z, x)
    assert all(torch.equal(a, b) for a, b in zip(z, x))


def test_works_on_autograd_grads_and_parameters():
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 1))
    params = tuple(net.parameters())
    loss = net(torch.ones(2, 3)).sum()
    grads = torch.autograd.grad(loss, params)
    torch.testing.assert_close(vec.dot(grads, grads), vec.norm(grads) ** 2)


def test_bad_input_is_named():
    x = (torch.zeros(2), torch.zeros(3))
    with pytest.raises(ValueError, match="different numbers"):
        vec.dot(x, x[:1])
    with pytest.raises(ValueError, match=r"x\[1\] has shape"):
        vec.dot(x, (torch.zeros(2), torch.zeros(4)))
    with pytest.raises(TypeError, match="mixed dtypes"):
        vec.flatten((torch.zeros(2), torch.zeros(2, dtype=torch.float64)))
    with pytest.raises(ValueError, match="flat must have shape"):
        vec.unflatten(torch.zeros(4), x)
    with pytest.raises(TypeError, match=r"x\[0\] must be a torch.Tensor"):
        vec.norm([1.0])
    with pytest.raises(ValueError, match="empty vector"):
        vec.norm(())
    with pytest.raises(ValueError, match="0-dim"):
        vec.axpy(torch.ones(2), x, x)
