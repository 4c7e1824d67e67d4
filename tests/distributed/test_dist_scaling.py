"""Scaling plans, factor layers and pair optimizers under DDP / FSDP2 (2 gloo ranks) against one process."""

import pytest
import torch
from _dist_launch import register, results

import overparam as op

mse = torch.nn.functional.mse_loss


def _mlp(width: int, device=None) -> torch.nn.Sequential:
    lin = lambda a, b: torch.nn.Linear(a, b, bias=False, dtype=torch.float64, device=device)  # noqa: E731
    return torch.nn.Sequential(lin(4, width), torch.nn.Tanh(), lin(width, width), torch.nn.Tanh(), lin(width, 3))


def _groups(model, groups):
    names = {id(p): k for k, p in model.named_parameters()}
    return sorted((g["lr"], g["weight_decay"], sorted(names[id(p)] for p in g["params"])) for g in groups)


def _shard(net, layers=()):
    from torch.distributed.fsdp import fully_shard

    for layer in layers:
        fully_shard(layer)
    return fully_shard(net)


def _factor_net():
    return torch.nn.Sequential(op.factor.LowRankLinear(6, 5, rank=2, init="small", scale=0.5, generator=0,
                                                       dtype=torch.float64), torch.nn.Tanh(),
                               op.factor.LowRankLinear(5, 3, rank=3, init="small", scale=0.5, generator=1,
                                                       dtype=torch.float64))


def _data():
    g = torch.Generator().manual_seed(2)
    return torch.randn(12, 6, generator=g, dtype=torch.float64), torch.randn(12, 3, generator=g, dtype=torch.float64)


def _pair_steps(net, fwd, parts, damping):
    """5 ScaledGD(λ) steps on the mean of the parts' losses; the factors afterwards."""
    opt = op.optim.ScaledGD(list(op.factor.pairs(net)), lr=0.5, damping=damping)
    for _ in range(5):
        opt.zero_grad()
        sum(mse(fwd(x), y) for x, y in parts).div(len(parts)).backward()
        opt.step()
    return [p.detach() for p in net.parameters()]


def _lora_steps(net, fwd, parts):
    opt = torch.optim.AdamW([p for p in net.parameters() if p.requires_grad], lr=0.05)
    for _ in range(5):
        opt.zero_grad()
        sum(mse(fwd(x), y) for x, y in parts).div(len(parts)).backward()
        opt.step()
    return [p.detach() for p in net.parameters()]


def _lora_net():
    net = torch.nn.Sequential(torch.nn.Linear(6, 5, dtype=torch.float64), torch.nn.Tanh(),
                              torch.nn.Linear(5, 3, dtype=torch.float64))
    with torch.no_grad():
        for i, p in enumerate(net.parameters()):
            p.copy_(torch.randn(p.shape, generator=torch.Generator().manual_seed(10 + i), dtype=torch.float64))
    op.factor.lora_(net, rank=2, init="pissa", generator=0)
    return net


def _full(ps):
    return [(p.full_tensor() if type(p).__name__ == "DTensor" else p).tolist() for p in ps]


@register
def _worker(rank, world):
    x, y = _data()
    half = [(x[:6], y[:6])] if rank == 0 else [(x[6:], y[6:])]
    out = {}
    # μP on FSDP2, built on the meta device: plan from global shapes, init of each rank's shard, groups by name
    with torch.device("meta"):
        m = _mlp(16)
    m = _shard(m, (m[0], m[2], m[4]))
    m.to_empty(device="cpu")
    plan = op.scaling.plan(m, "mup", base=_mlp(8))
    plan.init_(m, generator=0)
    out["init"] = _full(m.parameters())
    out["groups"] = _groups(m, plan.param_groups(m, lr=1e-2, weight_decay=0.1))
    out["plan"] = str(plan)
    # factor layers + ScaledGD / ScaledGD(λ) under DDP and FSDP2
    for damping in (0.0, 0.1):
        ddp = torch.nn.parallel.DistributedDataParallel(net := _factor_net())
        out[f"ddp_scaledgd_{damping}"] = _full(_pair_steps(net, ddp, half, damping))
        fs = _shard(_factor_net())
        out[f"fsdp_scaledgd_{damping}"] = _full(_pair_steps(fs, fs, half, damping))
    # LoRA wrappers under DDP (called through the module: DDP's hooks fire) and FSDP2
    ddp = torch.nn.parallel.DistributedDataParallel(net := _lora_net())
    out["ddp_lora"] = _full(_lora_steps(net, ddp, half))
    fs = _lora_net()
    fs = _shard(fs, (fs[0], fs[2]))
    out["fsdp_lora"] = _full(_lora_steps(fs, fs, half))
    return out


@pytest.mark.dist
def test_plans_factors_and_pair_optimizers_equal_one_process(gloo):
    x, y = _data()
    parts = [(x[:6], y[:6]), (x[6:], y[6:])]
    m = _mlp(16)
    plan = op.scaling.plan(m, "mup", base=_mlp(8))
    plan.init_(m, generator=0)
    r0, r1 = results(gloo, _worker)
    assert r0 == r1  # identical on every rank
    assert r0["plan"] == str(plan)
    assert r0["groups"] == _groups(m, plan.param_groups(m, lr=1e-2, weight_decay=0.1))
    assert len({g[0] for g in r0["groups"]}) > 1  # μP: more than one learning rate
    for got, w in zip(r0["init"], m.parameters()):  # bitwise: the same draw, cut into shards
        assert torch.equal(torch.tensor(got, dtype=torch.float64), w.detach())
    for damping in (0.0, 0.1):
        net = _factor_net()
        want = _pair_steps(net, net, parts, damping)
        assert not torch.equal(want[0], _factor_net()[0].left)  # the iterates moved
        for key in ("ddp", "fsdp"):
            for got, w in zip(r0[f"{key}_scaledgd_{damping}"], want):
                torch.testing.assert_close(torch.tensor(got, dtype=torch.float64), w, rtol=0, atol=1e-12)
    net = _lora_net()
    want = _lora_steps(net, net, parts)
    for key in ("ddp_lora", "fsdp_lora"):
        for got, w in zip(r0[key], want):
            torch.testing.assert_close(torch.tensor(got, dtype=torch.float64), w, rtol=0, atol=1e-12)
