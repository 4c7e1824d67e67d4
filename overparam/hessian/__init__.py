"""overparam.hessian: curvature of a model's loss as linear operators, and the solvers that probe it.

* operators: :func:`hessian` (HVP backends ``double_backward`` / ``jvp`` / ``finite_difference``),
  :func:`ggn` (Gauss-Newton for MSE and cross-entropy, ``(N, C)`` and sequence ``(B, T, V)`` outputs),
  :func:`empirical_fisher` and :func:`mc_fisher`, all ``(model, loss_fn, data, *, params=,
  exclude=)`` with ``params`` a spec of :func:`overparam.select`; restriction to a subset of the
  parameters, sums/scales/shifts, ``to_dense()``; any dense tensor or object with ``@`` also works.
* Kronecker-factored: :func:`kfac` / :func:`ekfac` (Linear and Conv2d layers; GGN, Monte-Carlo or
  empirical Fisher; expand/reduce weight sharing) with closed-form inverse, eigenpairs, trace,
  log-determinant and Frobenius norm.
* :func:`gradient`: the loss gradient by the same side-effect-free forward (used by prune's scores).
* eigenvalues: :func:`lanczos` (thick restart, full re-orthogonalization, LA/SA/LM, warm start),
  :func:`power_iteration` (deflated baseline).
* trace and diagonal: :func:`hutchinson`, :func:`hutchpp`, :func:`xtrace`, :func:`trace`, :func:`diagonal`
  (stochastic, or exact with ``probes=None``).
* density: :func:`slq`, :func:`density`, :func:`plot_density`.
* sharpness: :func:`lambda_max` (vs. ``2/η``), :func:`epsilon_sharpness` / :func:`ball_sharpness`.
* Jacobians: :func:`jacobian` (``J`` / ``Jᵀ`` products of the model outputs, batched), :func:`ntk`
  (the empirical NTK ``J Jᵀ`` as an operator, dense, per-sample / per-output blocks).
* inverses: :func:`cg` (preconditioned, damped), :func:`neumann`, :func:`inverse` (``(A + λI)⁻¹`` as an
  operator: CG, Neumann, or exact by Cholesky / eigh), each solve a :class:`Solve` with its residuals.
* data-parallel ranks: :func:`distributed_hessian` / :func:`distributed_ggn` (plain or DDP model,
  each rank's products summed by all-reduce, weighted by sample counts): :class:`DistributedOperator`.
* per-layer spectra: :func:`block_spectra` (a table of top eigenvalues and traces per block);
  loss-landscape slices: :func:`loss_landscape`, :func:`plot_landscape`.

Example:
    >>> import torch
    >>> import overparam as op
    >>> net = op.testing.tanh_mlp([4, 8, 1], generator=0)
    >>> x, y = torch.randn(32, 4, dtype=torch.float64), torch.randn(32, 1, dtype=torch.float64)
    >>> H = op.hessian.hessian(net, torch.nn.functional.mse_loss, (x, y))
    >>> eig = op.hessian.lanczos(H, k=3, generator=0)
    >>> eig.values.shape, eig.vectors[0].shape
    (torch.Size([3]), torch.Size([3, 8, 4]))
"""

from ._model import NonDeterministicModelError
from .density import Density, Quadrature, density, plot_density, slq
from .diagonal import diagonal
from .distributed import DistributedOperator, distributed_ggn, distributed_hessian
from .fisher import EmpiricalFisherOperator, MCFisherOperator, empirical_fisher, mc_fisher
from .ggn import GGNOperator, ggn
from .ekfac import EKFACOperator, ekfac
from .gradient import gradient
from .hvp import BACKENDS, HessianOperator, blocks, hessian
from .jacobian import JacobianOperator, jacobian
from .landscape import Landscape, loss_landscape, plot_landscape
from .kfac import KFACOperator, kfac
from .lanczos import Eigen, lanczos
from .ntk import NTKOperator, ntk
from .operators import (DenseOperator, FunctionOperator, IdentityOperator, Operator, ScaledOperator, SumOperator,
                        as_operator)
from .power import power_iteration
from .solve import InverseOperator, Solve, cg, inverse, neumann
from .spectra import BlockSpectrum, SpectraTable, block_spectra
from .sharpness import EoS, Sharpness, ball_sharpness, eos_threshold, epsilon_sharpness, lambda_max
from .trace import Estimate, hutchinson, hutchpp, trace, xtrace

__all__ = [
    "NonDeterministicModelError", "gradient",
    "Operator", "DenseOperator", "FunctionOperator", "IdentityOperator", "ScaledOperator", "SumOperator",
    "as_operator", "HessianOperator", "hessian", "BACKENDS", "GGNOperator", "ggn", "blocks",
    "EmpiricalFisherOperator", "empirical_fisher", "MCFisherOperator", "mc_fisher", "KFACOperator", "kfac", "EKFACOperator", "ekfac",
    "Eigen", "lanczos", "power_iteration",
    "Estimate", "hutchinson", "hutchpp", "xtrace", "trace", "diagonal",
    "Quadrature", "Density", "slq", "density", "plot_density",
    "EoS", "Sharpness", "lambda_max", "eos_threshold", "ball_sharpness", "epsilon_sharpness",
    "JacobianOperator", "jacobian", "NTKOperator", "ntk",
    "Solve", "cg", "neumann", "InverseOperator", "inverse",
    "BlockSpectrum", "SpectraTable", "block_spectra", "Landscape", "loss_landscape", "plot_landscape",
    "DistributedOperator", "distributed_hessian", "distributed_ggn",
]
