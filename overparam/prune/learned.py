"""Learned masks over frozen weights: edge-popup supermasks and learnable N:M (MaskLLM-style).

* :class:`EdgePopup` (Ramanujan et al. 2020): a score ``s`` per weight; the forward uses the
  weights ``θ ⊙ top-k(|s|)`` and the straight-through estimator sends the gradient of the
  masked weight through the hard top-k, ``∂L/∂s = (∂L/∂θ̃) ⊙ θ ⊙ sign(s)``. The weights are
  never trained: the result is a subnetwork of a random network (a strong lottery ticket).
* :class:`LearnableNM` (Fang et al. 2024, MaskLLM): every group of M weights has logits over
  its ``C(M, N)`` candidate patterns; training samples a soft mask by Gumbel-softmax, and
  :meth:`LearnableNM.masks` decodes the arg-max pattern, so the decoded mask is N:M by
  construction, whatever the logits.

Both are thin ``nn.Module`` shells holding the user's model and calling it through
``torch.func.functional_call``. Optimize ``shell.mask_parameters()``. By default the model's
parameters are only read (frozen); ``train_weights=True`` trains them jointly with the masks:
the forward then uses ``θ ⊙ mask`` with gradients reaching ``θ`` (``∂L/∂θ = (∂L/∂θ̃) ⊙ mask``
for a masked weight, the usual gradient for every other parameter), so optimize
``[*shell.mask_parameters(), *model.parameters()]``.

Example:
    >>> import torch
    >>> net = torch.nn.Linear(8, 2)
    >>> ep = EdgePopup(net, 0.5, generator=0)
    >>> ep(torch.randn(3, 8)).shape, int(ep.masks()["weight"].sum())
    (torch.Size([3, 2]), 8)
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ..backend.checks import check_real
from ..backend.layers import weights_of
from ..backend.nm import check_nm, nm_groups, nm_ungroup
from ..backend.random import GeneratorLike, construction_generator, uniform
from .masks import check_scope, check_sparsity, unstructured
from ..backend.select import Spec
from .nm import nm_dims
from .targets import Masks
from .targets import targets as _targets

__all__ = ["EdgePopup", "LearnableNM", "nm_patterns"]


class EdgePopup(nn.Module):
    """Supermask training by edge-popup over the frozen weights of ``model``.

    ``generator=None`` draws from torch's default generator (the construction rule, docs/index.md).

    Args:
        model: the network whose (random) weights are kept fixed.
        sparsity: fraction pruned (per layer with ``scope="layerwise"``, the paper's choice).
        scope: ``"layerwise"`` or ``"global"``.
        targets, exclude: which weights to mask (see :func:`~overparam.prune.targets.targets`).
        generator: initial scores, Kaiming-uniform like the paper.
        train_weights: also train the model's parameters through this forward (default: frozen).

    Reference: Ramanujan, Wortsman, Kembhavi, Farhadi and Rastegari, "What's hidden in a randomly
    weighted neural network?", CVPR 2020.

    Example (a few steps move the scores; the weights stay frozen):
        >>> net = torch.nn.Linear(8, 2)
        >>> w0 = net.weight.detach().clone()
        >>> ep = EdgePopup(net, 0.5, generator=0)
        >>> opt = torch.optim.SGD(ep.mask_parameters(), lr=1.0)
        >>> for _ in range(3):
        ...     opt.zero_grad()
        ...     ep(torch.randn(16, 8)).square().mean().backward()
        ...     opt.step()
        >>> torch.equal(net.weight, w0), int(ep.masks()["weight"].sum())
        (True, 8)
    """

    def __init__(self, model: nn.Module, sparsity: float, *, targets: Spec = None, exclude: Spec = None,
                 scope: str = "layerwise", generator: GeneratorLike = None, train_weights: bool = False) -> None:
        super().__init__()
        self.model, self.train_weights = model, _check_flag(train_weights)
        self.sparsity = check_sparsity(sparsity)
        self.scope = check_scope(scope)
        g = construction_generator(generator)
        self._names = list(_targets(model, targets, exclude=exclude))
        params, ws = dict(model.named_parameters()), weights_of(model)
        init = []
        for k in self._names:
            w = params[k]
            bound = (6.0 * w.shape[ws[k].layout.out_dim] / w.numel()) ** 0.5 if w.dim() > 1 else 1.0  # 1/fan-in
            init.append(nn.Parameter((uniform(w.shape, low=-1.0, high=1.0, generator=g, dtype=torch.float64) * bound)
                                     .to(dtype=w.dtype, device=w.device)))
        self.scores = nn.ParameterList(init)

    def mask_parameters(self) -> Iterator[nn.Parameter]:
        """The trainable scores, one per masked weight and shaped like it.

        Example:
            >>> net = torch.nn.Linear(8, 2)
            >>> [tuple(s.shape) for s in EdgePopup(net, 0.5, generator=0).mask_parameters()]
            [(2, 8)]
        """
        return iter(self.scores)

    def masks(self) -> Masks:
        """The current hard masks (top-k of ``|s|``, exact counts).

        Example:
            >>> net = torch.nn.Linear(8, 2)
            >>> ep = EdgePopup(net, 0.25, generator=0)
            >>> m = ep.masks()["weight"]
            >>> int(m.sum()), torch.equal(m, ep.scores[0].abs() >= ep.scores[0].abs()[m].min())
            (12, True)
        """
        return unstructured({k: s.detach().abs() for k, s in zip(self._names, self.scores)}, self.sparsity,
                            scope=self.scope)

    def forward(self, *args, **kwargs):
        """The model's output with weights ``θ ⊙ mask`` (straight-through gradients to the scores).

        Example:
            >>> net = torch.nn.Linear(8, 2)
            >>> ep = EdgePopup(net, 0.5, generator=0)
            >>> x = torch.randn(3, 8)
            >>> torch.allclose(ep(x), x @ (net.weight * ep.masks()["weight"]).T + net.bias)
            True
        """
        hard = self.masks()
        params = dict(self.model.named_parameters())
        sub = _weights(params, self.train_weights)
        for k, s in zip(self._names, self.scores):
            a = s.abs()
            ste = hard[k].to(a.dtype) + a - a.detach()  # value: the hard mask; gradient: identity
            sub[k] = sub[k] * ste
        return torch.func.functional_call(self.model, sub, args, kwargs, strict=False)


def _check_flag(train_weights: bool) -> bool:
    if not isinstance(train_weights, bool):
        raise TypeError(f"train_weights must be a bool, got {type(train_weights).__name__}")
    return train_weights


def _weights(params: dict[str, nn.Parameter], train: bool) -> dict[str, Tensor]:
    """The model's parameters as ``functional_call`` gets them: live (``train``) or detached (frozen)."""
    return dict(params) if train else {k: p.detach() for k, p in params.items()}


def nm_patterns(n: int, m: int, *, device=None) -> Tensor:
    """All ``C(m, n)`` N:M patterns of one group, ``(P, m)`` bool, in lexicographic order.

    Example:
        >>> nm_patterns(2, 4).shape
        torch.Size([6, 4])
    """
    check_nm(n, m)
    rows = [[i in c for i in range(m)] for c in itertools.combinations(range(m), n)]
    return torch.tensor(rows, dtype=torch.bool, device=device)


class LearnableNM(nn.Module):
    """Learnable N:M masks by Gumbel-softmax over each group's candidate patterns.

    ``generator=None`` draws from torch's default generator (the construction rule, docs/index.md).

    Args:
        model: the network; its weights are used as they are (frozen here).
        n, m: the pattern (``1 <= n < m``, ``C(m, n) <= 12870``); groups along the input dim.
        tau: Gumbel-softmax temperature; ``scale``: multiplies the logits (MaskLLM's κ).
        prior: ``"magnitude"`` initializes logits to ``prior_strength ×`` the standardized kept
            magnitude of each pattern (MaskLLM's prior), ``None`` to zeros.
        hard: straight-through hard samples in training (the forward sees an exact N:M mask).
        generator: the Gumbel noise (kept in the module: the same seed gives the same samples).
        targets, exclude: which weights to mask (see :func:`~overparam.prune.targets.targets`).
        train_weights: also train the model's parameters through this forward (default: frozen).

    In ``eval()`` mode the forward uses the decoded masks.

    Reference: Fang et al., "MaskLLM: learnable semi-structured sparsity for large language
    models", NeurIPS 2024.

    Example:
        >>> net = torch.nn.Linear(8, 2)
        >>> nm = LearnableNM(net, 2, 4, generator=0)
        >>> nm(torch.randn(5, 8)).shape, nm.masks()["weight"].reshape(2, 2, 4).sum(-1).unique().tolist()
        (torch.Size([5, 2]), [2])
    """

    def __init__(self, model: nn.Module, n: int, m: int, *, tau: float = 1.0, scale: float = 1.0,
                 prior: str | None = "magnitude", prior_strength: float = 3.0, hard: bool = False,
                 generator: GeneratorLike = None, targets: Spec = None, exclude: Spec = None,
                 train_weights: bool = False) -> None:
        super().__init__()
        check_nm(n, m)
        self.train_weights = _check_flag(train_weights)
        for name, v in (("tau", tau), ("scale", scale), ("prior_strength", prior_strength)):
            check_real(v, name, finite=True)
        check_real(tau, "tau", above=0.0)
        if prior not in ("magnitude", None):
            raise ValueError(f"prior must be 'magnitude' or None, got {prior!r}")
        self.model, self.n, self.m, self.tau, self.scale, self.hard = model, n, m, tau, scale, hard
        self._gen = None if generator is None else construction_generator(generator)  # None: the default, per sample
        self._names = list(_targets(model, targets, exclude=exclude))
        params, self._dims = dict(model.named_parameters()), nm_dims(model, self._names)
        pats = nm_patterns(n, m)
        if len(pats) > 12870:
            raise ValueError(f"C({m}, {n}) = {len(pats)} candidate patterns is too many")
        self.register_buffer("patterns", pats, persistent=False)
        logits = []
        for k in self._names:
            g = nm_groups(params[k].detach(), m, self._dims[k])  # (G, m); raises if not divisible
            if prior == "magnitude":
                v = g.abs().double() @ pats.double().T
                v = (v - v.mean(1, keepdim=True)) / (v.std(1, keepdim=True) + 1e-12) * prior_strength
            else:
                v = torch.zeros(g.shape[0], len(pats), dtype=torch.float64)
            logits.append(nn.Parameter(v.to(dtype=torch.float32, device=g.device)))
        self.logits = nn.ParameterList(logits)

    def mask_parameters(self) -> Iterator[nn.Parameter]:
        """The trainable logits, one ``(groups, C(m, n))`` tensor per masked weight.

        Example:
            >>> net = torch.nn.Linear(8, 2)
            >>> [tuple(p.shape) for p in LearnableNM(net, 2, 4).mask_parameters()]  # 4 groups, C(4, 2) = 6
            [(4, 6)]
        """
        return iter(self.logits)

    def masks(self) -> Masks:
        """Decoded masks: each group takes its arg-max pattern (valid N:M always).

        Example (with the magnitude prior the decoded mask is 2:4 magnitude pruning):
            >>> net = torch.nn.Linear(8, 2)
            >>> from overparam.prune import nm_masks
            >>> torch.equal(LearnableNM(net, 2, 4).masks()["weight"], nm_masks(net, 2, 4)["weight"])
            True
        """
        params = dict(self.model.named_parameters())
        out = {}
        for k, lg in zip(self._names, self.logits):
            out[k] = nm_ungroup(self.patterns[lg.detach().argmax(1)], params[k], self._dims[k])
        return out

    def soft_masks(self) -> dict[str, Tensor]:
        """One Gumbel-softmax sample of the soft masks (differentiable in the logits).

        Example (each group's soft mask sums to N):
            >>> net = torch.nn.Linear(8, 2)
            >>> soft = LearnableNM(net, 2, 4, generator=0).soft_masks()["weight"]
            >>> torch.allclose(soft.reshape(2, 2, 4).sum(-1), torch.full((2, 2), 2.0)), soft.requires_grad
            (True, True)
        """
        params = dict(self.model.named_parameters())
        out = {}
        pf = self.patterns.float()
        for k, lg in zip(self._names, self.logits):
            u = uniform(lg.shape, generator=self._gen, device=lg.device)
            expo = -torch.log(u.clamp_min(1e-20))  # Exp(1) > 0
            gumbel = -torch.log(expo.clamp_min(1e-20))
            y = F.softmax((lg * self.scale + gumbel) / self.tau, dim=1)
            if self.hard:
                y = F.one_hot(y.argmax(1), y.shape[1]).to(y.dtype) + y - y.detach()
            out[k] = nm_ungroup(y @ pf, params[k], self._dims[k]).to(params[k].dtype)
        return out

    def forward(self, *args, **kwargs):
        """The model's output with weights ``θ ⊙ mask``: a soft Gumbel sample in training, the decoded
        N:M masks in ``eval()`` mode.

        Example:
            >>> net = torch.nn.Linear(8, 2)
            >>> nm = LearnableNM(net, 2, 4, generator=0).eval()
            >>> x = torch.randn(3, 8)
            >>> torch.allclose(nm(x), x @ (net.weight * nm.masks()["weight"]).T + net.bias)
            True
        """
        params = dict(self.model.named_parameters())
        mk = self.soft_masks() if self.training else {k: v.to(params[k].dtype) for k, v in self.masks().items()}
        sub = _weights(params, self.train_weights)
        sub.update({k: sub[k] * mk[k] for k in self._names})
        return torch.func.functional_call(self.model, sub, args, kwargs, strict=False)
