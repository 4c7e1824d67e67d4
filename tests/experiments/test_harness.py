import functools

import pytest
import torch
from torch import nn

from overparam.backend.random import fan_in_normal_
from overparam.experiments.harness import Trace, batches, digits, mlp, pyplot, split, train


# --- mlp ---------------------------------------------------------------------------------------

def test_mlp_is_seeded_and_equals_fan_in_normal_on_the_same_layers():
    a, b, c = mlp([5, 7, 3], generator=4), mlp([5, 7, 3], generator=4), mlp([5, 7, 3], generator=5)
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(pa, pb)
    assert not torch.equal(a[0].weight, c[0].weight)
    ref = fan_in_normal_(nn.Sequential(nn.Linear(5, 7), nn.ReLU(), nn.Linear(7, 3)), generator=4)
    assert [k for k, _ in a.named_parameters()] == [k for k, _ in ref.named_parameters()]
    for pa, pr in zip(a.parameters(), ref.parameters()):
        assert torch.equal(pa, pr)


def test_mlp_options_dtype_and_no_global_rng():
    state = torch.random.get_rng_state()
    net = mlp([4, 6, 6, 2], activation=nn.Tanh, bias=False, std=0.5, generator=0, dtype=torch.float64)
    assert torch.equal(state, torch.random.get_rng_state())
    assert [type(m) for m in net] == [nn.Linear, nn.Tanh, nn.Linear, nn.Tanh, nn.Linear]
    assert all(p.dtype == torch.float64 for p in net.parameters()) and all(m.bias is None for m in net[::2])
    ref = fan_in_normal_(nn.Sequential(nn.Linear(4, 6, bias=False), nn.Linear(6, 6, bias=False),
                                       nn.Linear(6, 2, bias=False)).double(), std=0.5, generator=0)
    for pa, pr in zip(net.parameters(), ref.parameters()):
        assert torch.equal(pa, pr)
    deep_linear = mlp([3, 3, 3], activation=None, generator=0)
    assert [type(m) for m in deep_linear] == [nn.Linear, nn.Linear]
    assert mlp([3, 2], device="meta", generator=0)[0].weight.is_meta


@pytest.mark.parametrize("sizes", [[4], [], [4, 0], [4, 2.0], [4, True], "42", None])
def test_mlp_rejects_bad_sizes(sizes):
    with pytest.raises(ValueError, match="sizes"):
        mlp(sizes, generator=0)


def test_mlp_rejects_a_non_callable_activation():
    with pytest.raises(TypeError, match="activation"):
        mlp([2, 2, 2], activation="relu", generator=0)


# --- data --------------------------------------------------------------------------------------

def test_digits_split_and_batches():
    pytest.importorskip("sklearn")
    X, y = digits(dtype=torch.float64)
    assert X.shape == (1797, 64) and X.dtype == torch.float64 and y.dtype == torch.int64
    assert float(X.min()) == 0.0 and float(X.max()) == 1.0 and set(y.tolist()) == set(range(10))
    (Xa, ya), (Xb, yb) = split(X, y, test=0.2, generator=3)
    assert len(yb) == 359 and len(ya) == 1797 - 359
    rows = {tuple(r.tolist()) for r in torch.cat([Xa, Xb])}
    assert len(rows) == len({tuple(r.tolist()) for r in X})  # a partition: every row once
    (Xc, _), _ = split(X, y, test=0.2, generator=3)
    assert torch.equal(Xa, Xc)


def test_split_and_batches_reject_bad_input():
    with pytest.raises(ValueError, match="same number of rows"):
        split(torch.zeros(3), torch.zeros(4), test=0.5)
    for bad in (0, 1, 1.5, True):
        with pytest.raises(ValueError, match="test"):
            split(torch.zeros(3), torch.zeros(3), test=bad)
    with pytest.raises(ValueError, match="size"):
        next(batches(10, 0))
    with pytest.raises(ValueError, match="n must"):
        next(batches(0, 3))


def test_batches_are_seeded_and_in_range():
    a, b = batches(7, 5, generator=1), batches(7, 5, generator=1)
    first = [next(a) for _ in range(20)]
    assert all(torch.equal(x, next(b)) for x in first)
    allidx = torch.cat(first)
    assert int(allidx.min()) >= 0 and int(allidx.max()) < 7 and len(set(allidx.tolist())) == 7


# --- train -------------------------------------------------------------------------------------

def _least_squares(seed=0, n=12, d=3):
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(n, d, generator=g, dtype=torch.float64)
    b = torch.randn(n, generator=g, dtype=torch.float64)
    return A, b


def test_train_is_gradient_descent_with_the_closed_form_iterates():
    """f(w) = ½‖Aw − b‖²/n; GD iterates w_t = w* + (I − ηAᵀA/n)^t (w₀ − w*)."""
    A, b = _least_squares()
    n, lr, steps = len(b), 0.3, 25
    w = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    f = lambda t: 0.5 * (A @ w - b).square().sum() / n  # noqa: E731
    seen = []
    tr = train(torch.optim.SGD([w], lr=lr), f, steps, measure=lambda t: w.detach().clone(), after_step=seen.append)
    w_star = torch.linalg.lstsq(A, b).solution
    M = torch.eye(3, dtype=torch.float64) - lr * A.T @ A / n
    expect = [w_star + torch.linalg.matrix_power(M, t) @ (-w_star) for t in range(steps + 1)]
    assert tr.steps == steps and tr.stopped is None and not tr.diverged and seen == list(range(steps))
    assert len(tr.measures) == steps + 1 and len(tr.losses) == steps
    for t in range(steps + 1):
        torch.testing.assert_close(tr.measures[t], expect[t], rtol=0, atol=1e-13)
    for t in range(steps):
        want = 0.5 * float((A @ expect[t] - b).square().sum()) / n
        assert abs(tr.losses[t] - want) <= 1e-13 * want


def test_train_until_stops_at_the_first_measurement_that_meets_it():
    A, b = _least_squares(1)
    w = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    w_star = torch.linalg.lstsq(A, b).solution
    err = lambda t: float((w.detach() - w_star).norm())  # noqa: E731
    tr = train(torch.optim.SGD([w], lr=0.3), lambda t: 0.5 * (A @ w - b).square().mean(), 10_000,
               measure=err, until=lambda e: e <= 1e-3)
    assert tr.stopped == "until" and tr.measures[-1] <= 1e-3 and all(e > 1e-3 for e in tr.measures[:-1])
    assert len(tr.measures) == tr.steps + 1 == len(tr.losses) + 1 and 0 < tr.steps < 10_000


def test_train_stops_before_a_non_finite_update():
    w = torch.ones(1, dtype=torch.float64, requires_grad=True)
    tr = train(torch.optim.SGD([w], lr=10.0), lambda t: (w ** 4).sum(), 1000)  # diverges, overflows
    assert tr.diverged and tr.stopped == "nonfinite" and len(tr.losses) == tr.steps < 1000
    assert all(v == v and abs(v) != float("inf") for v in tr.losses)
    assert torch.isfinite(w).all()  # the update with the non-finite loss was not taken


def test_train_passes_the_loss_to_optimizers_that_need_it():
    class Recorder(torch.optim.SGD):
        def step(self, closure=None, *, loss=None):
            self.seen.append(float(loss))
            return super().step(closure)

    w = torch.full((2,), 2.0, requires_grad=True)
    opt = Recorder([w], lr=0.1)
    opt.seen = []
    tr = train(opt, lambda t: w.square().sum(), 3, step_with_loss=True)
    assert opt.seen == tr.losses and tr.losses[0] == 8.0


def test_train_zero_steps_measures_once_and_bad_arguments():
    w = torch.zeros(1, requires_grad=True)
    opt = torch.optim.SGD([w], lr=0.1)
    tr = train(opt, lambda t: w.sum(), 0, measure=lambda t: t)
    assert tr == Trace(losses=[], measures=[0], steps=0, stopped=None)
    with pytest.raises(ValueError, match="steps"):
        train(opt, lambda t: w.sum(), -1)
    with pytest.raises(ValueError, match="until"):
        train(opt, lambda t: w.sum(), 1, until=lambda m: True)
    with pytest.raises(TypeError, match="optimizer"):
        train([w], lambda t: w.sum(), 1)


def test_train_progress_wraps_the_step_range():
    w = torch.zeros(1, requires_grad=True)
    wrapped = []

    def progress(it, desc=None):
        wrapped.append(desc)
        return it

    train(torch.optim.SGD([w], lr=0.1), lambda t: w.sum(), 2, progress=functools.partial(progress, desc="x"))
    assert wrapped == ["x"]


def test_pyplot_is_agg_or_none():
    plt = pyplot()
    assert plt is None or plt.get_backend().lower() == "agg"
