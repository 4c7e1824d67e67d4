import pytest
import torch

from overparam.problems import completion


@pytest.mark.parametrize("symmetric", [False, True])
def test_loss_matches_explicit_formula(symmetric):
    P = completion(n=8, r=2, p=0.4, symmetric=symmetric, generator=0)
    X = P.init("small", rank=3, scale=0.7, generator=1)
    F = X if symmetric else X
    M = P.product(F)
    mask = P.mask
    expect = (0.25 if symmetric else 0.5) / P.p * ((M - P.M_star)[mask]).square().sum()
    torch.testing.assert_close(P.loss(F), expect, rtol=1e-12, atol=0)
    if symmetric:
        assert torch.equal(mask, mask.T)
    # full index set gives the full loss; minibatch estimate is unbiased over all single entries
    allidx = torch.arange(P.num_observed)
    torch.testing.assert_close(P.loss(F, entries=allidx), expect, rtol=1e-12, atol=0)
    singles = torch.stack([P.loss(F, entries=torch.tensor([i])) for i in range(P.num_observed)])
    torch.testing.assert_close(singles.mean(), expect, rtol=1e-12, atol=0)


def test_sampling_rate_seed_and_values():
    P = completion(n=60, r=2, p=0.3, generator=0)
    assert abs(P.num_observed / 3600 - 0.3) < 0.03
    assert torch.equal(P.values, P.M_star[P.rows, P.cols])
    Q = completion(n=60, r=2, p=0.3, generator=0)
    assert torch.equal(P.rows, Q.rows)
    g = torch.Generator().manual_seed(0)
    idx = P.minibatch(10, generator=g)
    assert idx.shape == (10,) and int(idx.max()) < P.num_observed


def test_l1_and_spectral_and_errors():
    P = completion(n=40, r=2, p=0.6, loss="l1", generator=0)
    L, R = P.init("spectral")
    r = (L @ R.T - P.M_star)[P.mask]
    torch.testing.assert_close(P.loss((L, R)), r.abs().mean(), rtol=1e-12, atol=0)
    assert float(P.relative_error((L, R))) < 0.6
    with pytest.raises(ValueError, match="p must"):
        completion(n=5, r=1, p=0.0)
    with pytest.raises(TypeError, match="asymmetric"):
        P.product(L)
