"""Dense oracles and small seeded models for checking curvature code (overparam.hessian).

All of them are slow and obviously correct: use them in float64 on small problems.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from einops import rearrange
from torch import Tensor, nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from ..backend.checks import check_floats, check_int
from ..backend.random import GeneratorLike, construction_generator, fan_in_normal_, gaussian
from .cases import tanh_mlp
from .oracles import hessian_of, jacobian_of, outputs_of_flat

__all__ = ["small_cnn", "bn_net", "ln_gelu_mlp", "attention_net", "embedding_net", "CurvatureCase", "CURVATURE_MODELS",
           "curvature_case", "dense_ggn", "xtrace_naive", "moments", "loss_hessian_closed_forms"]

_LOSSES = {"mse": nn.functional.mse_loss, "cross_entropy": nn.functional.cross_entropy}


class _Residual(nn.Module):
    """``x + body(x)``."""

    def __init__(self, body: nn.Module):
        super().__init__()
        self.body = body

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


class _SelfAttention(nn.Module):
    """Multi-head causal self-attention on ``(N, L, width)`` through
    ``F.scaled_dot_product_attention`` in its math backend (twice differentiable on any device)."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width)
        self.out = nn.Linear(width, width)

    def forward(self, x: Tensor) -> Tensor:
        q, k, v = rearrange(self.qkv(x), "n l (three h d) -> three n h l d", three=3, h=self.heads)
        with sdpa_kernel(SDPBackend.MATH):
            a = nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.out(rearrange(a, "n h l d -> n l (h d)"))


def _seeded(build, dtype, generator: GeneratorLike, **sizes: int) -> nn.Module:
    """Refuse (by name) any size that is not an int >= 1, build the model on the meta device with
    ``build()``, materialise it in ``dtype`` and draw it with ``fan_in_normal_``; LayerNorm gains
    become ``1 + 0.1·N(0, 1)``."""
    for name, v in sizes.items():
        check_int(v, name)
    with torch.device("meta"):
        net = build()
    net = net.to_empty(device="cpu").to(dtype)
    fan_in_normal_(net, generator=generator)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.LayerNorm) and m.weight is not None:
                m.weight.add_(1.0)
    return net


def small_cnn(*, channels: int = 3, classes: int = 3, generator: GeneratorLike = None, dtype=torch.float64) -> nn.Module:
    """Conv(1→c, 3×3) → tanh → AvgPool(2) → Flatten → Linear(c·9→classes), for 8×8 inputs ``(N, 1, 8, 8)``.

    ``generator=None`` draws from torch's default generator (the construction rule, docs/index.md).
    """
    return _seeded(lambda: nn.Sequential(nn.Conv2d(1, channels, 3), nn.Tanh(), nn.AvgPool2d(2), nn.Flatten(),
                                         nn.Linear(channels * 9, classes)),
                   dtype, generator, channels=channels, classes=classes)


def bn_net(*, width: int = 6, generator: GeneratorLike = None, dtype=torch.float64) -> nn.Module:
    """Linear(4→w) → BatchNorm1d(w) → tanh → Linear(w→1) in **eval** mode, with non-trivial running stats.

    ``generator=None`` draws from torch's default generator (the construction rule, docs/index.md).
    """
    net = _seeded(lambda: nn.Sequential(nn.Linear(4, width), nn.BatchNorm1d(width), nn.Tanh(), nn.Linear(width, 1)),
                  dtype, generator, width=width)
    g = construction_generator(generator)
    with torch.no_grad():
        bn = net[1]
        bn.running_mean.copy_(gaussian((width,), generator=g, dtype=dtype) * 0.3)
        bn.running_var.copy_(gaussian((width,), generator=g, dtype=dtype).abs() + 0.5)
        bn.num_batches_tracked.zero_()
    return net.eval()


def ln_gelu_mlp(*, d_in: int = 3, width: int = 4, hidden: int = 6, d_out: int = 2, generator: GeneratorLike = None,
                dtype=torch.float64) -> nn.Module:
    """A pre-norm residual MLP for inputs ``(N, d_in)`` → outputs ``(N, d_out)``:
    ``Linear(d_in→w)`` → ``z + Linear(GELU(Linear(LayerNorm(z))))`` (hidden width ``hidden``) →
    ``LayerNorm(w)`` → ``Linear(w→d_out)``. ``torch.func.hessian`` is wrong on it in torch 2.13.

    ``generator=None`` draws from torch's default generator (the construction rule, docs/index.md).

    Example:
        >>> ln_gelu_mlp(generator=0)(torch.zeros(5, 3, dtype=torch.float64)).shape
        torch.Size([5, 2])
    """
    def build():
        block = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, hidden), nn.GELU(), nn.Linear(hidden, width))
        return nn.Sequential(nn.Linear(d_in, width), _Residual(block), nn.LayerNorm(width), nn.Linear(width, d_out))

    return _seeded(build, dtype, generator, d_in=d_in, width=width, hidden=hidden, d_out=d_out)


def attention_net(*, d_in: int = 3, seq: int = 4, width: int = 4, heads: int = 2, classes: int = 3,
                  generator: GeneratorLike = None, dtype=torch.float64) -> nn.Module:
    """A one-block causal transformer without norms for inputs ``(N, seq, d_in)`` → logits
    ``(N, classes)``: ``Linear(d_in→w)`` → ``z + SelfAttention(z)`` (``heads`` heads, through
    ``F.scaled_dot_product_attention``) → ``GELU`` → ``Flatten`` → ``Linear(seq·w→classes)``.

    ``generator=None`` draws from torch's default generator (the construction rule, docs/index.md).

    Example:
        >>> attention_net(generator=0)(torch.zeros(2, 4, 3, dtype=torch.float64)).shape
        torch.Size([2, 3])
    """
    def build():
        if width % heads:
            raise ValueError(f"width ({width}) must be divisible by heads ({heads})")
        return nn.Sequential(nn.Linear(d_in, width), _Residual(_SelfAttention(width, heads)), nn.GELU(), nn.Flatten(),
                             nn.Linear(seq * width, classes))

    return _seeded(build, dtype, generator, d_in=d_in, seq=seq, width=width, heads=heads, classes=classes)


def embedding_net(*, vocab: int = 7, seq: int = 3, dim: int = 4, classes: int = 3, generator: GeneratorLike = None,
                  dtype=torch.float64) -> nn.Module:
    """Token ids ``(N, seq)`` (int64 in ``[0, vocab)``) → ``Embedding(vocab, dim)`` → tanh →
    ``Flatten`` → ``Linear(seq·dim→classes)`` logits ``(N, classes)``.

    ``generator=None`` draws from torch's default generator (the construction rule, docs/index.md).

    Example:
        >>> embedding_net(generator=0)(torch.zeros(2, 3, dtype=torch.long)).shape
        torch.Size([2, 3])
    """
    return _seeded(lambda: nn.Sequential(nn.Embedding(vocab, dim), nn.Tanh(), nn.Flatten(), nn.Linear(seq * dim, classes)),
                   dtype, generator, vocab=vocab, seq=seq, dim=dim, classes=classes)


@dataclass(frozen=True)
class CurvatureCase:
    """A seeded model with a batch for it: ``loss_fn(model(batch[0]), batch[1])`` is the loss,
    ``loss`` its name for :func:`dense_ggn` and ``overparam.hessian.ggn``."""

    model: nn.Module
    loss_fn: Callable[[Tensor, Tensor], Tensor]
    batch: tuple[Tensor, Tensor]
    loss: str


CURVATURE_MODELS = ("tanh_mlp", "small_cnn", "bn_net", "ln_gelu_mlp", "attention_net", "embedding_net")
"""The names :func:`curvature_case` builds: Linear+tanh, Conv+AvgPool, eval-mode BatchNorm,
residual LayerNorm+GELU, causal self-attention and an embedding model."""


def curvature_case(name: str, *, batch_size: int = 8, generator: GeneratorLike = None) -> CurvatureCase:
    """The fp64 model ``name`` (one of :data:`CURVATURE_MODELS`, default sizes) and a batch of
    ``batch_size`` samples, all drawn from ``generator`` (model first, then inputs, then targets).

    ``generator=None`` draws from torch's default generator (the construction rule, docs/index.md).

    Example:
        >>> case = curvature_case("embedding_net", batch_size=5, generator=0)
        >>> case.batch[0].shape, case.loss
        (torch.Size([5, 3]), 'cross_entropy')
    """
    if name not in CURVATURE_MODELS:
        raise ValueError(f"name must be one of {CURVATURE_MODELS}, got {name!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    g, f64, N = construction_generator(generator), torch.float64, batch_size
    if name == "tanh_mlp":
        model, x = tanh_mlp([3, 5, 4, 2], generator=g), gaussian((N, 3), generator=g, dtype=f64)
    elif name == "small_cnn":
        model, x = small_cnn(generator=g), gaussian((N, 1, 8, 8), generator=g, dtype=f64)
    elif name == "bn_net":
        model, x = bn_net(generator=g), gaussian((N, 4), generator=g, dtype=f64)
    elif name == "ln_gelu_mlp":
        model, x = ln_gelu_mlp(generator=g), gaussian((N, 3), generator=g, dtype=f64)
    elif name == "attention_net":
        model, x = attention_net(generator=g), gaussian((N, 4, 3), generator=g, dtype=f64)
    else:
        model, x = embedding_net(generator=g), torch.randint(0, 7, (N, 3), generator=g)
    with torch.no_grad():
        out = model(x)
    if name in ("small_cnn", "ln_gelu_mlp", "attention_net", "embedding_net"):
        y = torch.randint(0, out.shape[-1], (N,), generator=g)
        return CurvatureCase(model, nn.functional.cross_entropy, (x, y), "cross_entropy")
    return CurvatureCase(model, nn.functional.mse_loss, (x, gaussian(out.shape, generator=g, dtype=f64)), "mse")


def dense_ggn(model: nn.Module, loss_fn: str, data) -> Tensor:
    """Dense GGN ``Jᵀ ∇²ℓ J`` ``(n, n)`` of ``loss_fn`` (``"mse"`` or ``"cross_entropy"``, means)
    on one batch ``data = (inputs, targets)``: the output Jacobian ``J (m, n)`` by :func:`~overparam.testing.
    oracles.jacobian_of` and the loss Hessian w.r.t. the ``m`` outputs by
    :func:`~overparam.testing.oracles.hessian_of` (plain autograd, one pass per row).

    Example:
        >>> net = torch.nn.Linear(3, 2).double()
        >>> x, y = torch.randn(4, 3, dtype=torch.float64), torch.randn(4, 2, dtype=torch.float64)
        >>> dense_ggn(net, "mse", (x, y)).shape
        torch.Size([8, 8])
    """
    if not isinstance(loss_fn, str) or loss_fn not in _LOSSES:
        raise ValueError(f"loss_fn must be one of {sorted(_LOSSES)}, got {loss_fn!r}")
    if not (isinstance(data, (tuple, list)) and len(data) == 2):
        raise ValueError("data must be one (inputs, targets) batch")
    x, y = data
    out_of, theta = outputs_of_flat(model, x)
    out = out_of(theta).detach()
    J = jacobian_of(out_of, theta)
    HL = hessian_of(lambda o: _LOSSES[loss_fn](o.reshape(out.shape), y), out.reshape(-1))
    return J.mT @ HL @ J


def xtrace_naive(A: Tensor, Om: Tensor) -> Tensor:
    """The XTrace leave-one-out estimates ``(m,)`` straight from the definition, for probes
    ``Om (n, m)``: ``tr(Q_iᵀAQ_i) + ω_iᵀ(I − Q_iQ_iᵀ)A(I − Q_iQ_iᵀ)ω_i``, ``Q_i = orth(A Ω_{−i})``."""
    check_floats({"A": A, "Om": Om})
    n, m = Om.shape
    eye = torch.eye(n, dtype=A.dtype, device=A.device)
    out = []
    for i in range(m):
        keep = [j for j in range(m) if j != i]
        Q, _ = torch.linalg.qr(A @ Om[:, keep])
        P = eye - Q @ Q.mT
        w = Om[:, i]
        out.append(torch.trace(Q.mT @ A @ Q) + w @ P @ A @ P @ w)
    return torch.stack(out)


def moments(A: Tensor, v: Tensor, kmax: int) -> Tensor:
    """``vᵀ A^k v / ‖v‖²`` for ``k = 0..kmax``: the moments SLQ's quadrature must reproduce."""
    check_floats({"A": A, "v": v})
    check_int(kmax, "kmax", at_least=0)
    u = v / torch.linalg.vector_norm(v)
    out, w = [], u
    for _ in range(kmax + 1):
        out.append(u @ w)
        w = A @ w
    return torch.stack(out)


def loss_hessian_closed_forms(X: Tensor, y: Tensor, w: Tensor, kind: str) -> Tensor:
    """Closed-form Hessians of linear models ``x ↦ xᵀw`` (no bias), mean over ``N`` rows:
    ``"mse"``: ``(2/N) XᵀX``; ``"logistic"`` (BCE with logits): ``(1/N) Xᵀ diag(p(1−p)) X``."""
    check_floats({"X": X, "y": y, "w": w})
    N = X.shape[0]
    if kind == "mse":
        return 2.0 / N * X.mT @ X
    if kind == "logistic":
        p = torch.sigmoid(X @ w)
        return (X.mT * (p * (1 - p))) @ X / N
    raise ValueError(f"kind must be 'mse' or 'logistic', got {kind!r}")

