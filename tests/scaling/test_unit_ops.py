"""Unit-scaled ops (overparam/scaling/unit_ops.py): scales against closed forms, unit RMS across
widths, bad input, and (when ``unit_scaling`` is installed) Graphcore's implementation."""

from __future__ import annotations

import importlib.util
import math

import pytest
import torch
import torch.nn.functional as F

from overparam.scaling import unit_ops as U

HAS_US = importlib.util.find_spec("unit_scaling") is not None


def _rms(t):
    return float(t.detach().double().pow(2).mean().sqrt())


def _g(seed):
    return torch.Generator().manual_seed(seed)


def _run(fn, *inputs, seed=1):
    """Output and input gradients of ``fn`` for a unit-normal incoming gradient (a scalar: 1)."""
    xs = [x.detach().clone().requires_grad_(x.is_floating_point()) for x in inputs]
    y = fn(*xs)
    gy = torch.ones_like(y) if y.ndim == 0 else torch.randn(y.shape, generator=_g(seed))
    y.backward(gy)
    return y, [x.grad for x in xs]


# ---------------------------------------------------------------- closed forms (fp64)

def test_linear_scales_are_the_closed_form():
    g = _g(0)
    x, w, b = (torch.randn(*s, generator=g, dtype=torch.float64) for s in ((5, 3, 6), (4, 6), (4,)))
    gy = torch.randn(5, 3, 4, generator=g, dtype=torch.float64)
    xs = [t.clone().requires_grad_() for t in (x, w, b)]
    U.linear(*xs, constraint=None).backward(gy)
    torch.testing.assert_close(U.linear(x, w, b), (x @ w.T + b) * 6 ** -0.5, rtol=1e-14, atol=0)
    torch.testing.assert_close(xs[0].grad, gy @ w * 4 ** -0.5, rtol=1e-14, atol=1e-15)
    torch.testing.assert_close(xs[1].grad, gy.reshape(-1, 4).T @ x.reshape(-1, 6) * 15 ** -0.5, rtol=1e-14, atol=1e-15)
    torch.testing.assert_close(xs[2].grad, gy.reshape(-1, 4).sum(0) * 15 ** -0.5, rtol=1e-14, atol=1e-15)
    xs = [t.clone().requires_grad_() for t in (x, w, b)]
    U.linear_readout(*xs).backward(gy)   # output 1/fan_in, unconstrained input-gradient scale
    torch.testing.assert_close(U.linear_readout(x, w, b), (x @ w.T + b) / 6, rtol=1e-14, atol=0)
    torch.testing.assert_close(xs[0].grad, gy @ w * 4 ** -0.5, rtol=1e-14, atol=1e-15)


def test_constrained_ops_are_true_gradients():
    """With the default constraint an op is an ordinary function times a constant in its inputs
    (a weight's gradient keeps its own 1/√B scale): gradcheck."""
    g = _g(2)
    x = torch.randn(3, 4, generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.randn(5, 4, generator=g, dtype=torch.float64, requires_grad=True)
    m = torch.randn(4, 2, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a: U.linear(a, w.detach()), (x,))
    assert torch.autograd.gradcheck(lambda a, b: U.matmul(a, b), (x, m))
    for f in (U.gelu, U.silu, lambda v: U.softmax(v, -1, 2.0)):
        assert torch.autograd.gradcheck(f, (x,))


def test_residual_and_losses_closed_form():
    x = torch.tensor([1.0, -2.0], dtype=torch.float64, requires_grad=True)
    tau = 0.5
    y = U.residual_apply(lambda v: 3 * v, x, tau)
    d = math.sqrt(1 + tau ** 2)
    torch.testing.assert_close(y, (tau * 3 + 1) / d * x.detach())
    y.sum().backward()     # branch: 3·τ/d (split) · 1 (add passes through); skip: 1/d
    torch.testing.assert_close(x.grad, torch.full((2,), 3 * tau / d + 1 / d, dtype=torch.float64))
    logits = torch.randn(4, 5, generator=_g(3), dtype=torch.float64, requires_grad=True)
    t = torch.tensor([0, 1, 2, 4])
    loss = U.cross_entropy(logits, t, mult=2.0)
    torch.testing.assert_close(loss, F.cross_entropy(2 * logits.detach(), t))
    loss.backward()
    p = torch.softmax(2 * logits.detach(), -1) - F.one_hot(t, 5)
    torch.testing.assert_close(logits.grad, p * 5 / 2)        # V/√(V-1) = 5/2, no 1/B, no ·mult
    a, b = (torch.randn(3, 4, generator=_g(s), dtype=torch.float64, requires_grad=True) for s in (4, 5))
    U.mse_loss(a, b).backward()
    torch.testing.assert_close(a.grad, 2 * (a - b).detach() * 8 ** -0.5)


# ---------------------------------------------------------------- unit RMS at init, widths 64..1024

def _cases(w):
    g = _g(w)
    n = lambda *s: torch.randn(*s, generator=g)  # noqa: E731
    B = 256
    return {
        "linear": (U.linear, (n(B, w), n(w, w), torch.zeros(w))),
        "linear_readout": (U.linear_readout, (n(B, w), n(w, w))),
        "matmul": (lambda a, c: U.matmul(a, c, constraint=None), (n(B, w), n(w, w))),
        "gelu": (U.gelu, (n(B, w),)),
        "silu": (U.silu, (n(B, w),)),
        "softmax": (lambda v: U.softmax(v, -1, 1.0), (n(B, w),)),
        "layer_norm": (lambda v, a, b: U.layer_norm(v, (w,), a, b), (n(B, w), torch.ones(w), torch.zeros(w))),
        "rms_norm": (lambda v, a: U.rms_norm(v, (w,), a), (n(B, w), torch.ones(w))),
        # μP's 1/d attention: at mult=1 the logits vanish with width and so do the query/key
        # gradients (∝ d^-1/2, as in unit-scaling); at mult=√d (logits of unit RMS) all are unit
        "attention": (lambda q, k, v: U.scaled_dot_product_attention(q.detach(), k.detach(), v, is_causal=True),
                      (n(2, 64, w), n(2, 64, w), n(2, 64, w))),
        "attention_sqrt_d": (lambda q, k, v: U.scaled_dot_product_attention(q, k, v, is_causal=True, mult=w ** 0.5),
                             (n(2, 64, w), n(2, 64, w), n(2, 64, w))),
        "residual": (lambda v: U.residual_apply(lambda r: U.linear(r, torch.randn(w, w, generator=_g(9))), v, 0.5),
                     (n(B, w),)),
        "cross_entropy": (lambda v: U.cross_entropy(v, torch.randint(0, w, (B,), generator=_g(1))), (n(B, w),)),
        "mse_loss": (U.mse_loss, (n(B, w), n(B, w))),
    }


@pytest.mark.parametrize("w", [64, 256, 1024])
def test_unit_rms_across_widths(w):
    bad = []
    for name, (fn, inputs) in _cases(w).items():
        y, grads = _run(fn, *inputs)
        if name == "linear_readout":     # μP's read-out: output 1/fan_in (RMS fan_in^-1/2), gradients unit
            assert abs(_rms(y) * math.sqrt(w) - 1) < 0.2, (w, _rms(y))
        elif y.ndim:                     # losses are scalars
            if not 0.5 <= _rms(y) <= 2:
                bad.append((name, "output", _rms(y)))
        for i, gr in enumerate(grads):
            if gr is not None and not 0.5 <= _rms(gr) <= 2:
                bad.append((name, f"grad {i}", _rms(gr)))
    assert not bad, bad


def test_plain_ops_are_not_unit_scaled():
    """The test above can fail: plain torch ops miss [0.5, 2] at width 1024."""
    w = 1024
    x, W = torch.randn(64, w, generator=_g(0)), torch.randn(w, w, generator=_g(1))
    y, (gx, gW) = _run(F.linear, x, W)
    assert _rms(y) > 2 and _rms(gx) > 2 and _rms(gW) > 2


# ---------------------------------------------------------------- bad input

def test_bad_input_is_refused():
    x, w = torch.randn(3, 4), torch.randn(5, 4)
    with pytest.raises(ValueError, match="fan_in"):
        U.linear(torch.randn(3, 5), w)
    with pytest.raises(ValueError, match="bias"):
        U.linear(x, w, torch.zeros(4))
    with pytest.raises(ValueError, match="constraint"):
        U.linear(x, w, constraint="to_output")
    with pytest.raises(ValueError, match="scale_power"):
        U.linear(x, w, scale_power=(0.5, 0.5))
    with pytest.raises(ValueError, match="scale"):
        U.scale_fwd(x, 0.0)
    with pytest.raises(ValueError, match="scale"):
        U.scale_bwd(x, float("inf"))
    with pytest.raises(ValueError, match="left"):
        U.matmul(x, x)
    with pytest.raises(ValueError, match="tau"):
        U.residual_split(x, -1.0)
    with pytest.raises(ValueError, match="residual and skip"):
        U.residual_add(x, torch.randn(3, 5))
    with pytest.raises(ValueError, match="mult"):
        U.gelu(x, mult=0.0)
    with pytest.raises(ValueError, match="normalized_shape"):
        U.layer_norm(x, (5,))
    with pytest.raises(ValueError, match="target"):
        U.cross_entropy(x, torch.tensor([0, 1, 9]))
    with pytest.raises(ValueError, match="target"):
        U.mse_loss(x, torch.randn(3, 5))
    with pytest.raises(TypeError, match="input"):
        U.gelu(torch.ones(3, dtype=torch.int64))


# ---------------------------------------------------------------- against Graphcore's unit-scaling

@pytest.mark.skipif(not HAS_US, reason="unit_scaling is not installed (pip install unit-scaling)")
def test_matches_unit_scaling_functional():
    import unit_scaling.functional as UF

    g = _g(7)
    n = lambda *s: torch.randn(*s, generator=g)  # noqa: E731
    x, w, b, h = n(6, 5, 32), n(48, 32), n(48), n(6, 5, 48)
    q, k, v = n(2, 3, 16, 8), n(2, 3, 16, 8), n(2, 3, 16, 8)
    t = torch.randint(0, 48, (30,), generator=g)
    ours_theirs = [
        ((x, w, b), lambda a, c, d: U.linear(a, c, d), lambda a, c, d: UF.linear(a, c, d)),
        ((x, w, b), lambda a, c, d: U.linear_readout(a, c, d), lambda a, c, d: UF.linear_readout(a, c, d)),
        ((x, w.T.contiguous()), U.matmul, UF.matmul),
        ((h,), lambda a: U.gelu(a, 0.7), lambda a: UF.gelu(a, 0.7)),
        ((h,), lambda a: U.silu(a, 1.5), lambda a: UF.silu(a, 1.5)),
        ((h,), lambda a: U.softmax(a, -1, 2.0), lambda a: UF.softmax(a, -1, mult=2.0)),
        ((h, n(48), n(48)), lambda a, c, d: U.layer_norm(a, (48,), c, d), lambda a, c, d: UF.layer_norm(a, (48,), c, d)),
        ((h, n(48)), lambda a, c: U.rms_norm(a, (48,), c), lambda a, c: UF.rms_norm(a, (48,), c)),
        ((q, k, v), lambda *a: U.scaled_dot_product_attention(*a, is_causal=True, mult=0.8),
         lambda *a: UF.scaled_dot_product_attention(*a, is_causal=True, mult=0.8)),
        ((h,), lambda a: U.residual_apply(torch.tanh, a, 0.3), lambda a: UF.residual_apply(torch.tanh, a, 0.3)),
        ((h.reshape(30, 48),), lambda a: U.cross_entropy(a, t, mult=1.3), lambda a: UF.cross_entropy(a, t, mult=1.3)),
        ((h, n(6, 5, 48)), U.mse_loss, UF.mse_loss),
    ]
    for inputs, ours, theirs in ours_theirs:
        y0, g0 = _run(ours, *inputs)
        y1, g1 = _run(theirs, *inputs)
        torch.testing.assert_close(y0, y1, rtol=1e-6, atol=1e-6)
        for a, c in zip(g0, g1):
            torch.testing.assert_close(a, c, rtol=1e-6, atol=1e-6)
    idx, e = torch.randint(0, 10, (7, 3), generator=g), n(10, 16)
    y0, (gw0,) = _run(lambda a: U.embedding(idx, a), e)
    y1, (gw1,) = _run(lambda a: UF.embedding(idx, a), e)
    torch.testing.assert_close(y0, y1, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(gw0, gw1, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("name,approximate", [("gelu", "none"), ("gelu", "tanh"), ("silu", "none")])
def test_fused_activation_separate_scales_against_autograd(name, approximate):
    """GELU/SiLU at mult=1 run as one node scaling in place: output s_out·act(x), input gradient
    s_in·act'(x)·g (constraint=None), checked against torch autograd of the plain activation in
    float64; its backward is itself differentiable (gradgradcheck)."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(5, 7, generator=g, dtype=torch.float64, requires_grad=True)
    up = torch.randn(5, 7, generator=g, dtype=torch.float64)
    plain = (lambda v: F.gelu(v, approximate=approximate)) if name == "gelu" else F.silu
    kw = {"approximate": approximate} if name == "gelu" else {}
    unit = getattr(U, name)
    y = unit(x, constraint=None, **kw)
    (gx,) = torch.autograd.grad(y, x, up)
    ref = plain(x)
    (gref,) = torch.autograd.grad(ref, x, up)
    s_out, s_in = float((y / ref).detach()[0, 0]), float((gx / gref)[0, 0])
    # the module table's log-interpolation at mult = 1: lower^(1-a) · upper^a
    assert s_out == pytest.approx(2 ** 0.2 * (2 / (1 - 1 / math.pi)) ** 0.4, rel=1e-12)       # a = 0.8
    assert s_in == pytest.approx(2 ** 0.2 * 2 ** 0.4 if name == "gelu" else 2 ** 0.5 * 2 ** 0.25, rel=1e-12)
    torch.testing.assert_close(y, s_out * ref, rtol=1e-12, atol=0)
    torch.testing.assert_close(gx, s_in * gref, rtol=1e-12, atol=0)
    assert s_in != pytest.approx(s_out)  # separate scales really are separate
    assert torch.autograd.gradgradcheck(lambda v: unit(v, constraint=None, **kw), (x,))
