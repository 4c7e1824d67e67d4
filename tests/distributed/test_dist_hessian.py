"""hessian.distributed in a real 2-process gloo group (DDP) against one process on all the data."""

import pytest
import torch
from _dist_launch import register, results
from _dist_problem import SPLIT, expect_error as _expect_error, mse, problem as _problem

from overparam import hessian as H
from overparam.backend import dist as opdist
from overparam.testing import tanh_mlp


@register
def _worker(rank, world):
    net, x, y, v = _problem()
    sl = slice(0, SPLIT) if rank == 0 else slice(SPLIT, None)
    ddp = torch.nn.parallel.DistributedDataParallel(net)
    batches = [(x[sl][:4], y[sl][:4]), (x[sl][4:], y[sl][4:])]  # a loader of ragged batches
    Hd = H.distributed_hessian(ddp, mse, batches)
    seed = opdist.broadcast_seed(None)
    out = {
        "weight": Hd.weight, "hv": (Hd @ v).tolist(), "grad": Hd.gradient().tolist(),
        "block": Hd.matmat(torch.stack([v, 2 * v], 1)).tolist(),
        "eig": H.lanczos(Hd, k=5, which="LM", tol=1e-12, generator=11).values.tolist(),
        "hutch": float(H.hutchinson(Hd, 20, generator=seed).mean),
        "hpp": float(H.hutchpp(Hd, 21, generator=3).mean),
        "xtrace": float(H.xtrace(Hd, 20, generator=3).mean),
        "seed": seed,
        "slq": H.slq(Hd, 2, 12, generator=3).nodes.tolist(),
        "lmax": float(H.lambda_max(Hd, generator=3, tol=1e-10).values[0]),
        "ggn": (H.distributed_ggn(net, mse, (x[sl], y[sl]), samples=[SPLIT, 16 - SPLIT]) @ v).tolist(),
        # faults: each must raise the same ValueError on both ranks, never hang
        "bad_samples": _expect_error(H.distributed_hessian, net, mse, (x[sl], y[sl]), samples=[SPLIT + rank, 9]),
        "bad_probe": _expect_error(Hd.matvec, v + rank),
        "bad_shapes": _expect_error(H.distributed_hessian, tanh_mlp([3, 6 + rank, 1], generator=0), mse, (x, y)),
    }
    return out


@pytest.mark.dist
def test_ddp_curvature_equals_one_process(gloo):
    net, x, y, v = _problem()
    Hs = H.hessian(net, mse, (x, y))
    hv, grad = Hs @ v, Hs.gradient()
    eig = H.lanczos(Hs, k=5, which="LM", tol=1e-12, generator=11).values
    r0, r1 = results(gloo, _worker)
    assert r0["weight"] == SPLIT / 16 and r1["weight"] == (16 - SPLIT) / 16
    for key in ("hv", "grad", "block", "eig", "hutch", "hpp", "xtrace", "ggn", "seed", "slq", "lmax"):
        assert r0[key] == r1[key], key  # bitwise identical on every rank
    torch.testing.assert_close(torch.tensor(r0["hv"], dtype=torch.float64), hv, rtol=0, atol=1e-10)
    torch.testing.assert_close(torch.tensor(r0["grad"], dtype=torch.float64), grad, rtol=0, atol=1e-10)
    torch.testing.assert_close(torch.tensor(r0["block"], dtype=torch.float64), torch.stack([hv, 2 * hv], 1),
                               rtol=0, atol=1e-10)
    torch.testing.assert_close(torch.tensor(r0["eig"], dtype=torch.float64), eig, rtol=0, atol=1e-10)
    assert eig.abs().min() > 1e-3  # five genuine eigenvalues, not rounding noise
    for key, fn, kw in (("hutch", H.hutchinson, dict(probes=20, generator=r0["seed"])),
                        ("hpp", H.hutchpp, dict(probes=21, generator=3)), ("xtrace", H.xtrace, dict(probes=20, generator=3))):
        assert abs(r0[key] - float(fn(Hs, **kw).mean)) < 1e-10, key
    torch.testing.assert_close(torch.tensor(r0["slq"], dtype=torch.float64), H.slq(Hs, 2, 12, generator=3).nodes,
                               rtol=0, atol=1e-8)
    assert abs(r0["lmax"] - float(H.lambda_max(Hs, generator=3, tol=1e-10).values[0])) < 1e-10
    torch.testing.assert_close(torch.tensor(r0["ggn"], dtype=torch.float64), H.ggn(net, mse, (x, y)) @ v,
                               rtol=0, atol=1e-10)
    for r in (r0, r1):
        assert "ranks disagree on the declared samples" in r["bad_samples"]
        assert "ranks disagree on the probe vector" in r["bad_probe"]
        assert "ranks disagree on the operator's parameter shapes" in r["bad_shapes"]


def _fsdp_net():
    from torch.distributed.fsdp import fully_shard

    net, *_ = _problem()
    for layer in (net[0], net[2]):
        fully_shard(layer)
    return fully_shard(net)


@register
def _fsdp_worker(rank, world):
    """FSDP2 (Shard(0) DTensor parameters): the operators run on the gathered full parameters."""
    _, x, y, v = _problem()
    sl = slice(0, SPLIT) if rank == 0 else slice(SPLIT, None)
    net = _fsdp_net()
    shards = [p.to_local().clone() for p in net.parameters()]
    out = {}
    for backend in ("double_backward", "jvp"):
        Hd = H.distributed_hessian(net, mse, (x[sl], y[sl]), backend=backend)
        out[backend] = {"hv": (Hd @ v).tolist(), "names": Hd.names,
                        "eig": H.lanczos(Hd, k=5, which="LM", tol=1e-12, generator=11).values.tolist()}
    out["ggn"] = (H.distributed_ggn(net, mse, (x[sl], y[sl])) @ v).tolist()
    out["fd"] = (H.distributed_hessian(net, mse, (x[sl], y[sl]), backend="finite_difference") @ v).tolist()
    out["untouched"] = all(type(p).__name__ == "DTensor" and torch.equal(p.to_local(), s)
                           for p, s in zip(net.parameters(), shards))
    out["still_trains"] = float(mse(net(x[sl]), y[sl]))  # FSDP's own forward still works afterwards
    return out


@pytest.mark.dist
def test_fsdp2_curvature_equals_one_process(gloo):
    net, x, y, v = _problem()
    Hs = H.hessian(net, mse, (x, y))
    hv = Hs @ v
    eig = H.lanczos(Hs, k=5, which="LM", tol=1e-12, generator=11).values
    r0, r1 = results(gloo, _fsdp_worker)
    for r, sl in ((r0, slice(0, SPLIT)), (r1, slice(SPLIT, None))):  # FSDP's own forward still works afterwards
        assert abs(r.pop("still_trains") - float(mse(net(x[sl]), y[sl]).detach())) < 1e-12
    assert r0 == r1  # bitwise identical on every rank
    for backend in ("double_backward", "jvp"):
        assert r0[backend]["names"] == Hs.names
        torch.testing.assert_close(torch.tensor(r0[backend]["hv"], dtype=torch.float64), hv, rtol=0, atol=1e-10)
        torch.testing.assert_close(torch.tensor(r0[backend]["eig"], dtype=torch.float64), eig, rtol=0, atol=1e-10)
    torch.testing.assert_close(torch.tensor(r0["ggn"], dtype=torch.float64), H.ggn(net, mse, (x, y)) @ v,
                               rtol=0, atol=1e-10)
    torch.testing.assert_close(torch.tensor(r0["fd"], dtype=torch.float64), hv, rtol=1e-5, atol=1e-6)
    assert r0["untouched"]
