"""The new adapter inits and HiRA / SHiRA on GPT-2's Conv1D (stored ``(in, out)``): the model's
output is unchanged at init, the factors are those of the ``(out, in)`` computation matrix, and
merge (in place) / unmerge round-trips to 1e-12 in fp64."""

import pytest
import torch
import torch.nn.functional as F
from _models import data, gpt2

import overparam as op
from overparam.factor import inits

TARGETS = ["c_attn", "mlp.c_proj"]


class _Logits(torch.nn.Module):
    """GPT-2 returning its logits tensor (op.hessian.gradient, which LoRA-GA uses, takes tensor outputs)."""

    def __init__(self, lm):
        super().__init__()
        self.lm = lm

    def forward(self, ids):
        return self.lm(ids).logits


def _lm_loss(logits, ids):
    return F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1))


WRAP = {
    "olora": lambda m, d: op.factor.lora_(m, TARGETS, rank=3, alpha=6, init="olora"),
    "milora": lambda m, d: op.factor.lora_(m, TARGETS, rank=3, alpha=6, init="milora"),
    "lora_ga": lambda m, d: op.factor.lora_(m, TARGETS, rank=3, alpha=6, init="lora_ga", loss_fn=_lm_loss, data=d),
    "eva": lambda m, d: op.factor.lora_(m, TARGETS, rank=3, alpha=6, init="eva", data=d),
    "corda": lambda m, d: op.factor.lora_(m, TARGETS, rank=3, alpha=6, init="corda", data=d, corda_mode="kpm"),
    "hira": lambda m, d: op.factor.hadamard_(m, TARGETS, kind="hira", rank=2, generator=0),
    "shira": lambda m, d: op.factor.hadamard_(m, TARGETS, kind="shira", rank=2, generator=0),
}


def _perturb(model):
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for k, p in op.factor.adapter_state_dict(model).items():
            model.get_parameter(k).add_(0.1 * torch.randn(p.shape, dtype=p.dtype, generator=g))


@pytest.mark.parametrize("name", sorted(WRAP))
def test_conv1d_init_keeps_the_output_and_round_trips(name):
    torch.manual_seed(0)
    model = _Logits(gpt2().double().eval())
    ids, _ = data("gpt2")
    y0 = model(ids)
    names = WRAP[name](model, (ids, ids))
    assert len(names) == 4
    assert (model(ids) - y0).abs().max() < 1e-10
    _perturb(model)
    ref = model(ids)
    assert (ref - y0).abs().max() > 1e-6                      # the adapters act
    before = [model.get_submodule(n).base.weight.detach().clone() for n in names]
    op.factor.merge_(model, unload=False)
    assert (model(ids) - ref).abs().max() < 1e-12 * max(1.0, float(ref.abs().max()))
    op.factor.unmerge_(model)
    assert all((model.get_submodule(n).base.weight - b).abs().max() < 1e-12 for n, b in zip(names, before))
    assert (model(ids) - ref).abs().max() < 1e-10


def test_olora_factors_are_those_of_the_computation_matrix():
    torch.manual_seed(0)
    model = gpt2().double()
    W = model.transformer.h[0].attn.c_attn.weight.detach().clone()        # (in, out)
    op.factor.lora_(model, "h.0.attn.c_attn", rank=3, alpha=6, init="olora")
    layer = model.transformer.h[0].attn.c_attn
    expect = inits.olora(W.T, 3, scaling=2.0)
    assert torch.allclose(layer.lora_up, expect.up, atol=1e-12) and torch.allclose(layer.lora_down, expect.down, atol=1e-12)
    assert torch.allclose(layer.base.weight, W - 2.0 * (expect.up @ expect.down.T).T, atol=1e-12)
