"""prune's selection: targets=/exclude=/overrides= through overparam.backend.select, the same in every function."""

import pytest
import torch
from torch import nn
from torch.nn import functional as F

import overparam as op
from overparam.prune import init as I
from overparam.prune import learned as L
from overparam.prune import masks as M
from overparam.prune import nm as N
from overparam.prune import scores as S
from overparam.prune.lottery import lottery
from overparam.prune.schedules import GradualPruner
from overparam.prune.targets import kept_fraction, resolve_overrides, targets


class Tiny(nn.Module):
    """Embedding → block(Linear, LayerNorm, Linear) → head: every kind of parameter a rule must handle."""

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.emb = nn.Embedding(10, 8)
        self.block = nn.Sequential(nn.Linear(8, 8), nn.LayerNorm(8), nn.Linear(8, 8))
        self.head = nn.Linear(8, 4)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g))

    def forward(self, idx):
        return self.head(torch.tanh(self.block(self.emb(idx)))).mean(1)


def _data():
    g = torch.Generator().manual_seed(1)
    return torch.randint(0, 10, (6, 3), generator=g), torch.randn(6, 4, generator=g)


# the oracle: which parameter names each spec must give, written out by hand
CASES = [
    (None, None, ["block.0.weight", "block.2.weight", "head.weight"]),
    ("emb", None, ["emb.weight"]),                                   # an Embedding is pruned when named
    (nn.Embedding, None, ["emb.weight"]),
    ("block", None, ["block.0.weight", "block.2.weight"]),           # a container: the prunable weights in it
    (["emb", "head"], None, ["emb.weight", "head.weight"]),
    ("*.weight", None, ["emb.weight", "block.0.weight", "block.2.weight", "head.weight"]),  # not the LayerNorm's
    (None, "block.2", ["block.0.weight", "head.weight"]),
    (nn.Linear, ["head", "block.0"], ["block.2.weight"]),
    (lambda n, p: p.shape[0] == 4, None, ["head.weight"]),           # a predicate sees the parameter
    ("head.weight", None, ["head.weight"]),
]


@pytest.mark.parametrize("spec,exclude,want", CASES)
def test_targets_oracle(spec, exclude, want):
    assert list(targets(Tiny(), spec, exclude=exclude)) == want


@pytest.mark.parametrize("spec,match", [
    ("nomatch", "targets: 'nomatch'"),            # a typo
    ("block.1", "targets: 'block.1' selects no prunable weight"),   # a LayerNorm
    ("head.bias", "targets: 'head.bias' selects no prunable weight"),
    (nn.GRU, "targets: GRU"),
    (["emb", "nomatch"], "targets: 'nomatch'"),   # every item of a list must select something
])
def test_targets_unmatched_raise(spec, match):
    with pytest.raises(ValueError, match=match):
        targets(Tiny(), spec)


def test_exclude_unmatched_and_empty_selection_raise():
    with pytest.raises(ValueError, match="exclude: 'nomatch'"):
        targets(Tiny(), exclude="nomatch")
    with pytest.raises(ValueError, match="no parameter selected"):
        targets(Tiny(), "head", exclude="head")
    with pytest.raises(TypeError, match="model"):
        targets("not a model")


def _keys(fn):
    return list(fn())


def _functions(spec, exclude):
    """Every prune function that chooses parameters, called with the same selection."""
    net, data = Tiny(), _data()
    sel = {"targets": spec, "exclude": exclude}
    opt = lambda ps: torch.optim.SGD(ps, lr=1e-2)

    def train(model, o, steps):
        for _ in range(steps):
            o.zero_grad()
            F.mse_loss(model(data[0]), data[1]).backward()
            o.step()

    def gradual():
        gp = GradualPruner(net, opt(net.parameters()), lambda t: 0.5, **sel)
        return gp.step(0)

    def movement():
        F.mse_loss(net(data[0]), data[1]).backward()
        mv = S.Movement()
        mv.update(net, **sel)
        return mv.scores

    return {
        "magnitude": lambda: M.magnitude(net, 0.5, **sel),
        "nm_masks": lambda: N.nm_masks(net, 2, 4, **sel),
        "magnitude_scores": lambda: S.magnitude_scores(net, **sel),
        "random_scores": lambda: S.random_scores(net, generator=0, **sel),
        "snip_scores": lambda: S.snip_scores(net, F.mse_loss, data, **sel),
        "movement": movement,
        "prune_at_init": lambda: I.prune_at_init(net, "random", 0.5, generator=0, **sel),
        "EdgePopup": lambda: L.EdgePopup(net, 0.5, generator=0, **sel).masks(),
        "LearnableNM": lambda: L.LearnableNM(net, 2, 4, generator=0, **sel).masks(),
        "lottery": lambda: lottery(net, train, optimizer_fn=opt, steps=1, rounds=1, rate=0.5, **sel).masks,
        "GradualPruner": gradual,
    }


@pytest.mark.parametrize("spec,exclude,want", [c for c in CASES if not callable(c[0])])
def test_one_spec_selects_the_same_weights_everywhere(spec, exclude, want):
    for name, fn in _functions(spec, exclude).items():
        assert list(fn()) == want, name


@pytest.mark.parametrize("name", list(_functions(None, None)))
def test_unmatched_spec_raises_everywhere(name):
    with pytest.raises(ValueError, match="targets: 'nomatch'"):
        _functions("nomatch", None)[name]()
    with pytest.raises(ValueError, match="exclude: 'nomatch'"):
        _functions(None, "nomatch")[name]()


def test_overrides_keys_are_specs():
    net = Tiny()
    m = M.magnitude(net, 0.5, targets=["emb", "block", "head"], overrides={nn.Embedding: 0.75, "block.2": 0.25})
    assert int((~m["emb.weight"]).sum()) == 60      # 0.75 of 80, on its own
    assert int((~m["block.2.weight"]).sum()) == 16  # 0.25 of 64
    pooled = int((~m["block.0.weight"]).sum()) + int((~m["head.weight"]).sum())
    assert pooled == 48                             # 0.5 of the 64 + 32 left in the global pool
    by_pred = M.magnitude(net, 0.5, overrides={(lambda n, p: n.startswith("head")): 0.0})
    assert bool(by_pred["head.weight"].all())


@pytest.mark.parametrize("key", ["nomatch", "block.1", "emb"])  # a typo; a LayerNorm; a module that is not a target
def test_override_that_selects_no_target_raises(key):
    with pytest.raises(ValueError, match=f"overrides: '{key}'"):
        M.magnitude(Tiny(), 0.5, overrides={key: 0.9})


def test_unstructured_overrides_match_score_names():
    sc = {"a.weight": torch.arange(4.0), "b.weight": torch.arange(4.0)}
    m = M.unstructured(sc, 0.5, overrides={"a": 0.75})
    assert int((~m["a.weight"]).sum()) == 3 and int((~m["b.weight"]).sum()) == 2
    with pytest.raises(ValueError, match="overrides: 'nomatch'"):
        M.unstructured(sc, 0.5, overrides={"nomatch": 0.5})
    with pytest.raises(TypeError, match="overrides"):
        M.unstructured(sc, 0.5, overrides={nn.Linear: 0.5})
    with pytest.raises(ValueError, match=r"overrides\['a'\]"):
        M.unstructured(sc, 0.5, overrides={"a": 1.5})


def test_lottery_and_synflow_take_overrides():
    net = Tiny()
    with pytest.raises(ValueError, match="overrides: 'nomatch'"):
        lottery(net, lambda *a: None, optimizer_fn=lambda p: torch.optim.SGD(p, lr=0.1), steps=1, rounds=1,
                overrides={"nomatch": 0.5})
    lin = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 2))
    m = I.synflow(lin, 0.5, input_shape=(6,), iterations=3, overrides={"2": 0.25})
    assert int((~m["2.weight"]).sum()) == 4 and int((~m["0.weight"]).sum()) == 24


def test_resolve_overrides_first_key_wins():
    assert resolve_overrides({"fc*": 0.1, "fc2": 0.9}, ["fc1.weight", "fc2.weight"]) == {"fc1.weight": 0.1,
                                                                                          "fc2.weight": 0.1}


def test_kept_fraction_and_dialect_names():
    assert kept_fraction({"w": torch.tensor([True, False, False, False])}) == 0.25
    for gone in ("density", "parametrize_", "unparametrize_", "select"):
        assert not hasattr(op.prune, gone), gone
    with pytest.raises(ValueError, match="masks is empty"):
        kept_fraction({})


# ------------------------------------------------------------------ layer kinds (issue 21)
def test_tied_readout_follows_the_embedding_rule_and_is_pruned_when_named():
    net = nn.ModuleDict({"emb": nn.Embedding(10, 8), "fc": nn.Linear(8, 8), "head": nn.Linear(8, 10)})
    net["head"].weight = net["emb"].weight                             # tied: one tensor, two owners
    assert list(targets(net)) == ["fc.weight"]                         # an owner is an Embedding: dense by default
    assert list(targets(net, "head")) == ["emb.weight"]                # named through its alias: pruned, first name
    untied = nn.ModuleDict({"emb": nn.Embedding(10, 8), "fc": nn.Linear(8, 8), "head": nn.Linear(8, 10)})
    assert list(targets(untied)) == ["fc.weight", "head.weight"]


def test_multihead_attention_packed_projection_is_a_default_target():
    net = nn.ModuleDict({"attn": nn.MultiheadAttention(8, 2), "sep": nn.MultiheadAttention(8, 2, kdim=4, vdim=4)})
    assert list(targets(net)) == ["attn.in_proj_weight", "attn.out_proj.weight", "sep.q_proj_weight",
                                  "sep.k_proj_weight", "sep.v_proj_weight", "sep.out_proj.weight"]
    masks = M.magnitude(net, 0.5)
    assert set(masks) == set(targets(net)) and abs(kept_fraction(masks) - 0.5) < 1e-9


class _Bare(nn.Module):
    """A weight-bearing layer of no registered kind."""

    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(4, 4))

    def forward(self, x):
        return x @ self.weight


def test_unknown_weight_layer_refuses_the_default_and_names_the_type():
    net = nn.Sequential(nn.Linear(4, 4), _Bare(), nn.Bilinear(4, 4, 2))
    with pytest.raises(ValueError, match=r"1 \(.*_Bare\).*2 \(torch.nn.modules.linear.Bilinear\).*register_layer"):
        targets(net)
    with pytest.raises(ValueError, match="_Bare"):
        M.magnitude(net, 0.5)                                          # every default goes through targets
    assert list(targets(net, exclude=["1", "2"])) == ["0.weight"]      # excluded: no longer skipped silently
    assert list(targets(net, nn.Linear)) == ["0.weight"]               # named targets: the user chose
    from overparam.backend import layers
    layers.register_layer(layers.LayerKind("bare", (_Bare,), {"weight": layers.Layout(transposed=True)}))
    try:
        assert list(targets(net, exclude="2")) == ["0.weight", "1.weight"]
    finally:
        layers.unregister_layer("bare")
