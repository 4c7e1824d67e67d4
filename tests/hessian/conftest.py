import pytest

from overparam.testing.hessian_oracles import CURVATURE_MODELS, curvature_case


@pytest.fixture(params=CURVATURE_MODELS)
def case(request):
    """A seeded fp64 :class:`~overparam.testing.hessian_oracles.CurvatureCase` for each shared test
    model: Linear+tanh, CNN, eval-mode BatchNorm, LayerNorm+GELU, attention, embedding."""
    return curvature_case(request.param, batch_size=12, generator=CURVATURE_MODELS.index(request.param))


@pytest.fixture
def model_case(case):
    """(model, loss_fn, batch) of :func:`case`."""
    return case.model, case.loss_fn, case.batch
