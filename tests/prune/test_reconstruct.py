"""Layer-wise reconstruction: the reference solves the normal equations on each row's kept set (fp64, checked
against an explicit solve and by the gradient of the quadratic, also by finite differences); ADMM converges
to it; the result is never worse than the mask without updates or than SparseGPT's weights on the same mask;
model level on the digits MLP and a small conv net (magnitude, Wanda, SparseGPT masks)."""

import copy

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import overparam as op
from overparam.backend.linalg import NotPositiveDefiniteError
from overparam.prune.reconstruct import reconstruct_matrix
from overparam.prune.sparsegpt import sparsegpt_matrix

D = torch.float64


def _problem(r, d, rows, seed=0, dead=()):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(rows, d, generator=g, dtype=D) @ torch.randn(d, d, generator=g, dtype=D)   # correlated inputs
    X[:, list(dead)] = 0.0
    return torch.randn(r, d, generator=g, dtype=D), X.T @ X


def _damped(W, H, damping):
    """The objective's ``(W₀, A)`` written out: dead inputs (H_jj = 0) get A_jj = 1 + λ and zero weights."""
    H, W = H.clone(), W.clone()
    dead = H.diagonal() == 0
    H.diagonal()[dead] = 1.0
    W[:, dead] = 0.0
    return W, H + damping * H.diagonal().mean() * torch.eye(H.shape[0], dtype=D)


def _objective(W0, A, V):
    E = W0 - V
    return float(torch.einsum("ri,ij,rj->", E, A, E))


def test_reference_solves_the_normal_equations_on_the_kept_set():
    W, H = _problem(5, 10, 40, dead=(3,))
    mask = torch.rand(5, 10, generator=torch.Generator().manual_seed(1)) < 0.6
    mask[1] = True                                                # an all-kept row
    mask[2] = False                                               # an all-pruned row
    res = reconstruct_matrix(W, H, mask, damping=0.02, impl="reference")
    W0, A = _damped(W, H, 0.02)
    assert torch.equal(res.mask, mask) and bool((res.weight[~mask] == 0).all())
    for i in range(5):
        k = mask[i].nonzero().squeeze(1)
        want = torch.zeros(10, dtype=D)
        if len(k):
            want[k] = torch.linalg.solve(A[k][:, k], (A @ W0[i])[k])
        torch.testing.assert_close(res.weight[i], want, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(res.weight[1], W0[1], rtol=0, atol=1e-12)     # all kept: nothing to change
    grad = 2 * (res.weight - W0) @ A                              # zero on the kept entries
    assert float(grad[mask].abs().max()) < 1e-9 * float(A.abs().max() * W0.abs().max())
    # finite differences along each kept coordinate agree (central difference of a quadratic is exact up to rounding)
    f0, h = _objective(W0, A, res.weight), 1e-4
    for i, j in mask.nonzero().tolist()[:8]:
        e = torch.zeros_like(W0)
        e[i, j] = h
        fd = (_objective(W0, A, res.weight + e) - _objective(W0, A, res.weight - e)) / (2 * h)
        assert abs(fd) < 1e-6 * max(f0, 1.0)
        assert _objective(W0, A, res.weight + e) > f0


@settings(max_examples=15, deadline=None)
@given(r=st.integers(1, 6), d=st.sampled_from([4, 8, 12, 16]), damping=st.sampled_from([0.0, 0.01, 0.3]),
       keep=st.sampled_from([0.25, 0.5, 0.75]), dead=st.booleans(), seed=st.integers(0, 50))
def test_optimal_on_its_mask_admm_converges_and_beats_masking_and_sparsegpt(r, d, damping, keep, dead, seed):
    W, H = _problem(r, d, 3 * d, seed, dead=(1,) if dead else ())
    g = torch.Generator().manual_seed(seed)
    mask = torch.rand(r, d, generator=g) < keep
    mask[0] = True
    if r > 1:
        mask[-1] = False
    W0, A = _damped(W, H, damping)
    ref = reconstruct_matrix(W, H, mask, damping=damping, impl="reference")
    admm = reconstruct_matrix(W, H, mask, damping=damping, impl="admm", iterations=5000, tol=1e-13)
    assert bool((admm.weight[~mask] == 0).all())
    scale = max(float(ref.weight.norm()), 1e-300)
    assert float((admm.weight - ref.weight).norm()) <= 1e-6 * scale
    f_ref = _objective(W0, A, ref.weight)
    assert f_ref <= _objective(W0, A, W0 * mask) * (1 + 1e-12) + 1e-12
    assert _objective(W0, A, admm.weight) <= _objective(W0, A, W0 * mask) * (1 + 1e-9) + 1e-12
    sg = sparsegpt_matrix(W, H, 1 - keep, blocksize=4, damping=damping)       # its own mask and weights
    on_sg = reconstruct_matrix(W, H, sg.mask, damping=damping, impl="reference")
    assert _objective(W0, A, on_sg.weight) <= _objective(W0, A, sg.weight) * (1 + 1e-10) + 1e-12


def test_admm_default_tolerance_is_close_to_the_optimum():
    W, H = _problem(64, 128, 512, seed=3)
    mask = W.abs() >= W.abs().median()
    W0, A = _damped(W, H, 0.01)
    best = _objective(W0, A, reconstruct_matrix(W, H, mask, impl="reference").weight)
    assert _objective(W0, A, reconstruct_matrix(W, H, mask).weight) <= best * (1 + 1e-6)
    few = _objective(W0, A, reconstruct_matrix(W, H, mask, iterations=3).weight)
    assert best < few < _objective(W0, A, W0 * mask)                # cut short: still an improvement


def test_bad_input_is_refused_with_the_argument_named():
    W, H = _problem(3, 8, 5)                                      # 5 rows, 8 inputs: singular Gram matrix
    mask = W.abs() > 0.5
    with pytest.raises(ValueError, match="mask"):
        reconstruct_matrix(W, H, mask[:, :4])
    with pytest.raises(TypeError, match="mask"):
        reconstruct_matrix(W, H, mask.double())
    for impl in ("reference", "admm"):
        with pytest.raises(NotPositiveDefiniteError, match="singular.*damping"):
            reconstruct_matrix(W, H, mask, damping=0.0, impl=impl)
    assert reconstruct_matrix(W, H, mask, damping=0.01).weight.isfinite().all()
    with pytest.raises(ValueError, match="gram"):
        reconstruct_matrix(W, H[:4, :4], mask)
    with pytest.raises(ValueError, match="iterations"):
        reconstruct_matrix(W, H, mask, iterations=0)
    with pytest.raises(ValueError, match="tol"):
        reconstruct_matrix(W, H, mask, tol=-1.0)
    with pytest.raises(ValueError, match="damping"):
        reconstruct_matrix(W, H, mask, damping=-0.1)
    net = nn.Sequential(nn.Linear(4, 3), nn.Linear(3, 2))
    data, ones = (torch.randn(8, 4), None), torch.ones(3, 4, dtype=torch.bool)
    for bad in ({"2.weight": ones}, {"0.weight": ones[:2]}, {"0.bias": ones[0, :3]}):
        with pytest.raises(ValueError, match="masks"):
            op.prune.reconstruct_(net, data, bad)
    with pytest.raises(TypeError, match="masks"):            # a float mask: the type, as everywhere in prune
        op.prune.reconstruct_(net, data, {"0.weight": ones.double()})
    with pytest.raises(ValueError, match="masks: no target layer"):
        op.prune.reconstruct_(net, data, {"0.weight": ones}, exclude="0")
    with pytest.raises(TypeError, match="masks"):
        op.prune.reconstruct_(net, data, [ones])


def _masks(net, method, cal, pattern):
    if method == "magnitude":
        return op.prune.nm_masks(net, 2, 4) if "n" in pattern else op.prune.magnitude(net, 0.5, scope="layerwise")
    if method == "wanda":
        return op.prune.wanda(net, cal, **pattern)
    return op.prune.sparsegpt_(copy.deepcopy(net), cal, **pattern)


@pytest.mark.parametrize("pattern", [{"sparsity": 0.5}, {"n": 2, "m": 4}], ids=["50%", "2:4"])
def test_digits_mlp_reconstruction_improves_every_method_mask(pattern):
    pytest.importorskip("sklearn")
    from _digits import calibration_mlp
    net, cal, held = calibration_mlp()
    for method in ("magnitude", "wanda", "sparsegpt"):
        masks = _masks(net, method, cal, pattern)
        alone = copy.deepcopy(net)
        if method == "sparsegpt":
            op.prune.sparsegpt_(alone, cal, **pattern)
        else:
            op.prune.apply_masks_(alone, masks)
        before = op.prune.reconstruction(net, alone, held).mean_error
        for sequential in (True, False):
            rec = copy.deepcopy(net)
            applied = op.prune.reconstruct_(rec, cal, masks, sequential=sequential)
            assert list(applied) == list(masks) and all(torch.equal(applied[k], masks[k]) for k in masks)
            after = op.prune.reconstruction(net, rec, held).mean_error
            assert after <= before * (0.9 if method == "magnitude" else 1.0), (method, sequential, after, before)


def test_conv_net_in_place_leaves_everything_else_untouched():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(4, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(),
                        nn.Linear(8 * 5 * 5, 12)).eval()
    x = torch.randn(48, 4, 5, 5).cumsum(-1).cumsum(-2)              # smooth images: correlated patches
    masks = op.prune.magnitude(net, 0.5, scope="layerwise")
    frozen = {k: v.clone() for k, v in masks.items()}
    alone = copy.deepcopy(net)
    op.prune.apply_masks_(alone, masks)
    rec = copy.deepcopy(net)
    keys, order = list(rec.state_dict()), [n for n, _ in rec.named_parameters()]
    op.prune.reconstruct_(rec, (x, None), masks, impl="reference")
    assert all(torch.equal(masks[k], frozen[k]) for k in masks)   # the masks themselves are not touched
    assert list(rec.state_dict()) == keys and [n for n, _ in rec.named_parameters()] == order
    assert not rec.training and all(not m.training for m in rec.modules())
    for name in ("0.bias", "1.weight", "1.bias", "4.bias", "1.running_mean"):
        assert torch.equal(rec.state_dict()[name], net.state_dict()[name]), name
    assert all(bool((dict(rec.named_parameters())[k][~m] == 0).all()) for k, m in masks.items())
    err = lambda m: op.prune.reconstruction(net, m, (x, None)).mean_error  # noqa: E731
    assert err(rec) < 0.7 * err(alone)
    # only the layers that have a mask (and are targets) change
    part = copy.deepcopy(net)
    op.prune.reconstruct_(part, (x, None), {"0.weight": masks["0.weight"]})
    assert torch.equal(part[4].weight, net[4].weight) and not torch.equal(part[0].weight, net[0].weight)
