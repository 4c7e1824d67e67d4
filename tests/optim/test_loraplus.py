import copy

import pytest
import torch
from torch import nn

import overparam as op
from _lora_twins import _rand, assert_twins_close, peft_named, peft_twins, trainable  # tests/optim helper
from overparam.optim import LoRAFA, loraplus_groups
from overparam.testing.optim_oracles import damped_precondition as _pre


def _net():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Embedding(9, 6), nn.Linear(6, 6), nn.LayerNorm(6), nn.Linear(6, 3), nn.Linear(3, 3))
    op.factor.lora_(net, ["0", "1", "3"], rank=2, generator=0)
    return net


def test_groups_by_hand():
    net = _net()
    groups = loraplus_groups(net, op.factor.pairs(net), lr=1e-3, ratio=8.0, weight_decay=0.1, embedding_lr=1e-5)
    got = [[id(p) for p in g["params"]] for g in groups]
    want = [[net[1].lora_down, net[3].lora_down, net[4].weight],          # A and other matrices
            [net[0].lora_down, net[0].lora_up],                           # the Embedding adapter
            [net[1].lora_up, net[3].lora_up],                             # B
            [net[2].weight, net[2].bias, net[4].bias]]                    # B-lr, no decay: LayerNorm, biases
    assert got == [[id(p) for p in w] for w in want]
    assert [(g["lr"], g["weight_decay"]) for g in groups] == [(1e-3, 0.1), (1e-5, 0.1), (8e-3, 0.1), (8e-3, 0.0)]
    assert not any(id(p) in sum(got, []) for p in net.parameters() if not p.requires_grad)
    opt = torch.optim.AdamW(groups)                       # usable as is, empty groups included
    assert len(opt.param_groups) == 4


def test_symmetric_factor_goes_with_a():
    net = nn.Sequential(op.factor.LowRankLinear(4, 4, rank=2, symmetric=True, generator=0))
    groups = loraplus_groups(net, op.factor.pairs(net), lr=1.0, ratio=4.0)
    X = next(op.factor.pairs(net))[0]
    assert any(p is X for p in groups[0]["params"]) and not any(p is X for p in groups[2]["params"])


def test_bad_input():
    net = _net()
    with pytest.raises(TypeError, match="model"):
        loraplus_groups([], op.factor.pairs(net), lr=1.0, ratio=2.0)
    with pytest.raises(ValueError, match="ratio"):
        loraplus_groups(net, op.factor.pairs(net), lr=1.0, ratio=0.0)
    with pytest.raises(ValueError, match="lr"):
        loraplus_groups(net, op.factor.pairs(net), lr=-1.0, ratio=2.0)
    other = _net()
    with pytest.raises(ValueError, match="not a pair of model's parameters"):
        loraplus_groups(net, op.factor.pairs(other), lr=1.0, ratio=2.0)


def test_groups_equal_peft_create_loraplus_optimizer():
    """Acceptance (issue 15): the same parameters in the same groups with the same lr / weight decay as peft."""
    loraplus = pytest.importorskip("peft.optimizers").create_loraplus_optimizer
    pm, mine = peft_twins(embedding=True, biases=True)
    popt = loraplus(pm, torch.optim.AdamW, lr=2e-4, loraplus_lr_ratio=16.0, loraplus_weight_decay=0.05,
                    loraplus_lr_embedding=3e-6)
    names = peft_named(pm)
    pid = {id(p): names[n] for n, p in pm.named_parameters()}
    mid = {id(p): n for n, p in mine.named_parameters()}
    groups = loraplus_groups(mine, op.factor.pairs(mine), lr=2e-4, ratio=16.0, weight_decay=0.05, embedding_lr=3e-6)
    assert len(popt.param_groups) == len(groups) == 4
    for pg, g in zip(popt.param_groups, groups):
        assert sorted(pid[id(p)] for p in pg["params"]) == sorted(mid[id(p)] for p in g["params"])
        assert (pg["lr"], pg["weight_decay"]) == (g["lr"], g["weight_decay"])
    assert all(len(g["params"]) for g in groups)


def _lorafa_twins():
    pm, mine = peft_twins(biases=True)
    for B, A in op.factor.pairs(mine):
        A.requires_grad_(False)
    return pm, mine


def test_lorafa_step_is_the_projected_b_gradient():
    _, mine = _lorafa_twins()
    ref = copy.deepcopy(mine)
    pairs = list(op.factor.pairs(mine))
    s = mine[0].scaling
    opt = LoRAFA(torch.optim.SGD(trainable(mine), lr=0.1), pairs, scaling=s, damping=1e-3)
    x, y = _rand(8, 12, seed=1), _rand(8, 5, seed=2)
    opt.zero_grad(); (mine(x) - y).pow(2).mean().backward()
    want = {id(B): B.detach() - 0.1 * _pre(B.grad, A.detach(), 1e-3) / s**2 for B, A in pairs}
    opt.step()
    for (B, A), (B2, A2) in zip(pairs, op.factor.pairs(ref)):
        torch.testing.assert_close(B.detach(), want[id(B)], rtol=0, atol=1e-12)
        assert torch.equal(A, A2) and A.grad is None


def test_lorafa_bad_input():
    net = _net()
    pairs = list(op.factor.pairs(net))
    with pytest.raises(ValueError, match="freeze A"):
        LoRAFA(torch.optim.SGD(trainable(net), lr=0.1), pairs)
    for B, A in pairs:
        A.requires_grad_(False)
    with pytest.raises(ValueError, match="scaling: got 2 values for 3 pairs"):
        LoRAFA(torch.optim.SGD(trainable(net), lr=0.1), pairs, scaling=[1.0, 1.0])
    with pytest.raises(ValueError, match="scaling"):
        LoRAFA(torch.optim.SGD(trainable(net), lr=0.1), pairs, scaling=0.0)
    X = torch.zeros(4, 2, requires_grad=True)
    with pytest.raises(ValueError, match="symmetric"):
        LoRAFA(torch.optim.SGD([X], lr=0.1), [X])


def test_lorafa_equals_peft_lorafa_optimizer():
    """Three steps equal peft's LoraFAOptimizer (AdamW, eps = 0 so that its ε placement does not matter), fp64."""
    create = pytest.importorskip("peft.optimizers").create_lorafa_optimizer
    pm, mine = _lorafa_twins()
    popt = create(pm, r=4, lora_alpha=8, lr=1e-2)
    for g in popt.param_groups:
        g["eps"] = 0.0
    opt = LoRAFA(torch.optim.AdamW(trainable(mine), lr=1e-2, eps=0.0, weight_decay=0.0), op.factor.pairs(mine),
                 scaling=mine[0].scaling)
    x, y = _rand(8, 12, seed=1), _rand(8, 5, seed=2)
    for _ in range(3):
        for o, m in ((popt, pm), (opt, mine)):
            o.zero_grad(); (m(x) - y).pow(2).mean().backward(); o.step()
    assert_twins_close(pm, mine, atol=1e-10)
