"""The literature's test problems, seeded and fp64-capable.

* :func:`sensing`: Gaussian low-rank matrix sensing (symmetric PSD / asymmetric, condition
  number κ, ℓ2 / ℓ1 loss, optional outliers: sparse arbitrary or Gaussian);
* :func:`completion`: matrix completion with Bernoulli sampling (minibatches for ScaledSGD);
* :func:`robust_pca`: low rank plus sparse outliers;
* :func:`deep_linear`: deep linear (ℓ_p) regression;
* :func:`teacher_student`: a two-layer teacher-student network;
* :class:`LiftedSensing`: symmetric sensing lifted to tensors (Ma et al. 2023);
* :class:`Batched`: many instances of one problem as one tensor program (:func:`shared_sensing`).

Each has ``loss``, ``relative_error``, its ground truth and ``init(kind, scale=, rank=)``
(``"small"`` random or ``"spectral"``).
"""

from .batched import Batched, shared_sensing
from .completion import MatrixCompletion, completion
from .deep_linear import DeepLinearRegression, deep_linear
from .lifted import LiftedSensing
from .robust_pca import RobustPCA, robust_pca
from .sensing import MatrixSensing, ground_truth, sensing, small_factors, spectral_factors
from .teacher_student import TeacherStudent, teacher_student

__all__ = [
    "MatrixSensing", "ground_truth", "sensing", "small_factors", "spectral_factors",
    "MatrixCompletion", "completion", "RobustPCA", "robust_pca", "DeepLinearRegression", "deep_linear",
    "LiftedSensing",
    "TeacherStudent", "teacher_student",
    "Batched", "shared_sensing",
]
