"""Depth rules (depth-μP, CompleteP): the absorbed plan against the explicit branch-multiplier form
(same outputs every step, Adam with a per-layer ε that matters, and SGD), closed forms, ε against
the gradient scale, and inference of the depth from ``branch_outputs``."""

import math

import pytest
import torch
from torch import nn

from overparam.scaling import plan
from overparam.scaling.depth import ALPHA, depth_factors
from test_plan import Res

F = nn.functional


KW = dict(branches="blocks", branch_outputs="blocks.*.2")


@pytest.mark.parametrize("param", ["completep", "depth-mup"])
@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_absorbed_equals_explicit_branch_multiplier(param, optimizer):
    """x + f(x) under the plan (multiplier d^-α absorbed, per-layer ε) equals x + d^-α f(x) trained
    with the multiplier-form rules written out here: branch LR ×d^(α-1) (Adam) / ×d^(2α-1) (SGD) and
    branch ε ×d^-α·(1/m_out), at every step, with an ε large enough to change the updates."""
    torch.manual_seed(2)
    L, L0, w, bw = 8, 2, 12, 6
    d, alpha = L / L0, ALPHA[param]
    a = Res(w, L).double()
    p = plan(a, param, base=Res(bw, L), optimizer=optimizer, depth=(L, L0), **KW)
    p.init_(a, generator=5)
    b = Res(w, L, mult=d ** -alpha).double()
    b.load_state_dict(a.state_dict())
    with torch.no_grad():
        for blk in b.blocks:
            blk[2].weight.mul_(d ** alpha)
            blk[2].bias.mul_(d ** alpha)
    adam = optimizer == "adam"
    lr, eps = (3e-2, 1e-3) if adam else (0.1, None)
    m = w / bw
    groups_b = []
    for k, q in b.named_parameters():  # μP in width (ratio m) plus the depth rules of the multiplier form
        mult_lr = {"inp.weight": 1, "inp.bias": 1, "out.weight": 1 / m, "out.bias": 1}.get(k, 1 / m if q.ndim == 2 else 1)
        if not adam:
            mult_lr = {"inp.weight": m, "inp.bias": m, "out.weight": 1 / m, "out.bias": 1}.get(k, 1 if q.ndim == 2 else m)
        e = {"out.weight": 1, "out.bias": 1}.get(k, 1 / m)
        if k.startswith("blocks"):
            mult_lr *= d ** (alpha - 1) if adam else d ** (2 * alpha - 1)
            e *= d ** -alpha
        groups_b.append({"params": [q], "lr": lr * mult_lr} | ({"eps": eps * e} if adam else {}))
    groups_a = p.param_groups(a, lr=lr, eps=eps) if adam else p.param_groups(a, lr=lr)
    make = torch.optim.Adam if adam else torch.optim.SGD
    opt_a, opt_b = make(groups_a), make(groups_b)
    x, y = torch.randn(30, 4, dtype=torch.float64), torch.randn(30, 2, dtype=torch.float64)
    y0 = a(x).detach()
    for _ in range(5):
        for net, opt in ((a, opt_a), (b, opt_b)):
            opt.zero_grad()
            F.mse_loss(net(x), y).backward()
            opt.step()
        torch.testing.assert_close(a(x), b(x), rtol=1e-10, atol=1e-12)
    assert (a(x) - y0).abs().max() > 1e-3  # it trained


def test_completep_closed_form_and_depth_inference():
    L, L0 = 8, 2
    p = plan(Res(24, L), "completep", base=Res(12, L), depth=(L, L0), **KW)
    q = plan(Res(24, L), "completep", base=Res(12, L), depth=L0, **KW)  # L counted from branch_outputs
    assert p.rules == q.rules
    r = p.rules
    # Adam: branch LR ×d^0 (so μP's 1/m_in = 1/2), branch output absorbs c = 1/4: init ×1/4, LR ×1/4
    assert r["blocks.3.0.weight"].lr_scale == pytest.approx(0.5) and r["blocks.3.0.bias"].lr_scale == pytest.approx(1)
    assert r["blocks.3.2.weight"].lr_scale == pytest.approx(0.5 / 4)
    assert r["blocks.3.2.weight"].init_std == pytest.approx(1 / math.sqrt(24) / 4)
    assert r["blocks.3.2.bias"].init_scale == pytest.approx(0.25)
    # ε: 1/m_out, ×1/d inside a branch except its absorbed output; output layer 1
    assert r["blocks.3.0.weight"].eps_scale == pytest.approx(0.5 / 4) and r["blocks.3.2.weight"].eps_scale == 0.5
    assert r["inp.weight"].eps_scale == 0.5 and r["out.weight"].eps_scale == 1 and r["out.bias"].eps_scale == 1
    assert r["inp.weight"].lr_scale == 1 and r["out.weight"].lr_scale == 0.5
    assert depth_factors(4.0, 0.5, "sgd") == (1.0, 0.5, 0.5)
    sgd = plan(Res(24, L), "completep", base=Res(12, L), depth=(L, L0), optimizer="sgd", **KW).rules
    assert sgd["blocks.3.0.weight"].lr_scale == pytest.approx(4.0)  # ×d^(2α-1) = ×4, μP hidden SGD ×1
    assert sgd["blocks.3.2.weight"].lr_scale == pytest.approx(4.0 / 16)


@pytest.mark.parametrize("param", ["completep", "depth-mup"])
def test_depth_errors(param):
    m, base = Res(8, 3), Res(4, 3)
    with pytest.raises(ValueError, match=r"needs depth=.*cannot be inferred"):
        plan(m, param, base=base, **KW)
    with pytest.raises(ValueError, match="cannot infer the model's depth"):
        plan(m, param, base=base, depth=2, branches="blocks", branch_outputs="blocks.*.2.bias")
    for bad in ((3, 0), (3,), (True, 2), 0, "3"):
        with pytest.raises(ValueError, match="depth must be"):
            plan(m, param, base=base, depth=bad, **KW)
    with pytest.raises(ValueError, match="branches= and branch_outputs="):
        plan(m, param, base=base, depth=(3, 1))
    with pytest.raises(ValueError, match="depth parameterizations"):
        plan(m, "mup", base=base, depth=(3, 1))
    with pytest.raises(ValueError, match="parameterization must be one of"):
        plan(m, "complete-p", base=base, depth=(3, 1), **KW)


def _grad_rms(param, w, L, seed=0):
    torch.manual_seed(seed)
    net = Res(w, L, d_in=16).double()
    with torch.device("meta"):
        base = Res(16, L, d_in=16)
    kw = dict(depth=(L, 2), **KW) if param != "mup" else {}
    p = plan(net, param, base=base, **kw)
    p.init_(net, generator=seed)
    x = torch.randn(256, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    net(x).sum(dim=1).mean().backward()  # a linear loss: a Θ(1) backward signal at the output at every width
    return {k: (float(q.grad.pow(2).mean().sqrt()), p.rules[k].eps_scale) for k, q in net.named_parameters()}


def _slope(xs, ys):
    lx = torch.log(torch.tensor(xs, dtype=torch.float64))
    ly = torch.log(torch.tensor(ys, dtype=torch.float64))
    lx = lx - lx.mean()
    return float((lx * (ly - ly.mean())).sum() / (lx * lx).sum())


def test_eps_scales_like_the_gradient_in_width_and_depth():
    """Per-layer ε (Everett et al. 2024): gradient RMS / ε_l is flat in width (μP) and in depth
    (depth-μP, CompleteP) for every weight matrix, while a single ε is swamped or swamps: without
    the scaling the hidden gradient RMS falls like 1/width."""
    widths = [64, 256, 1024]
    g = [_grad_rms("mup", w, 2) for w in widths]
    for k in ("inp.weight", "blocks.1.0.weight", "blocks.1.2.weight", "out.weight"):
        assert abs(_slope(widths, [gi[k][0] / gi[k][1] for gi in g])) < 0.2, k
    assert _slope(widths, [gi["blocks.1.0.weight"][0] for gi in g]) < -0.8
    depths = [2, 8, 32]
    for param in ("depth-mup", "completep"):
        g = [_grad_rms(param, 64, L) for L in depths]
        for k in ("blocks.0.0.weight", "blocks.1.2.weight", "out.weight"):
            assert abs(_slope(depths, [gi[k][0] / gi[k][1] for gi in g])) < 0.2, (param, k)
        assert abs(_slope(depths, [gi["blocks.0.0.weight"][0] for gi in g]) + ALPHA[param]) < 0.2, param


def test_eps_param_groups():
    L = 4
    m = Res(16, L)
    p = plan(m, "completep", base=Res(8, L), depth=(L, 1), **KW)
    groups = p.param_groups(m, lr=1e-3, eps=1e-8)
    assert sorted(id(q) for g in groups for q in g["params"]) == sorted(id(q) for q in m.parameters())
    assert sorted({g["eps"] for g in groups}) == pytest.approx([1e-8 / 8, 1e-8 / 2, 1e-8], rel=1e-12)
    assert all("eps" not in g for g in p.param_groups(m, lr=1e-3))
    for bad in (0.0, -1e-8, float("nan"), True):
        with pytest.raises(ValueError, match="eps"):
            p.param_groups(m, lr=1e-3, eps=bad)
    sgd = plan(m, "mup", base=Res(8, L), optimizer="sgd")
    with pytest.raises(ValueError, match="eps= is Adam"):
        sgd.param_groups(m, lr=0.1, eps=1e-8)
    torch.optim.Adam(groups)
