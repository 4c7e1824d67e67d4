"""balancedness of a deep factor list against its definition on non-square factors:
``max_j ‖W_{j+1}ᵀ W_{j+1} − W_j W_jᵀ‖_F`` (the invariant of gradient flow, Arora et al. 2018)."""

import torch

from overparam.backend.random import gaussian
from overparam.factor.diagnostics import balancedness


def test_deep_balancedness_matches_its_definition_on_non_square_factors():
    dims = [2, 3, 5, 4]
    Ws = [gaussian((dims[j + 1], dims[j]), generator=j, dtype=torch.float64) for j in range(3)]
    want = max(float(torch.linalg.matrix_norm(b.mT @ b - a @ a.mT)) for a, b in zip(Ws[:-1], Ws[1:]))
    assert abs(float(balancedness(Ws)) - want) <= 1e-12 * want
