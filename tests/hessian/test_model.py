"""overparam/hessian/_model.py: the output selector ``output=``, Mapping inputs passed as keyword
arguments, ``attention="math"`` around every forward, and the dialect table of docs/index.md
that lists the functions taking them."""

import collections
import inspect
import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import overparam as op
import overparam.hessian as oh
from overparam.hessian._model import select_output
from overparam.testing import dense_hessian, max_rel_error, tanh_mlp

D = torch.float64
INDEX = Path(__file__).resolve().parents[2] / "docs" / "index.md"


class Wrapped(nn.Module):
    """The tanh MLP behind a Hugging Face-like interface: keyword inputs, a dict-like output."""

    def __init__(self, kind: str):
        super().__init__()
        self.net, self.kind = tanh_mlp([3, 4, 2], generator=0), kind

    def forward(self, input_ids, attention_mask=None):
        out = self.net(input_ids if attention_mask is None else input_ids * attention_mask)
        if self.kind == "dict":
            return {"loss": None, "hidden": out * 0, "logits": out}
        if self.kind == "tuple":
            return (out, out * 0)
        return type("Opaque", (), {"x": out})()


def _data(seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(6, 3, generator=g, dtype=D), torch.randn(6, 2, generator=g, dtype=D)


def test_select_output_rules():
    t, u = torch.zeros(2), torch.ones(2)
    assert select_output(t) is t
    assert select_output({"loss": u, "logits": t}) is t
    assert select_output(collections.OrderedDict(a=None, b=u, c=t)) is u  # a ModelOutput is an OrderedDict
    assert select_output((None, u, t)) is u and select_output([t, u]) is t
    assert select_output((t, u), None) == (t, u)
    assert select_output((t, u), lambda o: o[1]) is u
    with pytest.raises(TypeError, match="output='auto' found no tensor"):
        select_output((None, "x"))


@pytest.mark.parametrize("kind", ["dict", "tuple"])
def test_auto_output_gives_the_plain_models_hessian(kind):
    x, y = _data()
    model = Wrapped(kind)
    want = dense_hessian(model.net, F.mse_loss, (x, y))
    assert max_rel_error(oh.hessian(model, F.mse_loss, (x, y)).to_dense(), want) < 1e-12
    g = oh.gradient(model, F.mse_loss, (x, y))
    assert list(g) == ["net.0.weight", "net.0.bias", "net.2.weight", "net.2.bias"]
    G = oh.ggn(model, "mse", (x, y)).to_dense()
    assert max_rel_error(G, oh.ggn(model.net, "mse", (x, y)).to_dense()) < 1e-14


def test_output_none_and_callable():
    x, y = _data(1)
    model = Wrapped("opaque")
    want = dense_hessian(model.net, F.mse_loss, (x, y))
    with pytest.raises(TypeError, match="output="):
        oh.hessian(model, F.mse_loss, (x, y))
    raw = oh.hessian(model, lambda o, t: F.mse_loss(o.x, t), (x, y), output=None)
    picked = oh.hessian(model, F.mse_loss, (x, y), output=lambda o: o.x)
    assert max_rel_error(raw.to_dense(), want) < 1e-12 and max_rel_error(picked.to_dense(), want) < 1e-12
    assert max_rel_error(raw.restrict("net.2").to_dense(), want[-10:, -10:]) < 1e-12  # restrict keeps output=
    g = oh.gradient(model, lambda o, t: F.mse_loss(o.x, t), (x, y), output=None)
    assert g["net.0.weight"].shape == (4, 3)
    with pytest.raises(TypeError, match="output="):
        oh.ggn(model, "mse", (x, y), output=None)
    for bad in (3, "logits", True):
        with pytest.raises(ValueError, match="output must be"):
            oh.hessian(Wrapped("dict"), F.mse_loss, (x, y), output=bad)


@pytest.mark.parametrize("mapping", [dict, collections.UserDict])
def test_mapping_inputs_are_keyword_arguments(mapping):
    x, y = _data(2)
    mask = torch.tensor([[1.0, 0.0, 1.0]], dtype=D).expand(6, 3)
    model = Wrapped("dict")
    want = dense_hessian(model.net, F.mse_loss, (x * mask, y))
    H = oh.hessian(model, F.mse_loss, (mapping(input_ids=x, attention_mask=mask), y))
    assert max_rel_error(H.to_dense(), want) < 1e-12
    loader = [(mapping(input_ids=x[:2], attention_mask=mask[:2]), y[:2]),
              (mapping(input_ids=x[2:], attention_mask=mask[2:]), y[2:])]
    assert max_rel_error(oh.hessian(model, F.mse_loss, loader).to_dense(), want) < 1e-12
    with pytest.raises(ValueError, match="Mapping"):
        oh.hessian(model, F.mse_loss, (mapping(input_ids=None), y))


class FlagProbe(nn.Module):
    """Records which SDPA kernels are enabled while its forward runs."""

    def __init__(self):
        super().__init__()
        self.lin, self.seen = nn.Linear(2, 1).double(), []

    def forward(self, x):
        self.seen.append((torch.backends.cuda.flash_sdp_enabled(), torch.backends.cuda.mem_efficient_sdp_enabled(),
                          torch.backends.cuda.math_sdp_enabled()))
        return self.lin(x)


@pytest.mark.parametrize("backend", ["double_backward", "jvp", "finite_difference"])
def test_every_forward_runs_under_the_math_sdpa_kernel(backend):
    x, y = torch.randn(4, 2, dtype=D), torch.randn(4, 1, dtype=D)
    before = (torch.backends.cuda.flash_sdp_enabled(), torch.backends.cuda.mem_efficient_sdp_enabled())
    m = FlagProbe()
    H = oh.hessian(m, F.mse_loss, (x, y), backend=backend)
    H @ torch.ones(H.n, dtype=D)
    assert m.seen and all(s == (False, False, True) for s in m.seen)
    assert (torch.backends.cuda.flash_sdp_enabled(), torch.backends.cuda.mem_efficient_sdp_enabled()) == before
    m.seen.clear()
    oh.hessian(m, F.mse_loss, (x, y), backend=backend, attention=None) @ torch.ones(H.n, dtype=D)
    assert m.seen and all(s[:2] == before for s in m.seen)
    with pytest.raises(ValueError, match="attention must be"):
        oh.hessian(m, F.mse_loss, (x, y), attention="flash")


def test_train_mode_error_names_hugging_face_train_mode():
    net = nn.Sequential(nn.Linear(2, 2), nn.Dropout(0.1)).double()
    with pytest.raises(oh.NonDeterministicModelError, match=r"Model\(config\)"):
        oh.hessian(net, F.mse_loss, (torch.zeros(2, 2, dtype=D), torch.zeros(2, 2, dtype=D)))


def test_index_table_lists_exactly_the_functions_taking_output_and_attention():
    text = INDEX.read_text()
    section = text[text.index("### Model outputs and inputs"):]
    section = section[:section.index("\n### ", 5)]
    listed = set(re.findall(r"`op\.(\w+)\.(\w+)`", section))
    actual = set()
    for pkg in ("hessian", "prune", "scaling", "factor"):
        mod = getattr(op, pkg)
        for name in mod.__all__:
            obj = getattr(mod, name)
            fn = obj.__init__ if inspect.isclass(obj) else obj
            try:
                params = inspect.signature(fn).parameters
            except (TypeError, ValueError):
                continue
            if "output" in params:
                actual.add((pkg, name))
                assert "attention" in params and params["output"].default == "auto", name
                assert params["attention"].default == "math", name
    assert listed == actual
