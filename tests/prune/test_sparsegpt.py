"""SparseGPT: the first pruned column's update is the closed-form OBS solution (fp64); the blocked
implementation equals the unblocked column loop; exact counts and N:M patterns; bad input."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import overparam as op
from overparam.backend.linalg import NotPositiveDefiniteError
from overparam.backend.topk import topk_mask
from overparam.prune.matrix_view import input_rows
from overparam.prune.sparsegpt import sparsegpt_matrix

D = torch.float64


def _problem(r, d, rows, seed=0):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(rows, d, generator=g, dtype=D) @ torch.randn(d, d, generator=g, dtype=D)  # correlated inputs
    return torch.randn(r, d, generator=g, dtype=D), X.T @ X, X


@pytest.mark.parametrize("damping", [0.0, 0.05])
def test_first_column_update_is_the_closed_form_obs_solution(damping):
    """Pruning only w_0 of each row: ŵ = w − w_0 / [H⁻¹]_00 · H⁻¹[0, :] (OBS), and the loss increase is w_0² / (2[H⁻¹]_00)."""
    W, H, X = _problem(3, 6, 40)
    W[:, 0] = 1e-6 * torch.tensor([1.0, -2.0, 3.0], dtype=D)  # the smallest score in every row: pruned first
    Hd = H + damping * H.diagonal().mean() * torch.eye(6, dtype=D)
    res = sparsegpt_matrix(W, H, 1 / 6, blocksize=6, damping=damping, impl="reference")
    assert res.mask[:, 0].logical_not().all() and res.mask[:, 1:].all()
    Hinv = torch.linalg.inv(Hd)
    expected = W - (W[:, :1] / Hinv[0, 0]) * Hinv[0:1, :]
    torch.testing.assert_close(res.weight, expected, rtol=1e-10, atol=1e-12)
    blocked = sparsegpt_matrix(W, H, 1 / 6, blocksize=6, damping=damping, impl="blocked")
    torch.testing.assert_close(blocked.weight, expected, rtol=1e-10, atol=1e-12)
    # the OBS loss increase ½ δᵀHδ equals w_0² / (2 [H⁻¹]_00)
    delta = res.weight - W
    torch.testing.assert_close(0.5 * torch.einsum("ri,ij,rj->r", delta, Hd, delta), W[:, 0] ** 2 / (2 * Hinv[0, 0]))


@settings(max_examples=12, deadline=None)
@given(r=st.integers(1, 5), groups=st.integers(1, 12), blocksize=st.sampled_from([4, 8, 12, 20, 40]),
       sparsity=st.sampled_from([0.0, 0.3, 0.5, 0.75]), seed=st.integers(0, 100))
def test_blocked_equals_the_unblocked_obs_loop_unstructured(r, groups, blocksize, sparsity, seed):
    d = 4 * groups + 2                            # the last block is partial; blocks > 16: sub-blocks of 16
    W, H, _ = _problem(r, d, 3 * d, seed)
    ref = sparsegpt_matrix(W, H, sparsity, blocksize=blocksize, impl="reference")
    blk = sparsegpt_matrix(W, H, sparsity, blocksize=blocksize, impl="blocked")
    assert torch.equal(ref.mask, blk.mask)
    torch.testing.assert_close(blk.weight, ref.weight, rtol=1e-9, atol=1e-10)
    assert int((~blk.mask).sum()) == op.prune.n_pruned(sparsity, r * d)      # exact count over the layer
    assert bool((blk.weight[~blk.mask] == 0).all())


@pytest.mark.parametrize("n,m,blocksize", [(2, 4, 8), (1, 3, 6), (3, 4, 4), (1, 2, 16),
                                           (2, 4, 40), (1, 3, 45), (3, 8, 48), (5, 24, 48)])
def test_blocked_equals_the_unblocked_obs_loop_nm(n, m, blocksize):
    """Blocks above 16 columns run in sub-blocks of a multiple of m (16, 18, 16, 24): groups never straddle them."""
    d = 4 * m * 3 if blocksize < 40 else 2 * blocksize + 2 * m
    W, H, _ = _problem(5, d, 2 * d, seed=n + m)
    ref = sparsegpt_matrix(W, H, n=n, m=m, blocksize=blocksize, impl="reference")
    blk = sparsegpt_matrix(W, H, n=n, m=m, blocksize=blocksize, impl="blocked")
    assert torch.equal(ref.mask, blk.mask)
    torch.testing.assert_close(blk.weight, ref.weight, rtol=1e-9, atol=1e-10)
    assert op.prune.is_nm(blk.mask, n, m)


def test_updates_lie_between_masking_alone_and_the_least_squares_optimum_of_the_mask():
    """‖X(W − Ŵ)ᵀ‖ of SparseGPT is below the same mask without updates and above the optimum on
    that mask (per row: least squares on the kept inputs)."""
    W, H, X = _problem(8, 32, 200, seed=3)
    res = sparsegpt_matrix(W, H, 0.5, blocksize=8)
    err = lambda V: float((X @ (W - V).T).norm())  # noqa: E731
    best = torch.zeros_like(W)
    for i in range(W.shape[0]):
        k = res.mask[i]
        best[i, k] = torch.linalg.lstsq(X[:, k], X @ W[i], driver="gelsd").solution
    assert err(best) <= err(res.weight) * (1 + 1e-9)
    assert err(res.weight) < 0.9 * err(W * res.mask)


def test_isotropic_inputs_reduce_sparsegpt_to_magnitude_pruning():
    """With ``H = c·I`` (uncorrelated inputs of equal norm) the OBS update is zero and the score
    ``w²/U_jj²`` is ``w²·c'``: SparseGPT (one block spanning the layer) is layer-wise magnitude
    pruning, weights unchanged. Its gain over magnitude comes only from correlated or unequal
    inputs (why it gains little on the LayerNorm'd inputs of a small transformer, docs/prune.md)."""
    g = torch.Generator().manual_seed(5)
    W = torch.randn(6, 16, generator=g, dtype=D)
    Q = torch.linalg.qr(torch.randn(40, 16, generator=g, dtype=D)).Q * 3.0     # QᵀQ = 9·I
    res = sparsegpt_matrix(W, Q.T @ Q, 0.5, blocksize=16)
    want = ~topk_mask(W.abs().flatten(), 48, largest=False).reshape(6, 16)
    assert torch.equal(res.mask, want)
    torch.testing.assert_close(res.weight, W * want, rtol=1e-12, atol=1e-12)
    Xc = Q @ torch.randn(16, 16, generator=g, dtype=D)                        # correlated: the update helps
    assert not torch.allclose(sparsegpt_matrix(W, Xc.T @ Xc, 0.5, blocksize=16).weight, W * want)


def test_dead_inputs_are_zeroed_and_singular_gram_needs_damping():
    W, H, X = _problem(3, 8, 40)
    H[2, :] = 0
    H[:, 2] = 0                                   # input 2 is always zero
    res = sparsegpt_matrix(W, H, 0.25, damping=0.0)
    assert bool((res.weight[:, 2] == 0).all())
    Xs = X[:5]                                    # 5 rows, 8 inputs: XᵀX has rank 5
    with pytest.raises(NotPositiveDefiniteError, match="singular.*damping"):
        sparsegpt_matrix(W, Xs.T @ Xs, 0.5, damping=0.0)
    assert isinstance(NotPositiveDefiniteError("x"), ValueError)
    assert sparsegpt_matrix(W, Xs.T @ Xs, 0.5, damping=0.01).mask.sum() == 12


def test_bad_input_is_refused_with_the_argument_named():
    W, H, _ = _problem(2, 8, 20)
    with pytest.raises(ValueError, match="n, m"):
        sparsegpt_matrix(W, H, n=4, m=4)
    with pytest.raises(ValueError, match="blocksize"):
        sparsegpt_matrix(W, H, n=2, m=4, blocksize=6)
    with pytest.raises(ValueError, match="sparsity"):
        sparsegpt_matrix(W, H, 0.5, n=2, m=4)
    with pytest.raises(ValueError, match="sparsity"):
        sparsegpt_matrix(W, H, 1.0)
    with pytest.raises(ValueError, match="gram"):
        sparsegpt_matrix(W, H[:4, :4], 0.5)
    with pytest.raises(ValueError, match="damping"):
        sparsegpt_matrix(W, H, 0.5, damping=-1.0)


def test_model_level_prunes_in_place_linear_and_conv():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(4, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Flatten(),
                              torch.nn.Linear(8 * 5 * 5, 12)).double()
    dense = [p.detach().clone() for p in net.parameters()]
    x = torch.randn(16, 4, 5, 5, dtype=D).cumsum(-1).cumsum(-2)      # smooth images: correlated patches
    masks = op.prune.sparsegpt_(net, (x, None), n=2, m=4)
    assert list(masks) == ["0.weight", "3.weight"]
    assert op.prune.is_nm(masks["0.weight"], 2, 4) and op.prune.is_nm(masks["3.weight"], 2, 4)
    assert bool((net[0].weight[~masks["0.weight"]] == 0).all())
    assert torch.equal(net[0].bias, dense[1])                     # biases untouched
    # the conv layer equals SparseGPT on its unfolded patches (channels last), and beats magnitude 2:4
    conv = torch.nn.Conv2d(4, 8, 3, padding=1).double()
    conv.load_state_dict({"weight": dense[0], "bias": dense[1]})
    rows = input_rows(conv, x)
    W = dense[0].permute(0, 2, 3, 1).reshape(8, -1)
    expected = sparsegpt_matrix(W, rows.T @ rows, n=2, m=4)
    got = net[0].weight.detach().permute(0, 2, 3, 1).reshape(8, -1)
    torch.testing.assert_close(got, expected.weight, rtol=1e-9, atol=1e-12)
    mag = dense[0] * op.prune.nm_mask(dense[0].abs(), 2, 4)
    f = lambda w: float((torch.nn.functional.conv2d(x, w, padding=1) - conv(x)).norm())  # noqa: E731
    assert f(net[0].weight.detach()) < 0.8 * f(mag)
