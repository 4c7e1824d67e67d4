"""Defects the API fuzz test (tests/test_fuzz.py) found and nobody has fixed yet: qualname ->
"parameter:kind ...". The fuzz test fails on a finding not listed here AND on an entry that no longer
fails (remove it when you fix it). Each entry is a bug to fix, not an accepted behaviour (those are
ACCEPTED in tests/test_fuzz.py, with their reasons)."""

KNOWN = {
    "backend.select.matches": "kind:bad_choice model:not_module",
    "problems.LiftedSensing": "rank:huge",
    "testing.assertions.max_rel_error": "actual:empty actual:not_tensor expected:empty expected:not_tensor",
    "testing.cases.ill_conditioned": "k:huge",
    "testing.oracles.flat_params": "model:not_module",
    "testing.oracles.outputs_of_flat": "inputs:nan inputs:not_tensor",
    "testing.oracles.loss_of_flat": "loss_fn:not_callable",
    "testing.oracles.hessian_of": "x:empty x:nan",
    "testing.oracles.jacobian_of": "x:empty x:nan",
    "testing.oracles.fd_hessian_of": "x:empty x:nan",
    "testing.oracles.dense_hessian": "loss_fn:not_callable",
}
