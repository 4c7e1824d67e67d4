import copy
import io
import pickle

import pytest
import torch

from overparam.prune import apply as A
from overparam.prune.masks import magnitude
from overparam.testing import assert_no_side_effects


def _net(seed=0):
    g = torch.Generator().manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.Tanh(), torch.nn.Linear(16, 3))
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g))
    x, y = torch.randn(32, 6, generator=g), torch.randn(32, 3, generator=g)
    return net, x, y


OPTS = {
    "sgd": lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=0.9, weight_decay=1e-2),
    "sgd-nesterov": lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-2),
    "adamw": lambda ps: torch.optim.AdamW(ps, lr=1e-2, weight_decay=0.1),
    "adamw-amsgrad": lambda ps: torch.optim.AdamW(ps, lr=1e-2, weight_decay=0.1, amsgrad=True),
    "adam-foreach-off": lambda ps: torch.optim.Adam(ps, lr=1e-2, foreach=False),
    "adam-l2": lambda ps: torch.optim.Adam(ps, lr=1e-2, weight_decay=0.1),
    "rmsprop": lambda ps: torch.optim.RMSprop(ps, lr=1e-3, momentum=0.9, weight_decay=1e-2, centered=True),
    "adagrad": lambda ps: torch.optim.Adagrad(ps, lr=1e-2, weight_decay=1e-2),
}


@pytest.mark.parametrize("name", list(OPTS))
@pytest.mark.parametrize("policy", ["auto", "grads", "full"])
def test_pruned_weights_and_state_exactly_zero_after_50_steps(name, policy):
    net, x, y = _net()
    opt = OPTS[name](net.parameters())
    # dense warm-up so that the optimizer state is non-zero everywhere before masking
    for _ in range(3):
        opt.zero_grad()
        torch.nn.functional.mse_loss(net(x), y).backward()
        opt.step()
    masks = magnitude(net, 0.7)
    keys = list(net.state_dict())
    before = {k: v.clone() for k, v in net.state_dict().items()}
    with A.masked(net, masks, optimizer=opt, policy=policy) as h:
        assert h.policy == ("grads" if policy == "auto" else policy)
        for _ in range(50):
            opt.zero_grad()
            torch.nn.functional.mse_loss(net(x), y).backward()
            opt.step()
    params = dict(net.named_parameters())
    for k, m in masks.items():
        assert (params[k][~m] == 0).all()
        assert (params[k].grad[~m] == 0).all()
        for v in opt.state[params[k]].values():
            if v.shape == m.shape:
                assert (v[~m] == 0).all()
        assert (params[k][m] != before[k][m]).any()  # survivors trained
    assert list(net.state_dict()) == keys


def test_hooks_removed_after_exit():
    net, x, y = _net()
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    masks = magnitude(net, 0.5)
    with A.masked(net, masks, optimizer=opt) as h:
        assert "active=True" in repr(h)
    torch.nn.functional.mse_loss(net(x), y).backward()
    opt.step()
    assert (net[0].weight[~masks["0.weight"]] != 0).any()  # no longer masked


def test_model_untouched_deepcopy_pickle_and_no_side_effects():
    net, x, y = _net()
    opt = torch.optim.Adam(net.parameters())
    with assert_no_side_effects(net):
        h = A.masked(net, magnitude(net, 0.5), optimizer=opt)
    c = copy.deepcopy(net)
    assert torch.equal(c(x), net(x))
    buf = io.BytesIO()
    torch.save(net, buf)
    assert pickle.loads(pickle.dumps(net)) is not None
    assert list(net.state_dict()) == ["0.weight", "0.bias", "2.weight", "2.bias"]
    h.remove()


def test_compile_no_graph_breaks():
    net, x, y = _net()
    A.masked(net, magnitude(net, 0.5))
    import torch._dynamo as dynamo

    dynamo.reset()
    exp = dynamo.explain(lambda inp: torch.nn.functional.mse_loss(net(inp), y))(x)
    assert exp.graph_break_count == 0 and exp.graph_count == 1


def test_bad_masks():
    net, _, _ = _net()
    with pytest.raises(ValueError, match="has shape"):
        A.masked(net, {"0.weight": torch.ones(6, 16, dtype=torch.bool)})
    with pytest.raises(ValueError, match="names no parameter"):
        A.masked(net, {"9.weight": torch.ones(2, dtype=torch.bool)})
    with pytest.raises(TypeError, match="bool"):
        A.masked(net, {"0.weight": torch.ones(16, 6)})
    other = torch.optim.SGD([torch.nn.Parameter(torch.ones(1))], lr=0.1)
    with pytest.raises(ValueError, match="optimizer does not hold"):
        A.masked(net, magnitude(net, 0.5), optimizer=other)


def test_parametrize_route_matches_masked():
    net, x, y = _net()
    twin = copy.deepcopy(net)
    masks = magnitude(net, 0.6)
    A.parametrize_masks_(net, masks)
    A.apply_masks_(twin, masks)
    assert torch.equal(net(x), twin(x))
    torch.nn.functional.mse_loss(net(x), y).backward()
    g = net[0].parametrizations.weight.original.grad
    assert (g[~masks["0.weight"]] == 0).all()  # the gradient of the pruned entries is zero
    A.unparametrize_masks_(net)
    assert sorted(net.state_dict()) == sorted(twin.state_dict())  # parametrize reorders, names are back
    assert torch.equal(net(x), twin(x))


class _DriftSGD(torch.optim.Optimizer):
    """A user optimizer whose update moves zero entries (a constant drift and a growing state)."""

    def __init__(self, params, lr=0.01):
        super().__init__(params, {"lr": lr})

    @torch.no_grad()
    def step(self, closure=None):
        for g in self.param_groups:
            for p in g["params"]:
                if p.grad is None:
                    continue
                st = self.state[p]
                st["buf"] = st.get("buf", torch.zeros_like(p)) + 1.0
                p.add_(p.grad + 1e-3 * st["buf"], alpha=-g["lr"])


@pytest.mark.parametrize("make", [lambda ps: torch.optim.Adamax(ps, lr=1e-2), _DriftSGD])
def test_full_policy_remasks_weights_and_state_of_any_optimizer(make):
    # not in GRAD_ONLY_EXACT: auto picks "full" (weights and state re-masked after each step);
    # _DriftSGD moves zero entries, so only the post-step re-mask keeps them at zero
    net, x, y = _net()
    opt = make(net.parameters())
    masks = magnitude(net, 0.5)
    with A.masked(net, masks, optimizer=opt) as h:
        assert h.policy == "full"
        for _ in range(5):
            opt.zero_grad()
            torch.nn.functional.mse_loss(net(x), y).backward()
            opt.step()
    ps = dict(net.named_parameters())
    for k, m in masks.items():
        assert (ps[k][~m] == 0).all()
        if isinstance(opt, _DriftSGD):
            assert (opt.state[ps[k]]["buf"][~m] == 0).all() and (opt.state[ps[k]]["buf"][m] == 5).all()
    with pytest.raises(ValueError, match="policy"):
        A.masked(net, masks, optimizer=opt, policy="bogus")


def test_parametrize_round_trip_keeps_order_and_optimizer_state():
    """Issue 20: the round trip used to re-register weight after bias, so an Adam state_dict saved
    before it loaded the (16, 6) exp_avg onto the (16,) bias without error."""
    net, x, y = _net()
    net[0].register_buffer("extra", torch.ones(2))
    names, ids = [k for k, _ in net.named_parameters()], [id(p) for p in net.parameters()]
    keys = list(net.state_dict())
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    torch.nn.functional.mse_loss(net(x), y).backward()
    opt.step()
    saved = copy.deepcopy(opt.state_dict())
    masks = magnitude(net, 0.5, targets=["0", "2"])
    masks["0.bias"] = torch.rand(16, generator=torch.Generator().manual_seed(0)) > 0.5  # two on one module
    A.unparametrize_masks_(A.parametrize_masks_(net, masks))
    assert [k for k, _ in net.named_parameters()] == names
    assert [id(p) for p in net.parameters()] == ids  # the same Parameter objects
    assert list(net.state_dict()) == keys
    opt2 = torch.optim.Adam(net.parameters(), lr=1e-2)
    opt2.load_state_dict(saved)
    for p, q in zip(net.parameters(), opt.param_groups[0]["params"]):
        assert opt2.state[p]["exp_avg"].shape == p.shape
        assert torch.equal(opt2.state[p]["exp_avg"], opt.state[q]["exp_avg"])
    assert torch.equal(net[0].weight[~masks["0.weight"]], torch.zeros(int((~masks["0.weight"]).sum())))


def test_empty_masks_refused_naming_masks():
    net, _, _ = _net()
    for fn in (lambda: A.masked(net, {}), lambda: A.apply_masks_(net, {}), lambda: A.parametrize_masks_(net, {})):
        with pytest.raises(ValueError, match="masks is empty"):
            fn()


@pytest.mark.parametrize("call", [lambda m, k: A.masked(m, k), lambda m, k: A.apply_masks_(m, k),
                                  lambda m, k: A.parametrize_masks_(m, k), lambda m, k: A.unparametrize_masks_(m)])
def test_a_model_that_is_not_a_module_is_refused_by_name(call):
    """Issue 20: used to fail with AttributeError: 'str' object has no attribute 'named_parameters'."""
    with pytest.raises(TypeError, match="model must be an nn.Module"):
        call("not a module", {"weight": torch.ones(2, 2, dtype=torch.bool)})
