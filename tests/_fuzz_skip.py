"""The public names the fuzz and state-invariance tests walk, and those they skip (plain data,
exception classes, protocols), shared by tests/_fuzz_cases.py."""

from __future__ import annotations

import inspect

import overparam as op

PACKAGES = ("backend", "factor", "optim", "scaling", "prune", "hessian", "problems", "testing")

# Public names that are plain data or protocols, not functions to call with user input.
SKIP = {
    **{n: "a result dataclass: built by the library, holds what it is given" for n in (
        "backend.linalg.SVD", "backend.dispatch.Implementation", "factor.functional.LowRankFactors",
        "factor.diagnostics.FactorStats", "optim.RPCAResult", "optim.BatchedRun", "optim.StepInfo", "scaling.coord.CoordCheck",
        "scaling.shapes.TensorShape", "scaling.Rule", "scaling.Plan", "prune.Round", "prune.Ticket",
        "prune.scores.Movement", "hessian.Eigen", "hessian.Estimate", "hessian.Quadrature", "hessian.Density",
        "hessian.EoS", "hessian.Sharpness", "testing.hessian_oracles.CurvatureCase", "hessian.Solve",
        "hessian.BlockSpectrum", "hessian.SpectraTable", "hessian.Landscape",
        "prune.scores.Movement", "prune.removal.ChannelGroup", "hessian.Eigen", "hessian.Estimate", "hessian.Quadrature", "hessian.Density",
        "hessian.EoS", "hessian.Sharpness", "testing.hessian_oracles.CurvatureCase",
        "problems.MatrixSensing", "problems.MatrixCompletion", "problems.RobustPCA",
        "problems.DeepLinearRegression", "problems.TeacherStudent", "prune.LayerStats", "prune.PrunedMatrix",
        "prune.LayerError", "prune.Reconstruction")},
    **{n: "an exception class" for n in (
        "backend.linalg.NotPositiveDefiniteError", "hessian.NonDeterministicModelError", "optim.NonFiniteGradientError")},
    **{n: "a typing alias / abstract protocol, not a function" for n in (
        "backend.vec.Vec", "backend.select.Spec", "prune.Masks", "optim.StepRule", "hessian.Operator",
        "backend.dispatch.Registry", "optim.PairOptimizer", "factor.LayerWrapper", "prune.PackedOptimizer")},
    **{n: "a process-group query: no argument but an optional torch.distributed group" for n in (
        "backend.dist.is_distributed", "backend.dist.rank", "backend.dist.world_size")},
    "backend.dispatch.register": "mutates the global implementation registry (tested in tests/backend/test_dispatch.py)",
    **{n: "mutates the global layer-kind registry (tested in tests/backend/test_layers.py)" for n in (
        "backend.layers.register_layer", "backend.layers.unregister_layer")},
    **{n: "a layer-kind description dataclass: checks its fields in __post_init__ (tests/backend/test_layers.py)"
       for n in ("backend.layers.Layout", "backend.layers.LayerKind", "backend.layers.LayerWeight")},
    "testing.assertions.assert_no_side_effects": "a context manager: its argument is checked on entry (tests/testing)",
    "hessian.plot_density": "draws with matplotlib (tests/hessian/test_density.py)",
    "hessian.plot_landscape": "draws with matplotlib (tests/hessian/test_landscape.py)",
    "prune.semistructured.to_semi_structured": "needs CUDA (tests/prune/test_semistructured.py); refuses a CPU tensor",
    "scaling.coord.plot_coord_check": "draws with matplotlib (tests/scaling/test_coord.py)",
    "prune.plot_reconstruction": "draws with matplotlib (tests/prune/test_reconstruction.py)",
}


def public_callables():
    """Yield ``(qualname, obj)`` for every public callable, each object once."""
    seen = set()
    for pkg in PACKAGES:
        mod = getattr(op, pkg)
        items = []
        for name in mod.__all__:
            obj = getattr(mod, name)
            if inspect.ismodule(obj):
                items += [(f"{pkg}.{name}.{n}", getattr(obj, n)) for n in getattr(obj, "__all__", ())]
            else:
                items.append((f"{pkg}.{name}", obj))
        for qual, obj in items:
            if callable(obj) and id(obj) not in seen:
                seen.add(id(obj))
                yield qual, obj
