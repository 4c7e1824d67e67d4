"""Reproducible under ``torch.manual_seed`` (docs/index.md, "Randomness"), in every package.

``generator=None`` follows one of two rules (:mod:`overparam.backend.random`):

* a construction draws from ``torch.default_generator``: the same numbers after the same
  ``torch.manual_seed``, and exactly the draws (and the final state) of a generator seeded the same;
* a measurement seeds a private generator from the default generator's state: the same numbers
  after the same ``torch.manual_seed`` and with no draw in between, and the global state is
  bitwise unchanged.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

import overparam as op
from overparam.backend.linalg import randomized_svd

D = torch.float64


def _tensors(x) -> list[Tensor]:
    """Every tensor of a result (tensor, module, mapping, sequence or dataclass), in order."""
    if isinstance(x, Tensor):
        return [x.detach()]
    if isinstance(x, nn.Module):
        return [t.detach() for t in x.state_dict().values()]
    if isinstance(x, dict):
        return [t for v in x.values() for t in _tensors(v)]
    if isinstance(x, (list, tuple)):
        return [t for v in x for t in _tensors(v)]
    if dataclasses.is_dataclass(x):
        return [t for f in dataclasses.fields(x) for t in _tensors(getattr(x, f.name))]
    return []


def _same(a: list[Tensor], b: list[Tensor]) -> bool:
    return len(a) == len(b) and all(torch.equal(x, y) for x, y in zip(a, b))


def _after_seed(fn, seed: int = 0):
    """``fn(None)``'s tensors after ``torch.manual_seed(seed)``, the seeded state and the state after."""
    torch.manual_seed(seed)
    seeded = torch.get_rng_state()
    out = _tensors(fn(None))
    return out, seeded, torch.get_rng_state()


def _net(sizes=(4, 6, 3)):
    return op.testing.tanh_mlp(list(sizes), generator=1)  # built from its own generator: no global draw


def _data(n=8, d_in=4, d_out=3):
    g = torch.Generator().manual_seed(2)
    return torch.randn(n, d_in, generator=g, dtype=D), torch.randn(n, d_out, generator=g, dtype=D)


def _lora(gen):
    net = _net()
    op.factor.lora_(net, "0", rank=2, init="gaussian", generator=gen)
    return net


CONSTRUCTIONS = {
    "factor.lora_": _lora,
    "factor.LowRankLinear": lambda gen: op.factor.LowRankLinear(5, 4, rank=2, init="small", generator=gen),
    "factor.SparseLowRank": lambda gen: op.factor.SparseLowRank((6, 5), rank=2, density=0.3, generator=gen),
    "factor.init_balanced": lambda gen: op.factor.init_balanced((5, 4), 3, generator=gen, dtype=D),
    "problems.sensing": lambda gen: op.problems.sensing(n=6, r=2, m=30, generator=gen),
    "problems.completion": lambda gen: op.problems.completion(n=8, r=2, p=0.5, generator=gen),
    "prune.random_scores": lambda gen: op.prune.random_scores(_net(), generator=gen),
    "prune.prune_at_init": lambda gen: op.prune.prune_at_init(_net(), "random", 0.5, generator=gen),
    "prune.EdgePopup": lambda gen: op.prune.EdgePopup(_net(), 0.5, generator=gen).scores,
    "prune.LearnableNM.soft_masks": lambda gen: op.prune.LearnableNM(_net((8, 8, 4)), 2, 4, generator=gen).soft_masks(),
    "scaling.Plan.init_": lambda gen: _mup_init(gen),
    "testing.tanh_mlp": lambda gen: op.testing.tanh_mlp([3, 5, 2], generator=gen),
}


def _mup_init(gen):
    net = _net((4, 16, 3))
    op.scaling.plan(net, "mup", base=_net((4, 8, 3))).init_(net, generator=gen)
    return net


@pytest.mark.parametrize("name", sorted(CONSTRUCTIONS))
def test_construction_draws_from_the_default_generator(name):
    make = CONSTRUCTIONS[name]
    a, seeded, after = _after_seed(make)
    assert a and not torch.equal(seeded, after), "generator=None must draw from torch's default generator"
    assert _same(a, _after_seed(make)[0])
    # exactly the draws of a generator seeded the same, and the global stream ends where it ends
    g = torch.Generator().manual_seed(0)
    assert _same(a, _tensors(make(g)))
    assert torch.equal(after, g.get_state())


def test_init_small_is_torch_randn():
    torch.manual_seed(4)
    f = op.factor.init_small((5, 4), 3, scale=0.1, dtype=D)
    after = torch.get_rng_state()
    torch.manual_seed(4)
    assert torch.equal(f.left, 0.1 * torch.randn(5, 3, dtype=D))
    assert torch.equal(f.right, 0.1 * torch.randn(4, 3, dtype=D))
    assert torch.equal(after, torch.get_rng_state())


def test_plan_init_is_torch_randn_in_rule_order():
    net = _net((4, 16, 3))
    p = op.scaling.plan(net, "mup", base=_net((4, 8, 3)))
    torch.manual_seed(6)
    p.init_(net)
    after = torch.get_rng_state()
    torch.manual_seed(6)
    params = dict(net.named_parameters())
    for k, r in p.rules.items():
        if r.init_std is not None:
            want = torch.randn(params[k].shape, dtype=torch.float32) * r.init_std  # float32 draws (issue 13)
            assert torch.equal(params[k].detach(), want.to(params[k].dtype)), k
    assert torch.equal(after, torch.get_rng_state())


def _model_case():
    return _net(), F.mse_loss, _data()


def _hessian_op():
    net, loss, data = _model_case()
    return op.hessian.hessian(net, loss, data)


A = op.testing.symmetric_with_spectrum([4.0, -2.0, 1.0, 0.5, 0.25, 0.1, 0.0, -0.3], generator=3)
W = torch.randn(12, 9, generator=torch.Generator().manual_seed(5), dtype=D)
MEASUREMENTS = {
    "backend.randomized_svd": lambda gen: randomized_svd(W, 3, niter=0, generator=gen),
    "factor.init_spectral": lambda gen: op.factor.init_spectral(W, 3, method="randomized", niter=0, generator=gen),
    "hessian.hutchinson": lambda gen: op.hessian.hutchinson(A, probes=4, generator=gen),
    "hessian.hutchpp": lambda gen: op.hessian.hutchpp(A, probes=6, generator=gen),
    "hessian.xtrace": lambda gen: op.hessian.xtrace(A, probes=4, generator=gen),
    "hessian.diagonal": lambda gen: op.hessian.diagonal(A, probes=3, generator=gen),
    "hessian.slq": lambda gen: op.hessian.slq(A, probes=2, steps=3, generator=gen),
    "hessian.lanczos": lambda gen: op.hessian.lanczos(A, k=1, max_matvecs=3, ncv=3, generator=gen).vectors,
    "hessian.power_iteration": lambda gen: op.hessian.power_iteration(A, max_iters=2, generator=gen).vectors,
    "hessian.ball_sharpness": lambda gen: op.hessian.ball_sharpness(
        lambda th: th[0].pow(4).sum(), (torch.zeros(3, dtype=D),), 0.1, steps=1, generator=gen).delta,
    "hessian.lanczos(model)": lambda gen: op.hessian.lanczos(_hessian_op(), k=1, max_matvecs=3, ncv=3,
                                                              generator=gen).vectors,
    "hessian.mc_fisher": lambda gen: op.hessian.mc_fisher(_net(), "mse", _data(), generator=gen).to_dense(),
    "prune.hessian_diagonal": lambda gen: op.prune.hessian_diagonal(*_model_case(), probes=2, generator=gen),
    "prune.obd_scores": lambda gen: op.prune.obd_scores(*_model_case(), probes=2, generator=gen),
}


@pytest.mark.filterwarnings("ignore:.*(did not converge|did not reach tol):RuntimeWarning")  # tiny budgets on purpose
@pytest.mark.parametrize("name", sorted(MEASUREMENTS))
def test_measurement_follows_the_seed_and_leaves_the_stream_alone(name):
    measure = MEASUREMENTS[name]
    a, seeded, after = _after_seed(measure)
    assert a and torch.equal(seeded, after), "a measurement must not advance the global RNG"
    assert _same(a, _tensors(measure(None)))  # no draw in between: the same probes
    assert not _same(a, _after_seed(measure, 1)[0])  # a new seed: new probes
    assert _same(a, _after_seed(measure)[0])
    assert _same(_tensors(measure(7)), _tensors(measure(torch.Generator().manual_seed(7))))


def test_mup_coord_check_after_manual_seed_is_reproducible():
    """The issue's example: a μP coordinate check after ``torch.manual_seed(0)`` gives the same
    slopes in repeated runs (it gave -0.115, -0.014 and -0.334), and leaves the stream alone."""
    def make(w):
        return nn.Sequential(nn.Linear(6, w), nn.ReLU(), nn.Linear(w, 3))

    g = torch.Generator().manual_seed(0)
    data = torch.randn(32, 6, generator=g), torch.randint(0, 3, (32,), generator=g)
    runs = []
    for _ in range(2):
        torch.manual_seed(0)
        seeded = torch.get_rng_state()
        cc = op.scaling.coord_check(make, F.cross_entropy, data, widths=[8, 16], steps=2)
        assert torch.equal(seeded, torch.get_rng_state())
        runs.append(cc)
    assert runs[0].slopes() == runs[1].slopes()
    assert torch.equal(runs[0].delta, runs[1].delta) and torch.equal(runs[0].losses, runs[1].losses)
    torch.manual_seed(1)
    other = op.scaling.coord_check(make, F.cross_entropy, data, widths=[8, 16], steps=2)
    assert not torch.equal(other.delta, runs[0].delta)
