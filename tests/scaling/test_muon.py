"""μP for torch.optim.Muon: closed-form lr factors (square, non-square, both adjust_lr_fn, depth), a
coordinate check (the hidden output's change is flat in width only with the μP factors), coverage."""

import math

import pytest
import torch
from torch import nn

from overparam.scaling import muon_param_groups, plan


def mlp(w1, w2=None, d=8, c=4):
    w2 = w1 if w2 is None else w2
    return nn.Sequential(nn.Linear(d, w1), nn.ReLU(), nn.Linear(w1, w2), nn.ReLU(), nn.Linear(w2, c))


def _lr_of(groups, q):
    return next(g["lr"] for g in groups if any(p is q for p in g["params"]))


def test_lr_factors_closed_form():
    m = mlp(64, 256)
    p = plan(m, "mup", base=mlp(32, 32))
    muon, adam = muon_param_groups(p, m, lr=0.02, adam_lr=1e-3, weight_decay=0.1)
    assert [q for g in muon for q in g["params"]] == [m[2].weight]
    # (out, in) = (256, 64) vs base (32, 32): original adjust √4 = 2 vs 1; √(m_out/m_in) = √(8/2) = 2
    assert _lr_of(muon, m[2].weight) == pytest.approx(0.02 * 1 / 2 * 2)
    assert muon[0]["weight_decay"] == pytest.approx(0.1 / 1.0) and muon[0]["adjust_lr_fn"] is None
    rms = muon_param_groups(p, m, lr=0.02, adam_lr=1e-3, adjust_lr_fn="match_rms_adamw")[0]
    # 0.2√32 / 0.2√256 · 2
    assert _lr_of(rms, m[2].weight) == pytest.approx(0.02 * math.sqrt(32 / 256) * 2)
    assert [_lr_of(adam, q) for q in (m[0].weight, m[4].weight)] == pytest.approx([1e-3, 1e-3 / 8])
    ids = sorted(id(q) for g in muon + adam for q in g["params"])
    assert ids == sorted(id(q) for q in m.parameters())
    torch.optim.Muon(muon)
    torch.optim.AdamW(adam)


def test_depth_factor_follows_adam():
    class Res(nn.Module):
        def __init__(self, w, L):
            super().__init__()
            self.inp, self.out = nn.Linear(4, w), nn.Linear(w, 2)
            self.blocks = nn.ModuleList(nn.Sequential(nn.Linear(w, w), nn.Tanh(), nn.Linear(w, w)) for _ in range(L))

    m = Res(32, 8)
    p = plan(m, "depth-mup", base=Res(16, 8), depth=(8, 2), branches="blocks", branch_outputs="blocks.*.2")
    muon, _ = muon_param_groups(p, m, lr=0.01, adam_lr=1e-3)
    assert _lr_of(muon, m.blocks[0][0].weight) == pytest.approx(0.01 / 2)  # d^-1/2, d = 4
    assert _lr_of(muon, m.blocks[0][2].weight) == pytest.approx(0.01 / 4)  # absorbed c = d^-1/2 once more


def _hidden_change(w, muon_lr_of, seed=0):
    torch.manual_seed(seed)
    m = mlp(w).double()
    p = plan(m, "mup", base=mlp(32))
    p.init_(m, generator=seed)
    muon, _ = muon_param_groups(p, m, lr=0.05, adam_lr=1e-3)
    for g in muon:
        g["lr"] = muon_lr_of(g["lr"])
    opt = torch.optim.Muon(muon)
    x = torch.randn(64, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    y = torch.arange(64) % 4
    h = m[:2](x).detach()
    before = m[2](h).detach()
    nn.functional.cross_entropy(m(x), y).backward()
    opt.step()
    return float((m[2](h).detach() - before).pow(2).mean().sqrt())


def test_coord_check_one_muon_step():
    """RMS change of the hidden layer's output (inputs fixed) after one Muon step: flat in width with
    the plan's factors; with the factor ×√(width/32) (what "match_rms_adamw" with an unscaled lr
    amounts to) it grows like √width."""
    widths = [64, 256, 1024]
    lw = torch.log(torch.tensor(widths, dtype=torch.float64))
    lw = lw - lw.mean()

    def slope(vals):
        lv = torch.log(torch.tensor(vals, dtype=torch.float64))
        return float((lw * (lv - lv.mean())).sum() / (lw * lw).sum())

    assert abs(slope([_hidden_change(w, lambda lr: lr) for w in widths])) < 0.15
    assert slope([_hidden_change(w, lambda lr, w=w: lr * math.sqrt(w / 32)) for w in widths]) > 0.35


def test_bad_input():
    m = mlp(16)
    p = plan(m, "mup", base=mlp(8))
    with pytest.raises(ValueError, match="adjust_lr_fn"):
        muon_param_groups(p, m, lr=0.02, adam_lr=1e-3, adjust_lr_fn="none")
    with pytest.raises(ValueError, match="optimizer='adam'"):
        muon_param_groups(plan(m, "mup", base=mlp(8), optimizer="sgd"), m, lr=0.02, adam_lr=1e-3)
    with pytest.raises(TypeError, match="plan"):
        muon_param_groups({}, m, lr=0.02, adam_lr=1e-3)
    with pytest.raises(ValueError, match="lr"):
        muon_param_groups(p, m, lr=0.0, adam_lr=1e-3)
    with pytest.raises(ValueError, match="lr"):
        muon_param_groups(p, m, lr=0.02, adam_lr=-1.0)
