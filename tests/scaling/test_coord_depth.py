"""Coordinate check in depth (issue 13's acceptance): the change of the residual stream fed to the
read-out after a few Adam steps is flat in depth L = 2..32 under depth-μP and CompleteP (|slope| < 0.3
against log L) and grows under μP without a depth rule (slope > 0.6)."""

import pytest
import torch
from torch import nn

from overparam.experiments.depth_transfer import ResMLP
from overparam.scaling import coord_check_depth, plot_coord_check

F = nn.functional
KW = dict(branches="blocks", branch_outputs="blocks.*.2")


def Res(L):  # noqa: N802 - a model class in spirit: depth -> residual MLP 16 -> 32 -> L blocks -> 4
    return ResMLP(16, 32, 4, L)


DATA = (torch.randn(64, 16, generator=torch.Generator().manual_seed(0)), torch.arange(64) % 4)


@pytest.mark.slow
def test_hidden_update_slopes_in_depth_distinguish_the_rules():
    slopes = {}
    for param in ("depth-mup", "completep", "mup"):
        cc = coord_check_depth(Res, F.cross_entropy, DATA, depths=[2, 4, 8, 16, 32], parameterization=param, lr=1e-2,
                               steps=3, modules="out", record="input", generator=0, plan_kwargs=KW)
        assert cc.axis == "depth" and cc.depths == [2, 4, 8, 16, 32] and cc.delta.shape == (5, 4, 1)
        slopes[param] = cc.slopes()["out"]
    assert abs(slopes["depth-mup"]) < 0.3 and abs(slopes["completep"]) < 0.3, slopes
    assert slopes["mup"] > 0.6, slopes


def test_records_modules_present_at_every_depth_and_leaves_state_alone():
    rng = torch.random.get_rng_state()
    cc = coord_check_depth(Res, F.cross_entropy, DATA, depths=[3, 2], parameterization="completep", lr=1e-2, steps=1,
                           generator=1, plan_kwargs=KW)
    assert torch.equal(torch.random.get_rng_state(), rng)
    assert cc.depths == [2, 3] and cc.modules == ["inp", "out", "blocks.0.0", "blocks.0.2", "blocks.1.0", "blocks.1.2"]
    again = coord_check_depth(Res, F.cross_entropy, DATA, depths=[2, 3], parameterization="completep", lr=1e-2,
                              steps=1, generator=1, plan_kwargs=KW)
    assert torch.equal(cc.delta, again.delta)
    assert "coord check in depth" in str(cc)
    with pytest.raises(AttributeError, match="no depths"):
        cc.axis = "width"
        cc.depths
    cc.axis = "depth"
    pytest.importorskip("matplotlib")
    import matplotlib
    matplotlib.use("Agg")
    axes = plot_coord_check(cc)
    assert axes[0].get_xlabel() == "depth"


def test_bad_input():
    call = dict(depths=[2, 4], plan_kwargs=KW, steps=1)
    with pytest.raises(ValueError, match="depths"):
        coord_check_depth(Res, F.cross_entropy, DATA, **(call | dict(depths=[2])))
    with pytest.raises(ValueError, match="base_depth"):
        coord_check_depth(Res, F.cross_entropy, DATA, base_depth=0, **call)
    with pytest.raises(ValueError, match="record"):
        coord_check_depth(Res, F.cross_entropy, DATA, record="grad", **call)
    with pytest.raises(ValueError, match="plan_kwargs must not hold"):
        coord_check_depth(Res, F.cross_entropy, DATA, **(call | dict(plan_kwargs=KW | {"depth": (4, 2)})))
    with pytest.raises(ValueError, match="branches= and branch_outputs="):
        coord_check_depth(Res, F.cross_entropy, DATA, **(call | dict(plan_kwargs={})))
    with pytest.raises(ValueError, match="modules: .blocks.3. matches no module"):
        coord_check_depth(Res, F.cross_entropy, DATA, modules="blocks.3", **(call | dict(depths=[2, 4])))
    with pytest.raises(TypeError, match="make_model"):
        coord_check_depth(3, F.cross_entropy, DATA, **call)
