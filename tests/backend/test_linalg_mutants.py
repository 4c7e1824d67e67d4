"""Linear-algebra checks that the mutation review (docs/mutation.md) needed: orthogonality after
the default re-orthogonalization pass on nearly dependent input."""

import torch

from overparam.backend.linalg import orthogonalize
from overparam.backend.random import gaussian, orthonormal


def test_default_orthogonalize_keeps_orthogonality_on_nearly_dependent_vectors():
    # v lies in span(Q) up to a 1e-10 relative part: one classical Gram-Schmidt pass leaves
    # components along Q of ~eps·‖v‖, i.e. ~1e-6 relative to the remainder; CGS2 leaves ~eps.
    Q = orthonormal(200, 30, generator=0, dtype=torch.float64)
    c = gaussian((30, 5), generator=1, dtype=torch.float64) * 1e3
    perp, _ = orthogonalize(gaussian((200, 5), generator=2, dtype=torch.float64), Q)
    v = Q @ c + 1e-10 * 1e3 * perp
    w, coef = orthogonalize(v, Q)
    rel = torch.linalg.matrix_norm(Q.mT @ w) / torch.linalg.matrix_norm(w)
    assert float(rel) < 1e-12
    assert torch.allclose(w + Q @ coef, v, rtol=0, atol=1e-9)
    for j in range(5):  # one vector at a time, too
        wj, _ = orthogonalize(v[:, j], Q)
        assert float(torch.linalg.vector_norm(Q.mT @ wj) / torch.linalg.vector_norm(wj)) < 1e-12


def test_cholesky_qr2_is_orthogonal_to_working_precision_on_ill_conditioned_blocks():
    # cond(Y) = 1e6: one Cholesky-QR pass loses orthogonality like eps·κ² ≈ 1e-4; the second
    # pass restores it to ~eps.
    from overparam.backend.linalg import cholesky_qr2
    U = orthonormal(300, 8, generator=3, dtype=torch.float64)
    V = orthonormal(8, 8, generator=4, dtype=torch.float64)
    Y = (U * torch.logspace(0, -6, 8, dtype=torch.float64)) @ V.mT
    Q, R = cholesky_qr2(Y)
    assert float(torch.linalg.matrix_norm(Q.mT @ Q - torch.eye(8, dtype=torch.float64))) < 1e-12
    assert torch.allclose(Q @ R, Y, rtol=0, atol=1e-13)
    assert torch.equal(R, R.triu())
