"""The LoRA inits of overparam/factor/inits.py against closed forms and dense fp64 oracles, and
through ``lora_`` (output unchanged at init, merge/unmerge round trip to 1e-12 in fp64)."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import overparam as op
from overparam.backend.layers import layout_of
from overparam.factor import inits

D = torch.float64


def _W(m, n, seed=0):
    return torch.randn(m, n, dtype=D, generator=torch.Generator().manual_seed(seed))


@settings(max_examples=15, deadline=None)
@given(m=st.integers(2, 7), n=st.integers(2, 7), s=st.sampled_from([0.5, 1.0, 2.0]), data=st.data())
def test_olora_is_the_leading_qr_part(m, n, s, data):
    r = data.draw(st.integers(1, min(m, n)))
    W = _W(m, n, m * 10 + n)
    i = inits.olora(W, r, scaling=s)
    assert torch.allclose(i.up.mT @ i.up, torch.eye(r, dtype=D), atol=1e-12)          # orthonormal columns
    assert torch.equal(i.down.mT.tril(-1), torch.zeros(r, n, dtype=D).tril(-1))       # Rᵀ upper triangular
    # Q R = W: the first r columns of W are exactly up @ down[:r]ᵀ (Gram–Schmidt), for any r
    assert torch.allclose((i.up @ i.down.mT)[:, :r], W[:, :r], atol=1e-12)
    assert i.residual


@settings(max_examples=15, deadline=None)
@given(m=st.integers(2, 7), n=st.integers(2, 7), s=st.sampled_from([0.5, 1.0, 3.0]), data=st.data())
def test_milora_is_the_minor_svd_part(m, n, s, data):
    r = data.draw(st.integers(1, min(m, n)))
    W = _W(m, n, m * 10 + n)
    U, S, Vh = torch.linalg.svd(W, full_matrices=False)
    i = inits.milora(W, r, scaling=s)
    minor = (U[:, -r:] * S[-r:]) @ Vh[-r:]
    assert torch.allclose(s * i.up @ i.down.mT, minor, atol=1e-12)
    assert torch.allclose(i.up.mT @ i.up, i.down.mT @ i.down, atol=1e-12)            # balanced split
    # the residual is the principal part: its singular values are the top k - r
    res = torch.linalg.svdvals(W - s * i.up @ i.down.mT)
    assert torch.allclose(res[: S.numel() - r], S[: S.numel() - r], atol=1e-12)


@pytest.mark.parametrize("direction,a,b", [("ArB2r", [0, 1], [2, 3]), ("A2rBr", [2, 3], [0, 1]),
                                           ("ArBr", [1, 3], [0, 2])])
def test_lora_ga_takes_the_singular_indices_of_its_direction(direction, a, b):
    U = torch.linalg.qr(_W(9, 9, 1))[0]
    V = torch.linalg.qr(_W(8, 8, 2))[0]
    S = torch.tensor([8.0, 5.0, 3.0, 2.0, 1.0, 0.5, 0.25, 0.1], dtype=D)
    G = (U[:, :8] * S) @ V.mT
    i = inits.lora_ga(G, _W(9, 8), 2, scaling=1.0, direction=direction, scale="unit")
    # up[:, j] = ± U[:, b_j] S[b_j], down[:, j] = ± V[:, a_j]: compare up to each singular vector's sign
    for j in range(2):
        assert torch.allclose(i.up[:, j].abs(), (U[:, b[j]] * S[b[j]]).abs(), atol=1e-12)
        assert torch.allclose(i.down[:, j].abs(), V[:, a[j]].abs(), atol=1e-12)
    st_ = inits.lora_ga(G, _W(9, 8), 2, scaling=1.0, direction=direction, scale="stable", gamma=4.0)
    assert torch.allclose(st_.up, i.up * 9 ** 0.25 / 2.0, atol=1e-12)
    gd = inits.lora_ga(G, _W(9, 8), 2, scaling=4.0, direction=direction, scale="gd_scale")
    assert torch.allclose(gd.up, i.up / 4.0) and torch.allclose(gd.down, i.down / 4.0)


def test_lora_ga_refuses_bad_options():
    G = _W(6, 6)
    with pytest.raises(ValueError, match="2·rank"):
        inits.lora_ga(G, G, 4, scaling=1.0)
    with pytest.raises(ValueError, match="ga_direction"):
        inits.lora_ga(G, G, 1, scaling=1.0, direction="nope")
    with pytest.raises(ValueError, match="ga_scale"):
        inits.lora_ga(G, G, 1, scaling=1.0, scale="x")


def test_pca_components_are_the_eigenvectors_of_the_centered_covariance():
    X = _W(40, 6) @ torch.diag(torch.tensor([5.0, 4, 3, 2, 1, 0.5], dtype=D)) + 3.0
    V, ratio = inits.pca(X)
    Xc = X - X.mean(0)
    evals, evecs = torch.linalg.eigh(Xc.mT @ Xc)
    evals, evecs = evals.flip(0), evecs.flip(1)
    assert torch.allclose(ratio, evals / evals.sum(), atol=1e-12)
    assert torch.allclose((V.mT @ evecs).abs(), torch.eye(6, dtype=D), atol=1e-8)
    assert abs(float(ratio.sum()) - 1) < 1e-12


@settings(max_examples=30, deadline=None)
@given(st.lists(st.lists(st.floats(0.0, 1.0), min_size=1, max_size=5), min_size=1, max_size=4),
       st.integers(0, 12), st.data())
def test_eva_ranks_take_the_largest_ratios_and_sum_to_the_budget(ratios, budget, data):
    explained = {f"l{i}": torch.tensor(sorted(r, reverse=True), dtype=D) for i, r in enumerate(ratios)}
    cap = {k: data.draw(st.integers(0, v.numel())) for k, v in explained.items()}
    ranks = inits.eva_ranks(explained, budget, cap)
    assert list(ranks) == list(explained)
    assert sum(ranks.values()) == min(budget, sum(cap.values()))
    assert all(0 <= ranks[k] <= cap[k] for k in ranks)
    # exhaustive oracle: no unchosen offered ratio beats a chosen one
    chosen = [float(v) for k in ranks for v in explained[k][: ranks[k]]]
    left = [float(v) for k in ranks for v in explained[k][ranks[k]: cap[k]]]
    if chosen and left:
        assert min(chosen) >= max(left)


def test_corda_recovers_w_and_orders_by_the_covariance_weighted_spectrum():
    W, X = _W(5, 6, 1), _W(50, 6, 2) @ torch.diag(torch.tensor([4.0, 2, 1, 1, 0.5, 0.1], dtype=D))
    C = X.mT @ X / 50
    full = inits.corda(W, C, 5, scaling=2.0, mode="ipm")
    assert torch.allclose(2.0 * full.up @ full.down.mT, W, atol=1e-10)                  # U S Vᵀ = W
    Cd, inv = inits.corda_damped_covariance(C)
    assert torch.allclose(Cd, C + torch.eye(6, dtype=D) * C.diagonal().mean() * 0.01, atol=1e-14)
    S = torch.linalg.svdvals(W @ Cd)
    top, bottom = inits.corda(W, C, 2, scaling=2.0, mode="ipm"), inits.corda(W, C, 2, scaling=2.0, mode="kpm")
    # (s · up downᵀ) Cd has the singular values of its mode
    assert torch.allclose(torch.linalg.svdvals(2.0 * top.up @ top.down.mT @ Cd)[:2], S[:2], atol=1e-10)
    assert torch.allclose(torch.linalg.svdvals(2.0 * bottom.up @ bottom.down.mT @ Cd)[:2], S[-2:], atol=1e-10)
    with pytest.raises(ValueError, match="corda_mode"):
        inits.corda(W, C, 2, scaling=1.0, mode="x")


def _round_trip(net, x):
    """Perturb every adapter, then merge (unload=False) / unmerge: outputs and weights to 1e-12."""
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, op.factor.LoRALayer):
                m.lora_up.add_(torch.randn(m.lora_up.shape, dtype=D, generator=torch.Generator().manual_seed(3)))
    ref, W = net(x), [m.base.weight.detach().clone() for m in net.modules() if isinstance(m, op.factor.LoRALayer)]
    op.factor.merge_(net, unload=False)
    assert (net(x) - ref).abs().max() < 1e-12
    op.factor.unmerge_(net)
    assert (net(x) - ref).abs().max() < 1e-12
    after = [m.base.weight for m in net.modules() if isinstance(m, op.factor.LoRALayer)]
    assert all((a - b).abs().max() < 1e-12 for a, b in zip(after, W))


@pytest.mark.parametrize("init", ["olora", "milora"])
@pytest.mark.parametrize("kind", ["linear", "conv", "embedding"])
def test_weight_inits_through_lora_keep_the_output_and_round_trip(init, kind):
    torch.manual_seed(0)
    if kind == "linear":
        net, x = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.Tanh(), torch.nn.Linear(5, 4)), torch.randn(3, 6)
    elif kind == "conv":
        net, x = torch.nn.Sequential(torch.nn.Conv2d(2, 3, 3), torch.nn.Tanh(), torch.nn.Conv2d(3, 2, 1)), torch.randn(2, 2, 5, 5)
    else:
        net, x = torch.nn.Sequential(torch.nn.Embedding(7, 4), torch.nn.Linear(4, 3)), torch.tensor([[1, 2, 6]])
    net = net.double()
    x = x.double() if x.is_floating_point() else x
    y = net(x)
    op.factor.lora_(net, rank=2, alpha=3.0, init=init)
    assert (net(x) - y).abs().max() < 1e-12
    first = net[0]
    W0 = first.base.weight.detach() + first.delta_weight().detach()
    expect = getattr(inits, init)(layout_of(first.base).as_matrix(W0), 2, scaling=first.scaling)
    assert torch.allclose(first.lora_up, expect.up, atol=1e-10) and torch.allclose(first.lora_down, expect.down, atol=1e-10)
    _round_trip(net, x)


def test_lora_refuses_data_for_a_data_free_init_and_data_inits_without_data():
    net = torch.nn.Sequential(torch.nn.Linear(4, 4))
    x = (torch.randn(5, 4), None)
    with pytest.raises(ValueError, match="data: init='olora'"):
        op.factor.lora_(net, rank=1, init="olora", data=x)
    with pytest.raises(ValueError, match="rho: init='kaiming'"):
        op.factor.lora_(net, rank=1, rho=2.0)
    with pytest.raises(ValueError, match="data: init='eva' needs data"):
        op.factor.lora_(net, rank=1, init="eva")
    with pytest.raises(ValueError, match="loss_fn: init='lora_ga' needs"):
        op.factor.lora_(net, rank=1, init="lora_ga", data=x)
    with pytest.raises(ValueError, match="computed from data"):
        op.factor.LoRALayer(torch.nn.Linear(4, 4), rank=1, init="corda")
    assert not any(isinstance(m, op.factor.LoRALayer) for m in net.modules())


def test_lora_ga_random_direction_takes_the_same_random_indices_for_both_factors():
    U = torch.linalg.qr(_W(10, 10, 3))[0]
    V = torch.linalg.qr(_W(9, 9, 4))[0]
    S = torch.tensor([9.0, 7.0, 5.0, 4.0, 3.0, 2.0, 1.0, 0.5, 0.2], dtype=D)
    G = (U[:, :9] * S) @ V.mT
    idx = torch.randperm(6, generator=torch.Generator().manual_seed(5))[:3]
    i = inits.lora_ga(G, _W(10, 9), 3, scaling=1.0, direction="random", scale="unit", svd="svd", generator=5)
    want = sum(S[k] * torch.outer(U[:, k], V[:, k]) for k in idx.tolist())     # sign-free: same index on both sides
    torch.testing.assert_close(i.up @ i.down.mT, want, rtol=0, atol=1e-12)
    for j, k in enumerate(idx.tolist()):
        torch.testing.assert_close(i.down[:, j].abs(), V[:, k].abs(), rtol=0, atol=1e-12)
    again = inits.lora_ga(G, _W(10, 9), 3, scaling=1.0, direction="random", scale="unit", svd="svd", generator=5)
    assert torch.equal(again.up, i.up)
    torch.manual_seed(0)
    a = inits.lora_ga(G, _W(10, 9), 3, scaling=1.0, direction="random", svd="svd")
    torch.manual_seed(0)
    b = inits.lora_ga(G, _W(10, 9), 3, scaling=1.0, direction="random", svd="svd")
    assert torch.equal(a.up, b.up)                                  # generator=None: the global stream


def test_lora_ga_default_randomized_svd_equals_the_exact_one_on_a_decaying_spectrum():
    """The default (randomized, niter=4, oversample=8) against svd="svd" on a 64 x 48 gradient whose
    singular values halve at each index: the same factors up to signs to 1e-9 (rank 4, 2r = 8)."""
    U = torch.linalg.qr(_W(64, 48, 5))[0]
    V = torch.linalg.qr(_W(48, 48, 6))[0]
    G = (U * 0.5 ** torch.arange(48, dtype=D)) @ V.mT
    exact = inits.lora_ga(G, _W(64, 48), 4, scaling=1.0, svd="svd")
    fast = inits.lora_ga(G, _W(64, 48), 4, scaling=1.0)
    torch.testing.assert_close(fast.up.abs(), exact.up.abs(), rtol=0, atol=1e-9)
    torch.testing.assert_close(fast.down.abs(), exact.down.abs(), rtol=0, atol=1e-9)


def test_lora_ga_randomized_svd_matches_the_exact_one_on_a_low_rank_gradient():
    G = _W(12, 3, 1) @ _W(3, 10, 2)                                   # rank 3 < 2r + oversample
    exact = inits.lora_ga(G, _W(12, 10), 1, scaling=1.0, scale="unit", svd="svd")
    fast = inits.lora_ga(G, _W(12, 10), 1, scaling=1.0, scale="unit", svd="randomized", oversample=2)
    assert torch.allclose(fast.up.abs(), exact.up.abs(), atol=1e-10)
    assert torch.allclose(fast.down.abs(), exact.down.abs(), atol=1e-10)
