"""Bad sizes and bad factors are refused naming the argument and what is expected (issue 20)."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import overparam as op
from overparam.backend.checks import check_int
from overparam.problems._checks import check_factors, check_tensor

D = torch.float64


@pytest.mark.parametrize("build,arg", [
    (lambda: op.problems.sensing(n=0, r=1, m=5), "n"), (lambda: op.problems.sensing(n=4, r=1, m=0), "m"),
    (lambda: op.problems.sensing(n=4, r=0, m=5), "r"), (lambda: op.problems.sensing(n=4.0, r=1, m=5), "n"),
    (lambda: op.problems.sensing(n=4, n2=0, r=1, m=5, symmetric=False), "n2"),
    (lambda: op.problems.completion(n=0, r=1, p=0.5), "n"), (lambda: op.problems.robust_pca(n=0, r=1, alpha=0.1), "n"),
    (lambda: op.problems.ground_truth(0, 1), "n"),
    (lambda: op.problems.teacher_student(d=0, teacher_width=1, samples=5), "d"),
    (lambda: op.problems.teacher_student(d=3, teacher_width=1, samples=0), "samples"),
])
def test_sizes_name_the_argument(build, arg):
    with pytest.raises((ValueError, TypeError), match=rf"^{arg} must be an int >= 1"):
        build()


def test_sensing_loss_refuses_wrong_dtype_shape_and_kind():
    P = op.problems.sensing(n=6, r=2, m=30, generator=0)
    X = P.init("small", rank=3, generator=1)
    with pytest.raises(TypeError, match=r"X must have the problem's dtype torch.float64, got torch.float32"):
        P.loss(X.float())
    with pytest.raises(ValueError, match=r"X must have shape \(\.\.\., 6, k\), got \(5, 3\)"):
        P.loss(X[:5])
    with pytest.raises(ValueError, match=r"X must have shape \(\.\.\., 6, k\), got \(6,\)"):
        P.loss(X[:, 0])
    with pytest.raises(TypeError, match="X must be a factor tensor"):
        P.loss([X, X])
    with pytest.raises(TypeError, match=r"M must have the problem's dtype"):
        P.measure(X.float() @ X.float().T)
    Q = op.problems.sensing(n=6, n2=4, r=2, m=30, symmetric=False, generator=0)
    L, R = Q.init("small", rank=2, generator=1)
    with pytest.raises(TypeError, match="asymmetric"):
        Q.loss(L)
    with pytest.raises(ValueError, match=r"X\[1\] \(R\) must have shape \(\.\.\., 4, k\), got \(6, 2\)"):
        Q.loss((L, L))
    with pytest.raises(ValueError, match="same rank k"):
        Q.loss((L, R[:, :1]))
    # batched factors stay supported: (b, n, k) -> (b,)
    torch.testing.assert_close(P.loss(torch.stack([X, 2 * X])), torch.stack([P.loss(X), P.loss(2 * X)]))


def test_completion_robust_pca_and_teacher_student_refuse_bad_factors():
    C = op.problems.completion(n=8, r=2, p=0.6, generator=0)
    L, R = C.init("small", rank=2, generator=1)
    with pytest.raises(TypeError, match=r"X\[0\] \(L\) must have the problem's dtype"):
        C.loss((L.float(), R.float()))
    with pytest.raises(TypeError, match="asymmetric"):  # was silently read as (X, X)
        C.loss(L)
    P = op.problems.robust_pca(n=8, r=2, alpha=0.1, generator=0)
    L, R = P.init("spectral")
    with pytest.raises(ValueError, match=r"S must have shape \(8, 8\), got \(8, 7\)"):
        P.loss((L, R), P.S_star[:, :7])
    with pytest.raises(TypeError, match=r"X\[1\] \(R\) must have the problem's dtype"):
        P.relative_error((L, R.float()))
    T = op.problems.teacher_student(d=5, teacher_width=2, samples=20, generator=0)
    W, a = T.init("small", rank=3, generator=1)
    with pytest.raises(TypeError, match=r"params\[0\] \(W\) must have the problem's dtype"):
        T.loss((W.float(), a.float()))
    with pytest.raises(ValueError, match=r"params\[1\] \(a\) must have shape \(3,\), got \(2,\)"):
        T.loss((W, a[:2]))
    with pytest.raises(ValueError, match=r"params\[0\] \(W\) must have shape \(k, 5\), got \(3, 4\)"):
        T.loss((W[:, :4], a))
    with pytest.raises(TypeError, match="params must be a pair"):
        T.loss(W)


@settings(max_examples=40, deadline=None)
@given(rows=st.integers(1, 5), k=st.integers(1, 4), extra=st.lists(st.integers(1, 3), max_size=2),
       off=st.integers(-1, 1), batched=st.booleans())
def test_check_tensor_accepts_exactly_the_expected_shapes(rows, k, extra, off, batched):
    like = torch.zeros(1, dtype=D)
    t = torch.zeros(*extra, max(rows + off, 1), k, dtype=D)
    ok = t.shape[-2] == rows and (batched or not extra)
    if ok:
        assert check_tensor(t, "X", (rows, None), like, batched=batched) is t
    else:
        with pytest.raises(ValueError, match="X must have shape"):
            check_tensor(t, "X", (rows, None), like, batched=batched)


def test_check_helpers_reject_the_rest():
    like = torch.zeros(1, dtype=D)
    with pytest.raises(TypeError, match="X must be a tensor"):
        check_tensor([[1.0]], "X", (1, None), like)
    with pytest.raises(TypeError, match="a pair"):
        check_factors((like, like, like), (1, 1), False, like)
    with pytest.raises(TypeError, match="flag must be an int"):
        check_int(True, "flag")
    assert check_int(2, "n") == 2
