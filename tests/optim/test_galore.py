import copy

import pytest
import torch

from overparam.optim import GaLore, optimizer_state_bytes

D = torch.float64


def _rand(*shape, seed=0, dtype=D):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def _loss(W, t):
    """Step 0: ``<D, W>`` with ``D`` diagonal, distinct entries (so its SVD is axis-aligned); then a generic loss."""
    m, n = W.shape
    if t == 0:
        Dg = torch.zeros(m, n, dtype=W.dtype)
        k = min(m, n)
        Dg[range(k), range(k)] = torch.arange(k, 0, -1, dtype=W.dtype) + 0.5
        return (Dg * W).sum()
    x, y = _rand(n, 5, seed=t), _rand(m, 5, seed=100 + t)
    return 0.5 * (W @ x - y).square().sum() + 0.1 * W.sin().sum()


@pytest.mark.parametrize("shape", [(7, 5), (4, 6), (5, 5)])
@pytest.mark.parametrize("svd", ["svd", "randomized"])
def test_full_rank_no_refresh_equals_adamw(shape, svd):
    """Acceptance (issue 15): rank = full (projected) dimension, no refresh, scale 1: AdamW to 1e-10 (fp64).

    The projector comes from the first gradient, axis-aligned here (a signed identity): Adam's
    coordinate-wise normalisation is only invariant under signed permutations. With the randomized
    SVD the projector is the identity to rounding (1e-16), and Adam turns rounding-level gradient
    entries where the first gradient is exactly 0 into steps of ``lr·1e-16/ε = 1e-10``: 1e-8 there."""
    W0 = _rand(*shape, seed=1)
    W, V = W0.clone().requires_grad_(), W0.clone().requires_grad_()
    kw = dict(lr=1e-2, betas=(0.8, 0.95), eps=1e-8, weight_decay=0.1)
    ga = GaLore([W], **kw, rank=min(shape), update_every=1000, scale=1.0, svd=svd, generator=0)
    ad = torch.optim.AdamW([V], **kw)
    for t in range(6):
        for opt, P in ((ga, W), (ad, V)):
            opt.zero_grad(); _loss(P, t).backward(); opt.step()
    torch.testing.assert_close(W.detach(), V.detach(), rtol=0, atol=1e-10 if svd == "svd" else 1e-8)
    assert not torch.equal(W.detach(), W0)


@pytest.mark.parametrize("shape", [(7, 5), (4, 6)])
def test_full_rank_is_adamw_in_rotated_coordinates(shape):
    """Any full-rank projector Q (square, orthogonal): GaLore = AdamW on the rotated variable W Q (or Qᵀ W)."""
    W0 = _rand(*shape, seed=2)
    W = W0.clone().requires_grad_()
    ga = GaLore([W], lr=1e-2, weight_decay=0.05, rank=min(shape), update_every=1000, scale=1.0, svd="svd")
    ga.zero_grad(); _loss(W, 1).backward()
    ga.step()
    Q, side = ga.state[W]["projector"], ga.state[W]["side"]
    assert side == ("right" if shape[0] >= shape[1] else "left")
    rot = (lambda M: M @ Q) if side == "right" else (lambda M: Q.T @ M)
    back = (lambda M: M @ Q.T) if side == "right" else (lambda M: Q @ M)
    Wt = rot(W0).clone().requires_grad_()
    ad = torch.optim.AdamW([Wt], lr=1e-2, weight_decay=0.05)
    ad.zero_grad(); _loss(back(Wt), 1).backward(); ad.step()
    for t in range(2, 6):
        ga.zero_grad(); _loss(W, t).backward(); ga.step()
        ad.zero_grad(); _loss(back(Wt), t).backward(); ad.step()
    torch.testing.assert_close(W.detach(), back(Wt.detach()), rtol=0, atol=1e-10)


@pytest.mark.parametrize("proj", ["left", "right"])
def test_low_rank_update_lies_in_the_projector_span_of_the_top_singular_vectors(proj):
    W = _rand(12, 9, seed=3).requires_grad_()
    opt = GaLore([W], lr=1e-2, rank=3, update_every=1000, proj=proj, svd="randomized", niter=4, generator=0)
    opt.zero_grad(); _loss(W, 1).backward()
    G = W.grad.clone()
    W0 = W.detach().clone()
    opt.step()
    Q = opt.state[W]["projector"]
    U, S, Vh = torch.linalg.svd(G)
    exact = U[:, :3] if proj == "left" else Vh[:3].T
    torch.testing.assert_close(Q @ Q.T, exact @ exact.T, rtol=0, atol=1e-8)
    dW = W.detach() - W0
    P = Q @ Q.T
    off = dW - P @ dW if proj == "left" else dW - dW @ P
    assert float(off.abs().max()) < 1e-14 < float(dW.abs().max())
    assert opt.state[W]["exp_avg"].shape == ((3, 9) if proj == "left" else (12, 3))


def test_projector_refreshes_every_T_steps():
    W = _rand(10, 8, seed=4).requires_grad_()
    opt = GaLore([W], lr=1e-2, rank=2, update_every=3, svd="svd")
    seen = []
    for t in range(8):
        opt.zero_grad(); _loss(W, t + 1).backward(); opt.step()
        seen.append(opt.state[W]["projector"].clone())
    changed = [t for t in range(1, 8) if not torch.equal(seen[t], seen[t - 1])]
    assert changed == [3, 6]


def test_state_bytes_are_r_over_m_of_adamw():
    """Acceptance (issue 15): state bytes <= (r/m + ε)× AdamW's, with ε = r/(2·max(m, n)) the projector's share."""
    m, n, r = 64, 48, 4
    W, b = _rand(m, n, seed=5).requires_grad_(), torch.zeros(m, dtype=D, requires_grad=True)
    W2, b2 = W.detach().clone().requires_grad_(), b.detach().clone().requires_grad_()
    ga, ad = GaLore([W, b], rank=r, svd="svd"), torch.optim.AdamW([W2, b2])
    for opt, (P, c) in ((ga, (W, b)), (ad, (W2, b2))):
        opt.zero_grad(); (_loss(P, 1) + c.square().sum()).backward(); opt.step()
    adam_W = 2 * m * n * 8 + 4
    assert optimizer_state_bytes(ad) == adam_W + 2 * m * 8 + 4
    galore_W = optimizer_state_bytes(ga) - 2 * m * 8           # the bias: plain AdamW moments (int step, no bytes)
    assert galore_W == (2 * m * r + n * r) * 8
    assert galore_W / adam_W <= r / n + r / (2 * m) + 1e-12


def test_state_dict_round_trip_and_no_global_rng_draw():
    W = _rand(9, 7, seed=6).requires_grad_()
    opt = GaLore([W], lr=1e-2, rank=2, update_every=2)
    rng = torch.get_rng_state()
    for t in range(3):
        opt.zero_grad(); _loss(W, t + 1).backward(); opt.step()
    assert torch.equal(torch.get_rng_state(), rng)                 # randomized SVD with generator=None: a measurement
    V = W.detach().clone().requires_grad_()
    opt2 = GaLore([V], lr=1.0, rank=2, update_every=2)
    opt2.load_state_dict(copy.deepcopy(opt.state_dict()))
    for o, P in ((opt, W), (opt2, V)):
        o.zero_grad(); _loss(P, 4).backward(); o.step()
    assert torch.equal(W, V)


def test_other_groups_and_vectors_get_adamw():
    W, b = _rand(6, 5, seed=7).requires_grad_(), _rand(6, seed=8).requires_grad_()
    W2, b2 = W.detach().clone().requires_grad_(), b.detach().clone().requires_grad_()
    ga = GaLore([{"params": [W], "rank": None}, {"params": [b]}], lr=1e-2, rank=2)
    ad = torch.optim.AdamW([W2, b2], lr=1e-2, weight_decay=0.0)
    for opt, P, c in ((ga, W, b), (ad, W2, b2)):
        for t in range(3):
            opt.zero_grad(); (_loss(P, t + 1) + (c * P.sum(1)).sum()).backward(); opt.step()
    torch.testing.assert_close(W, W2, rtol=0, atol=1e-14)
    torch.testing.assert_close(b, b2, rtol=0, atol=1e-14)


def test_bad_input():
    W = torch.zeros(5, 3, requires_grad=True)
    with pytest.raises(ValueError, match="rank = 4 exceeds min"):
        GaLore([W], rank=4)
    with pytest.raises(ValueError, match="proj"):
        GaLore([W], rank=2, proj="both")
    with pytest.raises(ValueError, match="update_every"):
        GaLore([W], rank=2, update_every=0)
    with pytest.raises(ValueError, match="betas"):
        GaLore([W], rank=2, betas=(0.9, 1.0))
    with pytest.raises(ValueError, match="scale"):
        GaLore([W], rank=2, scale=0.0)
    with pytest.raises(ValueError, match="svd"):
        GaLore([W], rank=2, svd="qr")
    with pytest.raises(TypeError, match="optimizer"):
        optimizer_state_bytes([W])
