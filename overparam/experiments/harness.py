"""The shared harness of the experiments (and the benchmarks' model builders): seeded models,
data, one training loop and the optional plotting import.

* :func:`mlp` — a seeded ``Linear → act → … → Linear`` stack, initialised by
  :func:`overparam.backend.random.fan_in_normal_` (the one seeded init);
* :func:`digits`, :func:`split`, :func:`batches` — scikit-learn's bundled 8×8 digits, a seeded
  train/test split and seeded minibatch indices;
* :func:`train` — the one training loop: ``steps`` optimizer updates with an optional
  measurement before every update and after the last one, an early stop on a measurement or a
  non-finite loss, and a hook after every update; it returns a :class:`Trace`;
* :func:`pyplot` — ``matplotlib.pyplot`` on the Agg backend, or None without the plot extra.

Example:
    >>> import torch
    >>> from overparam.experiments.harness import mlp, train
    >>> X = torch.linspace(-1, 1, 8).reshape(8, 1)
    >>> net = mlp([1, 1], activation=None, generator=0)
    >>> opt = torch.optim.SGD(net.parameters(), lr=0.5)
    >>> tr = train(opt, lambda t: (net(X) - 3 * X).square().mean(), 200)
    >>> round(float(net[0].weight.detach()), 4), tr.steps, tr.stopped
    (3.0, 200, None)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from ..backend.random import GeneratorLike, construction_generator, fan_in_normal_

__all__ = ["mlp", "digits", "split", "batches", "Trace", "train", "pyplot"]


def mlp(sizes: Sequence[int], *, activation: Callable[[], nn.Module] | None = nn.ReLU, bias: bool = True,
        std: float = 1.0, bias_std: float = 0.1, generator: GeneratorLike = None, dtype: torch.dtype | None = None,
        device: torch.device | str | None = None) -> nn.Sequential:
    """A multilayer perceptron ``Linear(sizes[0], sizes[1]) → activation() → … → Linear(sizes[-2], sizes[-1])``.

    Built on the meta device (no draw from the global RNG, no throw-away init) and initialised
    by :func:`~overparam.backend.random.fan_in_normal_`: weights ``std · N(0, 1)/sqrt(fan_in)``,
    biases ``bias_std · N(0, 1)``, drawn from ``generator`` in parameter order, so the same
    generator state gives the same model on every device and dtype. ``activation=None`` gives a
    deep linear network. Input ``(batch, sizes[0])``, output ``(batch, sizes[-1])``.

    ``generator=None`` draws from torch's default generator (the construction rule, docs/index.md).

    Example:
        >>> net = mlp([4, 8, 2], generator=0)
        >>> net
        Sequential(
          (0): Linear(in_features=4, out_features=8, bias=True)
          (1): ReLU()
          (2): Linear(in_features=8, out_features=2, bias=True)
        )
        >>> bool((net[0].weight == mlp([4, 8, 2], generator=0)[0].weight).all())
        True
    """
    sizes = list(sizes) if isinstance(sizes, (list, tuple)) else sizes
    if (not isinstance(sizes, list) or len(sizes) < 2
            or any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in sizes)):
        raise ValueError(f"sizes must be a list of at least two positive ints, got {sizes!r}")
    if activation is not None and not callable(activation):
        raise TypeError(f"activation must be a module class (or None), got {activation!r}")
    layers: list[nn.Module] = []
    with torch.device("meta"):
        for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
            layers.append(nn.Linear(a, b, bias=bias, dtype=dtype))
            if activation is not None and i < len(sizes) - 2:
                layers.append(activation())
    net = nn.Sequential(*layers)
    if torch.device(device if device is not None else "cpu").type != "meta":
        net = net.to_empty(device=device if device is not None else "cpu")
    return fan_in_normal_(net, std=std, bias_std=bias_std, generator=generator)


def digits(*, dtype: torch.dtype = torch.float32, device: torch.device | str | None = None) -> tuple[Tensor, Tensor]:
    """scikit-learn's bundled digits: ``X (1797, 64)`` pixels scaled to ``[0, 1]`` and labels ``y (1797,)`` (int64).

    Raises ImportError (with the install hint) without scikit-learn.

    Example:
        >>> X, y = digits()
        >>> tuple(X.shape), tuple(y.shape), float(X.max()), int(y.max())
        ((1797, 64), (1797,), 1.0, 9)
    """
    try:
        from sklearn.datasets import load_digits
    except ImportError as e:
        raise ImportError("the digits data ships with scikit-learn, which is not installed: "
                          "pip install 'overparam[digits]'") from e
    X, y = load_digits(return_X_y=True)
    return (torch.tensor(X / 16.0, dtype=dtype, device=device), torch.tensor(y, dtype=torch.int64, device=device))


def split(X: Tensor, y: Tensor, *, test: float, generator: GeneratorLike = None
          ) -> tuple[tuple[Tensor, Tensor], tuple[Tensor, Tensor]]:
    """``((X_train, y_train), (X_test, y_test))``: a seeded random permutation, the first
    ``floor(test · n)`` rows for testing. ``X (n, ...)``, ``y (n, ...)``.

    ``generator=None`` draws from torch's default generator (the construction rule, docs/index.md).

    Example:
        >>> (Xa, ya), (Xb, yb) = split(torch.arange(10.0), torch.arange(10), test=0.2, generator=0)
        >>> len(ya), len(yb), sorted((ya.tolist() + yb.tolist())) == list(range(10))
        (8, 2, True)
    """
    if len(X) != len(y):
        raise ValueError(f"X and y must have the same number of rows, got {len(X)} and {len(y)}")
    if isinstance(test, bool) or not isinstance(test, (int, float)) or not 0 < test < 1:
        raise ValueError(f"test must be a fraction in (0, 1), got {test!r}")
    perm = torch.randperm(len(y), generator=construction_generator(generator)).to(y.device)
    n_test = int(len(y) * test)
    te, tr = perm[:n_test], perm[n_test:]
    return (X[tr], y[tr]), (X[te], y[te])


def batches(n: int, size: int, *, generator: GeneratorLike = None, device: torch.device | str | None = None
            ) -> Iterator[Tensor]:
    """An endless stream of minibatch indices ``(size,)`` drawn uniformly with replacement from ``range(n)``.

    ``generator=None`` draws from torch's default generator (the construction rule, docs/index.md).

    Example:
        >>> it = batches(100, 4, generator=0)
        >>> idx = next(it)
        >>> tuple(idx.shape), bool(((0 <= idx) & (idx < 100)).all())
        ((4,), True)
    """
    for name, val in (("n", n), ("size", size)):
        if isinstance(val, bool) or not isinstance(val, int) or val < 1:
            raise ValueError(f"{name} must be a positive int, got {val!r}")
    g = construction_generator(generator)
    while True:
        yield torch.randint(0, n, (size,), generator=g).to(device)


@dataclass
class Trace:
    """What :func:`train` did.

    ``losses[t]``: the loss of update ``t`` (one per update taken); ``measures[t]``: the
    measurement before update ``t``, and after the last one (``steps + 1`` of them when
    nothing stopped the run); ``steps``: updates taken; ``stopped``: None (all steps ran),
    ``"until"`` (a measurement met ``until``) or ``"nonfinite"`` (a loss was NaN or ±inf; that
    update was not taken).
    """

    losses: list[float] = field(default_factory=list)
    measures: list[Any] = field(default_factory=list)
    steps: int = 0
    stopped: str | None = None

    @property
    def diverged(self) -> bool:
        """True when a non-finite loss stopped the run."""
        return self.stopped == "nonfinite"


def train(optimizer: torch.optim.Optimizer, loss: Callable[[int], Tensor], steps: int, *,
          measure: Callable[[int], Any] | None = None, until: Callable[[Any], bool] | None = None,
          after_step: Callable[[int], None] | None = None, step_with_loss: bool = False,
          progress: Callable[[Iterable[int]], Iterable[int]] | None = None) -> Trace:
    """The one training loop: ``steps`` updates of ``optimizer`` on the scalar ``loss(t)``.

    For ``t = 0, 1, …, steps − 1``: ``measure(t)`` (recorded; the run stops if ``until`` of it
    is true), then ``optimizer.zero_grad()``, ``ℓ = loss(t)`` (the run stops, before the update,
    if ``ℓ`` is not finite), ``ℓ.backward()``, ``optimizer.step()`` (``step(loss=ℓ)`` with
    ``step_with_loss=True``, for optimizers that need the loss value, like
    :class:`overparam.optim.PrecGD`), then ``after_step(t)`` (a scheduler, a pruner). After the
    last update ``measure(steps)`` is recorded once more (and ``until`` checked). ``progress``
    wraps the step range (e.g. ``functools.partial(ctx.progress, desc=...)``).

    Example (least squares, whose minimiser is known: ``w = 2``):
        >>> w = torch.zeros(1, requires_grad=True)
        >>> x = torch.tensor([1.0, 2.0, 3.0])
        >>> tr = train(torch.optim.SGD([w], lr=0.1), lambda t: ((w * x - 2 * x) ** 2).mean(), 100,
        ...            measure=lambda t: float(w.detach()), until=lambda v: abs(v - 2) < 1e-6)
        >>> tr.stopped, abs(tr.measures[-1] - 2) < 1e-6, len(tr.measures) == tr.steps + 1
        ('until', True, True)
    """
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(f"optimizer must be a torch.optim.Optimizer, got {type(optimizer).__name__}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise ValueError(f"steps must be an int >= 0, got {steps!r}")
    if until is not None and measure is None:
        raise ValueError("until needs a measure: it is checked on each measurement")
    trace = Trace()

    def measured(t: int) -> bool:
        if measure is None:
            return False
        trace.measures.append(m := measure(t))
        if until is not None and until(m):
            trace.stopped = "until"
            return True
        return False

    for t in (progress(range(steps)) if progress is not None else range(steps)):
        if measured(t):
            return trace
        optimizer.zero_grad()
        ell = loss(t)
        value = float(ell.detach())
        if not math.isfinite(value):
            trace.stopped = "nonfinite"
            return trace
        trace.losses.append(value)
        ell.backward()
        if step_with_loss:
            optimizer.step(loss=ell.detach())
        else:
            optimizer.step()
        trace.steps = t + 1
        if after_step is not None:
            after_step(t)
    measured(steps)
    return trace


def pyplot():
    """``matplotlib.pyplot`` with the non-interactive Agg backend, or None if matplotlib is not installed.

    Example:
        >>> plt = pyplot()
        >>> plt is None or plt.get_backend().lower() == "agg"
        True
    """
    try:
        import matplotlib
    except ImportError:
        return None
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt
