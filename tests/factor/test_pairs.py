import torch
from torch import nn

from overparam.factor import LowRank, LowRankLinear, SparseLowRank, lora_, lowrank_, pairs


def test_pair_protocol_shapes_and_products():
    net = nn.ModuleDict({
        "a": LowRankLinear(6, 4, rank=3, generator=0),
        "s": LowRank((5, 5), 2, symmetric=True, generator=0),
        "sl": SparseLowRank((4, 3), 2, density=0.5, generator=0),
        "lin": nn.Sequential(nn.Linear(7, 5), nn.Linear(5, 2)),
    })
    lowrank_(net, "lin.0", rank=3, init="small", generator=0)
    lora_(net, "lin.1", rank=2, generator=0)
    got = list(pairs(net))
    assert len(got) == 5
    assert all(isinstance(L, nn.Parameter) and isinstance(R, nn.Parameter) for L, R in got)
    assert all(L.shape[1] == R.shape[1] for L, R in got)
    (U, V) = got[1]
    assert U is V
    torch.testing.assert_close(got[0][0] @ got[0][1].T, net["a"].weight)
    up, down = got[4]
    assert up is net["lin"][1].lora_up and down.shape == (5, 2) and up.shape == (2, 2)
    assert len(list(pairs(nn.Linear(3, 3)))) == 0


def test_shared_module_yields_once():
    lr = LowRankLinear(3, 3, rank=1, generator=0)
    assert len(list(pairs(nn.Sequential(lr, lr)))) == 1
