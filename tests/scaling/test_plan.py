"""Plans against closed forms and against an independent multiplier-form implementation."""

import math

import pytest
import torch
from torch import nn

from overparam.scaling import plan

F = nn.functional


def mlp(w, d_in=6, d_out=3):
    return nn.Sequential(nn.Linear(d_in, w), nn.Tanh(), nn.Linear(w, w), nn.Tanh(), nn.Linear(w, d_out)).double()


def test_mup_table_adam_and_sgd():
    m = mlp(128)
    adam = plan(m, "mup", base=mlp(32))
    sgd = plan(m, "mup", base=mlp(32), optimizer="sgd")
    lr_adam = {k: r.lr_scale for k, r in adam.rules.items()}
    lr_sgd = {k: r.lr_scale for k, r in sgd.rules.items()}
    assert lr_adam == {"0.weight": 1, "0.bias": 1, "2.weight": 0.25, "2.bias": 1, "4.weight": 0.25, "4.bias": 1}
    assert lr_sgd == {"0.weight": 4, "0.bias": 4, "2.weight": 1, "2.bias": 4, "4.weight": 0.25, "4.bias": 1}
    std = {k: r.init_std for k, r in adam.rules.items()}
    # σ0 = 1/√(base fan_in): input 1/√6, hidden 1/√32 / √4 = 1/√128, output 1/√32 / 4
    assert std["0.weight"] == pytest.approx(1 / math.sqrt(6))
    assert std["2.weight"] == pytest.approx(1 / math.sqrt(128))
    assert std["4.weight"] == pytest.approx(1 / math.sqrt(32) / 4)
    assert std["0.bias"] is None and std["4.bias"] is None
    sp = plan(m, "sp", base=mlp(32))
    assert {r.lr_scale for r in sp.rules.values()} == {1.0}
    assert sp.rules["4.weight"].init_std == pytest.approx(1 / math.sqrt(128))
    assert plan(m, "mup", base=mlp(32), zero_output=True).rules["4.weight"].init_std == 0.0
    assert plan(m, "mup", base=mlp(32), init_std=0.02).rules["2.weight"].init_std == pytest.approx(0.01)
    keep = plan(m, "mup", base=mlp(32), init_std=None)
    assert all(r.init_std is None for r in keep.rules.values())
    assert "hidden" in str(adam) and "2.weight" in str(adam)


def test_at_base_width_every_rule_is_the_base():
    p = plan(mlp(32), "mup", base=mlp(32), delta=mlp(64))
    assert {r.lr_scale for r in p.rules.values()} == {1.0}
    assert p.rules["4.weight"].init_std == pytest.approx(1 / math.sqrt(32))


def _train_side_by_side(a, groups_a, b, groups_b, optimizer, loss_fn, x, y, *, steps):
    """Train two parameterizations of one network and require the same outputs after every step
    (Adam's ε, which does not scale with a multiplier, is made negligible)."""
    make = {"adam": lambda g: torch.optim.Adam(g, eps=1e-30), "adamw": lambda g: torch.optim.AdamW(g, eps=1e-30),
            "sgd": torch.optim.SGD}[optimizer]
    opt_a, opt_b = make(groups_a), make(groups_b)
    for _ in range(steps):
        for net, opt in ((a, opt_a), (b, opt_b)):
            opt.zero_grad()
            loss_fn(net(x), y).backward()
            opt.step()
        torch.testing.assert_close(a(x), b(x), rtol=1e-10, atol=1e-12)


class Readout(nn.Module):
    """Microsoft mup's MuReadout semantics: y = W (x / m) + b."""

    def __init__(self, lin, m):
        super().__init__()
        self.lin, self.m = lin, m

    def forward(self, x):
        return self.lin(x / self.m)


@pytest.mark.parametrize("optimizer,wd", [("adam", 0.0), ("sgd", 0.0), ("adamw", 0.1), ("sgd", 0.1)])
def test_absorbed_multiplier_equals_explicit_readout_multiplier(optimizer, wd):
    """The plan (multiplier absorbed into init and LR) trains the same function as the
    multiplier form with mup's rules (read-out LR ×1 under Adam, ×m under SGD; weight decay
    divided by mup's lr factor), which is the plan's decay="independent"."""
    torch.manual_seed(0)
    w, base_w = 64, 16
    mult = w / base_w
    a = mlp(w)
    p = plan(a, "mup", base=mlp(base_w), optimizer="sgd" if optimizer == "sgd" else "adam")
    p.init_(a, generator=3)
    b = mlp(w)
    b.load_state_dict(a.state_dict())
    with torch.no_grad():
        b[4].weight.mul_(mult)  # W = m · W_eff
    b[4] = Readout(b[4], mult)
    lr = 0.5 if optimizer == "sgd" else 1e-2
    scale_b = {"0.weight": 1, "0.bias": 1, "2.weight": 1 / mult, "2.bias": 1, "4.lin.weight": 1, "4.lin.bias": 1}
    if optimizer == "sgd":
        scale_b = {"0.weight": mult, "0.bias": mult, "2.weight": 1, "2.bias": mult, "4.lin.weight": mult, "4.lin.bias": 1}
    groups_b = [{"params": [q], "lr": lr * scale_b[k], "weight_decay": wd / scale_b[k]} for k, q in b.named_parameters()]
    x, y = torch.randn(40, 6, dtype=torch.float64), torch.randint(0, 3, (40,))
    groups_a = p.param_groups(a, lr=lr, weight_decay=wd, decay="independent")
    _train_side_by_side(a, groups_a, b, groups_b, optimizer, F.cross_entropy, x, y, steps=6)
    assert not torch.allclose(a(x), mlp(w)(x))  # it trained


class Res(nn.Module):
    def __init__(self, w, blocks, mult=1.0, d_in=4):
        super().__init__()
        self.inp, self.out, self.mult = nn.Linear(d_in, w), nn.Linear(w, 2), mult
        self.blocks = nn.ModuleList(nn.Sequential(nn.Linear(w, w), nn.Tanh(), nn.Linear(w, w)) for _ in range(blocks))

    def forward(self, x):
        h = self.inp(x)
        for blk in self.blocks:
            h = h + self.mult * blk(h)
        return self.out(h)


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_depth_mup_absorbed_equals_branch_multiplier(optimizer):
    """Depth-μP: x + f(x) with the 1/√L multiplier absorbed equals x + f(x)/√d (d = L/L0) with the
    depth-μP learning rates (Adam: branch LR / √d; SGD: unchanged)."""
    torch.manual_seed(1)
    L, L0, w = 8, 2, 12
    d = L / L0
    a = Res(w, L).double()
    # the base is built at the model's depth (same parameter names); its depth is given by depth=
    kw = dict(base=Res(w, L).double(), delta=Res(2 * w, L).double(), optimizer=optimizer, depth=(L, L0),
              branches=["blocks.*"], branch_outputs=["blocks.*.2.*"])
    p = plan(a, "depth-mup", **kw)
    # the same selection by module names and types (overparam.backend.select grammar)
    same = plan(a, "depth-mup", **(kw | dict(branches="blocks", branch_outputs=lambda n, q: n.split(".")[2:3] == ["2"])))
    assert same.rules == p.rules
    before = {k: v.clone() for k, v in a.state_dict().items()}
    p.init_(a, generator=5)
    torch.testing.assert_close(a.blocks[0][2].bias, before["blocks.0.2.bias"] / math.sqrt(d))  # kept bias ×d^-1/2
    b = Res(w, L, mult=1 / math.sqrt(d)).double()
    b.load_state_dict(a.state_dict())
    with torch.no_grad():
        for blk in b.blocks:
            blk[2].weight.mul_(math.sqrt(d))
            blk[2].bias.mul_(math.sqrt(d))
    lr = 1e-2 if optimizer == "adam" else 0.1
    branch_lr = lr / math.sqrt(d) if optimizer == "adam" else lr
    groups_b = [{"params": [q], "lr": branch_lr if k.startswith("blocks") else lr} for k, q in b.named_parameters()]
    x, y = torch.randn(30, 4, dtype=torch.float64), torch.randn(30, 2, dtype=torch.float64)
    _train_side_by_side(a, p.param_groups(a, lr=lr), b, groups_b, optimizer, F.mse_loss, x, y, steps=5)


def test_init_statistics_determinism_and_no_side_effects():
    m = mlp(1024).train()
    p = plan(m, "mup", base=mlp(64))
    keys, state = list(m.state_dict()), torch.random.get_rng_state()
    bias = m[0].bias.clone()
    p.init_(m, generator=0)
    assert torch.equal(torch.random.get_rng_state(), state) and list(m.state_dict()) == keys and m.training
    assert torch.equal(m[0].bias, bias)  # vectors keep the model's own init
    assert float(m[2].weight.detach().std()) == pytest.approx(1 / math.sqrt(1024), rel=0.01)
    assert float(m[4].weight.detach().std()) == pytest.approx(1 / math.sqrt(64) / 16, rel=0.05)
    w = m[2].weight.clone()
    p.init_(m, generator=0)
    assert torch.equal(m[2].weight, w)
    p.init_(m, generator=1)
    assert not torch.equal(m[2].weight, w)


def test_param_groups_cover_once_and_weight_decay_rules():
    m = mlp(128)
    p = plan(m, "mup", base=mlp(32))
    groups = p.param_groups(m, lr=1e-3, weight_decay=0.1, decay="coupled", betas=(0.9, 0.95))
    ids = [id(q) for g in groups for q in g["params"]]
    assert sorted(ids) == sorted(id(q) for q in m.parameters()) and len(groups) == 2
    assert all(g["weight_decay"] == 0.1 and g["betas"] == (0.9, 0.95) for g in groups)
    ind = p.param_groups(m, lr=1e-3, weight_decay=0.1)  # default: "independent", as mup
    assert {round(g["lr"] * g["weight_decay"], 12) for g in ind} == {1e-4}
    nov = p.param_groups(m, lr=1e-3, weight_decay=0.1, decay="coupled", vector_decay=False)
    for g in nov:
        assert all(q.ndim > 1 for q in g["params"]) if g["weight_decay"] else all(q.ndim == 1 for q in g["params"])
    torch.optim.AdamW(groups)  # accepted by torch optimizers
    torch.optim.SGD(p.param_groups(m, lr=0.1, momentum=0.9))


def test_bad_input():
    m = mlp(16)
    with pytest.raises(ValueError, match="parameterization"):
        plan(m, "u-mup", base=mlp(8))
    with pytest.raises(ValueError, match="optimizer"):
        plan(m, base=mlp(8), optimizer="lion")
    with pytest.raises(ValueError, match="depth"):
        plan(m, "depth-mup", base=mlp(8))
    with pytest.raises(ValueError, match="depth-mup"):
        plan(m, "mup", base=mlp(8), depth=(4, 2))
    with pytest.raises(ValueError, match="branches"):
        plan(m, "depth-mup", base=mlp(8), depth=(4, 2), branches=["x.*"], branch_outputs=["2.*"])
    with pytest.raises(ValueError, match="init_std"):
        plan(m, base=mlp(8), init_std=-1.0)
    with pytest.raises(ValueError, match="init_std"):
        plan(m, base=mlp(8), init_std="xavier")
    p = plan(m, base=mlp(8))
    with pytest.raises(ValueError, match="shapes differ"):
        p.init_(mlp(32))
    with pytest.raises(ValueError, match="no parameters"):
        p.param_groups(nn.Linear(2, 2), lr=1e-3)
    with pytest.raises(ValueError, match="decay"):
        p.param_groups(m, lr=1e-3, decay="both")
    with pytest.raises(ValueError, match="lr"):
        p.param_groups(m, lr=0)
    with pytest.raises(TypeError, match="model"):
        p.init_("net")


def test_base_on_the_meta_device_costs_nothing():
    with torch.device("meta"):
        base = mlp(1 << 14)  # a 16k-wide base: shapes only, no memory
    p = plan(mlp(64), "mup", base=base)
    assert p.rules["2.weight"].lr_scale == pytest.approx(256.0)  # m_in = 64 / 16384


def _mup_oracle(shape, base_shape, optimizer, readout):
    """Microsoft mup's rules, written from its InfShape semantics (a dimension that differs from
    the base is infinite; ``width_mult`` is that of the last infinite dimension), with MuReadout's
    multiplier c = 1/m absorbed (LR ×c under Adam, ×c² under SGD). Returns (lr factor, multiplier)."""
    mult = [s / b for s, b in zip(shape, base_shape)]
    inf = [i for i, (s, b) in enumerate(zip(shape, base_shape)) if s != b]
    if not inf:
        return 1.0, 1.0
    width_mult = mult[inf[-1]]
    if len(inf) == 2:  # matrix-like: MuAdam lr / fan-in mult; MuSGD lr / (fan-in mult / fan-out mult)
        return (1 / width_mult if optimizer == "adam" else mult[0] / mult[1]), 1.0
    lr = 1.0 if optimizer == "adam" else width_mult  # vector-like
    if not readout:
        return lr, 1.0
    c = 1 / width_mult
    return lr * (c if optimizer == "adam" else c * c), c


def _uneven(w1, w2):
    return nn.Sequential(nn.Linear(5, w1), nn.ReLU(), nn.Linear(w1, w2), nn.LayerNorm(w2), nn.Linear(w2, 3))


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_non_square_growth_matches_mup_oracle(optimizer):
    """Fan-in and fan-out growing by different factors (2 and 4): every lr factor and init std."""
    model, base = _uneven(64, 128), _uneven(32, 32)
    p = plan(model, "mup", base=base, optimizer=optimizer)
    bshapes = {k: tuple(q.shape) for k, q in base.named_parameters()}
    for k, q in model.named_parameters():
        lr, c = _mup_oracle(tuple(q.shape), bshapes[k], optimizer, readout=k == "4.weight")
        assert p.rules[k].lr_scale == pytest.approx(lr, rel=1e-12), k
        if q.ndim == 2:  # σ0 = 1/√(base fan-in); SP-style 1/√fan_in init times the absorbed multiplier
            sigma0, fan_in = 1 / math.sqrt(bshapes[k][1]), q.shape[1]
            want = (sigma0 if k == "0.weight" else 1 / math.sqrt(fan_in)) if c == 1 else sigma0 * c
            assert p.rules[k].init_std == pytest.approx(want, rel=1e-12), k
    assert p.rules["2.weight"].lr_scale == (0.5 if optimizer == "adam" else 2.0)  # m_in = 2, m_out = 4
    # a "fixed" override of a growing tensor gets the base rules: lr ×1, init σ0
    f = plan(model, "mup", base=base, optimizer=optimizer, roles={"2.weight": "fixed"}).rules["2.weight"]
    assert (f.lr_scale, f.init_std) == (1.0, pytest.approx(1 / math.sqrt(32)))


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_depth_mup_closed_form(optimizer):
    """Width ×2 and depth ×4 (d = 4): branch LR ×d^-1/2 (Adam), branch-output init ×d^-1/2 and LR
    a further ×d^-1/2 (Adam) / ×d^-1 (SGD); parameters outside the branches are plain μP."""
    L, L0, d = 8, 2, 4.0
    p = plan(Res(24, L), "depth-mup", base=Res(12, L), optimizer=optimizer, depth=(L, L0), branches=["blocks.*"],
             branch_outputs=["blocks.*.2.*"])
    adam = optimizer == "adam"
    hidden_lr, bias_lr = (0.5, 1.0) if adam else (1.0, 2.0)
    depth = 1 / math.sqrt(d) if adam else 1.0
    absorbed = 1 / math.sqrt(d) if adam else 1 / d
    want = {"inp.weight": (1.0 if adam else 2.0, 0.5), "inp.bias": (1.0 if adam else 2.0, None),
            "out.weight": (0.5, 1 / math.sqrt(12) / 2), "out.bias": (1.0, None),
            "blocks.3.0.weight": (hidden_lr * depth, 1 / math.sqrt(24)), "blocks.3.0.bias": (bias_lr * depth, None),
            "blocks.3.2.weight": (hidden_lr * depth * absorbed, 1 / math.sqrt(24) / math.sqrt(d)),
            "blocks.3.2.bias": (bias_lr * depth * absorbed, None)}
    for k, (lr, std) in want.items():
        r = p.rules[k]
        assert r.lr_scale == pytest.approx(lr, rel=1e-12) and r.init_std == (std and pytest.approx(std, rel=1e-12)), k
        assert r.init_scale == (1 / math.sqrt(d) if k == "blocks.3.2.bias" else 1.0), k


def test_init_is_sequential_float32_draws_of_one_generator():
    """init_ = N(0, 1) float32 draws in rule order from one generator, times init_std in float32,
    then stored in the model's dtype: float64, float32 (drawn in place) and bfloat16 models agree."""
    from overparam.backend.random import gaussian
    m = mlp(16)
    p = plan(m, "mup", base=mlp(8))
    p.init_(m, generator=7)
    g = torch.Generator().manual_seed(7)
    for k, r in p.rules.items():
        if r.init_std is not None:
            want = (gaussian(r.size, generator=g, dtype=torch.float32) * r.init_std).double()
            torch.testing.assert_close(dict(m.named_parameters())[k].detach(), want, rtol=0, atol=0)
    m32, m16 = mlp(16).float(), mlp(16).bfloat16()
    p.init_(m32, generator=7)
    p.init_(m16, generator=7)
    for k in [k for k, r in p.rules.items() if r.init_std is not None]:
        a, b, c = (dict(x.named_parameters())[k].detach() for x in (m, m32, m16))
        assert torch.equal(a, b.double()) and torch.equal(c, b.bfloat16()), k
    t = mlp(16).float()
    t[2].weight.data = t[2].weight.data.t().contiguous().t()   # a non-contiguous parameter takes the copy path
    p.init_(t, generator=7)
    assert torch.equal(t[2].weight, m32[2].weight)


def test_library_calls_have_no_side_effects():
    from overparam.testing import assert_no_side_effects
    base, delta = mlp(8), mlp(12)
    m = mlp(16).eval()
    m[2].train()  # mixed modes must survive too
    with assert_no_side_effects(m):
        p = plan(m, "mup", base=base, delta=delta)
        p.init_(m, generator=0)
        p.param_groups(m, lr=1e-3, weight_decay=0.1)
        str(p)


def test_more_bad_input():
    m, base = mlp(16), mlp(8)
    p = plan(m, base=base)
    for kw in (dict(weight_decay=-0.1), dict(weight_decay=float("nan")), dict(weight_decay="0.1")):
        with pytest.raises(ValueError, match="weight_decay"):
            p.param_groups(m, lr=1e-3, **kw)
    for lr in (True, float("inf"), float("nan"), -1e-3):
        with pytest.raises(ValueError, match="lr"):
            p.param_groups(m, lr=lr)
    for std in (True, float("inf"), 0.0):
        with pytest.raises(ValueError, match="init_std"):
            plan(m, base=base, init_std=std)
    with pytest.raises(ValueError, match="zero_output"):
        plan(m, base=base, init_std=None, zero_output=True)
    with pytest.raises(TypeError, match="branches"):
        plan(m, "depth-mup", base=base, depth=(4, 2), branches=3, branch_outputs=["2.*"])
    with pytest.raises(ValueError, match="branch_outputs: 'fc' matches no"):
        plan(m, "depth-mup", base=base, depth=(4, 2), branches="2", branch_outputs=["2", "fc"])
    with pytest.raises(ValueError, match="branches: .* matches no trainable"):
        plan(m, "depth-mup", base=base, depth=(4, 2), branches=lambda n, p: False, branch_outputs="2")
    with pytest.raises(ValueError, match="depth"):
        plan(m, "depth-mup", base=base, depth=(True, 1), branches=["2.*"], branch_outputs=["2.*"])
    with pytest.raises(TypeError, match="model"):
        plan("net", base=base)

    frozen = mlp(16)
    frozen[0].weight.requires_grad_(False)
    q = plan(frozen, base=base)
    assert "0.weight" not in q.rules and len(q.param_groups(frozen, lr=1e-3)[0]["params"]) >= 1
    frozen[0].weight.requires_grad_(True)  # unfrozen after planning: never silently left out of the optimizer
    with pytest.raises(ValueError, match="does not cover"):
        q.param_groups(frozen, lr=1e-3)


def test_issue20_same_width_base_empty_model_and_zero_output_are_refused():
    """A base of the model's own width without delta= used to mark every tensor 'fixed' silently
    (and then ignore zero_output=True); a model without parameters gave an empty plan."""
    with pytest.raises(ValueError, match="pass delta="):
        plan(mlp(16), "mup", base=mlp(16))
    with pytest.raises(ValueError, match="no trainable parameters"):
        plan(nn.Sequential(nn.ReLU()), "mup", base=nn.Sequential(nn.ReLU()))
    ln = lambda w: nn.Sequential(nn.Linear(4, w), nn.LayerNorm(w))  # noqa: E731 - nothing has role 'output'
    assert plan(ln(16), base=ln(8)).rules["0.weight"].shape.role == "input"
    with pytest.raises(ValueError, match="zero_output=True but no tensor has the role 'output'"):
        plan(ln(16), base=ln(8), zero_output=True)
    # at the base width with delta=, zero_output applies to the read-out
    assert plan(mlp(16), base=mlp(16), delta=mlp(32), zero_output=True).rules["4.weight"].init_std == 0.0


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["aot_eager", "inductor"])
def test_plans_under_torch_compile_and_nothing_on_parameters(backend):
    """A compiled μP model trains to the eager losses (the plan is init + param groups: nothing for the
    compiler to see), and plan/init_/param_groups leave every Parameter object as it was (no
    attributes like mup's ``infshape``, same class, same identity). ``aot_eager`` traces the graph;
    ``inductor`` also generates and runs the code (slower to compile)."""
    def run(compiled):
        torch.manual_seed(0)
        m = mlp(64).float()
        before = {k: (type(q), dict(vars(q))) for k, q in m.named_parameters()}
        p = plan(m, "mup", base=mlp(16))
        p.init_(m, generator=0)
        opt = torch.optim.Adam(p.param_groups(m, lr=1e-2, weight_decay=0.01, eps=1e-8))
        assert {k: (type(q), dict(vars(q))) for k, q in m.named_parameters()} == before
        f = torch.compile(m, backend=backend) if compiled else m
        x, y = torch.randn(32, 6, generator=torch.Generator().manual_seed(1)), torch.arange(32) % 3
        out = []
        for _ in range(4):
            opt.zero_grad()
            loss = F.cross_entropy(f(x), y)
            loss.backward()
            opt.step()
            out.append(float(loss.detach()))
        return out

    eager, compiled = run(False), run(True)
    assert eager[-1] < eager[0]
    assert compiled == pytest.approx(eager, rel=1e-5, abs=0)
