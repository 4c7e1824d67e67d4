import pytest
import torch

from overparam.factor import SparseLowRank, topk_mask, pairs

D = torch.float64


def test_fixed_mask_forward_and_grads():
    mask = torch.rand(6, 5, generator=torch.Generator().manual_seed(0)) < 0.3
    m = SparseLowRank((6, 5), rank=2, mask=mask, init="small", scale=0.5, generator=0, dtype=D)
    with torch.no_grad():
        m.sparse.normal_(generator=torch.Generator().manual_seed(1))
    S, L, R = m.sparse.detach(), m.left.detach(), m.right.detach()
    torch.testing.assert_close(m(), S * mask + L @ R.T, rtol=0, atol=1e-12)
    G = torch.randn(6, 5, dtype=D)
    (m() * G).sum().backward()
    torch.testing.assert_close(m.sparse.grad, G * mask, rtol=0, atol=1e-12)
    torch.testing.assert_close(m.left.grad, G @ R, rtol=0, atol=1e-10)
    assert set(m.state_dict()) == {"left", "right", "sparse", "mask"}
    assert [(a is m.left, b is m.right) for a, b in pairs(m)] == [(True, True)]


def test_random_support_density_and_weight_init():
    W = torch.randn(10, 8, dtype=D)
    m = SparseLowRank((10, 8), rank=3, density=0.25, weight=W, generator=0)
    assert int(m.mask.sum()) == 20
    torch.testing.assert_close(m.left @ m.right.T + m.sparse, W, rtol=0, atol=1e-12)
    full = SparseLowRank((10, 8), rank=3, density=1.0, weight=W, generator=0)
    torch.testing.assert_close(full(), W, rtol=0, atol=1e-12)


def test_learned_support_follows_magnitude():
    m = SparseLowRank((4, 4), rank=1, density=0.25, learned=True, generator=0, dtype=D)
    with torch.no_grad():
        m.sparse.copy_(torch.arange(16, dtype=D).reshape(4, 4) - 8)
    assert torch.equal(m.support(), topk_mask((torch.arange(16, dtype=D) - 8).abs(), 0.25).reshape(4, 4))
    assert int(m.support().sum()) == 4 and bool(m.support()[0, 0])
    assert "mask" not in m.state_dict()


def test_bad_input():
    with pytest.raises(ValueError, match="mask"):
        SparseLowRank((3, 3), 1)
    with pytest.raises(ValueError, match="density"):
        SparseLowRank((3, 3), 1, density=1.5)
    with pytest.raises(ValueError, match="mask"):
        SparseLowRank((3, 3), 1, mask=torch.ones(3, 2, dtype=torch.bool))


def test_topk_mask_refuses_empty_or_non_tensor_scores():
    for scores in (torch.zeros(0), "scores"):
        with pytest.raises(ValueError, match="scores must be a non-empty tensor"):
            topk_mask(scores, 0.5)
