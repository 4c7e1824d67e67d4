"""Curvature of tiny Hugging Face models (issue 21): GPT-2, LLaMA, BERT and ViT in eval mode and
fp64, width 16. Each model's ``ModelOutput`` goes through ``output="auto"`` (``.logits``), every
product runs under the math SDPA kernel (the CPU flash kernel has no double-backward), and the
operators are checked against dense fp64 oracles on a block of attention parameters (plain
autograd on a ``functional_call`` of the model). BERT gets its inputs as a ``BatchEncoding``
(keyword arguments, with an attention mask) and MLM labels ``-100`` at the unmasked positions.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import transformers as T
from torch.nn.attention import SDPBackend, sdpa_kernel

import overparam.hessian as oh
from overparam.backend.vec import flatten, unflatten
from overparam.testing import max_rel_error
from overparam.testing.oracles import hessian_of, jacobian_of
from _models import MAKERS, VOCAB

D = torch.float64
#: a block of parameters per model, before (or inside) an attention layer: products pass through the softmax
BLOCK = {"gpt2": ["transformer.h.0.attn.c_attn.bias", "transformer.h.1.ln_1"],
         "llama": ["model.layers.0.input_layernorm", "model.layers.1.input_layernorm"],
         "bert": ["bert.encoder.layer.0.attention.self.query.bias", "bert.encoder.layer.1.attention.output.LayerNorm"],
         "vit": ["vit.layers.0.attention.q_proj.bias", "vit.layers.1.layernorm_before"]}
#: LlamaRMSNorm normalises in float32 even in an fp64 model: two autograd orders then differ at that precision
RTOL = {"gpt2": 1e-10, "llama": 1e-6, "bert": 1e-10, "vit": 1e-10}


def token_ce(logits, y):
    """Cross-entropy over all positions: the token mean over targets other than -100."""
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))


def _case(kind: str, seed: int = 0):
    torch.manual_seed(seed)
    model = MAKERS[kind](16).eval().to(D)
    g = torch.Generator().manual_seed(seed)
    if kind == "vit":
        return model, (torch.randn(3, 3, 16, 16, generator=g, dtype=D), torch.randint(0, 5, (3,), generator=g))
    ids = torch.randint(0, VOCAB, (2, 6), generator=g)
    labels = ids.clone()
    if kind == "llama":
        labels[0, :3] = -100
    if kind == "bert":
        mask = torch.ones_like(ids)
        mask[1, 4:] = 0
        labels[:, ::2] = -100
        labels[mask == 0] = -100
        return model, (T.BatchEncoding({"input_ids": ids, "attention_mask": mask}), labels)
    return model, (ids, labels)


def _block_functions(model, data, names):
    """``(logits(flat), loss(flat), flat θ)`` of the named block, by ``functional_call`` under the math kernel."""
    params = dict(model.named_parameters())
    like = [params[k] for k in names]
    x, y = data
    args, kwargs = ((), dict(x)) if not isinstance(x, torch.Tensor) else ((x,), None)

    def logits(flat):
        with sdpa_kernel(SDPBackend.MATH):
            return torch.func.functional_call(model, dict(zip(names, unflatten(flat, like))), args, kwargs).logits

    return logits, (lambda flat: token_ce(logits(flat), y)), flatten([p.detach() for p in like])


@pytest.mark.parametrize("kind", sorted(MAKERS))
def test_hessian_ggn_lanczos_hutchinson_on_a_block(kind):
    model, data = _case(kind)
    H = oh.hessian(model, token_ce, data, params=BLOCK[kind])
    logits, loss, theta = _block_functions(model, data, H.names)
    dense = H.to_dense()
    assert max_rel_error(dense, hessian_of(loss, theta)) < RTOL[kind]
    top = torch.linalg.eigvalsh(dense)[-2:].flip(0)
    torch.testing.assert_close(oh.lanczos(H, k=2, which="LA", generator=0).values, top, rtol=1e-7, atol=1e-10)
    est = oh.hutchinson(H, probes=30, generator=0)
    assert abs(float(est.mean) - float(dense.trace())) < 5 * float(est.stderr) + 1e-10
    # GGN against Jᵀ ∇²ℓ J, the loss Hessian w.r.t. the logits by autograd (ignored targets included)
    G = oh.ggn(model, "cross_entropy", data, params=BLOCK[kind]).to_dense()
    out = logits(theta).detach()
    J = jacobian_of(logits, theta)
    HL = hessian_of(lambda o: token_ce(o.reshape(out.shape), data[1]), out.reshape(-1))
    assert max_rel_error(G, J.mT @ HL @ J) < RTOL[kind]


def test_gpt2_hessian_vector_product_equals_central_differences_of_the_gradient():
    """The acceptance check of issue 21, on every parameter of the tiny GPT-2 (eval, fp64)."""
    model, data = _case("gpt2", seed=1)
    H = oh.hessian(model, token_ce, data)
    v = torch.randn(H.n, generator=torch.Generator().manual_seed(0), dtype=D)
    names = H.names
    params = dict(model.named_parameters())
    like = [params[k] for k in names]
    theta = flatten([p.detach() for p in like])

    def grad_at(flat):
        leaves = [t.requires_grad_(True) for t in unflatten(flat.clone(), like)]
        out = torch.func.functional_call(model, dict(zip(names, leaves)), (data[0],)).logits
        return flatten(torch.autograd.grad(token_ce(out, data[1]), leaves))

    h = 1e-5 * float(theta.norm()) / float(v.norm())
    fd = (grad_at(theta + h * v) - grad_at(theta - h * v)) / (2 * h)
    assert float((H @ v - fd).norm() / fd.norm()) < 1e-7


def test_llama_lm_head_ggn_equals_its_exact_hessian_with_ignored_labels():
    """Logits are linear in an untied ``lm_head``: there the GGN of the token-mean cross-entropy
    is the Hessian, so the sequence GGN (B, T, V) with -100 labels must equal it (issue 14)."""
    model, data = _case("llama", seed=2)
    assert not model.config.tie_word_embeddings
    G = oh.ggn(model, "cross_entropy", data, params="lm_head")
    H = oh.hessian(model, token_ce, data, params="lm_head")
    V = torch.randn(G.n, 4, generator=torch.Generator().manual_seed(1), dtype=D)
    assert max_rel_error(G @ V, H @ V) < 1e-12
    # the same through a causal shift selected by output=
    shift = dict(output=lambda o: o.logits[:, :-1])
    data_s = (data[0], data[1][:, 1:])
    Gs, Hs = oh.ggn(model, "cross_entropy", data_s, params="lm_head", **shift), oh.hessian(
        model, token_ce, data_s, params="lm_head", **shift)
    assert max_rel_error(Gs @ V, Hs @ V) < 1e-12


def test_fisher_operators_on_gpt2():
    model, data = _case("gpt2", seed=3)
    block = BLOCK["gpt2"]
    G = oh.ggn(model, "cross_entropy", data, params=block).to_dense()
    E = oh.empirical_fisher(model, "cross_entropy", data, params=block).to_dense()
    logits, _, theta = _block_functions(model, data, oh.ggn(model, "cross_entropy", data, params=block).names)
    R = jacobian_of(lambda t: F.cross_entropy(logits(t).reshape(-1, VOCAB), data[1].reshape(-1), reduction="none"),
                    theta)
    assert max_rel_error(E, R.mT @ R / R.shape[0]) < 1e-10
    M = oh.mc_fisher(model, "cross_entropy", data, params=block, mc_samples=2048, generator=0).to_dense()
    assert max_rel_error(M, G) < 0.1


def test_train_mode_hf_model_is_refused_with_a_hint():
    model, data = _case("gpt2")
    model.train()
    with pytest.raises(oh.NonDeterministicModelError, match=r"Model\(config\)"):
        oh.hessian(model, token_ce, data)


def test_example_hf_gpt2_spectrum_runs():
    """examples/hf_gpt2_spectrum.py at a smoke-test size: the records come at the asked steps,
    the eigenvalues are finite, positive at the top and ordered, and the loss falls."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "examples" / "hf_gpt2_spectrum.py"
    spec = importlib.util.spec_from_file_location("hf_gpt2_spectrum", path)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    recs = example.main(steps=4, every=2, batch=4, context=16, verbose=False)
    assert [r["step"] for r in recs] == [0, 2, 4]
    for r in recs:
        lam = torch.tensor(r["lambda"])
        assert torch.isfinite(lam).all() and lam[0] >= lam[1] and lam[0] > 0
    assert recs[-1]["loss"] < recs[0]["loss"]


def test_the_documented_alternatives_to_the_math_kernel_agree():
    """docs/hessian.md: instead of ``attention="math"``, HF's eager attention or finite differences."""
    model, data = _case("gpt2", seed=4)
    H = oh.hessian(model, token_ce, data, params=BLOCK["gpt2"])
    v = torch.randn(H.n, generator=torch.Generator().manual_seed(2), dtype=D)
    eager = _case_with(model, attn_implementation="eager")
    assert (model.config._attn_implementation, eager.config._attn_implementation) == ("sdpa", "eager")
    He = oh.hessian(eager, token_ce, data, params=BLOCK["gpt2"], attention=None)
    Hf = oh.hessian(model, token_ce, data, params=BLOCK["gpt2"], attention=None, backend="finite_difference",
                    fd_step=1e-5)
    assert max_rel_error(He @ v, H @ v) < 1e-10
    assert max_rel_error(Hf @ v, H @ v) < 1e-6


def _case_with(model, **config):
    """The same weights in a model built from the same config with ``config`` changed."""
    other = type(model)(model.config.__class__(**{**model.config.to_dict(), **config})).eval().to(D)
    other.load_state_dict(model.state_dict())
    return other


def test_prune_scores_get_the_output_selector_for_free():
    """prune's SNIP / OBD scores build the same Objective (``output="auto"``, math kernel): on LLaMA
    SNIP is ``|w ⊙ ∇L|`` with the gradient of ``oh.gradient``."""
    import overparam as op

    model, data = _case("llama")
    snip = op.prune.snip_scores(model, token_ce, data)
    g = oh.gradient(model, token_ce, data)
    params = dict(model.named_parameters())
    assert len(snip) == 15
    for k, s in snip.items():
        torch.testing.assert_close(s, (params[k].detach() * g[k]).abs(), rtol=1e-12, atol=0)
    obd = op.prune.obd_scores(model, token_ce, data, probes=2, generator=0)
    assert set(obd) == set(snip) and all(bool(torch.isfinite(v).all()) for v in obd.values())
