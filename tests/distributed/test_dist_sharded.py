"""hessian.DistributedOperator on sharded (DTensor) vectors of an FSDP2 model, 2 gloo ranks, vs one process."""

import pytest
import torch
from _dist_launch import register, results
from _dist_problem import SPLIT, expect_error as _error, mse, problem as _problem

from overparam import hessian as H
from overparam.backend import dist as opdist
from overparam.backend import sharded, vec
from overparam.testing import tanh_mlp


def _low_rank():
    g = torch.Generator().manual_seed(2)
    return torch.randn(31, 2, generator=g, dtype=torch.float64) @ torch.randn(2, 4, generator=g, dtype=torch.float64)


def _full(vs, batch: int | None = None) -> list:
    """A tuple of DTensors as the full flat vector (``batch=B``: ``(B, n)``), as a list."""
    return torch.cat([t.full_tensor().reshape(-1 if batch is None else (batch, -1)) for t in vs], dim=-1).tolist()


def _fsdp_setup(rank, dtype=torch.float64):
    """The FSDP2 model (Shard(0) parameters), this rank's samples, and v as DTensors in the layout."""
    from torch.distributed.fsdp import fully_shard

    net, x, y, v = (t.to(dtype) for t in _problem())
    for layer in (net[0], net[2]):
        fully_shard(layer)
    fully_shard(net)
    params = list(net.parameters())
    vfull = torch.split(v, [p.numel() for p in params])
    vd = tuple(opdist.dtensor_like(opdist.local_part(t.view(p.shape), p), p) for t, p in zip(vfull, params))
    return net, x, y, v, vfull, vd, slice(0, SPLIT) if rank == 0 else slice(SPLIT, None)


def _oracle():
    """One process on all the data: the model, data, v, the Hessian operator and H v."""
    net, x, y, v = _problem()
    Hs = H.hessian(net, mse, (x, y))
    return net, x, y, v, Hs, Hs @ v


@register
def _sharded_worker(rank, world):
    from torch.distributed.tensor import DTensor, Replicate

    net, x, y, v, vfull, vd, sl = _fsdp_setup(rank)
    A = H.distributed_hessian(net, mse, (x[sl], y[sl]), vectors="sharded")
    sp, params = A.space, list(net.parameters())
    V = torch.stack([v, -2 * v])  # (2, 31): a batch of two
    Vd = sp.wrap(vec.unflatten(sp.localize(V), sp.local_shapes), batch=2)
    seed = opdist.broadcast_seed(None)
    Q, R = sharded.qr(sp, sp.localize(_low_rank().T).T)  # tall-skinny QR of rows split over the ranks
    eig = H.lanczos(A, k=5, which="LM", tol=1e-12, generator=11)
    out = {
        "qr": (Q.tolist(), R.tolist()), "n_local": A.n, "index": sp.index.tolist(),
        "hv": _full(A @ vd), "hv_flat": (A @ sp.localize(v)).tolist(), "block": _full(A.matmat(Vd), batch=2),
        "grad": A.gradient().tolist(),
        "eig": eig.values.tolist(), "eig_vectors": eig.matrix().tolist(),
        "hutch": float(H.hutchinson(A, 20, generator=seed).mean), "seed": seed,
        "hpp": float(H.hutchpp(A, 21, generator=3).mean), "xtrace": float(H.xtrace(A, 20, generator=3).mean),
        "slq": H.slq(A, 2, 12, generator=3).nodes.tolist(),
        "lmax": float(H.lambda_max(A, generator=3, tol=1e-10).values[0]),
        "power": H.power_iteration(A, k=2, tol=1e-10, generator=3).values.tolist(),
        "ggn": _full(H.distributed_ggn(net, mse, (x[sl], y[sl]), vectors="sharded") @ vd),
        # mismatched layouts: the same ValueError on both ranks, never a hang
        "bad_full": _error(A.matvec, vd if rank == 0 else v),
        "bad_replicated": _error(A.matvec, vd if rank == 0 else tuple(  # no collective to build it
            DTensor.from_local(t.view(p.shape), p.device_mesh, [Replicate()]) for t, p in zip(vfull, params))),
        "bad_block": _error(A.matmat, Vd if rank == 0 else tuple(t[:1] for t in Vd)),
        "bad_model": _error(H.distributed_hessian, tanh_mlp([3, 6, 1], generator=0), mse, (x, y), vectors="sharded"),
    }
    return out


@pytest.mark.dist
def test_sharded_vectors_equal_one_process(gloo):
    net, x, y, v, Hs, hv = _oracle()
    eig = H.lanczos(Hs, k=5, which="LM", tol=1e-12, generator=11)
    r0, r1 = results(gloo, _sharded_worker)
    assert r0["n_local"] + r1["n_local"] == 31 and max(r0["n_local"], r1["n_local"]) < 31  # each holds its share
    assert sorted(r0["index"] + r1["index"]) == list(range(31))

    def f64(a):
        return torch.tensor(a, dtype=torch.float64)

    for r in (r0, r1):
        torch.testing.assert_close(f64(r["hv"]), hv, rtol=0, atol=1e-10)
        torch.testing.assert_close(f64(r["hv_flat"]), hv[r["index"]], rtol=0, atol=1e-10)
        torch.testing.assert_close(f64(r["block"]), torch.stack([hv, -2 * hv]), rtol=0, atol=1e-10)
        torch.testing.assert_close(f64(r["grad"]), Hs.gradient()[r["index"]], rtol=0, atol=1e-10)
        torch.testing.assert_close(f64(r["ggn"]), H.ggn(net, mse, (x, y)) @ v, rtol=0, atol=1e-10)
    Q = torch.empty(31, 4, dtype=torch.float64)  # the ranks' rows of Q, reassembled; R is the same on both
    Q[r0["index"]], Q[r1["index"]] = f64(r0["qr"][0]), f64(r1["qr"][0])
    torch.testing.assert_close(Q @ f64(r0["qr"][1]), _low_rank(), rtol=0, atol=1e-12)  # rank 2 of 4: still exact
    torch.testing.assert_close(Q.T @ Q, torch.eye(4, dtype=torch.float64), rtol=0, atol=1e-12)
    assert r0["qr"][1] == r1["qr"][1]
    for key in ("eig", "hutch", "hpp", "xtrace", "slq", "lmax", "power", "seed"):
        assert r0[key] == r1[key], key  # the solvers' scalars are bitwise identical on every rank
    torch.testing.assert_close(f64(r0["eig"]), eig.values, rtol=0, atol=1e-10)
    assert eig.values.abs().min() > 1e-3  # five genuine eigenvalues
    X = torch.empty(31, 5, dtype=torch.float64)  # the ranks' rows of the eigenvectors, reassembled
    X[r0["index"]], X[r1["index"]] = f64(r0["eig_vectors"]), f64(r1["eig_vectors"])
    torch.testing.assert_close((X.T @ eig.matrix()).abs(), torch.eye(5, dtype=torch.float64), rtol=0, atol=1e-8)
    for key, fn, kw in (("hutch", H.hutchinson, dict(probes=20, generator=r0["seed"])),
                        ("hpp", H.hutchpp, dict(probes=21, generator=3)), ("xtrace", H.xtrace, dict(probes=20, generator=3))):
        want = float(fn(Hs, **kw).mean)
        assert abs(r0[key] - want) <= 1e-12 * abs(want), key  # same probes; only the summation order differs
    torch.testing.assert_close(f64(r0["slq"]), H.slq(Hs, 2, 12, generator=3).nodes, rtol=0, atol=1e-8)
    assert abs(r0["lmax"] - float(H.lambda_max(Hs, generator=3, tol=1e-10).values[0])) < 1e-10
    torch.testing.assert_close(f64(r0["power"]), H.power_iteration(Hs, k=2, tol=1e-10, generator=3).values,
                               rtol=0, atol=1e-8)
    for r in (r0, r1):
        assert "ranks disagree on the vector layout" in r["bad_full"], r["bad_full"]
        assert "ranks disagree on the vector layout" in r["bad_replicated"], r["bad_replicated"]
        assert "ranks disagree on the sharded vectors' layout" in r["bad_block"], r["bad_block"]
        assert "sharded vectors need Shard(d) DTensor parameters" in r["bad_model"], r["bad_model"]


@register
def _fd_worker(rank, world):
    """The memory-true route: central differences through FSDP's own forward/backward."""
    net, x, y, v, _, vd, sl = _fsdp_setup(rank)
    batches = [(x[sl][:4], y[sl][:4]), (x[sl][4:], y[sl][4:])]
    shards = [p.to_local().clone() for p in net.parameters()]
    mse(net(x[sl]), y[sl]).backward()  # a user's gradient, which the products must leave alone
    grads = [p.grad.to_local().clone() for p in net.parameters()]
    A = H.distributed_hessian(net, mse, batches, vectors="sharded", backend="finite_difference")
    out = {"hv": _full(A @ vd), "index": A.space.index.tolist(), "grad": A.gradient().tolist(),
           "eig": H.lanczos(A, k=5, which="LM", tol=1e-8, generator=11).values.tolist(),
           "hutch": float(H.hutchinson(A, 8, generator=5).mean),
           "bad": _error(A.matvec, vd if rank == 0 else v)}
    out["untouched"] = all(torch.equal(p.to_local(), s) and torch.equal(p.grad.to_local(), g)
                           for p, s, g in zip(net.parameters(), shards, grads))
    net, x, y, _, _, vd, sl = _fsdp_setup(rank, torch.float32)  # the same route in fp32
    out["hv32"] = _full(H.distributed_hessian(net, mse, (x[sl], y[sl]), vectors="sharded",
                                              backend="finite_difference") @ vd)
    return out


@pytest.mark.dist
def test_fsdp_finite_difference_route(gloo):
    net, x, y, v, Hs, hv = _oracle()
    r0, r1 = results(gloo, _fd_worker)
    err = max((torch.tensor(r["hv"], dtype=torch.float64) - hv).abs().max() for r in (r0, r1))
    print(f"FSDP finite-difference HVP: max abs error {float(err):.2e} (|Hv|max {float(hv.abs().max()):.2e})")
    assert err < 1e-9  # measured 2.0e-10 (|Hv| ~ 2.3): the central difference's h² and eps/h terms
    err32 = max((torch.tensor(r["hv32"], dtype=torch.float64) - hv).abs().max() for r in (r0, r1))
    print(f"FSDP finite-difference HVP in fp32: max abs error {float(err32):.2e}")
    assert err32 < 1e-3  # measured 1.3e-4 against the fp64 product (fp32 data and model included)
    for r in (r0, r1):
        torch.testing.assert_close(torch.tensor(r["grad"], dtype=torch.float64), Hs.gradient()[r["index"]],
                                   rtol=0, atol=1e-12)
        assert r["untouched"]
        assert "ranks disagree on the sharded vectors' layout" in r["bad"], r["bad"]
    assert r0["eig"] == r1["eig"] and r0["hutch"] == r1["hutch"]
    eig = H.lanczos(Hs, k=5, which="LM", tol=1e-12, generator=11).values
    e = (torch.tensor(r0["eig"], dtype=torch.float64) - eig).abs().max()
    print(f"FSDP finite-difference top-5 Lanczos: max abs error {float(e):.2e}")
    assert e < 1e-10  # measured 2.0e-11
    eh = abs(r0["hutch"] - float(H.hutchinson(Hs, 8, generator=5).mean))
    print(f"FSDP finite-difference Hutchinson (8 probes, same seed): abs error {eh:.2e}")
    assert eh < 1e-9
