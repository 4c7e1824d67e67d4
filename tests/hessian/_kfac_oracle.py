"""Dense fp64 oracles for K-FAC / EK-FAC on ``nn.Sequential`` models (tests only).

Everything is built from definitions, not from overparam.hessian: layer inputs by running the
Sequential module by module, Conv2d patches by explicit slicing (checked: ``conv(x) = W·patch + b``),
output Jacobians by :func:`overparam.testing.oracles.jacobian_of` (checked by central differences),
the loss Hessian by :func:`hessian_of` (type-2) or per-sample gradients by autograd (empirical).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from overparam.testing.oracles import hessian_of, jacobian_of

LOSS = {"mse": F.mse_loss, "cross_entropy": F.cross_entropy}


def patches(conv: nn.Conv2d, x: Tensor) -> Tensor:
    """``(N, T, C·kh·kw)`` patches of ``x`` by slicing, checked against ``conv(x)``."""
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = conv.kernel_size, conv.stride, conv.padding, conv.dilation
    xp = F.pad(x, (pw, pw, ph, ph))
    out = conv(x)
    rows = []
    for i in range(out.shape[2]):
        for j in range(out.shape[3]):
            win = xp[:, :, i * sh: i * sh + dh * (kh - 1) + 1: dh, j * sw: j * sw + dw * (kw - 1) + 1: dw]
            rows.append(win.reshape(x.shape[0], -1))
    P = torch.stack(rows, dim=1)
    recon = P @ conv.weight.reshape(conv.out_channels, -1).T + (conv.bias if conv.bias is not None else 0)
    assert torch.allclose(recon, out.flatten(2).mT, atol=1e-12), "patch oracle disagrees with conv"
    return P


def _fd_check(f, z: Tensor, J: Tensor) -> None:
    """``J`` against central differences of ``f`` at ``z`` along three random directions."""
    g = torch.Generator().manual_seed(0)
    for _ in range(3):
        d = torch.randn(z.shape, generator=g, dtype=z.dtype)
        h = 1e-5
        fd = (f(z + h * d) - f(z - h * d)).reshape(-1) / (2 * h)
        assert torch.allclose(J @ d, fd, rtol=1e-6, atol=1e-8), "Jacobian oracle disagrees with finite differences"


def loss_curvature(kind: str, fisher: str, out: Tensor, y: Tensor) -> Tensor:
    """``(N·C, N·C)``: the loss Hessian w.r.t. the outputs (type-2), or ``s Σ_n ∇ℓ_n ∇ℓ_nᵀ`` with
    ``ℓ_n = −log p(y_n | f_n)`` (empirical; ``s = 1/N`` resp. ``1/(N·C)``)."""
    if fisher == "type-2":
        return hessian_of(lambda o: LOSS[kind](o.reshape(out.shape), y), out.reshape(-1).detach())
    o = out.detach().clone().requires_grad_(True)
    if kind == "cross_entropy":
        nll, s = F.cross_entropy(o, y, reduction="sum"), 1.0 / out.shape[0]
    else:
        nll, s = ((o - y) ** 2).sum(), 1.0 / out.numel()
    g = torch.autograd.grad(nll, o)[0].reshape(out.shape[0], -1)   # row n: ∇ℓ_n (samples are independent)
    blocks = [s * gn[:, None] * gn[None, :] for gn in g]
    return torch.block_diag(*blocks)


def layer_terms(net: nn.Sequential, kind: str, data, fisher: str = "type-2"):
    """Per Linear/Conv2d layer ``(module, a (N, T, d_in), M (N, T, out, N, T, out))`` with
    ``M = J_sᵀ H J_s`` (``J_s``: outputs w.r.t. the layer output at every position)."""
    x, y = data
    h, found = x, []
    for i, m in enumerate(net):
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            found.append((i, m, h))
        h = m(h)
    out = h.detach()
    HL = loss_curvature(kind, fisher, out, y)
    terms = []
    for i, m, hin in found:
        s = m(hin).detach()
        rest = net[i + 1:]
        f = lambda z, shape=s.shape, rest=rest: rest(z.reshape(shape))  # noqa: E731
        J = jacobian_of(f, s.reshape(-1))
        _fd_check(f, s.reshape(-1), J)
        N = s.shape[0]
        if isinstance(m, nn.Conv2d):
            a = patches(m, hin)
            J = J.reshape(-1, N, s.shape[1], s.shape[2] * s.shape[3]).transpose(2, 3)
        else:
            a = hin.reshape(N, -1, hin.shape[-1])
            J = J.reshape(-1, N, a.shape[1], s.shape[-1])
        J = J.reshape(J.shape[0], -1)
        M = (J.T @ HL @ J).reshape(N, a.shape[1], -1, N, a.shape[1], s.shape[1] if isinstance(m, nn.Conv2d) else s.shape[-1])
        terms.append((m, a.detach(), M.detach()))
    return terms


def factors(net: nn.Sequential, kind: str, data, *, weight_sharing: str = "expand", fisher: str = "type-2"):
    """``[(module, A, G)]`` from the definitions, ``A`` on the bias-augmented input ``[a; 1]``."""
    res = []
    for m, a, M in layer_terms(net, kind, data, fisher):
        N, T = a.shape[:2]
        a = torch.cat([a, torch.ones(N, T, 1, dtype=a.dtype)], dim=-1)
        if weight_sharing == "expand":
            A = sum(a[n, t, :, None] * a[n, t, None, :] for n in range(N) for t in range(T)) / (N * T)
            G = sum(M[n, t, :, n, t, :] for n in range(N) for t in range(T))
        else:
            ab = a.mean(1)
            A = sum(ab[n, :, None] * ab[n, None, :] for n in range(N)) / N
            G = sum(M[n, t, :, n, u, :] for n in range(N) for t in range(T) for u in range(T))
        res.append((m, A, G))
    return res


def block_index(net: nn.Module, m: nn.Module, names: list[str], like: list[torch.Size]) -> Tensor:
    """Flat operator indices of the block matrix ``(out, d)`` entries (row-major), for the selected
    ``names`` of layer ``m`` (weight columns first, then the bias column)."""
    offsets, off = {}, 0
    for n, s in zip(names, like):
        offsets[n] = off
        off += s.numel()
    pname = {id(p): k for k, p in net.named_parameters()}
    w, b = pname[id(m.weight)], (pname[id(m.bias)] if m.bias is not None else None)
    out, d_in = m.weight.shape[0], m.weight[0].numel()
    idx = []
    for o in range(out):
        if w in offsets:
            idx += [offsets[w] + o * d_in + i for i in range(d_in)]
        if b in offsets:
            idx.append(offsets[b] + o)
    return torch.tensor(idx)


def assemble(n: int, blocks) -> Tensor:
    """Dense ``(n, n)`` from ``[(flat index (m,), dense block (m, m))]``."""
    K = torch.zeros(n, n, dtype=torch.float64)
    for idx, B in blocks:
        K[idx[:, None], idx[None, :]] = B
    return K


def dense_kfac(net, kind, data, names, like, **kw) -> Tensor:
    """The K-FAC matrix ``blockdiag(G ⊗ A)`` in the operator's flat order."""
    n = sum(s.numel() for s in like)
    blocks = []
    for m, A, G in factors(net, kind, data, **kw):
        idx = block_index(net, m, names, like)
        if len(idx) == 0:
            continue
        keep = _kept_columns(m, names, net)
        blocks.append((idx, torch.kron(G, A[keep][:, keep])))
    return assemble(n, blocks)


def _kept_columns(m, names, net) -> Tensor:
    pname = {id(p): k for k, p in net.named_parameters()}
    d_in = m.weight[0].numel()
    cols = list(range(d_in)) if pname[id(m.weight)] in names else []
    if m.bias is not None and pname[id(m.bias)] in names:
        cols.append(d_in)
    return torch.tensor(cols)


def dense_curvature(net: nn.Module, kind: str, data, fisher: str = "type-2") -> Tensor:
    """``Jᵀ H J`` over all trainable parameters (named_parameters order) with ``H`` of
    :func:`loss_curvature`: the GGN (type-2) or the empirical Fisher; ``J`` checked by central differences."""
    from overparam.testing.oracles import outputs_of_flat
    x, y = data
    f, theta = outputs_of_flat(net, x)
    J = jacobian_of(f, theta)
    _fd_check(f, theta, J)
    return J.T @ loss_curvature(kind, fisher, f(theta).detach(), y) @ J


def dense_ekfac(net, kind, data, names, like, *, fisher: str = "type-2", **kw) -> Tensor:
    """EK-FAC from the definition ``D = diag(Qᵀ C_block Q)``, ``Q = Q_G ⊗ Q_A`` from the oracle
    factors, ``C`` the dense GGN / empirical Fisher (all parameters trainable and selected)."""
    C = dense_curvature(net, kind, data, fisher)
    n = sum(s.numel() for s in like)
    assert C.shape == (n, n), "dense_ekfac needs every trainable parameter selected"
    blocks = []
    for m, A, G in factors(net, kind, data, fisher=fisher, **kw):
        idx = block_index(net, m, names, like)
        keep = _kept_columns(m, names, net)
        Q = torch.kron(torch.linalg.eigh(G).eigenvectors, torch.linalg.eigh(A[keep][:, keep]).eigenvectors)
        Cb = C[idx[:, None], idx[None, :]]
        blocks.append((idx, Q @ torch.diag(torch.diagonal(Q.T @ Cb @ Q)) @ Q.T))
    return assemble(n, blocks)
