"""API fuzz test (issue 20): every public callable of every package's ``__all__`` gets bad arguments.

For each parameter, bad values are chosen from its name, annotation and valid value (wrong types,
NaN/inf tensors, wrong dtypes, empty tensors, zero/negative/huge sizes, out-of-range dims,
fractions outside [0, 1], unknown choices, empty models, empty or mis-keyed mask dicts, patterns
that match nothing, malformed data); hypothesis draws the numbers. The only acceptable outcomes
are a ``ValueError`` / ``TypeError`` (or a subclass) whose message names the argument, or — for
the kinds a function may legitimately accept (an empty tensor or model, another float dtype, an
infinite entry) — a result; a NaN entry may propagate to the result (as in torch) but not vanish
into a finite one (a mask, a rank, a bool). Every base call comes from tests/_fuzz_cases.py, so a new public function is covered
automatically (or the test asks for a valid call). ``ACCEPTED`` lists what is accepted on purpose,
with the reason; ``test_the_harness_reports_bad_functions`` shows the harness can fail.
"""

from __future__ import annotations

import inspect
import re
import warnings

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import Tensor, nn

from _fuzz_cases import SKIP, public_callables, valid_call
from _fuzz_known import KNOWN

SELECTION = {"targets", "params", "modules"}          # an empty model selects nothing: naming these is clear
SPEC_NAMES = {"targets", "exclude", "modules", "branches", "branch_outputs"}
KEYED = {"overrides": 0.5, "roles": "hidden"}
POSITIVE = {"rank", "k", "n", "m", "probes", "steps", "depth", "r", "d", "samples", "rounds", "iters", "iterations",
            "max_iters", "max_matvecs", "block", "chunk", "every", "ncv", "kmax", "refresh", "d_in", "d_out",
            "teacher_width", "test_samples", "in_features", "out_features", "width", "hidden", "vocab", "seq",
            "heads", "channels", "classes", "batch_size", "ndim", "order", "search_rank", "passes", "cols", "grid"}
BOUNDED = {"rank", "k"}                  # a huge value must be refused against the shape, not allocated
NONNEG = {"niter", "oversample", "rewind_to", "begin", "end", "finetune_steps", "top"}
FRACTIONS = {"sparsity", "density", "rate", "final", "initial", "fraction", "dropout", "outliers", "decay"}
FRACTIONS_BY_QUAL = {("problems.completion", "p"), ("problems.robust_pca", "alpha"), ("optim.sparsify", "alpha"),
                     ("optim.rpca_scaledgd", "alpha"), ("backend.checks.check_fraction", "value")}
NONNEG_FLOAT = {"lr", "lr0", "damping", "tol", "rho", "sigma", "eps", "eta", "max_lr", "gamma0", "cond", "rtol",
                "atol", "fd_step", "min_damping", "c", "tau", "kappa", "magnitude", "outlier_scale", "zeta", "floor"}
FREE_STR = {"argname", "what", "where", "pattern", "name"}
CHOICE_BY_QUAL = {("testing.hessian_oracles.curvature_case", "name")}
CALLABLES = {"loss_fn", "make_model", "train_fn", "optimizer_fn", "f", "fn", "callback", "schedule", "scorer"}
NOT_FUZZED = {"generator", "group", "device", "self"}      # generator handling is tested in tests/*/test_random*
MUST_REFUSE = {"not_tensor", "not_module", "not_int", "zero", "negative", "huge", "dim_out_of_range",
               "fraction_out", "nan_float", "negative_float", "bad_choice", "nomatch", "bad_spec_type",
               "nomatch_key", "bogus_key", "not_callable", "malformed_data"}

# (qualname, parameter, kind) -> why a result is the right outcome; (qualname, "*", kind) covers every parameter
ACCEPTED = {
    **{(q, "a", "nan_float"): "vector algebra: a NaN scalar propagates as in torch" for q in (
        "backend.vec.axpy", "backend.vec.axpy_", "backend.vec.scale")},
    **{(q, "*", "nan"): "reads only shapes, never values" for q in (
        "backend.vec.shapes", "backend.vec.numel", "backend.vec.zeros_like", "backend.nm.grouped_dim",
        "backend.dist.is_dtensor", "backend.dist.shard_dim")},
    ("scaling.unit_ops.embedding", "weight", "nan"): "a lookup reads only the indexed rows, as F.embedding",
    ("backend.select.matches", "spec", "bad_choice"): "a predicate: a name that selects nothing is False, not an error",
    ("backend.nm.nm_ungroup", "like", "nan"): "like gives only the shape; the values come from g",
    ("backend.dist.dtensor_like", "like", "nan"): "like gives only the layout; the values come from local",
    ("backend.dist.local_part", "like", "nan"): "like gives only the layout; the values come from full",
    ("backend.topk.fraction_count", "n", "zero"): "no candidates: the count is 0, a valid result",
    **{(q, a, "nan"): "an in-place optimizer step returning None: a NaN propagates into param/state as in torch's "
       "optimizers (checked in tests/backend/test_packed_step.py)" for q in (
        "backend.packed_step.packed_adamw_step", "backend.packed_step.packed_sgd_step")
       for a in ("param", "grad", "exp_avg", "exp_avg_sq", "momentum_buffer")},
    ("optim.run_batched", "steps", "zero"): "documented: steps=0 records the initial state (loss, error) only",
    ("backend.linalg.spd_solve_ex", "G", "nan"): "documented: a non-finite system is reported by ok=False and solves to zeros, so a batch is never contaminated",
    ("backend.topk.topk_mask", "k", "zero"): "k=0 selects nothing: an all-False mask, a valid result",
    ("backend.checks.check_floats", "tensors", "bogus_key"): "the keys are the names of the tensors to check: any name is valid",
    ("backend.checks.check_rank", "rank", "huge"): "no shape given: no upper bound (with shape and at_most_min it is refused)",
    ("problems.small_factors", "k", "huge"): "small init may be over-parameterized: any k >= 1 (k > n is the point), n·k memory",
    ("problems.small_factors", "like", "nan"): "like gives only the dtype and device; its values are never read",
    ("testing.hessian_oracles.embedding_net", "dim", "dim_out_of_range"): "dim is the embedding width, not a tensor dimension: any int >= 1",
    ("testing.hessian_oracles.moments", "kmax", "zero"): "kmax=0: the zeroth moment alone (1), a valid result",
    **{("testing.hessian_oracles.loss_hessian_closed_forms", n, "nan"): "the MSE Hessian (2/N)XᵀX reads neither y nor w"
       for n in ("y", "w")},
    ("prune.kept_fraction", "masks", "bogus_key"): "takes masks without a model: any key is a valid name",
    ("prune.masks.unstructured", "scores", "bogus_key"): "takes scores without a model: any key is a valid name",
    ("prune.masks.n_pruned", "n", "zero"): "a count: 0 of 0 entries are pruned, a valid result",
    ("prune.masks.prune_smallest", "k", "zero"): "k = 0 prunes nothing: a valid (all-kept) mask, documented",
    ("prune.semistructured.is_semi_structured", "w", "nan"): "reads only the zero pattern: a NaN is a non-zero (documented)",
    ("backend.checks.check_float", "x", "nan"): "checks the dtype only (documented); finiteness is the caller's check",
    **{(q, "rank", "huge"): "over-parameterized width: rank may exceed min(n1, n2) (documented), memory is linear in rank" for q in (
        "factor.functional.init_small", "factor.functional.init_balanced", "factor.functional.init_factors",
        "factor.LowRank", "factor.LowRankLinear", "factor.SparseLowRank", "factor.LoRALayer", "factor.lora_")},
    ("factor.LowRankParametrization", "rank", "huge"): "no shape yet: rank is checked against the weight on registration",
    ("factor.lora_scaling", "rank", "huge"): "the formula alpha/rank of a number: there is no shape to bound it by",
    ("optim.rpca_scaledgd", "iters", "zero"): "iters is a maximum: 0 steps returns the spectral initialisation (documented)",
}
# never run: a known defect that allocates tens of GB or runs for minutes (listed in KNOWN too)
NOT_RUN: set[tuple[str, str, str]] = set()


def _names(message: str, name: str) -> bool:
    return re.search(rf"(?<![A-Za-z0-9_]){re.escape(name)}(?![A-Za-z0-9_])", message) is not None


def _nonfinite(out) -> bool:
    if isinstance(out, Tensor):
        return out.is_floating_point() and not bool(torch.isfinite(out).all())
    if isinstance(out, (list, tuple)):
        return any(_nonfinite(o) for o in out)
    if isinstance(out, dict):
        return any(_nonfinite(o) for o in out.values())
    if isinstance(out, float):
        return out != out or out in (float("inf"), float("-inf"))
    return False


def kinds(qual: str, name: str, p: inspect.Parameter, base, takes_model: bool) -> list[str]:
    """The kinds of bad value that parameter ``name`` (valid value ``base``) must be fuzzed with."""
    if name in NOT_FUZZED:
        return []
    if name in SPEC_NAMES and takes_model:
        return ["nomatch", "bad_spec_type"]
    if name in KEYED and takes_model:
        return ["nomatch_key"]
    if name == "data":
        return ["malformed_data"]
    if name in CALLABLES and callable(base):
        return ["not_callable"]
    if isinstance(base, nn.Module):
        return ["empty_model", "not_module"]
    if isinstance(base, Tensor):
        return ["not_tensor", "empty"] + (["nan", "inf", "wrong_dtype"] if base.is_floating_point() else [])
    if isinstance(base, dict) and base and all(isinstance(v, Tensor) for v in base.values()):
        return ["empty_dict", "bogus_key"]
    if isinstance(base, bool):
        return []
    if isinstance(base, int) or (name == "dim" and base is None):
        if name == "dim":
            return ["dim_out_of_range", "not_int"]
        if name in POSITIVE:
            return ["zero", "negative", "not_int"] + (["huge"] if name in BOUNDED else [])
        return ["negative", "not_int"] if name in NONNEG else []
    if isinstance(base, float):
        out = ["nan_float"]
        if name in FRACTIONS or (qual, name) in FRACTIONS_BY_QUAL:
            out.append("fraction_out")
        if name in NONNEG_FLOAT:
            out.append("negative_float")
        return out
    if isinstance(base, str) and (name not in FREE_STR or (qual, name) in CHOICE_BY_QUAL):
        return ["bad_choice"]
    return []


def bad_value(kind: str, base, draw, name: str = ""):
    """A bad value of ``kind`` (numbers drawn by hypothesis) next to the valid ``base``."""
    if kind in ("nan", "inf"):
        x = base.detach().clone(memory_format=torch.contiguous_format)
        if x.numel():
            i = draw(st.integers(0, x.numel() - 1))
            x.view(-1)[i] = float("nan") if kind == "nan" else draw(st.sampled_from([float("inf"), float("-inf")]))
        return x
    if kind == "wrong_dtype":
        return base.detach().to(torch.float32 if base.dtype == torch.float64 else torch.int64)
    if kind == "empty":
        return base.new_zeros((0,) * max(base.ndim, 1))
    return {
        "not_tensor": lambda: "not a tensor", "not_module": lambda: "not a module", "empty_model": nn.Module,
        "not_int": lambda: draw(st.sampled_from([2.5, "3"])), "zero": lambda: 0,
        "negative": lambda: draw(st.integers(-10**6, -1)), "huge": lambda: draw(st.integers(10**4, 10**5)),
        "dim_out_of_range": lambda: draw(st.one_of(st.integers(5, 64), st.integers(-64, -5))),
        "fraction_out": lambda: draw(st.one_of(st.floats(-10, -0.01), st.floats(1.01, 10))),
        "nan_float": lambda: float("nan"), "negative_float": lambda: draw(st.floats(-10, -1e-3)),
        "bad_choice": lambda: "no_such_choice", "nomatch": lambda: "nomatch_zz", "bad_spec_type": lambda: 3.5,
        "nomatch_key": lambda: {"nomatch_zz": KEYED.get(name, 0.5)},
        "bogus_key": lambda: {"bogus": next(iter(base.values())).clone()}, "empty_dict": dict,
        "not_callable": lambda: 3, "malformed_data": lambda: (base[0],) if isinstance(base, tuple) else 3,
    }[kind]()


def _accepted(qual, name, kind):
    return ACCEPTED.get((qual, name, kind)) or ACCEPTED.get((qual, "*", kind))


def fuzz(qual: str, fn, draw, make_call) -> list[str]:
    """Call ``fn`` once per (parameter, kind of bad value); return what went wrong, one line each."""
    sig = inspect.signature(fn)
    params = {n: p for n, p in sig.parameters.items() if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}
    takes_model = any(n in params for n in ("model", "make_model"))
    args, kwargs = make_call()
    if args:                                  # positional-only tables (CALLS "*"): fuzz through the signature
        kwargs = {**dict(zip(params, args)), **kwargs}
    findings = []
    for name, p in params.items():
        base = kwargs.get(name, None if p.default is p.empty else p.default)
        for kind in kinds(qual, name, p, base, takes_model):
            if (qual, name, kind) in NOT_RUN:
                findings.append(f"{qual}({name}=<{kind}>): not run")
                continue
            _, call_kwargs = make_call()
            if args:
                call_kwargs = {**dict(zip(params, make_call()[0])), **call_kwargs}
            call_kwargs[name] = bad_value(kind, call_kwargs.get(name, base), draw, name)
            what = f"{qual}({name}=<{kind}>)"
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    out = fn(**call_kwargs)
            except (ValueError, TypeError) as err:
                named = [name] + (sorted(SELECTION & set(params)) if kind == "empty_model" else [])
                if not any(_names(str(err), n) for n in named):
                    findings.append(f"{what}: {type(err).__name__} does not name {name!r}: {err}")
            except AssertionError:
                if not qual.startswith("testing.assertions."):
                    findings.append(f"{what}: AssertionError")
            except Exception as err:  # noqa: BLE001 -- anything else is the finding
                findings.append(f"{what}: {type(err).__name__}: {str(err)[:160]}")
            else:
                if _accepted(qual, name, kind):
                    continue
                if kind in MUST_REFUSE:
                    findings.append(f"{what}: accepted silently")
                elif kind == "nan" and not _nonfinite(out):
                    findings.append(f"{what}: hid the NaN in a finite result")
    return findings


CASES = [(q, fn) for q, fn in public_callables() if q not in SKIP]


def test_every_public_callable_has_a_valid_call():
    missing = []
    for qual, fn in CASES:
        try:
            valid_call(qual, fn)
        except LookupError as err:
            missing.append(str(err))
    assert not missing, missing


def _run(qual, fn, make_call, examples=2):
    found: set[str] = set()

    @settings(max_examples=examples, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    @given(st.data())
    def body(data):
        found.update(fuzz(qual, fn, data.draw, make_call))

    with torch.random.fork_rng(devices=[]):
        body()
    return sorted(found)


@pytest.mark.parametrize("qual,fn", CASES, ids=[q for q, _ in CASES])
def test_bad_arguments_are_refused_clearly(qual, fn):
    findings = _run(qual, fn, lambda: valid_call(qual, fn))
    known = set(KNOWN.get(qual, "").split())
    key = lambda f: "{}:{}".format(*re.match(r"[\w.]+\((\w+)=<(\w+)>\)", f).groups())  # noqa: E731
    new = [f for f in findings if key(f) not in known]
    assert not new, "new findings (fix them; ACCEPTED only for documented behaviour):\n" + "\n".join(new)
    fixed = known - {key(f) for f in findings}
    assert not fixed, f"fixed, remove from tests/_fuzz_known.py KNOWN[{qual!r}]: {sorted(fixed)}"


# ---- the harness can fail: deliberately bad functions must be reported ------------------------

def _crashes(w: Tensor, probes: int = 1):
    """Indexes without checking ``probes``."""
    if not isinstance(w, Tensor):
        raise TypeError("w must be a tensor")
    return w.view(-1)[probes * 10**6]


def _swallows_nan(w: Tensor, probes: int = 1):
    """Checks ``probes`` but turns a NaN ``w`` into a plausible finite result."""
    if isinstance(probes, bool) or not isinstance(probes, int) or probes < 1:
        raise ValueError(f"probes must be an int >= 1, got {probes!r}")
    if not isinstance(w, Tensor):
        raise TypeError(f"w must be a tensor, got {type(w).__name__}")
    return torch.nan_to_num(w).sum() * probes


def _cryptic(w: Tensor, probes: int = 1):
    """Refuses everything, without saying which argument."""
    raise ValueError("bad input")


def _clear(w: Tensor, probes: int = 1):
    """Refuses every bad argument by name."""
    if isinstance(probes, bool) or not isinstance(probes, int) or probes < 1:
        raise ValueError(f"probes must be an int >= 1, got {probes!r}")
    if not isinstance(w, Tensor) or not w.is_floating_point():
        raise TypeError("w must be a floating-point tensor")
    if not bool(torch.isfinite(w).all()):
        raise ValueError("w must be finite")
    return w.sum() * probes


def test_the_harness_reports_bad_functions():
    make = lambda: ([], {"w": torch.ones(3, 4, dtype=torch.float64), "probes": 2})  # noqa: E731
    crashes = _run("self.crashes", _crashes, make)
    assert any("IndexError" in f or "RuntimeError" in f for f in crashes), crashes
    nan = _run("self.swallows_nan", _swallows_nan, make)
    assert any("w=<nan>" in f and "hid the NaN" in f for f in nan), nan
    assert not any("probes=" in f for f in nan), nan
    cryptic = _run("self.cryptic", _cryptic, make)
    assert any("does not name 'w'" in f for f in cryptic) and any("does not name 'probes'" in f for f in cryptic)
    assert _run("self.clear", _clear, make) == []
