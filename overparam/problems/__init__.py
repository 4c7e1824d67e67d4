"""The literature's test problems, seeded and fp64-capable.

Built so far: Gaussian low-rank matrix sensing (:mod:`~overparam.problems.sensing`).
"""

from .sensing import MatrixSensing, ground_truth, sensing

__all__ = ["MatrixSensing", "ground_truth", "sensing"]
