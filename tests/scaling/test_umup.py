"""u-μP plan (overparam/scaling/umup.py): types, the LR rule, τ rule, ``plan(model, "umup")``,
a compiled u-μP model, and (when ``unit_scaling`` is installed) Graphcore's model and optimizer."""

from __future__ import annotations

import importlib.util
import math
import re

import pytest
import torch
from torch import nn

import overparam as op
from overparam.scaling import unit_ops as U
from overparam.scaling.umup import UmupAlphas, residual_taus, umup_plan, umup_types

HAS_US = importlib.util.find_spec("unit_scaling") is not None


class ResMLP(nn.Module):
    """Embedding-free residual MLP in u-μP form: input Linear, ``L`` pre-norm residual blocks, read-out."""

    def __init__(self, d_in=16, width=64, depth=2, classes=10, alphas=UmupAlphas()):
        super().__init__()
        self.inp = nn.Linear(d_in, width)
        self.blocks = nn.ModuleList(
            op.scaling.UnitResidual(nn.Sequential(nn.LayerNorm(width), nn.Linear(width, width), nn.GELU(),
                                                  nn.Linear(width, width)), tau)
            for tau in residual_taus(depth, residual_mult=alphas.residual))
        self.act = nn.GELU()
        self.head = nn.Linear(width, classes)

    def forward(self, x):
        h = self.act(self.inp(x))
        for b in self.blocks:
            h = b(h)
        return self.head(h)


def _data(n=32, d_in=16, classes=10, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d_in, generator=g), torch.randint(0, classes, (n,), generator=g)


def test_types_and_rules_closed_form():
    m = nn.Sequential(nn.Embedding(50, 32), nn.LayerNorm(32), nn.Linear(32, 64), nn.GELU(), nn.Linear(64, 50))
    assert umup_types(m) == {"0.weight": "weight", "1.weight": "norm", "1.bias": "norm", "2.weight": "weight",
                             "2.bias": "bias", "4.weight": "output", "4.bias": "bias"}
    p = op.scaling.plan(m, "umup")
    lr = {k: r.lr_scale for k, r in p.rules.items()}
    assert lr["0.weight"] == 32 ** -0.5          # embedding: its dimension (the paper's embedding rule)
    assert lr["2.weight"] == 32 ** -0.5 and lr["4.weight"] == 1.0 and lr["1.weight"] == lr["2.bias"] == 1.0
    assert {k: r.init_std for k, r in p.rules.items()} == {"0.weight": 1.0, "1.weight": None, "1.bias": None,
                                                            "2.weight": 1.0, "2.bias": 0.0, "4.weight": 1.0,
                                                            "4.bias": 0.0}
    assert all(r.eps_scale == 1.0 for r in p.rules.values())
    p.init_(m, generator=0)
    assert m[2].bias.abs().max() == 0 and abs(float(m[2].weight.std()) - 1) < 0.05
    groups = p.param_groups(m, lr=0.1)
    assert sorted({g["lr"] for g in groups}) == [0.1 * 32 ** -0.5, 0.1]


def test_depth_rule_and_roles():
    m = ResMLP(depth=4)
    p = umup_plan(m, depth=(4, 1), branches="blocks")
    assert p.rules["blocks.0.branch.1.weight"].lr_scale == pytest.approx(64 ** -0.5 / 2, rel=1e-15)
    assert p.rules["blocks.3.branch.0.weight"].lr_scale == pytest.approx(0.5, rel=1e-15)
    assert p.rules["inp.weight"].lr_scale == 16 ** -0.5 and p.rules["head.weight"].lr_scale == 1.0
    counted = umup_plan(m, depth=1, branches="blocks", branch_outputs="blocks.*.branch.3")
    assert counted.rules == p.rules
    q = umup_plan(m, roles={"blocks.3.branch.3": "output", "head": "weight"})
    assert q.rules["head.weight"].shape.role == "hidden" and q.rules["blocks.3.branch.3.weight"].shape.role == "output"
    assert q.rules["head.bias"].shape.role == "fixed"


def test_residual_taus_closed_form():
    taus = residual_taus(["attn", "mlp", "attn", "mlp"], residual_mult=0.5, residual_attn_ratio=2.0)
    a_m = 0.5 * math.sqrt(2 / 5)
    a_a = 2 * a_m
    expect, acc = [], 2.0
    for a in (a_a, a_m, a_a, a_m):
        expect.append(a / math.sqrt(acc))
        acc += a * a
    assert taus == pytest.approx(expect, rel=1e-15)
    # the stream then holds the input and the branches in the ratio 1 : residual_mult² per kind
    assert residual_taus(1) == [1.0]


def test_bad_input():
    m = nn.Sequential(nn.Linear(4, 8), nn.Linear(8, 2))
    with pytest.raises(ValueError, match="parameterization"):
        op.scaling.plan(m, "u-mup")
    with pytest.raises(ValueError, match="base"):
        op.scaling.plan(m, "umup", base=m)
    with pytest.raises(ValueError, match="base"):
        op.scaling.plan(m, "mup")
    with pytest.raises(ValueError, match="init_std"):
        op.scaling.plan(m, "umup", init_std=0.02)
    with pytest.raises(ValueError, match="depth"):
        umup_plan(m, branches="0")
    with pytest.raises(ValueError, match="branches"):
        umup_plan(m, depth=(2, 1))
    with pytest.raises(ValueError, match="roles"):
        umup_plan(m, roles={"1.weight": "norm"})
    with pytest.raises(ValueError, match="roles"):
        umup_plan(m, roles={"nothing": "output"})
    with pytest.raises(ValueError, match="optimizer"):
        umup_plan(m, optimizer="lion")
    with pytest.raises(ValueError, match="ffn_act"):
        UmupAlphas(ffn_act=-1.0)
    with pytest.raises(ValueError, match="kinds"):
        residual_taus(["attn", "ffn"])


def _train(model, x, y, steps=3, lr=0.05, fwd=None):
    """Losses of ``steps`` Adam steps under the u-μP plan (``fwd``: the model's forward, e.g. compiled)."""
    p = umup_plan(model)
    opt = torch.optim.Adam(p.param_groups(model, lr=lr))
    losses = []
    for _ in range(steps):
        opt.zero_grad()
        loss = U.cross_entropy((model if fwd is None else fwd)(x), y)
        loss.backward()
        opt.step()
        losses.append(float(loss))
    return losses


@pytest.mark.slow
def test_compiled_umup_model_gives_the_eager_losses():
    x, y = _data()
    torch.manual_seed(0)
    eager = ResMLP(width=32, depth=1)
    op.scaling.unit_scale_(eager)
    umup_plan(eager).init_(eager, generator=0)
    compiled = ResMLP(width=32, depth=1)
    op.scaling.unit_scale_(compiled)
    compiled.load_state_dict(eager.state_dict())
    compiled_fn = torch.compile(compiled, backend="aot_eager")
    l_eager = _train(eager, x, y)
    l_comp = _train(compiled, x, y, fwd=compiled_fn)
    assert l_comp == pytest.approx(l_eager, rel=1e-5, abs=1e-6)
    assert l_eager[-1] < l_eager[0]


@pytest.mark.skipif(not HAS_US, reason="unit_scaling is not installed (pip install unit-scaling)")
def test_matches_unit_scaling_model_and_optimizer():
    import unit_scaling as uu
    import unit_scaling.functional as UF

    alphas = UmupAlphas(ffn_act=1.3, residual=0.7, loss_softmax=1.5)
    L, x, y = 3, *_data()
    torch.manual_seed(0)
    ours = ResMLP(depth=L, alphas=alphas)
    op.scaling.unit_scale_(ours, alphas=alphas)
    umup_plan(ours).init_(ours, generator=1)

    class Theirs(nn.Module):
        def __init__(self):
            super().__init__()
            self.inp = uu.Linear(16, 64, bias=True)
            self.blocks = nn.ModuleList(nn.Sequential(uu.LayerNorm(64, elementwise_affine=True), uu.Linear(64, 64, bias=True), uu.GELU(mult=1.3),
                                                      uu.Linear(64, 64, bias=True)) for _ in range(L))
            self.act = uu.GELU(mult=1.3)
            self.head = uu.LinearReadout(64, 10, bias=True)

        def forward(self, v):
            h = self.act(self.inp(v))
            for i, b in enumerate(self.blocks):   # the τ rule, one kind of branch: r / √(L + i·r²)
                h = UF.residual_apply(b, h, tau=0.7 / math.sqrt(L + i * 0.7 ** 2))
            return self.head(h)

    theirs = Theirs()
    name = lambda k: re.sub(r"^blocks\.(\d+)\.", r"blocks.\1.branch.", k)  # noqa: E731
    own = dict(ours.named_parameters())
    with torch.no_grad():
        for k, q in theirs.named_parameters():
            q.copy_(own[name(k)])
    loss0 = U.cross_entropy(ours(x), y, mult=1.5)
    loss1 = UF.cross_entropy(theirs(x), y, mult=1.5)
    torch.testing.assert_close(loss0, loss1, rtol=1e-6, atol=1e-6)
    loss0.backward()
    loss1.backward()
    for k, q in theirs.named_parameters():
        torch.testing.assert_close(own[name(k)].grad, q.grad, rtol=1e-6, atol=1e-6)
    # the optimizer: unit-scaling's per-parameter lr (depth L on the branch parameters) = the plan's
    for k, q in theirs.named_parameters():
        q.mup_scaling_depth = L if k.startswith("blocks") else None
    lrs1 = [g["lr"] for g in uu.optim.Adam(theirs.parameters(), lr=0.01).param_groups]
    p = umup_plan(ours, depth=(L, 1), branches="blocks")
    lrs0 = [0.01 * r.lr_scale for r in p.rules.values()]
    assert lrs0 == pytest.approx(lrs1, rel=1e-12)
    rule = uu.core.functional.transformer_residual_scaling_rule(0.6, 1.7)
    assert residual_taus(["attn", "mlp"] * 3, residual_mult=0.6, residual_attn_ratio=1.7) == pytest.approx(
        [rule(i, 6) for i in range(6)], rel=1e-12)


class LibRMSNorm(nn.Module):  # a model library's own norm (like transformers' LlamaRMSNorm)
    def __init__(self, n):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(n))

    def forward(self, x):
        return self.weight * x * x.pow(2).mean(-1, keepdim=True).add(1e-6).rsqrt()


def test_library_norms_are_norms_and_tied_matrices_need_a_role():
    m = nn.Sequential(nn.Embedding(10, 8), LibRMSNorm(8), nn.Linear(8, 10, bias=False))
    assert umup_types(m)["1.weight"] == "norm"
    p = umup_plan(m)
    p.init_(m, generator=0)
    assert p.rules["1.weight"].init_std is None and torch.equal(m[1].weight, torch.ones(8))  # kept, not zeroed
    m[2].weight = m[0].weight                             # tie the read-out to the embedding
    with pytest.raises(ValueError, match=r"'0.weight' is tied to \['2.weight'\].*roles=, e.g. \{'2': 'output'\}"):
        umup_types(m)
    assert umup_types(m, roles={"2": "output"}) == {"0.weight": "output", "1.weight": "norm"}
    assert umup_types(m, roles={"0": "weight", "1": "norm"})["0.weight"] == "weight"
