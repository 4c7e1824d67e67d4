"""factor on Hugging Face models: transformers' Conv1D (weight stored (in, out)) in every wrapper and
adapter, merges into the transposed storage, and the lora_/merge_ round trip on GPT-2, LLaMA, BERT, ViT.

Oracle: the update each wrapper holds, written out by hand as the (out, in) matrix of the
computation (L Rᵀ, s·up downᵀ, u₁⊙u₂, DoRA's m ⊙ V/‖V‖_row), transposed once into Conv1D's
storage; outputs against ``x @ Mᵀ + b``, all in fp64.
"""

import pytest
import torch
import torch.nn.functional as F
from _models import LORA_TARGET, MAKERS, data

import overparam as op

Conv1D = pytest.importorskip("transformers.pytorch_utils").Conv1D
D = torch.float64


def _randomize_trainables(module, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            if p.requires_grad:
                p.add_(0.1 * torch.randn(p.shape, generator=g, dtype=p.dtype))


def _conv1d(seed=0, nx=12, nf=8):
    torch.manual_seed(seed)
    layer = Conv1D(nf, nx).double()
    with torch.no_grad():
        layer.bias.normal_()
    return layer


def _matrix_of(wrapper):
    """The effective (out, in) matrix, from the wrapper's own factors by the paper's formula."""
    W = wrapper.base.weight.T if hasattr(wrapper.base, "weight") else None
    if isinstance(wrapper, op.factor.LoRALayer):
        V = W + wrapper.scaling * wrapper.lora_up @ wrapper.lora_down.T
        if not wrapper.dora:
            return V
        return wrapper.lora_magnitude[:, None] * V / V.norm(dim=1, keepdim=True)
    p = wrapper.param
    if isinstance(p, op.factor.LowRank):
        M = p.left @ p.right.T
    elif isinstance(p, op.factor.Hadamard):
        M = torch.stack(list(p.factors)).prod(0)
    else:
        M = p()                                   # LoHa / LoKr / difference: the module's own (rows, cols) value
    return M if not wrapper.residual else W + M


WRAPS = {
    "lowrank": lambda m: op.factor.lowrank_(m, "0", rank=4, init="small", scale=0.3, generator=0),
    "lowrank_svd": lambda m: op.factor.lowrank_(m, "0", rank=8, init="svd"),
    "hadamard": lambda m: op.factor.hadamard_(m, "0"),
    "difference": lambda m: op.factor.hadamard_(m, "0", kind="difference"),
    "loha": lambda m: op.factor.hadamard_(m, "0", kind="loha", rank=2, generator=0),
    "lokr": lambda m: op.factor.hadamard_(m, "0", kind="lokr", rank=2, generator=0),
    "lora": lambda m: op.factor.lora_(m, "0", rank=3, alpha=6, generator=0),
    "lora_gaussian_rs": lambda m: op.factor.lora_(m, "0", rank=3, init="gaussian", rslora=True, generator=0),
    "pissa": lambda m: op.factor.lora_(m, "0", rank=3, init="pissa"),
    "dora": lambda m: op.factor.lora_(m, "0", rank=3, dora=True, generator=0),
}


@pytest.mark.parametrize("name", sorted(WRAPS))
def test_every_wrapper_on_conv1d_computes_and_merges_into_the_transposed_storage(name):
    net = torch.nn.Sequential(_conv1d())
    W0 = net[0].weight.detach().clone()
    x = torch.randn(2, 5, 12, dtype=D, generator=torch.Generator().manual_seed(1))
    y0 = net(x)
    WRAPS[name](net)
    if name != "lowrank":                                                  # "small" init is not exact
        torch.testing.assert_close(net(x), y0, rtol=0, atol=1e-12)
    _randomize_trainables(net[0], 2)                                       # (a re-parameterization trains the bias)
    M, b = _matrix_of(net[0]).detach(), net[0].base.bias.detach()
    assert M.shape == (8, 12)
    y = net(x)
    torch.testing.assert_close(y, x @ M.T + b, rtol=0, atol=1e-12)
    torch.testing.assert_close(net[0].weight, M.T, rtol=0, atol=1e-12)     # the dense weight in storage layout
    if net[0].residual:                                                    # merge in place and back
        op.factor.merge_(net, unload=False)
        torch.testing.assert_close(net[0].base.weight, M.T, rtol=0, atol=1e-12)
        torch.testing.assert_close(net(x), y, rtol=0, atol=1e-12)
        op.factor.unmerge_(net)
        torch.testing.assert_close(net(x), y, rtol=0, atol=1e-12)
    if name == "pissa":
        torch.testing.assert_close(_matrix_of(net[0]).detach(), M, rtol=0, atol=1e-12)
    op.factor.merge_(net)
    assert type(net[0]) is Conv1D and net[0].weight.shape == W0.shape and net[0].weight.is_contiguous()
    torch.testing.assert_close(net[0].weight, M.T, rtol=0, atol=1e-12)
    torch.testing.assert_close(net(x), y, rtol=0, atol=1e-12)


def test_dora_norms_are_the_rows_of_the_computation():
    net = torch.nn.Sequential(_conv1d())
    W = net[0].weight.detach().clone()
    op.factor.lora_(net, "0", rank=2, dora=True, generator=0)
    torch.testing.assert_close(net[0].lora_magnitude.detach(), W.norm(dim=0), rtol=0, atol=1e-13)  # columns of (in, out)


def test_adapter_shapes_follow_the_computation_not_the_storage():
    net = torch.nn.Sequential(_conv1d(nx=12, nf=8))
    op.factor.lora_(net, "0", rank=3, generator=0)
    assert net[0].lora_down.shape == (12, 3) and net[0].lora_up.shape == (8, 3)       # (in, r), (out, r)


@pytest.mark.parametrize("kind", sorted(MAKERS))
def test_lora_merge_round_trip(kind):
    torch.manual_seed(0)
    model = MAKERS[kind]().double().eval()
    x, _ = data(kind)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    names = op.factor.lora_(model, LORA_TARGET[kind], rank=2, generator=0)
    assert len(names) == 2                                                 # one per layer of the 2-layer model
    for n in names:
        _randomize_trainables(model.get_submodule(n), 3)
    deltas = {n: model.get_submodule(n).delta_weight().detach().clone() for n in names}
    y = model(x).logits
    assert op.factor.merge_(model) == 2
    torch.testing.assert_close(model(x).logits, y, rtol=0, atol=1e-12)
    after = model.state_dict()
    assert list(after) == list(before)
    for n in names:
        k = f"{n}.weight"
        torch.testing.assert_close(after[k], before[k] + deltas[n], rtol=0, atol=1e-12)
        sm = model.get_submodule(n)
        M = sm.weight.T if isinstance(sm, Conv1D) else sm.weight
        W0 = before[k].T if isinstance(sm, Conv1D) else before[k]
        assert torch.linalg.matrix_rank(M - W0) == 2                     # the update is rank r in the computation
    for k in before:
        if not any(k == f"{n}.weight" for n in names):
            assert torch.equal(after[k], before[k]), k


def test_gpt2_default_targets_wrap_every_conv1d_and_the_tied_head_once():
    torch.manual_seed(0)
    model = MAKERS["gpt2"]().double().eval()
    names = op.factor.lora_(model, Conv1D, rank=2, generator=0)
    assert len(names) == 8 and all(".h." in n for n in names)             # c_attn, c_proj, c_fc, mlp.c_proj × 2
    x, _ = data("gpt2")
    y = model(x).logits
    op.factor.merge_(model)
    torch.testing.assert_close(model(x).logits, y, rtol=0, atol=1e-12)


def test_a_weight_module_returning_the_storage_shape_of_a_transposed_layer_is_refused():
    class Storage(torch.nn.Module):                                        # returns (in, out) = (12, 8), not (8, 12)
        def forward(self):
            return torch.zeros(12, 8, dtype=D)

    layer = op.factor.FactorizedLayer(_conv1d(), Storage())
    with pytest.raises(ValueError, match=r"\(rows, cols\) = \(8, 12\) matrix"):
        layer(torch.zeros(1, 12, dtype=D))


def test_lora_on_linear_and_conv1d_of_the_same_map_agree():
    conv = _conv1d()
    lin = torch.nn.Linear(12, 8).double()
    with torch.no_grad():
        lin.weight.copy_(conv.weight.T)
        lin.bias.copy_(conv.bias)
    a, b = torch.nn.Sequential(conv), torch.nn.Sequential(lin)
    op.factor.lora_(a, "0", rank=2, generator=5)
    op.factor.lora_(b, "0", rank=2, generator=5)
    for m in (a, b):
        _randomize_trainables(m[0], 4)
    x = torch.randn(3, 12, dtype=D)
    torch.testing.assert_close(a(x), b(x), rtol=0, atol=1e-12)
    assert torch.equal(a[0].lora_down, b[0].lora_down) and torch.equal(a[0].lora_up, b[0].lora_up)
    F.mse_loss(a(x), torch.zeros(3, 8, dtype=D)).backward()
    F.mse_loss(b(x), torch.zeros(3, 8, dtype=D)).backward()
    torch.testing.assert_close(a[0].lora_down.grad, b[0].lora_down.grad, rtol=0, atol=1e-12)


def test_a_tied_readout_is_refused_by_name_and_nothing_changes():
    model = MAKERS["gpt2"]().double().eval()
    keys = list(model.state_dict())
    with pytest.raises(ValueError, match=r"'lm_head' shares its weight with \['transformer.wte'\]"):
        op.factor.lora_(model, ["c_attn", "lm_head"], rank=2, generator=0)
    with pytest.raises(ValueError, match=r"'transformer.wte' shares its weight with \['lm_head'\]"):
        op.factor.lowrank_(model, rank=2, init="small", generator=0)        # the default selects both
    assert list(model.state_dict()) == keys and not any(isinstance(m, op.factor.LayerWrapper) for m in model.modules())
    untied = MAKERS["gpt2"](tie_word_embeddings=False).double().eval()
    x, _ = data("gpt2")
    y = untied(x).logits
    op.factor.lora_(untied, ["c_attn", "lm_head"], rank=2, generator=0)
    _randomize_trainables(untied.lm_head, 1)
    y2 = untied(x).logits
    op.factor.merge_(untied)
    torch.testing.assert_close(untied(x).logits, y2, rtol=0, atol=1e-12)
    assert not torch.equal(y2, y)
