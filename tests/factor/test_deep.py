import pytest
import torch
from hypothesis import given, settings, strategies as st

from overparam.factor import DeepLinear, depth_preconditioner, init_balanced_deep, product, psd_power
from overparam.factor.diagnostics import balancedness
from overparam.testing.factor_oracles import deep_grads

D = torch.float64


@settings(max_examples=20, deadline=None)
@given(dims=st.lists(st.integers(1, 6), min_size=2, max_size=5), seed=st.integers(0, 50))
def test_balanced_deep_init(dims, seed):
    Ws = init_balanced_deep(dims, scale=1.0, generator=seed, dtype=D)
    assert [tuple(W.shape) for W in Ws] == [(dims[j + 1], dims[j]) for j in range(len(dims) - 1)]
    for a, b in zip(Ws[:-1], Ws[1:]):
        torch.testing.assert_close(b.T @ b, a @ a.T, rtol=0, atol=1e-10)


def test_end_to_end_is_truncation_of_target():
    A = torch.randn(4, 5, dtype=D)
    Ws = init_balanced_deep([5, 7, 6, 4], end_to_end=A)
    torch.testing.assert_close(product(Ws), A, rtol=0, atol=1e-12)
    Ws = init_balanced_deep([5, 2, 4], end_to_end=A)   # width 2 < rank 4: best rank-2 part
    U, S, Vh = torch.linalg.svd(A)
    torch.testing.assert_close(product(Ws), (U[:, :2] * S[:2]) @ Vh[:2], rtol=0, atol=1e-12)


def test_forward_and_factor_grads():
    net = DeepLinear([5, 6, 3, 4], scale=1.0, generator=0, dtype=D)
    x = torch.randn(7, 5, dtype=D)
    torch.testing.assert_close(net(x), x @ net.weight.T, rtol=0, atol=1e-12)
    G = torch.randn(4, 5, dtype=D)
    (net.weight * G).sum().backward()
    for W, g in zip(net.factors, deep_grads([W.detach() for W in net.factors], G)):
        torch.testing.assert_close(W.grad, g, rtol=0, atol=1e-10)


@pytest.mark.parametrize("depth", [2, 3, 4])
def test_gd_step_on_balanced_factors_follows_the_preconditioner(depth):
    # Arora et al. 2018, Thm 1: W(η) = W − η Σ_j (WWᵀ)^{(j−1)/N} ∇L (WᵀW)^{(N−j)/N} + O(η²)
    d = 4
    Ws = [W.requires_grad_() for W in init_balanced_deep([d] * (depth + 1), scale=2.0, generator=depth, dtype=D)]
    target = torch.randn(d, d, dtype=D, generator=torch.Generator().manual_seed(9))
    loss = 0.5 * (product(Ws) - target).square().sum()
    grads = torch.autograd.grad(loss, Ws)
    W = product(Ws).detach()
    pred = depth_preconditioner(W, W - target, depth)
    errs = []
    for eta in (1e-3, 1e-4):
        moved = product([w.detach() - eta * g for w, g in zip(Ws, grads)])
        errs.append(float((moved - (W - eta * pred)).abs().max()))
    assert errs[1] < errs[0] / 50          # the mismatch is second order in η
    assert errs[0] < 1e-3 * float(pred.abs().max())


def test_depth_one_preconditioner_is_identity_and_psd_power():
    W, G = torch.randn(3, 4, dtype=D), torch.randn(3, 4, dtype=D)
    torch.testing.assert_close(depth_preconditioner(W, G, 1), G)
    M = torch.randn(4, 4, dtype=D)
    M = M @ M.T
    torch.testing.assert_close(psd_power(M, 0.5) @ psd_power(M, 0.5), M, rtol=1e-8, atol=1e-10)
    with pytest.raises(ValueError, match="depth"):
        depth_preconditioner(W, G, 0)


def test_balancedness_diagnostic_on_deep_factors():
    Ws = init_balanced_deep([3, 4, 4, 2], scale=1.0, generator=0, dtype=D)
    assert float(balancedness(Ws)) < 1e-10
    Ws[1] = Ws[1] * 2
    assert float(balancedness(Ws)) > 1e-2


def test_psd_power_needs_a_square_matrix():
    with pytest.raises(ValueError, match="M"):
        psd_power(torch.ones(3, 2, dtype=D), 0.5)


def test_preconditioner_and_power_refuse_what_eigh_cannot_take():
    W, G = torch.eye(3, dtype=torch.float64), torch.ones(3, 3, dtype=torch.float64)
    with pytest.raises(TypeError, match="grad"):
        depth_preconditioner(W, "grad", 2)
    with pytest.raises(TypeError, match="W and grad must have the same dtype"):
        depth_preconditioner(W.float(), G, 2)
    bad = W.clone()
    bad[0, 1] = float("inf")
    with pytest.raises(ValueError, match="W holds NaN or inf"):
        depth_preconditioner(bad, G, 2)
    with pytest.raises(ValueError, match="M holds NaN or inf"):
        psd_power(bad, 0.5)
    with pytest.raises(TypeError, match="M"):
        psd_power("M", 0.5)
    with pytest.raises(ValueError, match="p must be a finite number"):
        psd_power(W, float("nan"))
