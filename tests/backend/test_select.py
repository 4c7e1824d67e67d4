import fnmatch

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from overparam.backend.select import matches, name_matches, select


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.attn = nn.Linear(4, 4)
        self.norm = nn.LayerNorm(4)
        self.mlp = nn.Sequential(nn.Linear(4, 8), nn.GELU(), nn.Linear(8, 4))


def model():
    net = nn.Module()
    net.emb = nn.Embedding(5, 4)
    net.blocks = nn.ModuleList([Block(), Block()])
    net.head = nn.Linear(4, 3)
    return net


def test_string_is_exact_name_or_dotted_suffix():
    net = model()
    assert list(select(net, "head")) == ["head"]
    assert list(select(net, "attn")) == ["blocks.0.attn", "blocks.1.attn"]
    # a suffix matches whole components only: "ttn" is not a component
    with pytest.raises(ValueError, match="spec: 'ttn' matches no module"):
        select(net, "ttn")


def test_string_selects_what_is_inside():
    net = model()
    names = list(select(net, "blocks.0"))
    assert names == [n for n, _ in net.named_modules() if n == "blocks.0" or n.startswith("blocks.0.")]
    params = list(select(net, "blocks.0.mlp", kind="parameters"))
    assert params == ["blocks.0.mlp.0.weight", "blocks.0.mlp.0.bias", "blocks.0.mlp.2.weight", "blocks.0.mlp.2.bias"]
    assert list(select(net, "head.weight", kind="parameters")) == ["head.weight"]
    assert list(select(net, "weight", kind="parameters")) == [n for n, _ in net.named_parameters() if n.endswith("weight")]


def test_glob_is_fnmatch_over_the_whole_name():
    net = model()
    every = [n for n, _ in net.named_modules()]
    got = list(select(net, "blocks.*.mlp.0"))
    assert got == [n for n in every if fnmatch.fnmatchcase(n, "blocks.*.mlp.0")]
    assert list(select(net, "*.bias", kind="parameters")) == [n for n, _ in net.named_parameters() if n.endswith(".bias")]


def test_type_predicate_and_list_union_in_model_order():
    net = model()
    lin = [n for n, m in net.named_modules() if isinstance(m, nn.Linear)]
    assert list(select(net, nn.Linear)) == lin
    assert list(select(net, lambda n, m: isinstance(m, nn.Linear))) == lin
    got = list(select(net, ["head", nn.Embedding]))
    assert got == ["emb", "head"]
    got = list(select(net, nn.LayerNorm, kind="parameters"))
    assert got == ["blocks.0.norm.weight", "blocks.0.norm.bias", "blocks.1.norm.weight", "blocks.1.norm.bias"]
    got = list(select(net, lambda n, p: p.ndim == 1, kind="parameters"))
    assert got == [n for n, p in net.named_parameters() if p.ndim == 1]


def test_exclude_and_types_filter():
    net = model()
    got = list(select(net, "blocks", exclude="mlp", types=nn.Linear))
    assert got == ["blocks.0.attn", "blocks.1.attn"]
    got = list(select(net, None, kind="parameters", types=nn.Linear, exclude="*.bias"))
    assert got == [n for n, _ in net.named_parameters() if n.endswith("weight") and "norm" not in n and "emb" not in n]
    # everything, root included, for spec=None
    assert list(select(net)) == [n for n, _ in net.named_modules()]


def test_unmatched_items_are_errors_everywhere():
    net = model()
    with pytest.raises(ValueError, match=r"targets: 'nomatch' matches no Linear layer"):
        select(net, ["head", "nomatch"], argname="targets", types=nn.Linear, what="Linear layer")
    with pytest.raises(ValueError, match="targets: 'norm' matches no Linear layer"):   # matches, but not a Linear
        select(net, "norm", types=nn.Linear, argname="targets", what="Linear layer")
    with pytest.raises(ValueError, match="exclude: 'nomatch'"):
        select(net, None, exclude="nomatch")
    with pytest.raises(ValueError, match="params: Conv2d matches no parameter"):
        select(net, nn.Conv2d, kind="parameters", argname="params")
    # a predicate that selects nothing is the user's business
    assert select(net, lambda n, m: False) == {}


def test_bad_spec_types():
    net = model()
    with pytest.raises(TypeError, match="spec item"):
        select(net, 3)
    with pytest.raises(TypeError, match="nn.Module subclass"):
        select(net, int)
    with pytest.raises(ValueError, match="empty string"):
        select(net, "")
    with pytest.raises(ValueError, match="kind"):
        select(net, None, kind="buffers")
    with pytest.raises(TypeError, match="model"):
        select(torch.zeros(2), None)


def test_matches_and_no_side_effects():
    net = model()
    before = [n for n, _ in net.named_parameters()], list(net.state_dict()), net.training
    assert matches(net, "attn", "blocks.1.attn.weight")
    assert not matches(net, "attn", "blocks.1.mlp.0.weight")
    assert matches(net, nn.Embedding, "emb.weight")
    select(net, ["blocks.*", nn.Linear], kind="parameters", exclude="head")
    assert ([n for n, _ in net.named_parameters()], list(net.state_dict()), net.training) == before


def test_an_index_path_is_rooted():
    net = nn.Sequential(nn.Linear(2, 2), nn.ReLU(), nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2)))
    assert list(select(net, "0", types=nn.Linear)) == ["0"]
    assert list(select(net, "2.0")) == ["2.0"]
    assert list(select(net, "0.weight", kind="parameters")) == ["0.weight"]
    assert list(select(net, "*.0", types=nn.Linear)) == ["2.0"]


def test_shared_modules_are_listed_once():
    lin = nn.Linear(2, 2)
    net = nn.Sequential(lin, nn.ReLU(), lin)
    assert list(select(net, nn.Linear)) == ["0"]
    assert list(select(net, None, kind="parameters")) == ["0.weight", "0.bias"]


_parts = st.sampled_from(["a", "b", "fc", "0", "1"])


@settings(max_examples=200, deadline=None)
@given(name=st.lists(_parts, min_size=1, max_size=4).map(".".join),
       pat=st.lists(st.sampled_from(["a", "b", "fc", "0", "*", "?"]), min_size=1, max_size=3).map(".".join))
def test_name_matches_oracle(name, pat):
    """Plain names: exact or a suffix of whole dotted components (exact only when the first component
    is an index); globs: fnmatch of the whole name."""
    if any(c in pat for c in "*?["):
        expect = fnmatch.fnmatchcase(name, pat)
    elif pat.split(".")[0].isdigit():
        expect = name == pat
    else:
        comps, pcomps = name.split("."), pat.split(".")
        expect = comps[len(comps) - len(pcomps):] == pcomps if len(pcomps) <= len(comps) else False
    assert name_matches(pat, name) == expect


def test_tied_parameters_and_shared_modules_are_matched_by_any_name():
    class Tied(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(5, 4)
            self.body = nn.Linear(4, 4)
            self.head = nn.Linear(4, 5, bias=False)
            self.head.weight = self.emb.weight          # tied read-out
            self.again = self.body                      # a shared module under a second name

    net = Tied()
    assert list(select(net, "head.weight", kind="parameters")) == ["emb.weight"]    # reported by its first name
    assert list(select(net, "head", kind="parameters")) == ["emb.weight"]
    assert list(select(net, nn.Linear, kind="parameters")) == ["emb.weight", "body.weight", "body.bias"]
    assert list(select(net, lambda n, p: n == "head.weight", kind="parameters")) == ["emb.weight"]
    assert list(select(net, "again")) == ["body"]
    assert list(select(net, "*.weight", kind="parameters", exclude="head")) == ["body.weight"]
