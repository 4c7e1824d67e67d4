"""Unit-scaled operations (u-μP, Blake et al. 2024): separate forward and backward scales.

Each op multiplies its output by an ``output_scale`` and the gradients of its inputs (and
weights) by their own ``grad_*_scale``, chosen so that unit-RMS inputs give unit-RMS outputs
*and* a unit-RMS incoming gradient gives unit-RMS input and weight gradients at init, whatever
the width. The backward is therefore not the exact gradient of the forward unless the scales are
*constrained* equal (``constraint="to_output_scale"``, the default on edges that are not cut:
then every op is an ordinary differentiable function times a constant); the read-out uses
``constraint=None`` (separate scales), as in the paper.

Scales, for ``x`` of ``B`` rows, a weight of shape ``(fan_out, fan_in)``:

=================  ======================  ==========================  ====================
op                 output                  input grad                  weight / bias grad
=================  ======================  ==========================  ====================
linear             ``fan_in^-1/2``         ``fan_out^-1/2``            ``B^-1/2``
linear_readout     ``fan_in^-1``           ``fan_out^-1/2``            ``B^-1/2``
matmul (n×k·k×m)   ``k^-1/2``              left ``m^-1/2``, right ``n^-1/2``
layer/rms norm     1                       1                           ``(numel/normalized)^-1/2``
residual_split     (τ, 1)/√(1+τ²) on the gradients of the branch and skip copies
residual_add       (τ, 1)/√(1+τ²) on the outputs of the branch and skip
cross_entropy      ``mult`` on logits      ``V/√(V-1)`` (V classes)    (sum, then 1/B forward)
mse_loss           1                       ``8^-1/2``                  (sum, then 1/numel forward)
=================  ======================  ==========================  ====================

GELU/SiLU/softmax/attention use the paper's empirical models of their output and gradient RMS as
a function of the multiplier α (a log-interpolation between the small- and large-α limits).

Example:
    >>> import torch
    >>> x, w = torch.randn(256, 512), torch.randn(1024, 512)
    >>> y = linear(x, w)                      # unit init, unit inputs -> unit output
    >>> round(float(y.pow(2).mean().sqrt()), 1)
    1.0
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from ..backend.checks import check_dim, check_float, check_real
from .unit_losses import cross_entropy, mse_loss
from .unit_scale import CONSTRAINTS, _constrain, _loginterp, _mult, _same_dtype, _Scale, scale_bwd, scale_fwd

__all__ = ["CONSTRAINTS", "scale_fwd", "scale_bwd", "linear", "linear_readout", "matmul", "gelu", "silu", "softmax",
           "layer_norm", "rms_norm", "embedding", "scaled_dot_product_attention", "residual_split", "residual_add",
           "residual_apply", "cross_entropy", "mse_loss"]


def _mm(a: Tensor, b: Tensor, scale: float) -> Tensor:
    """``scale · (a @ b)`` in one BLAS call (``alpha``), no separate pass over the product."""
    return torch.mm(a, b) if scale == 1 else torch.addmm(a.new_zeros(()), a, b, beta=0, alpha=scale)


class _Linear(torch.autograd.Function):
    """``s_out·(x Wᵀ + b)``; input gradient ``s_in·g W``, weight/bias gradients ``s_w·gᵀx``, ``s_w·Σg``.
    Every scale is the ``alpha``/``beta`` of the matrix product that makes the tensor."""

    @staticmethod
    def forward(ctx, x: Tensor, w: Tensor, b: Tensor | None, s_out: float, s_in: float, s_w: float) -> Tensor:
        x2 = x.reshape(-1, x.shape[-1])
        y = _mm(x2, w.t(), s_out) if b is None else torch.addmm(b, x2, w.t(), beta=s_out, alpha=s_out)
        ctx.save_for_backward(x2, w)
        ctx.scales, ctx.has_bias, ctx.x_shape = (s_in, s_w), b is not None, x.shape
        return y.reshape(*x.shape[:-1], w.shape[0])

    @staticmethod
    def backward(ctx, g: Tensor):
        x2, w = ctx.saved_tensors
        s_in, s_w = ctx.scales
        g2 = g.reshape(-1, g.shape[-1])
        gx = gw = gb = None
        if ctx.needs_input_grad[0]:
            gx = _mm(g2, w, s_in).reshape(ctx.x_shape)
        if ctx.needs_input_grad[1]:
            gw = _mm(g2.t(), x2, s_w)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            gb = g2.sum(0) * s_w
        return gx, gw, gb, None, None, None


class _Act(torch.autograd.Function):
    """``s_out·act(x)`` with input gradient ``s_in·act'(x)·g`` (``act``: GELU or SiLU), one node,
    the scales applied in place."""

    @staticmethod
    def forward(ctx, x: Tensor, kind: str, approximate: str, s_out: float, s_in: float) -> Tensor:
        y = F.gelu(x, approximate=approximate) if kind == "gelu" else F.silu(x)
        ctx.save_for_backward(x)
        ctx.kind, ctx.approximate, ctx.s_in = kind, approximate, s_in
        return y.mul_(s_out) if s_out != 1 else y

    @staticmethod
    def backward(ctx, g: Tensor):
        (x,) = ctx.saved_tensors
        graph = torch.is_grad_enabled()           # create_graph=True: differentiable ops, nothing in place
        if ctx.kind == "gelu":
            gx = torch.ops.aten.gelu_backward(g, x, approximate=ctx.approximate)
        elif graph:                               # aten.silu_backward has no derivative
            sig = torch.sigmoid(x)
            gx = g * sig * (1 + x * (1 - sig))
        else:
            gx = torch.ops.aten.silu_backward(g, x)
        if ctx.s_in != 1:
            gx = gx * ctx.s_in if graph else gx.mul_(ctx.s_in)
        return gx, None, None, None, None


def _check_linear(input: Tensor, weight: Tensor, bias: Tensor | None) -> tuple[int, int, int]:
    check_float(input, "input")
    check_float(weight, "weight")
    if weight.ndim != 2:
        raise ValueError(f"weight must be a (fan_out, fan_in) matrix, got shape {tuple(weight.shape)}")
    if input.ndim < 1 or input.shape[-1] != weight.shape[1]:
        raise ValueError(f"input's last dimension must be weight's fan_in {weight.shape[1]}, got input shape "
                         f"{tuple(input.shape)}")
    if bias is not None:
        check_float(bias, "bias")
        if tuple(bias.shape) != (weight.shape[0],):
            raise ValueError(f"bias must have shape ({weight.shape[0]},), got {tuple(bias.shape)}")
    _same_dtype(input=input, weight=weight, bias=bias)
    fan_out, fan_in = weight.shape
    return fan_out, fan_in, max(input.numel() // max(fan_in, 1), 1)


def linear(input: Tensor, weight: Tensor, bias: Tensor | None = None, *, constraint: str | None = "to_output_scale",
           scale_power: tuple[float, float, float] = (0.5, 0.5, 0.5)) -> Tensor:
    """Unit-scaled ``F.linear``: output ``×fan_in^-p₀``, input gradient ``×fan_out^-p₁``, weight
    and bias gradients ``×B^-p₂`` (``B = input.numel() / fan_in``), in one autograd function.

    Args:
        input: ``(..., fan_in)``.
        weight: ``(fan_out, fan_in)``.
        bias: ``(fan_out,)`` or None.
        constraint: one of :data:`CONSTRAINTS` tying the output and input-gradient scales.
        scale_power: ``(p₀, p₁, p₂)``.

    Returns:
        ``(..., fan_out)``.

    Example:
        >>> linear(torch.ones(2, 4), torch.ones(3, 4)).shape
        torch.Size([2, 3])
    """
    fan_out, fan_in, batch = _check_linear(input, weight, bias)
    if not (isinstance(scale_power, (tuple, list)) and len(scale_power) == 3):
        raise ValueError(f"scale_power must be a triple (output, input grad, weight grad), got {scale_power!r}")
    p = [check_real(v, "scale_power", at_least=0.0) for v in scale_power]
    s_out, s_in = _constrain(constraint, fan_in ** -p[0], fan_out ** -p[1])
    return _Linear.apply(input, weight, bias, s_out, s_in, batch ** -p[2])


def linear_readout(input: Tensor, weight: Tensor, bias: Tensor | None = None, *, constraint: str | None = None) -> Tensor:
    """The u-μP read-out: :func:`linear` with output scale ``1/fan_in`` (μP's output multiplier)
    and, by default, separate (unconstrained) input-gradient scale ``fan_out^-1/2``.

    Example:
        >>> linear_readout(torch.ones(2, 4), torch.ones(3, 4))
        tensor([[1., 1., 1.],
                [1., 1., 1.]])
    """
    return linear(input, weight, bias, constraint=constraint, scale_power=(1.0, 0.5, 0.5))


def matmul(left: Tensor, right: Tensor, *, constraint: str | None = "to_output_scale") -> Tensor:
    """Unit-scaled ``left @ right`` for ``(..., n, k) @ (..., k, m)``: output ``×k^-1/2``,
    gradients of ``left`` ``×m^-1/2`` and of ``right`` ``×n^-1/2`` (then ``constraint``).

    Example:
        >>> matmul(torch.ones(2, 4), torch.ones(4, 3))
        tensor([[2., 2., 2.],
                [2., 2., 2.]])
    """
    check_float(left, "left")
    check_float(right, "right")
    if left.ndim < 2 or right.ndim < 2 or left.shape[-1] != right.shape[-2]:
        raise ValueError(f"left (..., n, k) and right (..., k, m) do not match: {tuple(left.shape)} and "
                         f"{tuple(right.shape)}")
    _same_dtype(left=left, right=right)
    s_out, s_l, s_r = _constrain(constraint, left.shape[-1] ** -0.5, right.shape[-1] ** -0.5, left.shape[-2] ** -0.5)
    return _Scale.apply(torch.matmul(_Scale.apply(left, 1.0, s_l), _Scale.apply(right, 1.0, s_r)), s_out, 1.0)


def _elementwise(f, x: Tensor, s_out: float, s_in: float, constraint) -> Tensor:
    s_out, s_in = _constrain(constraint, s_out, s_in)
    return _Scale.apply(f(_Scale.apply(x, 1.0, s_in)), s_out, 1.0)


def gelu(input: Tensor, mult: float = 1.0, *, constraint: str | None = "to_output_scale",
         approximate: str = "none") -> Tensor:
    """Unit-scaled ``gelu(mult·x)/mult`` (α_ffn-act = ``mult``).

    Example:
        >>> gelu(torch.zeros(3))
        tensor([0., 0., 0.])
    """
    check_float(input, "input")
    m = _mult(mult)
    if approximate not in ("none", "tanh"):
        raise ValueError(f"approximate must be 'none' or 'tanh', got {approximate!r}")
    a = 1 / (1 + 0.25 / m ** 2)
    s_out = _loginterp(a, 2.0, (2 / (1 - 1 / math.pi)) ** 0.5)
    s_in = _loginterp(a, 2.0, 2 ** 0.5)
    if m == 1:
        return _Act.apply(input, "gelu", approximate, *_constrain(constraint, s_out, s_in))
    return _elementwise(lambda v: F.gelu(v * m, approximate=approximate) / m, input, s_out, s_in, constraint)


def silu(input: Tensor, mult: float = 1.0, *, constraint: str | None = "to_output_scale") -> Tensor:
    """Unit-scaled ``x·sigmoid(mult·x)`` (α_ffn-act = ``mult``).

    Example:
        >>> silu(torch.zeros(3))
        tensor([0., 0., 0.])
    """
    check_float(input, "input")
    m = _mult(mult)
    s_out = _loginterp(1 / (1 + 0.25 / m ** 2), 2.0, (2 / (1 - 1 / math.pi)) ** 0.5)
    s_in = _loginterp(1 / (1 + 1 / m ** 2), 2.0, 2 ** 0.5)
    if m == 1:
        return _Act.apply(input, "silu", "none", *_constrain(constraint, s_out, s_in))
    return _elementwise(lambda v: v * torch.sigmoid(v * m), input, s_out, s_in, constraint)


def softmax(input: Tensor, dim: int = -1, mult: float = 1.0, *, constraint: str | None = "to_output_scale") -> Tensor:
    """Unit-scaled ``softmax(mult·x, dim)`` (α_attn-softmax / α_loss-softmax = ``mult``).

    Example:
        >>> softmax(torch.zeros(2, 4), mult=1e-6)  # the flat limit: probabilities times n
        tensor([[1., 1., 1., 1.],
                [1., 1., 1., 1.]])
    """
    check_float(input, "input")
    m = _mult(mult)
    d = check_dim(dim, input.ndim)
    n = input.shape[d]
    if n == 0:
        raise ValueError(f"input has size 0 along dim {dim}: a softmax needs at least one entry")
    a = 1 / (1 + 4 / m ** 2)
    s_out, s_in = _loginterp(a, n, n ** 0.5), _loginterp(a, n / m, (n / m) ** 0.5)
    return _elementwise(lambda v: F.softmax(v * m, dim=d), input, s_out, s_in, constraint)


def _norm_shape(input: Tensor, normalized_shape) -> tuple[int, ...]:
    check_float(input, "input")
    ns = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
    if not ns or tuple(input.shape[input.ndim - len(ns):]) != ns:
        raise ValueError(f"normalized_shape {ns} must be input's trailing shape, input is {tuple(input.shape)}")
    return ns


def _param_grad(p: Tensor | None, name: str, ns: tuple[int, ...], input: Tensor) -> Tensor | None:
    if p is None:
        return None
    check_float(p, name)
    if tuple(p.shape) != ns:
        raise ValueError(f"{name} must have the normalized shape {ns}, got {tuple(p.shape)}")
    return _Scale.apply(p, 1.0, (math.prod(ns) / max(input.numel(), 1)) ** 0.5)


def layer_norm(input: Tensor, normalized_shape, weight: Tensor | None = None, bias: Tensor | None = None,
               eps: float = 1e-5) -> Tensor:
    """``F.layer_norm`` whose gain and bias gradients are ``×(normalized numel / numel)^1/2``.

    Example:
        >>> layer_norm(torch.tensor([[1., 3.]]), (2,), eps=0.0)
        tensor([[-1.,  1.]])
    """
    ns = _norm_shape(input, normalized_shape)
    check_real(eps, "eps", at_least=0.0)
    w, b = _param_grad(weight, "weight", ns, input), _param_grad(bias, "bias", ns, input)
    _same_dtype(input=input, weight=weight, bias=bias)
    return F.layer_norm(input, ns, w, b, eps)


def rms_norm(input: Tensor, normalized_shape, weight: Tensor | None = None, eps: float = 1e-5) -> Tensor:
    """``x / √(mean(x²) + eps)`` (times ``weight``) whose gain gradient is ``×(normalized numel / numel)^1/2``.

    Example:
        >>> rms_norm(torch.tensor([[3., 4.]]), (2,), eps=0.0) * 2 ** -0.5 * 5
        tensor([[3., 4.]])
    """
    ns = _norm_shape(input, normalized_shape)
    check_real(eps, "eps", at_least=0.0)
    w = _param_grad(weight, "weight", ns, input)
    _same_dtype(input=input, weight=weight)
    return F.rms_norm(input, ns, w, eps)


def embedding(input: Tensor, weight: Tensor) -> Tensor:
    """``F.embedding`` whose weight gradient is ``×(vocab / numel(input))^1/2``.

    Example:
        >>> embedding(torch.tensor([1]), torch.eye(3))
        tensor([[0., 1., 0.]])
    """
    if not isinstance(input, Tensor) or input.dtype not in (torch.int64, torch.int32):
        raise TypeError(f"input must be an integer (int64/int32) tensor of indices, got {type(input).__name__}"
                        f"{'' if not isinstance(input, Tensor) else ' ' + str(input.dtype)}")
    check_float(weight, "weight")
    if weight.ndim != 2:
        raise ValueError(f"weight must be a (vocab, dim) matrix, got shape {tuple(weight.shape)}")
    if weight.shape[0] == 0:
        raise ValueError("weight has no rows (an empty vocabulary)")
    if input.numel() and (int(input.min()) < 0 or int(input.max()) >= weight.shape[0]):
        raise ValueError(f"input indices must lie in [0, {weight.shape[0]}), got [{int(input.min())}, {int(input.max())}]")
    return F.embedding(input, _Scale.apply(weight, 1.0, (weight.shape[0] / max(input.numel(), 1)) ** 0.5))


def scaled_dot_product_attention(query: Tensor, key: Tensor, value: Tensor, *, is_causal: bool = False,
                                 mult: float = 1.0) -> Tensor:
    """Unit-scaled attention ``softmax(mult·qkᵀ/d) v`` (α_attn-softmax = ``mult``; note ``1/d``,
    μP's attention scale, not ``1/√d``), with the paper's empirical output/gradient scale.

    Args:
        query, key, value: ``(..., seq, d_head)``.

    Example:
        >>> q = torch.ones(1, 4, 8)
        >>> scaled_dot_product_attention(q, q, q).shape
        torch.Size([1, 4, 8])
    """
    for n, t in (("query", query), ("key", key), ("value", value)):
        check_float(t, n)
        if t.ndim < 2:
            raise ValueError(f"{n} must be (..., seq, d_head), got shape {tuple(t.shape)}")
    if query.shape[-1] != key.shape[-1] or key.shape[-2] != value.shape[-2]:
        raise ValueError(f"query/key/value shapes do not match: {tuple(query.shape)}, {tuple(key.shape)}, "
                         f"{tuple(value.shape)}")
    _same_dtype(query=query, key=key, value=value)
    if not isinstance(is_causal, bool):
        raise TypeError(f"is_causal must be a bool, got {type(is_causal).__name__}")
    m = _mult(mult)
    seq, d = value.shape[-2], value.shape[-1]
    s = 1 / _loginterp(1 / (1 + 4 * d / m ** 2), ((math.log(seq) if is_causal else 1) / seq) ** 0.5, 1.0)
    q, k, v = (_Scale.apply(t, 1.0, s) for t in (query, key, value))
    return _Scale.apply(F.scaled_dot_product_attention(q, k, v, is_causal=is_causal, scale=m / d), s, 1.0)


def _tau(tau) -> float:
    return check_real(tau, "tau", above=0.0, finite=True)


def residual_split(input: Tensor, tau: float = 1.0) -> tuple[Tensor, Tensor]:
    """``(branch, skip)`` copies of ``input`` whose gradients are ``×τ/√(1+τ²)`` and ``×1/√(1+τ²)``;
    pair with :func:`residual_add` of the same ``tau`` (τ: the branch's weight relative to the skip).

    Example:
        >>> r, s = residual_split(torch.ones(2), tau=1.0)
        >>> residual_add(r, s, tau=1.0)
        tensor([1.4142, 1.4142])
    """
    check_float(input, "input")
    d = (1 + _tau(tau) ** 2) ** 0.5
    return _Scale.apply(input, 1.0, tau / d), _Scale.apply(input, 1.0, 1 / d)


def residual_add(residual: Tensor, skip: Tensor, tau: float = 1.0) -> Tensor:
    """``(τ·residual + skip)/√(1+τ²)``, the gradients passed through unscaled (the backward scale
    was applied by :func:`residual_split`).

    Example:
        >>> residual_add(torch.ones(2), torch.zeros(2), tau=1.0)
        tensor([0.7071, 0.7071])
    """
    check_float(residual, "residual")
    check_float(skip, "skip")
    if residual.shape != skip.shape:
        raise ValueError(f"residual and skip must have the same shape, got {tuple(residual.shape)} and "
                         f"{tuple(skip.shape)}")
    d = (1 + _tau(tau) ** 2) ** 0.5
    return _Scale.apply(residual, tau / d, 1.0) + _Scale.apply(skip, 1 / d, 1.0)


def residual_apply(fn, input: Tensor, tau: float = 1.0) -> Tensor:
    """``residual_add(fn(branch), skip, tau)`` with ``branch, skip = residual_split(input, tau)``.

    Example:
        >>> residual_apply(lambda v: 0 * v, torch.ones(2))
        tensor([0.7071, 0.7071])
    """
    if not callable(fn):
        raise TypeError(f"fn must be callable, got {type(fn).__name__}")
    r, s = residual_split(input, tau)
    return residual_add(fn(r), s, tau)


