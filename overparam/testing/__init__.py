"""Oracles, assertion helpers and seeded cases used by overparam's own tests, shipped so that
users can test their code the same way. Each package adds its oracles here."""

from . import assertions, cases, factor_oracles, hessian_oracles, optim_oracles, oracles
from .assertions import assert_no_side_effects, assert_orthonormal, assert_vec_close, max_rel_error
from .cases import ill_conditioned, random_orthogonal, symmetric_with_spectrum, tanh_mlp
from .oracles import (dense_hessian, dense_matrix, fd_hessian_of, flat_params, hessian_of, jacobian_of, loss_of_flat,
                      outputs_of_flat)

__all__ = [
    "assertions", "cases", "oracles", "factor_oracles", "hessian_oracles", "optim_oracles",
    "assert_no_side_effects", "assert_orthonormal", "assert_vec_close", "max_rel_error",
    "ill_conditioned", "random_orthogonal", "symmetric_with_spectrum", "tanh_mlp",
    "dense_hessian", "dense_matrix", "flat_params", "loss_of_flat", "outputs_of_flat", "hessian_of", "jacobian_of",
    "fd_hessian_of",
]
