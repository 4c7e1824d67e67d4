"""The literature's test problems, seeded and fp64-capable.

* :func:`sensing`: Gaussian low-rank matrix sensing (symmetric PSD / asymmetric, condition
  number κ, ℓ2 / ℓ1 loss, optional outliers: sparse arbitrary or Gaussian);
* :func:`completion`: matrix completion with Bernoulli sampling (minibatches for ScaledSGD);
* :func:`robust_pca`: low rank plus sparse outliers;
* :func:`deep_linear`: deep linear (ℓ_p) regression;
* :func:`teacher_student`: a two-layer teacher-student network.

Each has ``loss``, ``relative_error``, its ground truth and ``init(kind, scale=, rank=)``
(``"small"`` random or ``"spectral"``).
"""

from .completion import MatrixCompletion, completion
from .deep_linear import DeepLinear, deep_linear
from .robust_pca import RobustPCA, robust_pca
from .sensing import MatrixSensing, ground_truth, sensing, small_factors, spectral_factors
from .teacher_student import TeacherStudent, teacher_student

__all__ = [
    "MatrixSensing", "ground_truth", "sensing", "small_factors", "spectral_factors",
    "MatrixCompletion", "completion", "RobustPCA", "robust_pca", "DeepLinear", "deep_linear",
    "TeacherStudent", "teacher_student",
]
