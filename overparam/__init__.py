"""overparam: over-parameterization primitives for PyTorch.

Packages: :mod:`~overparam.factor`, :mod:`~overparam.optim`, :mod:`~overparam.scaling`,
:mod:`~overparam.prune`, :mod:`~overparam.hessian`, :mod:`~overparam.problems`, all on the
shared tensor backend :mod:`~overparam.backend`. Importing overparam imports no optional
extra (matplotlib, triton, tqdm, scikit-learn).

:func:`overparam.select` is the one selection language every package uses to name parts of a
model (see :mod:`overparam.backend.select`).
"""

from . import backend, factor, hessian, optim, problems, prune, scaling, testing
from ._version import __version__
from .backend.select import select

__all__ = ["backend", "factor", "hessian", "optim", "problems", "prune", "scaling", "testing", "select", "__version__"]
