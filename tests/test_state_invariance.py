"""State invariance (issue 20): no public call that takes a model reorders, renames, re-flags or
re-hooks it, and a measurement leaves its values and the global RNG alone.

Every public callable whose first parameter is ``model`` (found by walking ``__all__``) must be
listed in ``KIND`` below, so a new one fails here until it is classified:

* ``measure``: parameter order, ``state_dict`` keys/order/values, ``requires_grad``, train/eval
  flags of every submodule, hooks and the global RNG are unchanged;
* ``values``: as ``measure``, but the call may change values (it writes weights: init, masks, loads);
* ``wrap``: an in-place wrapper; checked after wrap then unwrap (``UNWRAP``), values included where
  the round trip is exact; an Adam state saved before the round trip reloads onto the same tensors.

Calls get an explicit ``generator`` where they take one, so the global RNG must stay unchanged for
them too (with ``generator=None`` construction draws from torch's default generator, by design).
"""

from __future__ import annotations

import inspect

import pytest
import torch
import torch.nn.functional as F

import overparam as op
from _fuzz_cases import SKIP, data, mlp, public_callables, valid_call

MEASURE = """backend.select.select backend.select.matches backend.layers.weights_of backend.layers.unknown_weight_layers
backend.layers.uncovered_layers backend.layers.check_covered backend.layers.repeated_blocks
factor.diagnostics.FactorMonitor factor.adapter_state_dict factor.pairs scaling.shapes.infer_shapes
scaling.plan prune.init.synflow prune.init.prune_at_init prune.masks.magnitude prune.nm.nm_masks
prune.nm.nm_dims prune.scores.magnitude_scores prune.scores.random_scores prune.scores.snip_scores
prune.scores.grasp_scores prune.scores.synflow_scores prune.scores.hessian_diagonal prune.scores.obd_scores
prune.scores.movement_scores prune.targets hessian.gradient hessian.HessianOperator hessian.hessian
hessian.GGNOperator hessian.ggn hessian.EmpiricalFisherOperator hessian.empirical_fisher
hessian.MCFisherOperator hessian.mc_fisher hessian.blocks hessian.epsilon_sharpness
testing.oracles.flat_params testing.oracles.outputs_of_flat testing.oracles.loss_of_flat
testing.oracles.dense_hessian testing.hessian_oracles.dense_ggn scaling.shared_readout hessian.jacobian
hessian.JacobianOperator hessian.ntk hessian.NTKOperator hessian.block_spectra hessian.loss_landscape
prune.learned.EdgePopup prune.learned.LearnableNM prune.schedules.GradualPruner hessian.KFACOperator
hessian.kfac hessian.EKFACOperator hessian.ekfac optim.loraplus_groups prune.removal.remove_pruned
prune.removal.channel_groups prune.srste.SRSTE prune.collect_stats prune.wanda prune.owl
hessian.distributed_hessian hessian.distributed_ggn prune.global_magnitude prune.distributed_nm_masks
backend.dist.unwrap backend.dist.unsharded_copy scaling.umup_types scaling.umup_plan"""
VALUES = """scaling.attention_scale_ backend.random.fan_in_normal_ factor.relora_restart_ factor.load_adapter_state_dict
factor.unmerge_ prune.apply.apply_masks_ prune.apply.Masked prune.apply.masked prune.lottery prune.calibrate
prune.sparsegpt_ prune.reconstruct_"""
WRAP = "factor.lowrank_ factor.hadamard_ factor.lora_ prune.apply.parametrize_masks_ scaling.unit_scale_"
HALF = "factor.merge_ prune.apply.unparametrize_masks_ scaling.unwrap_units_"     # the unwrap halves: checked with their wrap
KIND = {**{q: "measure" for q in MEASURE.split()}, **{q: "values" for q in VALUES.split()},
        **{q: "wrap" for q in WRAP.split()}, **{q: "half" for q in HALF.split()}}
UNWRAP = {"factor.lowrank_": op.factor.merge_, "factor.hadamard_": op.factor.merge_, "factor.lora_": op.factor.merge_,
          "prune.apply.parametrize_masks_": op.prune.unparametrize_masks_, "scaling.unit_scale_": op.scaling.unwrap_units_}
EXACT = {"factor.lora_", "scaling.unit_scale_"}  # a fresh LoRA merged (B = 0), unit wrappers unwrapped: same weights
HOOKS = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks", "_state_dict_hooks",
         "_load_state_dict_pre_hooks")


def _takes_model(fn):
    try:
        params = list(inspect.signature(fn).parameters)
    except (TypeError, ValueError):
        return False
    return bool(params) and params[0] == "model"


MODEL_TAKERS = [q for q, fn in public_callables() if q not in SKIP and _takes_model(fn)
                and q != "testing.assertions.assert_no_side_effects"]   # a context manager: tested in tests/testing


def test_every_model_taking_function_is_classified():
    missing = [q for q in MODEL_TAKERS if q not in KIND]
    assert not missing, f"classify these in tests/test_state_invariance.py KIND (measure / values / wrap): {missing}"
    stale = [q for q in KIND if q not in MODEL_TAKERS]
    assert not stale, f"no longer public model-taking functions: {stale}"


def _decorate(model):
    """A model with state worth keeping: one submodule in eval mode, hooks of several kinds."""
    model[1].eval()
    model[0].register_forward_hook(lambda m, i, o: None)
    model[2].register_forward_pre_hook(lambda m, i: None)
    model[2].register_full_backward_hook(lambda m, gi, go: None)
    return model


def snapshot(model):
    return {
        "parameters": [n for n, _ in model.named_parameters()],
        "requires_grad": [p.requires_grad for p in model.parameters()],
        "state_dict": list(model.state_dict()),
        "modes": {n: m.training for n, m in model.named_modules()},
        "hooks": {n: tuple(len(getattr(m, h)) for h in HOOKS) for n, m in model.named_modules()},
        "rng": torch.get_rng_state(),
    }


def values(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_same(before, after, what):
    for key in ("parameters", "requires_grad", "state_dict", "modes", "hooks"):
        assert after[key] == before[key], f"{what}: {key} changed:\n  before {before[key]}\n  after  {after[key]}"
    assert torch.equal(after["rng"], before["rng"]), f"{what}: the global RNG advanced"


def assert_same_values(before, after, what, *, exact=True):
    assert list(after) == list(before), f"{what}: state_dict keys changed"
    for k in before:
        same = torch.equal(after[k], before[k]) if exact else torch.allclose(after[k], before[k], atol=1e-12)
        assert same, f"{what}: {k} changed value"


def _call(qual, fn):
    with torch.random.fork_rng(devices=[]):
        args, kwargs = valid_call(qual, fn)
    model = kwargs["model"]
    if isinstance(model, torch.nn.Sequential) and len(model) == 3:
        _decorate(model)
    if "generator" in inspect.signature(fn).parameters:
        kwargs["generator"] = 0
    return model, args, kwargs


@pytest.mark.parametrize("qual", [q for q in MODEL_TAKERS if KIND.get(q) in ("measure", "values")])
def test_a_call_leaves_the_model_and_rng_alone(qual):
    fn = dict(public_callables())[qual]
    model, args, kwargs = _call(qual, fn)
    before, vals = snapshot(model), values(model)
    out = fn(*args, **kwargs)
    if isinstance(out, (op.prune.Masked, op.scaling.SharedReadout)):
        out.remove()
    assert_same(before, snapshot(model), qual)
    if KIND[qual] == "measure":
        assert_same_values(vals, values(model), qual)


@pytest.mark.parametrize("qual", WRAP.split())
def test_wrap_then_unwrap_restores_the_model(qual):
    fn = dict(public_callables())[qual]
    model, args, kwargs = _call(qual, fn)
    before, vals = snapshot(model), values(model)
    fn(*args, **kwargs)
    UNWRAP[qual](model)
    assert_same(before, snapshot(model), f"{qual} then {UNWRAP[qual].__name__}")
    if qual in EXACT:
        assert_same_values(vals, values(model), qual, exact=False)


@pytest.mark.parametrize("qual", WRAP.split())
def test_adam_state_saved_before_a_round_trip_reloads_onto_the_same_tensors(qual):
    fn = dict(public_callables())[qual]
    model, args, kwargs = _call(qual, fn)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    x, y = data()
    for _ in range(2):
        opt.zero_grad()
        F.mse_loss(model(x), y).backward()
        opt.step()
    names = [n for n, _ in model.named_parameters()]
    saved = {n: {k: v.clone() for k, v in opt.state[p].items()} for n, p in model.named_parameters()}
    state = opt.state_dict()
    fn(*args, **kwargs)
    UNWRAP[qual](model)
    opt2 = torch.optim.Adam(model.parameters(), lr=1e-2)
    opt2.load_state_dict(state)
    assert [n for n, _ in model.named_parameters()] == names
    for n, p in model.named_parameters():
        got = opt2.state[p]
        assert got["exp_avg"].shape == p.shape, f"{qual}: {n} got another tensor's exp_avg {tuple(got['exp_avg'].shape)}"
        assert torch.equal(got["exp_avg"], saved[n]["exp_avg"]), f"{qual}: {n} got another tensor's state"


def test_the_checks_catch_a_reordering_call():
    """Self-check: a call that re-registers a weight (moving it after the bias) is caught."""
    model = _decorate(mlp())
    before = snapshot(model)
    w = model[0].weight
    del model[0].weight
    model[0].weight = w
    with pytest.raises(AssertionError, match="parameters changed"):
        assert_same(before, snapshot(model), "re-register")
    model2 = _decorate(mlp())
    before = snapshot(model2)
    torch.rand(1)
    with pytest.raises(AssertionError, match="RNG"):
        assert_same(before, snapshot(model2), "draw")
