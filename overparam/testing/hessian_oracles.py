"""Dense oracles and small seeded models for checking curvature code (overparam.hessian).

All of them are slow and obviously correct: use them in float64 on small problems.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..backend import vec
from ..backend.random import GeneratorLike, fan_in_normal_, gaussian, make_generator
from .oracles import flat_params

__all__ = ["small_cnn", "bn_net", "dense_ggn", "xtrace_naive", "moments",
           "loss_hessian_closed_forms"]


def small_cnn(*, channels: int = 3, classes: int = 3, generator: GeneratorLike = None, dtype=torch.float64) -> nn.Module:
    """Conv(1→c, 3×3) → tanh → AvgPool(2) → Flatten → Linear(c·9→classes), for 8×8 inputs ``(N, 1, 8, 8)``."""
    with torch.device("meta"):
        net = nn.Sequential(nn.Conv2d(1, channels, 3), nn.Tanh(), nn.AvgPool2d(2), nn.Flatten(),
                            nn.Linear(channels * 9, classes))
    net = net.to_empty(device="cpu").to(dtype)
    return fan_in_normal_(net, generator=generator)


def bn_net(*, width: int = 6, generator: GeneratorLike = None, dtype=torch.float64) -> nn.Module:
    """Linear(4→w) → BatchNorm1d(w) → tanh → Linear(w→1) in **eval** mode, with non-trivial running stats."""
    with torch.device("meta"):
        net = nn.Sequential(nn.Linear(4, width), nn.BatchNorm1d(width), nn.Tanh(), nn.Linear(width, 1))
    net = net.to_empty(device="cpu").to(dtype)
    fan_in_normal_(net, generator=generator)
    g = make_generator(generator)
    with torch.no_grad():
        bn = net[1]
        bn.running_mean.copy_(gaussian((width,), generator=g, dtype=dtype) * 0.3)
        bn.running_var.copy_(gaussian((width,), generator=g, dtype=dtype).abs() + 0.5)
        bn.num_batches_tracked.zero_()
    return net.eval()


def dense_ggn(model: nn.Module, batch, loss: str) -> Tensor:
    """Dense GGN ``Jᵀ ∇²ℓ J`` ``(n, n)`` with ``J`` from ``torch.func.jacrev`` and ``∇²ℓ`` from
    ``torch.func.hessian`` of the loss w.r.t. the outputs (``"mse"`` or ``"cross_entropy"``, means)."""
    names, theta = flat_params(model)
    like = [p for k, p in model.named_parameters() if k in set(names)]
    x, y = batch
    fn = {"mse": nn.functional.mse_loss, "cross_entropy": nn.functional.cross_entropy}[loss]

    def out_of(flat):
        return torch.func.functional_call(model, dict(zip(names, vec.unflatten(flat, like))), (x,))

    out = out_of(theta).detach()
    J = torch.func.jacrev(out_of)(theta).reshape(out.numel(), -1)
    HL = torch.func.hessian(lambda o: fn(o.reshape(out.shape), y))(out.reshape(-1))
    return J.mT @ HL @ J


def xtrace_naive(A: Tensor, Om: Tensor) -> Tensor:
    """The XTrace leave-one-out estimates ``(m,)`` straight from the definition, for probes
    ``Om (n, m)``: ``tr(Q_iᵀAQ_i) + ω_iᵀ(I − Q_iQ_iᵀ)A(I − Q_iQ_iᵀ)ω_i``, ``Q_i = orth(A Ω_{−i})``."""
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
    u = v / torch.linalg.vector_norm(v)
    out, w = [], u
    for _ in range(kmax + 1):
        out.append(u @ w)
        w = A @ w
    return torch.stack(out)


def loss_hessian_closed_forms(X: Tensor, y: Tensor, w: Tensor, kind: str) -> Tensor:
    """Closed-form Hessians of linear models ``x ↦ xᵀw`` (no bias), mean over ``N`` rows:
    ``"mse"``: ``(2/N) XᵀX``; ``"logistic"`` (BCE with logits): ``(1/N) Xᵀ diag(p(1−p)) X``."""
    N = X.shape[0]
    if kind == "mse":
        return 2.0 / N * X.mT @ X
    if kind == "logistic":
        p = torch.sigmoid(X @ w)
        return (X.mT * (p * (1 - p))) @ X / N
    raise ValueError(f"kind must be 'mse' or 'logistic', got {kind!r}")

