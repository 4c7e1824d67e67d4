import pytest
import torch

from overparam.factor import Hadamard, HadamardDifference, Kronecker, LowRankHadamard, kron_split
from overparam.testing.factor_oracles import hadamard_grads, kron_grads, loha_grads

D = torch.float64


@pytest.mark.parametrize("depth", [1, 2, 3, 4])
def test_depth_n_hadamard_forward_grads_and_exact_factoring(depth):
    w = torch.randn(4, 5, dtype=D)
    h = Hadamard(w.shape, depth=depth, weight=w)
    torch.testing.assert_close(h(), w, rtol=0, atol=1e-12)
    h = Hadamard(w.shape, depth=depth, init="small", scale=1.0, generator=0, dtype=D)
    fs = [f.detach() for f in h.factors]
    expect = fs[0]
    for f in fs[1:]:
        expect = expect * f
    torch.testing.assert_close(h(), expect, rtol=0, atol=1e-12)
    G = torch.randn(4, 5, dtype=D)
    (h() * G).sum().backward()
    for f, g in zip(h.factors, hadamard_grads(fs, G)):
        torch.testing.assert_close(f.grad, g, rtol=0, atol=1e-10)


@pytest.mark.parametrize("depth", [2, 3])
def test_difference_parameterization(depth):
    w = torch.tensor([1.5, -2.0, 0.0, 3e-4], dtype=D)
    h = HadamardDifference(w.shape, depth=depth, weight=w, scale=1e-2)
    torch.testing.assert_close(h(), w, rtol=0, atol=1e-12)
    assert bool((h.u > 0).all() and (h.v > 0).all())
    h0 = HadamardDifference((3,), depth=depth, scale=0.1, dtype=D)
    assert float(h0().abs().max()) == 0.0
    G = torch.randn(3, dtype=D)
    (h0() * G).sum().backward()
    torch.testing.assert_close(h0.u.grad, depth * G * 0.1 ** (depth - 1), rtol=1e-12, atol=0)
    torch.testing.assert_close(h0.v.grad, -depth * G * 0.1 ** (depth - 1), rtol=1e-12, atol=0)


def test_low_rank_hadamard_reaches_rank_r_squared_and_grads():
    for r in (2, 3, 4):
        W = LowRankHadamard((20, 18), r, scale=1.0, generator=r, dtype=D)()
        assert int(torch.linalg.matrix_rank(W.detach())) == r * r
    m = LowRankHadamard((6, 5), 2, scale=1.0, generator=0, dtype=D)
    L1, R1, L2, R2 = (p.detach() for p in (m.left1, m.right1, m.left2, m.right2))
    torch.testing.assert_close(m(), (L1 @ R1.T) * (L2 @ R2.T), rtol=0, atol=1e-12)
    G = torch.randn(6, 5, dtype=D)
    (m() * G).sum().backward()
    for p, g in zip((m.left1, m.right1, m.left2, m.right2), loha_grads(L1, R1, L2, R2, G)):
        torch.testing.assert_close(p.grad, g, rtol=0, atol=1e-10)
    assert float(LowRankHadamard((6, 5), 2, zero_init=True, generator=0)().abs().max()) == 0.0


@pytest.mark.parametrize("n", range(1, 50))
@pytest.mark.parametrize("factor", [-1, 0, 1, 2, 3, 5, 7, 100])
def test_kron_split_against_exhaustive_search(n, factor):
    cap = n if factor <= 0 else factor
    best = max(a for a in range(1, n + 1) if n % a == 0 and a * a <= n and a <= cap)
    assert kron_split(n, factor) == (best, n // best)


def test_kronecker_forward_and_grads():
    assert kron_split(12) == (3, 4) and kron_split(7) == (1, 7) and kron_split(12, factor=2) == (2, 6)
    m = Kronecker((12, 8), rank=2, scale=1.0, generator=0, dtype=D)
    C, L, R = m.kron.detach(), m.left.detach(), m.right.detach()
    torch.testing.assert_close(m(), torch.kron(C, L @ R.T), rtol=0, atol=1e-12)
    G = torch.randn(12, 8, dtype=D)
    (m() * G).sum().backward()
    for p, g in zip((m.kron, m.left, m.right), kron_grads(C, L, R, G)):
        torch.testing.assert_close(p.grad, g, rtol=0, atol=1e-10)


def test_bad_input():
    with pytest.raises(ValueError, match="depth"):
        Hadamard((2,), depth=0)
    with pytest.raises(ValueError, match="weight"):
        Hadamard((2,), weight=torch.ones(3))
    with pytest.raises(ValueError, match="rank"):
        LowRankHadamard((3, 3), 0)
    with pytest.raises(ValueError, match="rank must be <= min"):           # each L_i R_iᵀ has rank <= min(m, n)
        LowRankHadamard((3, 5), 4)
    with pytest.raises(ValueError, match=r"rank must be <= min\(2, 2\)"):  # (4, 4) = (2, 2) ⊗ (2, 2) blocks
        Kronecker((4, 4), 3)


def test_shape_and_scale_errors():
    with pytest.raises(ValueError, match="shape"):
        LowRankHadamard((0, 3), 2)
    with pytest.raises(ValueError, match="shape"):
        Kronecker((4, -1), 1)
    for make in (lambda: Hadamard((2,), scale=0.0), lambda: LowRankHadamard((3, 3), 1, scale=0.0),
                 lambda: Kronecker((4, 4), 1, scale=0.0)):
        with pytest.raises(ValueError, match="scale"):
            make()
