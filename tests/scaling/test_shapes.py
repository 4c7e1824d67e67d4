import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from overparam.scaling import fans, infer_shapes


def mlp(w, d_in=5, d_out=3):
    return nn.Sequential(nn.Linear(d_in, w), nn.ReLU(), nn.Linear(w, 2 * w), nn.LayerNorm(2 * w), nn.ReLU(),
                         nn.Linear(2 * w, d_out))


def test_roles_and_multipliers_of_an_mlp():
    s = infer_shapes(mlp(96), base=mlp(32))
    got = {k: (v.role, v.fan_in, v.fan_out, v.m_in, v.m_out) for k, v in s.items()}
    assert got == {
        "0.weight": ("input", 5, 96, 1.0, 3.0), "0.bias": ("input", 1, 96, 1.0, 3.0),
        "2.weight": ("hidden", 96, 192, 3.0, 3.0), "2.bias": ("input", 1, 192, 1.0, 3.0),
        "3.weight": ("input", 1, 192, 1.0, 3.0), "3.bias": ("input", 1, 192, 1.0, 3.0),
        "5.weight": ("output", 192, 3, 3.0, 1.0), "5.bias": ("fixed", 1, 3, 1.0, 1.0),
    }


def test_base_equal_to_model_needs_delta_for_roles():
    """Without delta nothing is seen to grow: refused with a hint, never every tensor silently 'fixed'."""
    with pytest.raises(ValueError, match="pass delta="):
        infer_shapes(mlp(32), base=mlp(32))
    s = infer_shapes(mlp(32), base=mlp(32), delta=mlp(64))
    assert s["2.weight"].role == "hidden" and s["2.weight"].m_in == 1.0 and s["5.weight"].role == "output"


def test_conv_embedding_and_transposed_conv_fans():
    assert fans((8, 3, 3, 3), nn.Conv2d(3, 8, 3)) == (27, 72)
    assert fans((8, 2, 3), nn.Conv1d(4, 8, 3, groups=2)) == (6, 24)
    assert fans((3, 8, 2, 2), nn.ConvTranspose2d(3, 8, 2)) == (12, 32)
    assert fans((100, 16), nn.Embedding(100, 16)) == (100, 16)
    assert fans((7,)) == (1, 7) and fans(()) == (1, 1)

    def net(w):
        return nn.ModuleDict({"emb": nn.Embedding(50, w), "conv": nn.Conv1d(w, w, 3), "head": nn.Linear(w, 50)})
    s = infer_shapes(net(64), base=net(16))
    assert s["emb.weight"].role == "input" and s["emb.weight"].m_out == 4.0
    assert s["conv.weight"].role == "hidden" and (s["conv.weight"].m_in, s["conv.weight"].fan_in) == (4.0, 192)
    assert s["head.weight"].role == "output"


def test_roles_override_and_frozen_parameters_skipped():
    a, b = mlp(64), mlp(16)
    a[0].bias.requires_grad_(False)
    s = infer_shapes(a, base=b, roles={"5.*": "hidden"})
    assert "0.bias" not in s and s["5.weight"].role == "hidden" and s["5.bias"].role == "hidden"


def test_roles_keys_are_selection_specs():
    """Keys follow overparam.backend.select: a module name selects its tensors, a type, a predicate,
    a tuple; the last key wins; a key that selects no trainable tensor is refused naming roles."""
    a, b = mlp(64), mlp(16)
    s = infer_shapes(a, base=b, roles={"5": "hidden"})
    assert s["5.weight"].role == s["5.bias"].role == "hidden" and s["2.weight"].role == "hidden"
    s = infer_shapes(a, base=b, roles={nn.LayerNorm: "fixed", ("0.bias", "2.bias"): "fixed", "bias": "output"})
    assert s["3.weight"].role == "fixed" and s["3.bias"].role == "output" and s["0.bias"].role == "output"
    s = infer_shapes(a, base=b, roles={lambda n, p: p.ndim == 1: "fixed"})
    assert {k for k, v in s.items() if v.role == "fixed"} == {k for k, p in a.named_parameters() if p.ndim == 1}
    for bad in ({lambda n, p: False: "fixed"}, {nn.Conv2d: "fixed"}, {"fc": "fixed"}, {("5", "fc"): "fixed"}):
        with pytest.raises(ValueError, match="roles: .* matches no"):
            infer_shapes(a, base=b, roles=bad)
    a[0].bias.requires_grad_(False)  # a key that selects only frozen tensors selects nothing to plan
    with pytest.raises(ValueError, match="roles: '0.bias' matches no trainable"):
        infer_shapes(a, base=b, roles={"0.bias": "fixed"})


def test_bad_input():
    with pytest.raises(ValueError, match="roles"):
        infer_shapes(mlp(8), base=mlp(4), roles={"0.weight": "middle"})
    with pytest.raises(ValueError, match="roles: 'nope.*' matches no"):
        infer_shapes(mlp(8), base=mlp(4), roles={"nope.*": "hidden"})
    with pytest.raises(ValueError, match="no trainable parameters"):
        infer_shapes(nn.ReLU(), base=nn.ReLU())
    with pytest.raises(ValueError, match="counterpart"):
        infer_shapes(mlp(8), base=nn.Linear(2, 2))
    with pytest.raises(ValueError, match="number of dimensions"):
        infer_shapes(nn.Linear(4, 4), base=_odd())
    with pytest.raises(TypeError, match="base"):
        infer_shapes(mlp(8), base="mlp")


def _odd():
    m = nn.Linear(4, 4)
    m.bias = nn.Parameter(torch.zeros(4, 1))
    return m


@settings(max_examples=25, deadline=None)
@given(w=st.integers(1, 40), b=st.integers(1, 40))
def test_multipliers_are_ratios_of_fans(w, b):
    s = infer_shapes(mlp(w), base=mlp(b), delta=mlp(b + 1))
    assert s["2.weight"].m_in == pytest.approx(w / b) and s["2.weight"].m_out == pytest.approx(w / b)
    assert s["2.weight"].role == "hidden" and s["0.weight"].role == "input" and s["5.weight"].role == "output"


class _TiedLM(nn.Module):
    def __init__(self, w, head_first=False):
        super().__init__()
        emb, head = nn.Embedding(50, w), nn.Linear(w, 50, bias=False)
        if head_first:
            self.head, self.emb, self.mid = head, emb, nn.Linear(w, w)
            emb.weight = head.weight
        else:
            self.emb, self.head, self.mid = emb, head, nn.Linear(w, w)
            head.weight = emb.weight


@pytest.mark.parametrize("head_first", [False, True])
def test_tied_embedding_readout_needs_an_explicit_role(head_first):
    """A tensor shared by an Embedding (input role) and a read-out Linear (output role) cannot take
    both rules; whichever registers first must not silently decide."""
    first = "head.weight" if head_first else "emb.weight"
    with pytest.raises(ValueError, match="shared by modules") as e:
        infer_shapes(_TiedLM(64, head_first), base=_TiedLM(16, head_first))
    assert "'emb.weight': 'input'" in str(e.value) and "'head.weight': 'output'" in str(e.value)
    for name in ("emb.weight", "head.weight"):  # an override may name either alias
        s = infer_shapes(_TiedLM(64, head_first), base=_TiedLM(16, head_first), roles={name: "input"})
        assert list(s) == [first, "mid.weight", "mid.bias"] and s[first].role == "input"
    shared = nn.Linear(8, 8)  # one module registered twice: same role from both, no error
    s = infer_shapes(nn.Sequential(shared, nn.ReLU(), shared), base=nn.Sequential(nn.Linear(4, 4)))
    assert list(s) == ["0.weight", "0.bias"] and s["0.weight"].role == "hidden"


def test_attention_and_depthwise_conv():
    def net(w):
        return nn.ModuleDict({"att": nn.MultiheadAttention(w, 4), "dw": nn.Conv1d(w, w, 5, groups=w)})
    s = infer_shapes(net(64), base=net(16))
    got = {k: (v.role, v.fan_in, v.fan_out, v.m_in, v.m_out) for k, v in s.items()}
    # packed (3w, w) q/k/v projection: a hidden matrix with m_in = m_out = 4
    assert got["att.in_proj_weight"] == ("hidden", 64, 192, 4.0, 4.0)
    assert got["att.in_proj_bias"] == ("input", 1, 192, 1.0, 4.0)
    assert got["att.out_proj.weight"] == ("hidden", 64, 64, 4.0, 4.0)
    # depthwise conv (out=w, in/groups=1, k): only the fan-out grows, a vector-like tensor
    assert got["dw.weight"] == ("input", 5, 320, 1.0, 4.0)
    with pytest.raises(TypeError, match="roles"):
        infer_shapes(net(64), base=net(16), roles=[("dw.weight", "hidden")])
