"""backend.sharded in one process: every helper is the plain torch operation (the 2-rank behaviour is
tested in tests/distributed/test_dist_sharded.py)."""

import pytest
import torch

from overparam.backend import sharded


def test_space_of_plain_tensors_holds_every_coordinate():
    S = sharded.ShardedSpace([torch.zeros(2, 3), torch.zeros(4)])
    assert (S.n, S.n_local, S.sizes) == (10, 10, [10])
    assert S.index.tolist() == list(range(10)) and S.order.tolist() == list(range(10))
    x = torch.randn(3, 10, dtype=torch.float64)
    assert torch.equal(S.localize(x), x) and torch.equal(S.gather(x), x)
    assert torch.equal(S.scatter(x, 0.25), 0.25 * x)
    with pytest.raises(ValueError, match="ranks disagree on the vector layout"):
        S.gather(x, ok=False)  # a bad input raises on every rank, here the only one
    with pytest.raises(ValueError, match=r"full must have shape \(\.\.\., 10\)"):
        S.localize(torch.zeros(9))


@pytest.mark.parametrize("bad, err", [(torch.zeros(3), TypeError), ([], TypeError), ([torch.zeros(2), 3], TypeError)])
def test_space_rejects_a_bad_layout(bad, err):
    with pytest.raises(err, match="layout"):
        sharded.ShardedSpace(bad)


def test_helpers_without_a_space_are_torch_itself():
    g = torch.Generator().manual_seed(0)
    Y = torch.randn(7, 3, generator=g, dtype=torch.float64)
    Q, R = sharded.qr(None, Y)
    Q0, R0 = torch.linalg.qr(Y)
    assert torch.equal(Q, Q0) and torch.equal(R, R0)
    assert torch.equal(sharded.norm(None, Y, dim=0), torch.linalg.vector_norm(Y, dim=0))
    t = torch.tensor([1.5])
    assert sharded.reduce(None, t) is t and sharded.localize(None, Y) is Y


def test_a_space_of_one_rank_gives_the_same_numbers():
    S = sharded.ShardedSpace([torch.zeros(7)])
    g = torch.Generator().manual_seed(1)
    Y = torch.randn(7, 2, generator=g, dtype=torch.float64) @ torch.randn(2, 4, generator=g, dtype=torch.float64)
    Q, R = sharded.qr(S, Y)  # rank 2 of 4 columns: still an exact factorisation with orthonormal Q
    torch.testing.assert_close(Q @ R, Y, rtol=0, atol=1e-12)
    torch.testing.assert_close(Q.T @ Q, torch.eye(4, dtype=torch.float64), rtol=0, atol=1e-12)
    torch.testing.assert_close(sharded.norm(S, Y, dim=0), torch.linalg.vector_norm(Y, dim=0), rtol=1e-14, atol=0)
