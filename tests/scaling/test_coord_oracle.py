"""coord_check's recorded numbers against a hand-run oracle: under SP with the model's own init
(``init_std=None``: lr scale 1, nothing re-drawn) it is plain SGD, so ``rms`` / ``delta`` must be
the RMS of each module's output and of its change since step 0, computed here directly."""

import torch
from torch import nn

from overparam.scaling import coord_check


def _make(w):
    return nn.Sequential(nn.Linear(3, w), nn.Tanh(), nn.Linear(w, 2)).double()


def test_rms_and_delta_are_the_rms_of_outputs_and_of_their_change():
    x = torch.linspace(-1, 1, 24, dtype=torch.float64).reshape(8, 3)
    y = torch.cos(torch.arange(16, dtype=torch.float64)).reshape(8, 2)
    loss_fn = nn.functional.mse_loss
    steps, lr = 3, 0.5
    cc = coord_check(_make, loss_fn, (x, y), widths=[4, 16], parameterization="sp", lr=lr, steps=steps,
                     optimizer="sgd", plan_kwargs={"init_std": None}, generator=5)
    assert cc.modules == ["0", "2"]
    for i, w in enumerate([4, 16]):
        with torch.random.fork_rng():
            torch.manual_seed(5)
            model = _make(w)
        opt = torch.optim.SGD(model.parameters(), lr=lr)
        first = None
        for t in range(steps + 1):
            outs = [model[0](x).detach(), model(x).detach()]
            first = outs if first is None else first
            for j, (o, f) in enumerate(zip(outs, first)):
                assert torch.allclose(cc.rms[i, t, j], o.pow(2).mean().sqrt(), rtol=1e-12, atol=0)
                assert torch.allclose(cc.delta[i, t, j], (o - f).pow(2).mean().sqrt(), rtol=1e-10, atol=1e-15)
            opt.zero_grad()
            loss = loss_fn(model(x), y)
            assert abs(float(cc.losses[i, t]) - loss.item()) <= 1e-12 * loss.item()
            loss.backward()
            opt.step()
        assert float(cc.delta[i, -1, 1]) > 1e-3  # the outputs really moved
