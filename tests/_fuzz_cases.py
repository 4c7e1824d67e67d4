"""Valid calls for every public callable, shared by tests/test_fuzz.py and tests/test_state_invariance.py.

``public_callables()`` walks every package's ``__all__`` (and the ``__all__`` of the modules it
lists), so a new public name is picked up automatically. ``valid_call(qualname, fn)`` builds a
fresh valid call: each required parameter comes from ``CALLS[qualname]`` or else from
``BY_NAME`` (the parameter's name); a callable for which neither gives a value makes the tests
fail with "add an entry to CALLS".
"""

from __future__ import annotations

import inspect

import torch
import torch.nn.functional as F
from torch import nn

import overparam as op
from _fuzz_skip import PACKAGES, SKIP, public_callables  # noqa: F401  (re-exported)
from _fuzz_dist import DIST_CALLS
from _fuzz_umup import UMUP_CALLS

D = torch.float64


def g(seed=0):
    return torch.Generator().manual_seed(seed)


def t(*shape, seed=0, dtype=D):
    return torch.randn(*shape, generator=g(seed), dtype=dtype)


def spd(n=4, seed=0):
    a = t(n, n, seed=seed)
    return a @ a.T + n * torch.eye(n, dtype=D)


def mlp(seed=0):
    torch.manual_seed(seed)                      # only to build the test model; callers restore the RNG
    return nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3)).to(D)


def data():
    return (t(5, 4, seed=1), t(5, 3, seed=2))


def lowrank_model():
    m = mlp()
    op.factor.lowrank_(m, rank=2, generator=0)
    return m


def _sensing():
    return op.problems.sensing(6, 1, 30, generator=0)


def _lora_model():
    m = mlp()
    op.factor.lora_(m, rank=2, generator=0)
    return m


def _wrapped_args(frozen_a=False):
    """``(optimizer, pairs)`` over one LoRA model (``frozen_a``: the ``A`` factors frozen, for LoRA-FA)."""
    m = _lora_model()
    pairs = list(op.factor.pairs(m))
    for _, A in pairs if frozen_a else ():
        A.requires_grad_(False)
    return torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=0.1), pairs


_LAST_LORA: list = []          # the model the last _new_lora() built: its pairs come from the same model


def _new_lora():
    _LAST_LORA[:] = [_lora_model()]
    return _LAST_LORA[0]


def _step(model):
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    return opt


BY_NAME = {
    "model": mlp, "loss_fn": lambda: F.mse_loss, "data": data, "module": lambda: nn.Linear(4, 3).to(D),
    "base": lambda: nn.Linear(4, 3).to(D), "make_model": lambda: (lambda w: nn.Sequential(nn.Linear(4, w), nn.Tanh(), nn.Linear(w, 3)).to(D)),
    "x": lambda: (t(3), t(2, 2)), "y": lambda: (t(3, seed=1), t(2, 2, seed=1)), "like": lambda: (t(3), t(2, 2)),
    "a": lambda: 0.5, "dst": lambda: [t(3), t(2, 2)], "src": lambda: (t(3, seed=1), t(2, 2, seed=1)),
    "W": lambda: t(6, 4), "w": lambda: t(4, 8), "scores": lambda: t(4, 8), "rank": lambda: 2, "k": lambda: 2,
    "n": lambda: 2, "m": lambda: 4, "sparsity": lambda: 0.5, "shape": lambda: (6, 4), "A": lambda: spd(),
    "fraction": lambda: 0.5, "value": lambda: 0.5, "name": lambda: "x", "t": lambda: t(4, 8), "dim": lambda: 1,
    "mask": lambda: torch.ones(4, 8, dtype=torch.bool), "masks": lambda: {"0.weight": torch.ones(8, 4, dtype=torch.bool)},
    "M": lambda: t(6, 6), "Y": lambda: t(6, 6), "alpha": lambda: 0.1, "zeta": lambda: 0.5, "lr": lambda: 0.1,
    "lr0": lambda: 0.1, "decay": lambda: 0.5, "step": lambda: 0.1, "G": lambda: spd(3), "B": lambda: t(3, 2),
    "R": lambda: t(3, 3) + 3 * torch.eye(3, dtype=D), "Q": lambda: torch.linalg.qr(t(6, 2))[0], "v": lambda: t(6),
    "Y_": None, "flat": lambda: t(10), "input_shape": lambda: (4,), "rate": lambda: 0.2, "rounds": lambda: 2,
    "final": lambda: 0.5, "H": lambda: spd(), "rho": lambda: 0.1, "theta": lambda: (t(3),),
    "f": lambda: (lambda v: (v[0] ** 2).sum()), "problem": _sensing, "d": lambda: 4, "r": lambda: 1,
    "samples": lambda: 10, "depth": lambda: 2, "p": lambda: 0.5, "actual": lambda: t(3), "expected": lambda: t(3),
    "eigenvalues": lambda: [1.0, 2.0, 3.0], "cond": lambda: 10.0, "sizes": lambda: [3, 4, 2], "kmax": lambda: 3,
    "dims": lambda: [3, 4, 2], "M_star": lambda: t(4, 4), "item": lambda: (t(4, 2), t(3, 2)),
    "L": lambda: t(4, 2), "grad": lambda: t(4, 4), "dtype": lambda: D, "routine": lambda: "nm_mask",
    "method": lambda: "snip", "parameterization": lambda: "mup", "init": lambda: "small",
    "pattern": lambda: "*.weight", "spec": lambda: "0", "params": lambda: None, "g": lambda: t(4, 2),
}

LIN = lambda: nn.Linear(4, 3).to(D)  # noqa: E731

# qualname -> {param: factory}: what BY_NAME gets wrong for this callable
CALLS = {**UMUP_CALLS, **DIST_CALLS,
    "backend.vec.dot": {"y": BY_NAME["y"]}, "backend.vec.unflatten": {"flat": lambda: t(7)},
    "backend.vec.stack": {"vectors": lambda: [(t(3), t(2)), (t(3, seed=1), t(2, seed=1))]},
    "backend.vec.unstack": {"batch": lambda: (t(2, 3), t(2, 2))},
    "backend.linalg.orthogonalize": {"v": lambda: t(6, seed=3)},
    "backend.linalg.tridiag_eigh": {"alpha": lambda: t(4), "beta": lambda: t(3)},
    "backend.linalg.tridiag_matrix": {"alpha": lambda: t(4), "beta": lambda: t(3)},
    "backend.linalg.cholesky_qr2": {"Y": lambda: t(6, 2)},
    "backend.random.rademacher": {"shape": lambda: (3, 2)}, "backend.random.gaussian": {"shape": lambda: (3, 2)},
    "backend.random.uniform": {"shape": lambda: (3, 2)},
    "backend.random.probe": {"kind": lambda: "gaussian", "shape": lambda: (3, 2)},
    "backend.random.orthonormal": {"n": lambda: 5, "k": lambda: 2},
    "backend.random.construction_generator": {"generator": lambda: 0},
    "backend.random.measurement_generator": {"generator": lambda: 0},
    "backend.select.select": {"spec": lambda: "0"},
    "backend.select.matches": {"spec": lambda: "0", "name": lambda: "0.weight"},
    "backend.select.name_matches": {"pattern": lambda: "*.weight", "name": lambda: "0.weight"},
    "backend.topk.fraction_count": {"n": lambda: 10}, "backend.topk.topk_mask": {"k": lambda: 3},
    "backend.nm.nm_groups": {"t": lambda: t(4, 8)}, "backend.nm.nm_ungroup": {"g": lambda: t(4, 2, 4), "like": lambda: t(4, 8)},
    "backend.nm.grouped_dim": {"t": lambda: t(4, 8)},
    "backend.layers.repeated_blocks": {"model": lambda: nn.Sequential(nn.Linear(4, 4), nn.ModuleList([mlp(), mlp()]))},
    "backend.checks.check_float": {"x": lambda: t(3)}, "backend.checks.check_rank": {"rank": lambda: 2},
    "backend.checks.check_dim": {"dim": lambda: 1, "ndim": lambda: 2},
    "backend.checks.check_int": {"value": lambda: 3}, "backend.checks.check_real": {"value": lambda: 0.5, "name": lambda: "value"},
    "backend.checks.check_fraction": {"value": lambda: 0.5, "name": lambda: "value"},  # a check names what it is told
    "backend.checks.check_floats": {"tensors": lambda: {"L": t(3, 2), "R": t(4, 2)}},
    "backend.dispatch.implementations": {"routine": lambda: "nm_mask"},
    "backend.dispatch.choose": {"routine": lambda: "nm_mask"},
    "backend.dispatch.call": {"*": lambda: ("nm_mask", t(4, 8), 2, 4)},
    "backend.linalg.gram_solve": {"R": lambda: t(3, 3) + 3 * torch.eye(3, dtype=D), "B": lambda: t(2, 3)},
    "backend.linalg.spd_solve": {"B": lambda: t(2, 3)}, "backend.linalg.spd_solve_ex": {"B": lambda: t(2, 3)},
    "hessian.DistributedOperator": {"local": lambda: op.hessian.hessian(mlp(), F.mse_loss, data())},
    "factor.functional.product": {"factors": lambda: [t(3, 2), t(4, 3)]},
    "factor.LowRankLinear": {"in_features": lambda: 4, "out_features": lambda: 3},
    "factor.functional.lowrank_product": {"left": lambda: t(4, 2), "right": lambda: t(3, 2, seed=1)},
    "factor.functional.balance": {"left": lambda: t(4, 2), "right": lambda: t(3, 2, seed=1)},
    "factor.functional.init_factors": {"init": lambda: "small"},
    "factor.diagnostics.singular_values": {"x": lambda: t(4, 3)},
    "factor.diagnostics.effective_rank": {"s": lambda: torch.tensor([3.0, 2.0, 1.0], dtype=D)},
    "factor.diagnostics.balancedness": {"x": lambda: (t(4, 2), t(3, 2, seed=1))},
    "factor.diagnostics.relative_distance": {"x": lambda: t(4, 3), "target": lambda: t(4, 3, seed=1)},
    "factor.diagnostics.describe": {"x": lambda: t(4, 3)},
    "factor.diagnostics.FactorMonitor": {"model": lowrank_model},
    "factor.depth_preconditioner": {"W": lambda: t(4, 4), "grad": lambda: t(4, 4, seed=1), "depth": lambda: 2},
    "factor.psd_power": {"M": lambda: spd(), "p": lambda: 0.5},
    "factor.Hadamard": {"shape": lambda: (4, 3)}, "factor.HadamardDifference": {"shape": lambda: (4, 3)},
    "factor.LowRankHadamard": {"shape": lambda: (4, 3)}, "factor.Kronecker": {"shape": lambda: (4, 6)},
    "factor.kron_split": {"n": lambda: 12}, "factor.SparseLowRank": {"shape": lambda: (4, 3), "density": lambda: 0.5},
    "factor.topk_mask": {"scores": lambda: t(4, 3), "density": lambda: 0.5},
    "factor.LoRALayer": {"base": LIN}, "factor.lora_scaling": {"alpha": lambda: 4.0},
    "factor.HiRALayer": {"base": LIN, "rank": lambda: 2}, "factor.SparseUpdate": {"shape": lambda: (4, 3), "rank": lambda: 1},
    "factor.relora_restart_": {"model": lambda: _lora(mlp())},
    "factor.FactorizedLayer": {"base": LIN, "param": lambda: op.factor.LowRank((3, 4), 2, generator=0)},
    "factor.LowRankParametrization": {"rank": lambda: 2},
    "factor.merge_": {"model": lowrank_model}, "factor.unmerge_": {"model": lambda: _merged_lora()},
    "factor.parametrize_": {"module": LIN, "rank": lambda: 2},
    "factor.adapter_state_dict": {"model": lambda: _lora(mlp())},
    "factor.load_adapter_state_dict": {"model": lambda: _lora(mlp()), "state": lambda: op.factor.adapter_state_dict(_lora(mlp()))},
    "factor.pairs": {"model": lowrank_model}, "factor.Chain": {"factors": lambda: [t(3, 4), t(2, 3)]},
    "optim.ScaledGD": {"params": lambda: list(op.factor.pairs(lowrank_model()))},
    "optim.PrecGD": {"params": lambda: list(op.factor.pairs(lowrank_model()))},
    "optim.ScaledSM": {"params": lambda: list(op.factor.pairs(lowrank_model()))},
    "optim.ScaledSGD": {"params": lambda: list(op.factor.pairs(lowrank_model()))},
    "optim.SubGM": {"params": lambda: list(mlp().parameters()), "step": lambda: 0.1},
    "optim.Preconditioned": {"*": _wrapped_args, "damping": lambda: 0.1},
    "optim.LoRAFA": {"*": lambda: _wrapped_args(frozen_a=True), "scaling": lambda: 2.0},
    "optim.precondition_grads_": {"pairs": lambda: list(op.factor.pairs(lowrank_model()))},
    "optim.loraplus_groups": {"model": _new_lora, "pairs": lambda: list(op.factor.pairs(_LAST_LORA[0])),
                              "lr": lambda: 0.1, "ratio": lambda: 4.0},
    "optim.GaLore": {"params": lambda: list(mlp().parameters()), "rank": lambda: 2},
    "optim.closure_loss": {"closure": lambda: (lambda: torch.tensor(1.0))},
    "optim.optimizer_state_bytes": {"optimizer": lambda: torch.optim.AdamW(mlp().parameters())},
    "optim.rpca_scaledgd": {"Y": lambda: t(6, 6), "rank": lambda: 1, "iters": lambda: 3, "alpha": lambda: 0.1},
    "optim.as_pair": {"item": lambda: (t(4, 2), t(3, 2))}, "optim.as_rule": {"step": lambda: 0.1},
    "scaling.coord.coord_check": {"widths": lambda: [4, 8], "steps": lambda: 1},
    "scaling.shapes.fans": {"shape": lambda: (3, 4)},
    "scaling.shapes.infer_shapes": {"model": lambda: _wide(16), "base": lambda: _wide(8)},
    "scaling.plan": {"model": lambda: _wide(16), "base": lambda: _wide(8)},
    "scaling.muon_param_groups": {"plan": lambda: _wide_plan(), "model": lambda: _wide(16), "lr": lambda: 0.02,
                                  "adam_lr": lambda: 1e-3},
    "scaling.shared_readout": {"model": lambda: _tied(16), "module": lambda: "head",
                               "plan": lambda: op.scaling.plan(_tied(16), base=_tied(8), roles={"emb": "input"})},
    "scaling.SharedReadout": {"modules": lambda: {"head": nn.Linear(2, 2)}, "multiplier": lambda: 0.5},
    "scaling.attention_scale_": {"model": lambda: _Attn(8), "base": lambda: _Attn(4)},
    "scaling.coord_check_depth": {"make_model": lambda: _res, "depths": lambda: [1, 2], "steps": lambda: 1,
                                              "plan_kwargs": lambda: {"branches": "blocks", "branch_outputs": "blocks.*.1"}},
    "optim.AdamAtan2": {"params": lambda: list(mlp().parameters())},
    "prune.apply.MaskParametrization": {"mask": lambda: torch.ones(8, 4, dtype=torch.bool)},
    "prune.apply.unparametrize_masks_": {"model": lambda: _masked_param()},
    "prune.init.synflow": {"iterations": lambda: 2},
    "prune.init.prune_at_init": {"loss_fn": BY_NAME["loss_fn"], "data": data},
    "prune.learned.nm_patterns": {"n": lambda: 2, "m": lambda: 4},
    "prune.removal.remove_pruned": {"example_inputs": lambda: (t(5, 4),)},
    "prune.removal.channel_groups": {"example_inputs": lambda: (t(5, 4),)},
    "prune.removal.PrunedMultiheadAttention": {"mha": lambda: _mha(), "keep": lambda: torch.tensor([True, False])},
    "prune.masks.n_pruned": {"n": lambda: 10}, "prune.masks.prune_smallest": {"flat": lambda: t(10), "k": lambda: 3},
    "prune.masks.unstructured": {"scores": lambda: {"a": t(4, 3), "b": t(5, seed=1)}},
    "prune.nm.is_nm": {"mask": lambda: op.prune.nm_mask(t(4, 8), 2, 4)},
    "prune.nm.transposable_nm_mask": {"scores": lambda: t(8, 8)},
    "prune.nm.transposable_patterns": {"n": lambda: 2, "m": lambda: 4},
    "prune.schedules.cubic": {"step": lambda: 3, "final": lambda: 0.5, "begin": lambda: 0, "end": lambda: 10},
    "prune.schedules.exponential": {"final": lambda: 0.5},
    "prune.schedules.GradualPruner": {"optimizer": lambda: None, "schedule": lambda: (lambda s: 0.5)},
    "prune.semistructured.pattern_for": {"dtype": lambda: torch.float16},
    "prune.semistructured.validate": {"w": lambda: _nm24()}, "prune.semistructured.is_semi_structured": {"w": lambda: _nm24()},
    "prune.semistructured.compress": {"w": lambda: _nm24()},
    "prune.semistructured.decompress": {"*": lambda: (*op.prune.compress(_nm24()), 16)},
    "prune.structured.slice_norms": {"dim": lambda: 0}, "prune.structured.ln_structured": {"dim": lambda: 0},
    "prune.structured.block_mask": {"w": lambda: t(4, 8), "block": lambda: (2, 2)},
    "prune.calibrate": {"rule": lambda: (lambda name, W, stats: op.prune.PrunedMatrix(W, W.abs() > W.abs().median()))},
    "prune.sparsegpt_": {"sparsity": lambda: 0.5}, "prune.wanda": {"sparsity": lambda: 0.5},
    "prune.sparsegpt_matrix": {"W": lambda: t(4, 8), "gram": lambda: spd(8), "sparsity": lambda: 0.5},
    "prune.reconstruct_matrix": {"W": lambda: t(4, 8), "gram": lambda: spd(8), "mask": lambda: t(4, 8) > 0},
    "prune.wanda_mask": {"W": lambda: t(4, 8), "norms": lambda: t(8).abs(), "sparsity": lambda: 0.5},
    "prune.wanda_scores": {"W": lambda: t(4, 8), "norms": lambda: t(8).abs()},
    "prune.owl_sparsities": {"ratios": lambda: {"a": 0.1, "b": 0.2}, "sizes": lambda: {"a": 4, "b": 8},
                             "sparsity": lambda: 0.5},
    "prune.reconstruction": {"dense": mlp, "pruned": lambda: mlp(seed=1)},
    "prune.lottery": {"train_fn": lambda: (lambda model, opt, steps: None), "steps": lambda: 2, "rounds": lambda: 1,
                      "optimizer_fn": lambda: (lambda ps: torch.optim.SGD(ps, lr=0.1))},
    "hessian.DenseOperator": {"A": lambda: spd()},
    "hessian.FunctionOperator": {"fn": lambda: (lambda v: 2 * v), "n": lambda: 4},
    "hessian.IdentityOperator": {"like": lambda: [torch.Size([3])]},
    "hessian.ScaledOperator": {"op": lambda: op.hessian.DenseOperator(spd()), "a": lambda: 2.0},
    "hessian.SumOperator": {"ops": lambda: [op.hessian.DenseOperator(spd()), op.hessian.DenseOperator(spd(seed=1))]},
    "hessian.lanczos": {"k": lambda: 2}, "hessian.power_iteration": {"k": lambda: 1},
    "hessian.cg": {"b": lambda: t(4)}, "hessian.neumann": {"b": lambda: t(4)},
    "hessian.block_spectra": {"k": lambda: 2, "probes": lambda: 6}, "hessian.loss_landscape": {"steps": lambda: 3},
    "hessian.hutchinson": {"probes": lambda: 4}, "hessian.hutchpp": {"probes": lambda: 6},
    "hessian.xtrace": {"probes": lambda: 4}, "hessian.trace": {"probes": lambda: 6},
    "hessian.diagonal": {"probes": lambda: 4}, "hessian.slq": {"probes": lambda: 2, "steps": lambda: 3},
    "hessian.density": {"probes": lambda: 2, "steps": lambda: 3, "grid": lambda: 20},
    "hessian.lambda_max": {"A": lambda: spd()}, "hessian.eos_threshold": {"lr": lambda: 0.1},
    "hessian.ball_sharpness": {"steps": lambda: 2}, "hessian.epsilon_sharpness": {"steps": lambda: 2},
    "problems.ground_truth": {"n": lambda: 5, "r": lambda: 2}, "problems.sensing": {"n": lambda: 5, "r": lambda: 1, "m": lambda: 20},
    "problems.small_factors": {"shape": lambda: (5, 5), "k": lambda: 2, "like": lambda: t(5, 5)},
    "problems.spectral_factors": {"Y": lambda: spd(5), "k": lambda: 2, "symmetric": lambda: True},
    "problems.completion": {"n": lambda: 6, "r": lambda: 1, "p": lambda: 0.5},
    "problems.robust_pca": {"n": lambda: 6, "r": lambda: 1, "alpha": lambda: 0.1},
    "problems.deep_linear": {"d_in": lambda: 3, "d_out": lambda: 3, "r": lambda: 1, "depth": lambda: 2, "samples": lambda: 10},
    "problems.LiftedSensing": {"rank": lambda: 1},
    "backend.softmax_ce.softmax_ce_hvp": {"logits": lambda: t(3, 4), "u": lambda: t(3, 4, seed=1)},
    "backend.softmax_ce.check_softmax_ce_args": {"logits": lambda: t(3, 4), "u": lambda: t(3, 4, seed=1), "target": lambda: None,
                                                 "ignore_index": lambda: -100, "reduction": lambda: "mean"},
    "backend.sparse24.compress_24": {"w": lambda: torch.tensor([[1.0, 0.0, 2.0, 0.0] * 4], dtype=D)},
    "backend.sparse24.decompress_24": {"values": lambda: torch.ones(1, 8, dtype=D), "meta": lambda: torch.full((1, 1), -30584, dtype=torch.int16),
                                       "cols": lambda: 16},
    "backend.sparse24.nm_compress_24": {"w": lambda: t(2, 16)},
    "backend.packed_step.packed_adamw_step": {"param": lambda: t(2, 3), "grad": lambda: t(2, 3, seed=1), "index": lambda: None,
                                              "exp_avg": lambda: t(6, seed=2), "exp_avg_sq": lambda: t(6, seed=3).abs(),
                                              "lr": lambda: 0.1, "beta1": lambda: 0.9, "beta2": lambda: 0.99,
                                              "eps": lambda: 1e-8, "weight_decay": lambda: 0.0, "step": lambda: 1},
    "backend.packed_step.packed_sgd_step": {"param": lambda: t(2, 3), "grad": lambda: t(2, 3, seed=1), "index": lambda: None,
                                            "momentum_buffer": lambda: None, "lr": lambda: 0.1},
    "backend.packed_step.check_adamw_hyper": {"lr": lambda: 0.1, "beta1": lambda: 0.9, "beta2": lambda: 0.99, "eps": lambda: 1e-8,
                                              "weight_decay": lambda: 0.0, "step": lambda: 1},
    "backend.packed_step.check_sgd_hyper": {"lr": lambda: 0.1, "momentum": lambda: 0.9, "dampening": lambda: 0.0,
                                            "weight_decay": lambda: 0.0},
    "prune.PackedSGD": {"params": lambda: mlp().named_parameters(), "masks": lambda: {"0.weight": torch.ones(8, 4, dtype=torch.bool)}},
    "prune.PackedAdamW": {"params": lambda: mlp().named_parameters(), "masks": lambda: {"0.weight": torch.ones(8, 4, dtype=torch.bool)}},
    "problems.shared_sensing": {"n": lambda: 5, "r": lambda: 1, "m": lambda: 20, "seeds": lambda: [0, 1]},
    "backend.layers.uncovered_layers": {"model": lambda: mlp()},
    "backend.layers.check_covered": {"model": lambda: mlp()},
    "problems.shared_completion": {"n": lambda: 5, "r": lambda: 1, "p": lambda: 0.6, "seeds": lambda: [0, 1]},
    "problems.Batched": {"problems": lambda: [op.problems.sensing(5, 1, 20, generator=s) for s in (0, 1)]},
    "optim.run_batched": {"problem": lambda: op.problems.shared_sensing(5, 1, 20, seeds=[0, 1]),
                          "X0": lambda: torch.full((2, 5, 2), 0.1, dtype=D), "method": lambda: "scaledgd",
                          "steps": lambda: 2, "lr": lambda: 0.1},
    "problems.teacher_student": {"d": lambda: 3, "teacher_width": lambda: 2, "samples": lambda: 10, "test_samples": lambda: 5},
    "testing.assertions.assert_vec_close": {"actual": lambda: (t(3),), "expected": lambda: (t(3),), "rtol": lambda: 1e-6},
    "testing.assertions.assert_orthonormal": {"Q": lambda: torch.eye(3, dtype=D), "atol": lambda: 1e-8},
    "testing.cases.random_orthogonal": {"n": lambda: 3}, "testing.cases.ill_conditioned": {"n": lambda: 4, "k": lambda: 2},
    "testing.oracles.outputs_of_flat": {"inputs": lambda: data()[0]},
    "testing.oracles.hessian_of": {"x": lambda: t(3)}, "testing.oracles.jacobian_of": {"x": lambda: t(3)},
    "testing.oracles.fd_hessian_of": {"x": lambda: t(3)}, "testing.oracles.dense_matrix": {"matvec": lambda: spd()},
    "testing.factor_oracles.lowrank_grads": {"L": lambda: t(4, 2), "R": lambda: t(3, 2), "G": lambda: t(4, 3)},
    "testing.factor_oracles.symmetric_grads": {"U": lambda: t(4, 2), "G": lambda: t(4, 4)},
    "testing.factor_oracles.deep_grads": {"Ws": lambda: [t(3, 4), t(2, 3)], "G": lambda: t(2, 4)},
    "testing.factor_oracles.hadamard_grads": {"factors": lambda: [t(3, 4), t(3, 4, seed=1)], "G": lambda: t(3, 4)},
    "testing.factor_oracles.loha_grads": {"L1": lambda: t(4, 2), "R1": lambda: t(3, 2), "L2": lambda: t(4, 2, seed=1),
                                          "R2": lambda: t(3, 2, seed=1), "G": lambda: t(4, 3)},
    "testing.factor_oracles.kron_grads": {"C": lambda: t(2, 2), "L": lambda: t(3, 1), "R": lambda: t(2, 1), "G": lambda: t(6, 4)},
    "testing.factor_oracles.dense_top_svd": {"W": lambda: t(5, 4), "k": lambda: 2},
    "testing.hessian_oracles.curvature_case": {"name": lambda: "tanh_mlp"},
    "testing.hessian_oracles.dense_ggn": {"loss_fn": lambda: "mse"},
    "testing.hessian_oracles.xtrace_naive": {"A": lambda: spd(), "Om": lambda: t(4, 2)},
    "testing.hessian_oracles.moments": {"A": lambda: spd(), "v": lambda: t(4), "kmax": lambda: 3},
    "testing.hessian_oracles.loss_hessian_closed_forms": {"X": lambda: t(5, 3), "y": lambda: t(5), "w": lambda: t(3), "kind": lambda: "mse"},
    "testing.optim_oracles.damped_precondition": {"g": lambda: t(4, 2), "R": lambda: t(3, 2), "damping": lambda: 0.1},
    "testing.optim_oracles.scaledgd_step": {"L": lambda: t(4, 2), "R": lambda: t(3, 2), "gL": lambda: t(4, 2),
                                            "gR": lambda: t(3, 2), "lr": lambda: 0.1},
}


def _lora(m):
    op.factor.lora_(m, rank=2, generator=0)
    return m


def _merged_lora():
    m = _lora(mlp())
    op.factor.merge_(m, unload=False)
    return m


def _wide(w):
    return nn.Sequential(nn.Linear(4, w), nn.Tanh(), nn.Linear(w, w), nn.Tanh(), nn.Linear(w, 3)).to(D)


def _wide_plan():
    return op.scaling.plan(_wide(16), base=_wide(8))


class _Tied(nn.Module):
    def __init__(self, w):
        super().__init__()
        self.emb, self.mix, self.head = nn.Embedding(4, w), nn.Linear(w, w), nn.Linear(w, 4, bias=False)
        self.head.weight = self.emb.weight

    def forward(self, x):  # x: (batch, 4) floats, read as soft one-hot inputs
        return self.head(torch.tanh(self.mix(x @ self.emb.weight)))


def _tied(w):
    torch.manual_seed(0)
    return _Tied(w).to(D)


class _Attn(nn.Module):
    def __init__(self, d_head):
        super().__init__()
        self.proj, self.scaling = nn.Linear(4, 3), d_head ** -0.5

    def forward(self, x):
        return self.proj(x) * self.scaling


def _res(L):
    class Res(nn.Module):
        def __init__(self):
            super().__init__()
            self.inp, self.out = nn.Linear(4, 6), nn.Linear(6, 3)
            self.blocks = nn.ModuleList(nn.Sequential(nn.Tanh(), nn.Linear(6, 6)) for _ in range(L))

        def forward(self, x):
            h = self.inp(x)
            for b in self.blocks:
                h = h + b(h)
            return self.out(h)
    return Res().to(D)


def _masked_param():
    m = mlp()
    op.prune.parametrize_masks_(m, op.prune.magnitude(m, 0.5))
    return m


def _mha():
    with torch.random.fork_rng(devices=[]):
        return nn.MultiheadAttention(8, 2).to(D)


def _nm24():
    return t(4, 16) * op.prune.nm_mask(t(4, 16), 2, 4)


def valid_call(qual, fn):
    """``(args, kwargs)`` of a fresh valid call, or raise ``LookupError`` naming what is missing."""
    sig = inspect.signature(fn)
    table = CALLS.get(qual, {})
    if "*" in table:
        return list(table["*"]()), {k: v() for k, v in table.items() if k != "*"}
    args, kwargs = [], {}
    for name, p in sig.parameters.items():
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        factory = table.get(name) or (BY_NAME.get(name) if p.default is p.empty else None)
        if factory is None:
            if p.default is p.empty:
                raise LookupError(f"{qual}: no valid value for required parameter {name!r}: add an entry to CALLS")
            continue
        kwargs[name] = factory()
    return args, kwargs


