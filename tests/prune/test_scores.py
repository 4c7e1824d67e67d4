import pytest
import torch
from torch.nn import functional as F

from overparam.backend import vec
from overparam.prune import scores as S
from overparam.prune.init import prune_at_init, synflow
from overparam.testing import assert_no_side_effects, dense_hessian, tanh_mlp


def _setup(seed=0):
    net = tanh_mlp([6, 12, 10, 3], generator=seed)  # 84+12+... ≈ 250 parameters, fp64
    g = torch.Generator().manual_seed(seed + 1)
    batch = (torch.randn(20, 6, generator=g, dtype=torch.float64), torch.randn(20, 3, generator=g, dtype=torch.float64))
    return net, batch


def test_snip_is_derivative_wrt_mask():
    net, (x, y) = _setup()
    ps = dict(net.named_parameters())
    names = ["0.weight", "2.weight", "4.weight"]

    def loss_of_c(*cs):
        p = dict(ps)
        for k, c in zip(names, cs):
            p[k] = ps[k].detach() * c
        return F.mse_loss(torch.func.functional_call(net, p, (x,)), y)

    ones = tuple(torch.ones_like(ps[k]) for k in names)
    d = torch.autograd.functional.jacobian(loss_of_c, ones)
    with assert_no_side_effects(net):
        s = S.snip_scores(net, F.mse_loss, (x, y))
    for k, dk in zip(names, d):
        torch.testing.assert_close(s[k], dk.abs(), rtol=1e-12, atol=1e-15)


def test_grasp_matches_dense_hessian_sign_pinned():
    net, batch = _setup()
    H = dense_hessian(net, F.mse_loss, batch)  # all parameters, named_parameters order
    names = [k for k, _ in net.named_parameters()]
    theta = vec.flatten([p.detach() for p in net.parameters()])
    f = lambda flat: F.mse_loss(torch.func.functional_call(net, dict(zip(names, vec.unflatten(flat, list(net.parameters())))), (batch[0],)), batch[1])
    g = torch.func.grad(f)(theta)
    # GraSP over the weights only: restrict H and g to the weight coordinates
    sizes = [p.numel() for p in net.parameters()]
    offs = torch.tensor([0] + sizes).cumsum(0).tolist()
    idx = torch.cat([torch.arange(offs[i], offs[i + 1]) for i, k in enumerate(names) if k.endswith("weight")])
    expect = -(theta[idx] * (H[idx][:, idx] @ g[idx]))
    with assert_no_side_effects(net):
        got = S.grasp_scores(net, F.mse_loss, batch)
    torch.testing.assert_close(torch.cat([v.reshape(-1) for v in got.values()]), expect, rtol=1e-10, atol=1e-14)


def test_hessian_diagonal_exact_and_hutchinson():
    net, batch = _setup()
    H = dense_hessian(net, F.mse_loss, batch)
    names = [k for k, _ in net.named_parameters()]
    sizes = [p.numel() for p in net.parameters()]
    offs = torch.tensor([0] + sizes).cumsum(0).tolist()
    dg = torch.diagonal(H)
    expect = {k: dg[offs[i]:offs[i + 1]].reshape(p.shape) for i, (k, p) in enumerate(net.named_parameters()) if k.endswith("weight")}
    exact = S.hessian_diagonal(net, F.mse_loss, batch, exclude="0", chunk=37)  # several uneven chunks
    assert set(exact) == {"2.weight", "4.weight"}
    for k in exact:
        torch.testing.assert_close(exact[k], expect[k], rtol=1e-10, atol=1e-14)
    est = S.hessian_diagonal(net, F.mse_loss, batch, probes=400, generator=0)
    err = torch.cat([(est[k] - expect[k]).reshape(-1) for k in est]).norm()
    ref = torch.cat([expect[k].reshape(-1) for k in est]).norm()
    offd = (H - torch.diag(dg)).norm()
    assert err < 3 * offd / 400 ** 0.5 + 1e-12 and err < ref  # Hutchinson error ~ ‖offdiag‖/√probes
    obd = S.obd_scores(net, F.mse_loss, batch)
    torch.testing.assert_close(obd["2.weight"], 0.5 * expect["2.weight"] * net[2].weight.detach() ** 2, rtol=1e-10, atol=0)
    assert not names[0].endswith("grad")


def test_synflow_conservation_fp64():
    g = torch.Generator().manual_seed(0)
    layers = []
    sizes = [5, 30, 20, 20, 4]
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        lin = torch.nn.utils.skip_init(torch.nn.Linear, a, b, bias=False)
        with torch.no_grad():
            lin.weight.copy_(torch.randn(b, a, generator=g))
        layers += [lin, torch.nn.ReLU()] if i < len(sizes) - 2 else [lin]
    net = torch.nn.Sequential(*layers)
    with assert_no_side_effects(net):
        s = S.synflow_scores(net, (5,))
    sums = torch.stack([v.sum() for v in s.values()])
    assert all(v.dtype == torch.float64 for v in s.values())
    torch.testing.assert_close(sums, sums[0].expand(len(sums)), rtol=1e-10, atol=0)
    assert net[0].weight.dtype == torch.float32  # the model itself is untouched


def test_synflow_iterative_exact_density_and_no_layer_collapse():
    net = torch.nn.Sequential(torch.nn.Linear(10, 100), torch.nn.ReLU(), torch.nn.Linear(100, 100), torch.nn.ReLU(), torch.nn.Linear(100, 2))
    m = synflow(net, 0.99, input_shape=(10,), iterations=20)
    total = sum(v.numel() for v in m.values())
    assert sum(int((~v).sum()) for v in m.values()) == int(0.99 * total + 0.5)
    assert all(v.any() for v in m.values())  # SynFlow avoids layer collapse


def test_movement_and_random():
    net, (x, y) = _setup()
    mv = S.Movement()
    for _ in range(2):
        net.zero_grad()
        F.mse_loss(net(x), y).backward()
        mv.update(net)
    torch.testing.assert_close(mv.scores["0.weight"], -2 * net[0].weight.detach() * net[0].weight.grad)
    assert mv.steps == 2
    state = torch.get_rng_state()
    a = S.random_scores(net, generator=3)
    assert torch.equal(state, torch.get_rng_state())
    assert torch.equal(a["0.weight"], S.random_scores(net, generator=3)["0.weight"])


@pytest.mark.parametrize("method", ["magnitude", "random", "snip", "grasp", "synflow", "obd"])
def test_prune_at_init_exact_count(method):
    net, batch = _setup()
    m = prune_at_init(net, method, 0.8, loss_fn=F.mse_loss, data=batch, input_shape=(6,), iterations=5, generator=0)
    total = sum(v.numel() for v in m.values())
    assert sum(int((~v).sum()) for v in m.values()) == int(0.8 * total + 0.5)


def test_prune_at_init_bad_input():
    net, batch = _setup()
    with pytest.raises(ValueError, match="method"):
        prune_at_init(net, "bogus", 0.5)
    with pytest.raises(ValueError, match="needs loss_fn"):
        prune_at_init(net, "snip", 0.5)
    with pytest.raises(ValueError, match="input_shape"):
        prune_at_init(net, "synflow", 0.5)


def test_prune_at_init_grasp_removes_largest_S():
    net, batch = _setup()
    S_ = S.grasp_scores(net, F.mse_loss, batch)
    m = prune_at_init(net, "grasp", 0.5, loss_fn=F.mse_loss, data=batch)
    flat_s = torch.cat([S_[k].reshape(-1) for k in m])
    flat_m = torch.cat([m[k].reshape(-1) for k in m])
    assert flat_s[~flat_m].min() >= flat_s[flat_m].max()  # GraSP prunes the largest −θ⊙Hg


def test_synflow_copy_in_eval_mode_with_batchnorm():
    g = torch.Generator().manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.BatchNorm1d(6), torch.nn.ReLU(), torch.nn.Linear(6, 2))
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g))
    net.train()
    with assert_no_side_effects(net):
        sc = S.synflow_scores(net, (4,))  # a train-mode BatchNorm on one all-ones input would raise
    assert net.training and all(torch.isfinite(v).all() and v.dtype == torch.float64 for v in sc.values())


def test_second_order_scores_refuse_train_mode_batchnorm():
    from overparam.hessian import NonDeterministicModelError

    net = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.BatchNorm1d(6), torch.nn.Tanh(), torch.nn.Linear(6, 1)).double()
    g = torch.Generator().manual_seed(0)
    batch = (torch.randn(8, 4, generator=g, dtype=torch.float64), torch.randn(8, 1, generator=g, dtype=torch.float64))
    rm = net[1].running_mean.clone()
    for fn in (S.grasp_scores, S.hessian_diagonal):
        with pytest.raises(NonDeterministicModelError, match="eval"):
            fn(net, F.mse_loss, batch)
    assert torch.equal(rm, net[1].running_mean)  # running statistics untouched
    net.eval()
    with assert_no_side_effects(net):
        assert set(S.grasp_scores(net, F.mse_loss, batch)) == {"0.weight", "3.weight"}


def test_snip_refuses_train_mode_dropout_like_the_second_order_scores():
    # issue 20: SNIP's scores on a train-mode Dropout model depended on the global RNG, where GraSP/OBD refused it
    from overparam.hessian import NonDeterministicModelError

    g = torch.Generator().manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.Dropout(0.5), torch.nn.Tanh(), torch.nn.Linear(6, 2))
    x, y = torch.randn(16, 4, generator=g), torch.randn(16, 2, generator=g)
    with assert_no_side_effects(net):
        for call in (lambda: S.snip_scores(net, F.mse_loss, (x, y)),
                     lambda: prune_at_init(net, "snip", 0.5, loss_fn=F.mse_loss, data=(x, y)),
                     lambda: S.grasp_scores(net, F.mse_loss, (x, y)),
                     lambda: S.obd_scores(net, F.mse_loss, (x, y))):
            with pytest.raises(NonDeterministicModelError, match="Dropout"):
                call()
    assert net.training
    net.eval()
    with assert_no_side_effects(net):
        s = S.snip_scores(net, F.mse_loss, (x, y))
    assert set(s) == {"0.weight", "3.weight"} and all(torch.isfinite(v).all() for v in s.values())


def test_snip_refuses_train_mode_batchnorm_and_leaves_its_statistics():
    from overparam.hessian import NonDeterministicModelError

    g = torch.Generator().manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.BatchNorm1d(6), torch.nn.Linear(6, 2))
    x, y = torch.randn(16, 4, generator=g), torch.randn(16, 2, generator=g)
    before = {k: b.clone() for k, b in net.named_buffers()}
    with assert_no_side_effects(net):
        with pytest.raises(NonDeterministicModelError, match="BatchNorm"):
            S.snip_scores(net, F.mse_loss, (x, y))
    assert all(torch.equal(before[k], b) for k, b in net.named_buffers()), "running statistics changed"


@pytest.mark.parametrize("fn", [S.snip_scores, S.grasp_scores, S.hessian_diagonal, S.obd_scores])
def test_data_that_is_not_a_batch_is_named(fn):
    """Issue 20: snip_scores(net, loss, (x,)) said 'not enough values to unpack'."""
    net, batch = _setup()
    with pytest.raises(ValueError, match=r"data must be one \(inputs, targets\) batch, got a tuple of length 1"):
        fn(net, F.mse_loss, (batch[0],))

