"""The LoRA inits equal peft's (0.21) at init, to 1e-6 in fp32 (peft computes its inits in fp32):
OLoRA, PiSSA, CorDA (ipm / kpm), LoRA-GA and EVA, on the same small MLP (weights copied, not
re-seeded). Singular vectors from two SVD routines may differ in sign, so LoRA-GA's and EVA's
factors are compared column by column up to sign (their product and residual then agree too).
Runs where peft is installed (the ``bench`` extra)."""

import copy
import dataclasses
import sys
import types

import pytest
import torch
import torch.nn.functional as F

import overparam as op

peft = pytest.importorskip("peft")
TARGETS = ["0", "2"]


def _mlp(seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.ReLU(), torch.nn.Linear(8, 6))


def _x(seed=1):
    return torch.randn(64, 8, generator=torch.Generator().manual_seed(seed)).abs()   # max entry = max |entry|


def _theirs(model, **cfg):
    config = peft.LoraConfig(r=cfg.pop("r", 4), lora_alpha=cfg.pop("alpha", 8), target_modules=TARGETS, **cfg)
    return peft.get_peft_model(model, config), config


def _compare(ours, theirs, names, *, signs=False, atol=1e-6):
    for n in names:
        mine, pl = ours.get_submodule(n), theirs.base_model.model.get_submodule(n)
        A, B = pl.lora_A["default"].weight.detach(), pl.lora_B["default"].weight.detach()
        down, up = mine.lora_down.detach(), mine.lora_up.detach()
        if signs:
            s = torch.sign((down * A.T).sum(0))
            down, up = down * s, up * s
        assert torch.allclose(down, A.T, atol=atol) and torch.allclose(up, B, atol=atol), n
        assert torch.allclose(mine.base.weight, pl.base_layer.weight, atol=atol), n
        assert mine.scaling == pytest.approx(pl.scaling["default"])


@pytest.mark.parametrize("init", ["olora", "pissa"])
def test_weight_inits_equal_peft(init):
    base = _mlp()
    ours = copy.deepcopy(base)
    theirs, _ = _theirs(base, init_lora_weights=init)
    op.factor.lora_(ours, TARGETS, rank=4, alpha=8, init=init)
    _compare(ours, theirs, TARGETS)


@pytest.mark.parametrize("mode", ["ipm", "kpm"])
def test_corda_equals_peft(mode, monkeypatch):
    try:
        import attr  # noqa: F401  (peft 0.21's corda.py imports attrs' dataclass without declaring attrs)
    except ImportError:
        shim = types.ModuleType("attr")
        shim.dataclass = dataclasses.dataclass
        monkeypatch.setitem(sys.modules, "attr", shim)
    from peft.tuners.lora.config import CordaConfig
    from peft.tuners.lora.corda import preprocess_corda
    base, x = _mlp(), _x()
    ours = copy.deepcopy(base)
    config = peft.LoraConfig(r=4, lora_alpha=8, target_modules=TARGETS, init_lora_weights="corda",
                             corda_config=CordaConfig(corda_method=mode))
    preprocess_corda(base, config, run_model=lambda: base(x))
    theirs = peft.get_peft_model(base, config)
    op.factor.lora_(ours, TARGETS, rank=4, alpha=8, init="corda", data=(x, None), corda_mode=mode)
    _compare(ours, theirs, TARGETS)


def test_lora_ga_equals_peft():
    from peft.tuners.lora.loraga import preprocess_loraga
    base, x = _mlp(), _x()
    y = torch.randn(64, 6, generator=torch.Generator().manual_seed(2))
    ours = copy.deepcopy(base)
    config = peft.LoraConfig(r=2, lora_alpha=4, target_modules=TARGETS, init_lora_weights="lora_ga",
                             lora_ga_config=peft.LoraGAConfig())

    def step():
        F.mse_loss(base(x), y).backward()

    preprocess_loraga(base, config, train_step=step)
    theirs = peft.get_peft_model(base, config)
    op.factor.lora_(ours, TARGETS, rank=2, alpha=4, init="lora_ga", loss_fn=F.mse_loss, data=(x, y))
    for n in TARGETS:              # up and down use different singular indices: sign-match each separately
        mine, pl = ours.get_submodule(n), theirs.base_model.model.get_submodule(n)
        A, B = pl.lora_A["default"].weight.detach(), pl.lora_B["default"].weight.detach()
        down = mine.lora_down.detach() * torch.sign((mine.lora_down.detach() * A.T).sum(0))
        up = mine.lora_up.detach() * torch.sign((mine.lora_up.detach() * B).sum(0))
        assert torch.allclose(down, A.T, atol=1e-6) and torch.allclose(up, B, atol=1e-6)


@pytest.mark.parametrize("whiten", [False, True])
def test_eva_equals_peft(whiten):
    from peft.tuners.lora.eva import get_eva_state_dict
    base, x = _mlp(), _x()
    ours = copy.deepcopy(base)
    config = peft.LoraConfig(r=4, lora_alpha=8, target_modules=TARGETS, init_lora_weights="eva",
                             eva_config=peft.EvaConfig(rho=2.0, whiten=whiten))
    # the same batch twice: peft's incremental PCA converges at the second batch, on the PCA of x
    sd = get_eva_state_dict(base, [x, x], peft_config=config, forward_fn=lambda m, inp: m(inp),
                            prepare_model_inputs_fn=None, prepare_layer_inputs_fn=None, show_progress_bar=False)
    # whitening divides by the singular values of the rows peft's PCA saw (x twice: √2·S(x)), so ours sees x twice too
    data = [(x, None), (x, None)] if whiten else (x, None)
    names = op.factor.lora_(ours, TARGETS, rank=4, alpha=8, init="eva", data=data, rho=2.0, eva_whiten=whiten)
    assert {n: ours.get_submodule(n).rank for n in names} == {n: v.shape[0] for n, v in sd.items() if v.shape[0]}
    for n in names:
        down = ours.get_submodule(n).lora_down.detach()
        down = down * torch.sign((down * sd[n].T).sum(0))
        assert torch.allclose(down, sd[n].T, atol=1e-6), n


class _TokenMLP(torch.nn.Module):
    """A toy token model for peft's language-modelling EVA path: ``input_ids (B, T) -> (B, T, 6)``."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.emb = torch.nn.Embedding(11, 8)
        self.net = _mlp()

    def forward(self, input_ids, labels=None, attention_mask=None):
        return self.net(self.emb(input_ids))


def test_eva_label_mask_equals_peft():
    """peft's ``use_label_mask`` (labels == -100 left out) equals ``eva_label_mask=-100``."""
    from peft.tuners.lora.eva import get_eva_state_dict
    g = torch.Generator().manual_seed(3)
    ids = torch.randint(0, 11, (8, 12), generator=g)
    labels = torch.randint(0, 11, (8, 12), generator=g)
    labels[:, :5] = -100
    base = _TokenMLP()
    ours = copy.deepcopy(base)
    targets = ["net.0", "net.2"]
    config = peft.LoraConfig(r=4, lora_alpha=8, target_modules=targets, init_lora_weights="eva",
                             eva_config=peft.EvaConfig(rho=2.0, use_label_mask=True, label_mask_value=-100))
    batch = {"input_ids": ids, "labels": labels}
    sd = get_eva_state_dict(base, [batch, batch], peft_config=config, show_progress_bar=False)
    names = op.factor.lora_(ours, targets, rank=4, alpha=8, init="eva", data=(ids, labels), rho=2.0,
                            eva_label_mask=-100)
    assert {n: ours.get_submodule(n).rank for n in names} == {n: v.shape[0] for n, v in sd.items() if v.shape[0]}
    for n in names:
        down = ours.get_submodule(n).lora_down.detach()
        down = down * torch.sign((down * sd[n].T).sum(0))
        assert torch.allclose(down, sd[n].T, atol=1e-5), n
