import copy

import pytest
import torch
from torch.nn import functional as F

from overparam.prune.lottery import lottery


def _problem(seed=0):
    g = torch.Generator().manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Linear(5, 20), torch.nn.Tanh(), torch.nn.Linear(20, 2))
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.5)
    x, y = torch.randn(64, 5, generator=g), torch.randn(64, 2, generator=g)
    return net, x, y


def _recording_train(x, y, log):
    def train(model, opt, steps):
        log.append({k: v.detach().clone() for k, v in model.state_dict().items()})
        for _ in range(steps):
            opt.zero_grad()
            F.mse_loss(model(x), y).backward()
            opt.step()
        return F.mse_loss(model(x), y).item()

    return train


OPTS = {
    "sgd": lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=0.9, weight_decay=1e-2),
    "adamw": lambda ps: torch.optim.AdamW(ps, lr=1e-2, weight_decay=0.1),
}


@pytest.mark.parametrize("opt", list(OPTS))
@pytest.mark.parametrize("k", [0, 7])
def test_rewind_survivors_bit_equal_and_pruned_exactly_zero(opt, k):
    net, x, y = _problem()
    log = []
    t = lottery(net, _recording_train(x, y, log), optimizer_fn=OPTS[opt], steps=50 + k, rewind_to=k, rounds=3, rate=0.4)
    assert t.rewind_step == k
    starts = log[2:] if k else log[1:]  # calls: [warm-up k steps], dense run, then one per round
    assert len(starts) == 3
    for rnd, st in zip(t.rounds[1:], starts):
        for name, v in st.items():
            m = rnd.masks.get(name)
            if m is None:
                assert torch.equal(v, t.rewind[name])  # unpruned tensors rewound too
            else:
                assert torch.equal(v[m], t.rewind[name][m])  # survivors bit-equal θ_k
                assert (v[~m] == 0).all()
    if k == 0:
        assert all(torch.equal(t.rewind[n], t.init[n]) for n in t.init)
    # after 50 steps in the last round: pruned weights are exactly zero, and so is the checkpoint
    for name, m in t.masks.items():
        assert (t.rounds[-1].checkpoint[name][~m] == 0).all()
        assert (dict(net.named_parameters())[name][~m] == 0).all()


def test_masks_monotone_and_density():
    net, x, y = _problem(1)
    t = lottery(net, _recording_train(x, y, []), optimizer_fn=OPTS["sgd"], steps=5, rounds=5, rate=0.3, scope="layerwise")
    n = sum(m.numel() for m in t.masks.values())
    for a, b in zip(t.rounds[1:], t.rounds[2:]):
        assert all(bool((b.masks[k] <= a.masks[k]).all()) for k in a.masks)
    assert abs(t.rounds[-1].density - 0.7 ** 5) <= 2 / n  # layerwise rounding: within 1/n per layer
    assert isinstance(t.rounds[-1].result, float)


def test_lr_rewinding_and_finetune_keep_trained_weights():
    for mode in ("lr", "finetune"):
        net, x, y = _problem(2)
        log = []
        t = lottery(net, _recording_train(x, y, log), optimizer_fn=OPTS["sgd"], steps=20, rounds=2, rate=0.5,
                    mode=mode, finetune_steps=3)
        for i, rnd in enumerate(t.rounds[1:]):
            prev = t.rounds[i].checkpoint
            start = log[i + 1]
            for name, m in rnd.masks.items():
                assert torch.equal(start[name][m], prev[name][m])  # trained weights kept, not rewound


def test_bad_arguments():
    net, x, y = _problem()
    tr = _recording_train(x, y, [])
    with pytest.raises(ValueError, match="mode"):
        lottery(net, tr, optimizer_fn=OPTS["sgd"], steps=5, rounds=1, mode="bogus")
    with pytest.raises(ValueError, match="rewind_to"):
        lottery(net, tr, optimizer_fn=OPTS["sgd"], steps=5, rounds=1, rewind_to=5)
    with pytest.raises(ValueError, match="rate"):
        lottery(net, tr, optimizer_fn=OPTS["sgd"], steps=5, rounds=1, rate=1.0)


def test_rewind_restores_optimizer_state_of_step_k():
    net, x, y = _problem(2)
    states = []

    def train(model, opt, steps):
        states.append(copy.deepcopy(opt.state_dict()["state"]))
        return _recording_train(x, y, [])(model, opt, steps)

    t = lottery(net, train, optimizer_fn=OPTS["sgd"], steps=12, rewind_to=4, rounds=2, rate=0.5)
    names = [n for n, _ in net.named_parameters()]
    ref = t.optimizer_rewind["state"]
    assert ref  # momentum buffers exist at step k
    for rnd, st in zip(t.rounds[1:], states[2:]):
        for i, name in enumerate(names):
            m = rnd.masks.get(name, torch.ones_like(ref[i]["momentum_buffer"], dtype=torch.bool))
            assert torch.equal(st[i]["momentum_buffer"], ref[i]["momentum_buffer"] * m)
