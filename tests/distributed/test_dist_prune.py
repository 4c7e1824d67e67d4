"""prune.distributed in a real 2-process gloo group (DDP and FSDP2) against one process."""

import pytest
import torch
from _dist_launch import register, results

from overparam import prune

mse = torch.nn.functional.mse_loss


def _net(width: int = 8) -> torch.nn.Module:
    """Integer-valued weights: many ties at every magnitude threshold."""
    net = torch.nn.Sequential(torch.nn.Linear(12, width), torch.nn.Tanh(), torch.nn.Linear(width, 4)).double()
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randint(-3, 4, p.shape, generator=g).to(p.dtype) / 4)
    return net


def _data():
    g = torch.Generator().manual_seed(1)
    return torch.randn(10, 12, generator=g, dtype=torch.float64), torch.randn(10, 4, generator=g, dtype=torch.float64)


def _adamw_steps(model, ddp_or_net, masks, parts):
    """5 masked AdamW steps; each step's loss is the mean of the per-part mean losses."""
    opt = torch.optim.AdamW(model.parameters(), lr=0.05, weight_decay=0.1)
    with prune.masked(model, masks, optimizer=opt):
        for _ in range(5):
            opt.zero_grad()
            sum(mse(ddp_or_net(x), y) for x, y in parts).div(len(parts)).backward()
            opt.step()
    return [p.detach().clone() for p in model.parameters()]


def _packed_steps(model, fwd, masks, parts, kind, remask=None):
    """5 steps of prune.PackedAdamW / PackedSGD (packed state), losses as in :func:`_adamw_steps`;
    with ``remask``, then ``set_masks_(remask(model))`` (state re-packed) and 2 more steps."""
    opt = (prune.PackedAdamW(model.named_parameters(), masks, lr=0.05, weight_decay=0.1) if kind == "adamw" else
           prune.PackedSGD(model.named_parameters(), masks, lr=0.05, momentum=0.9, weight_decay=0.1))
    for i in range(5 if remask is None else 7):
        if i == 5:
            opt.set_masks_(remask(model))
        opt.zero_grad()
        sum(mse(fwd(x), y) for x, y in parts).div(len(parts)).backward()
        opt.step()
    p0 = next(iter(opt.masks))
    return [p.detach().clone() for p in model.parameters()], opt.state[dict(model.named_parameters())[p0]]


def _error(fn, *args, **kw) -> str:
    try:
        fn(*args, **kw)
    except (ValueError, TypeError) as err:
        return f"{type(err).__name__}: {err}"
    return "no error"


def _fsdp(net):
    from torch.distributed.fsdp import fully_shard

    fully_shard(net[0])
    fully_shard(net[2])
    return fully_shard(net)


def _full(masks):
    return {k: m.full_tensor() for k, m in masks.items()}


@register
def _worker(rank, world):
    from torch.distributed.fsdp import fully_shard
    from torch.distributed.tensor import Shard

    x, y = _data()
    out = {}
    # DDP: replicated weights, local masks checked identical; masked AdamW on half the data each
    net = _net()
    ddp = torch.nn.parallel.DistributedDataParallel(net)
    m = prune.global_magnitude(ddp, 0.5)
    out["ddp_masks"] = {k: v.tolist() for k, v in m.items()}
    half = slice(0, 5) if rank == 0 else slice(5, 10)
    out["ddp_adamw"] = [p.tolist() for p in _adamw_steps(net, ddp, m, [(x[half], y[half])])]
    # faults: different mask shapes on the two ranks end in a clear error on both
    out["bad_shapes"] = _error(prune.global_magnitude, _net(8 + rank), 0.5)
    # FSDP2: Shard(0) DTensor parameters
    fs = _net()
    fully_shard(fs[0])
    fully_shard(fs[2])
    fully_shard(fs)
    mg = prune.global_magnitude(fs, 0.5)
    out["fsdp_is_dtensor"] = all(type(v).__name__ == "DTensor" and v.placements == p.placements
                                 for v, p in zip(mg.values(), (fs[0].weight, fs[2].weight)))
    out["fsdp_masks"] = {k: v.tolist() for k, v in _full(mg).items()}
    out["fsdp_nm"] = {k: v.tolist() for k, v in _full(prune.distributed_nm_masks(fs, 2, 4, targets="0")).items()}
    prune.apply_masks_(fs, mg)
    out["fsdp_applied"] = [p.full_tensor().tolist() for p in (fs[0].weight, fs[2].weight)]
    fa = _net()  # masked AdamW on FSDP2 shards with DTensor masks (gradients reduce-scattered: to rounding)
    fully_shard(fa[0])
    fully_shard(fa[2])
    fully_shard(fa)
    _adamw_steps(fa, fa, prune.global_magnitude(fa, 0.5), [(x[half], y[half])])
    out["fsdp_adamw"] = [p.full_tensor().detach().tolist() for p in fa.parameters()]
    for kind in ("adamw", "sgd"):  # packed state on the shards
        fp = _fsdp(_net())
        w, st = _packed_steps(fp, fp, prune.global_magnitude(fp, 0.5), [(x[half], y[half])], kind)
        out[f"fsdp_packed_{kind}"] = [p.full_tensor().tolist() for p in w]
        out[f"fsdp_packed_{kind}_state"] = sorted((k, v.numel()) for k, v in st.items() if v.ndim)
    fp = _fsdp(_net())
    w, _ = _packed_steps(fp, fp, prune.global_magnitude(fp, 0.5), [(x[half], y[half])], "adamw",
                         remask=lambda m: prune.global_magnitude(m, 0.75))
    out["fsdp_packed_remask"] = [p.full_tensor().tolist() for p in w]
    fp = _fsdp(_net())
    out["packed_plain_mask"] = _error(prune.PackedAdamW, fp.named_parameters(), _full(prune.global_magnitude(fp, 0.5)))
    col = _net()
    fully_shard(col, shard_placement_fn=lambda p: Shard(1) if p.ndim == 2 else Shard(0))
    out["nm_split"] = _error(prune.distributed_nm_masks, col, 2, 4, targets="0")
    return out


def _lottery(model, fwd, parts):
    """3 IMP rounds with rewinding to step 2 (SGD + momentum), each step on the mean of the parts' losses."""
    def train(_, opt, steps):
        for _ in range(steps):
            opt.zero_grad()
            sum(mse(fwd(x), y) for x, y in parts).div(len(parts)).backward()
            opt.step()

    t = prune.lottery(model, train, optimizer_fn=lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9), steps=6,
                      rounds=3, rate=0.5, rewind_to=2)
    return [{k.removeprefix("module."): v.tolist() for k, v in r.masks.items()} for r in t.rounds], \
        [p.detach().clone() for p in model.parameters()]


@register
def _lottery_worker(rank, world):
    x, y = _data()
    net = _net()
    half = slice(0, 5) if rank == 0 else slice(5, 10)
    ddp = torch.nn.parallel.DistributedDataParallel(net)
    masks, weights = _lottery(ddp, ddp, [(x[half], y[half])])
    return {"masks": masks, "weights": [w.tolist() for w in weights]}


@pytest.mark.dist
def test_lottery_under_ddp_equals_one_process(gloo):
    x, y = _data()
    net = _net()
    masks, weights = _lottery(net, net, [(x[:5], y[:5]), (x[5:], y[5:])])
    for r in results(gloo, _lottery_worker):
        assert r["masks"] == masks  # every round's masks, tied weights included
        for got, w in zip(r["weights"], weights):  # bitwise: DDP's gradient mean is (g0 + g1) / 2 exactly
            assert torch.equal(torch.tensor(got, dtype=torch.float64), w)


@pytest.mark.dist
def test_masks_and_masked_adamw_equal_one_process(gloo):
    x, y = _data()
    net = _net()
    want = prune.magnitude(net, 0.5)
    assert all(int((w.abs() == 0.5).sum()) > 1 for w in (net[0].weight, net[2].weight))  # ties at the threshold
    want_nm = prune.nm_masks(net, 2, 4, targets="0")
    adamw = _adamw_steps(net, net, want, [(x[:5], y[:5]), (x[5:], y[5:])])
    packed = {}
    for kind in ("adamw", "sgd"):
        pn = _net()
        packed[kind] = _packed_steps(pn, pn, prune.magnitude(pn, 0.5), [(x[:5], y[:5]), (x[5:], y[5:])], kind)
    r0, r1 = results(gloo, _worker)
    for kind in ("adamw", "sgd"):  # each rank's packed state holds its shard's kept entries, no more
        one = sorted((k, v.numel()) for k, v in packed[kind][1].items() if v.ndim)
        assert [(k, a + b) for (k, a), (_, b) in zip(r0[f"fsdp_packed_{kind}_state"], r1[f"fsdp_packed_{kind}_state"])] \
            == one == [(k, int(want["0.weight"].sum())) for k, _ in one], kind
    for r in (r0, r1):
        for key in ("ddp_masks", "fsdp_masks"):
            assert {k: torch.tensor(v) for k, v in r[key].items()}.keys() == want.keys()
            for k in want:
                assert torch.equal(torch.tensor(r[key][k]), want[k]), (key, k)
        assert r["fsdp_is_dtensor"]
        assert torch.equal(torch.tensor(r["fsdp_nm"]["0.weight"]), want_nm["0.weight"])
        for got, w, m in zip(r["fsdp_applied"], (_net()[0].weight, _net()[2].weight), want.values()):
            assert torch.equal(torch.tensor(got, dtype=torch.float64), w.detach() * m)
        for got, w in zip(r["ddp_adamw"], adamw):  # bitwise: DDP's gradient mean is (g0 + g1) / 2 exactly
            assert torch.equal(torch.tensor(got, dtype=torch.float64), w)
        for got, w in zip(r["fsdp_adamw"], adamw):
            torch.testing.assert_close(torch.tensor(got, dtype=torch.float64), w, rtol=0, atol=1e-12)
        for kind in ("adamw", "sgd"):  # bitwise: FSDP2's reduce-scattered mean of two halves is exact
            for got, w in zip(r[f"fsdp_packed_{kind}"], packed[kind][0]):
                assert torch.equal(torch.tensor(got, dtype=torch.float64), w), kind
        pn = _net()
        remasked, _ = _packed_steps(pn, pn, prune.magnitude(pn, 0.5), [(x[:5], y[:5]), (x[5:], y[5:])], "adamw",
                                    remask=lambda m: prune.magnitude(m, 0.75))
        for got, w in zip(r["fsdp_packed_remask"], remasked):  # set_masks_ re-packs each shard's state
            assert torch.equal(torch.tensor(got, dtype=torch.float64), w)
        assert "must be a DTensor with the same placements" in r["packed_plain_mask"]
        assert "ranks disagree on the magnitude masks" in r["bad_shapes"]
        assert "not all multiples of m=4" in r["nm_split"] and "0.weight" in r["nm_split"]
