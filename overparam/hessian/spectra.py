"""Per-layer (block) Hessian spectra in one call: for every module that directly owns selected
parameters, the top eigenvalues of its diagonal Hessian block (:func:`~overparam.hessian.blocks`,
:func:`~overparam.hessian.lanczos`) and its trace (exact for blocks of at most ``probes``
parameters, else Hutch++), as a table of rows.

Example:
    >>> import torch
    >>> net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 1)).double()
    >>> x, y = torch.randn(16, 3, dtype=torch.float64), torch.randn(16, 1, dtype=torch.float64)
    >>> table = block_spectra(net, torch.nn.functional.mse_loss, (x, y), k=2, generator=0)
    >>> [(row.name, row.size, tuple(row.top.shape)) for row in table]
    [('0', 16, (2,)), ('2', 5, (2,))]
    >>> print(table.to_text().splitlines()[0])
    | block | size | top eigenvalues | trace | ± |
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..backend.checks import check_int
from ..backend.random import GeneratorLike, measurement_generator
from ..backend.select import Spec
from .hvp import blocks
from .lanczos import lanczos
from .trace import Estimate, trace

__all__ = ["BlockSpectrum", "SpectraTable", "block_spectra"]


@dataclass
class BlockSpectrum:
    """One row of a :class:`SpectraTable`.

    Attributes:
        name: the module's qualified name (``""`` for parameters of the root module).
        params: the parameter names of the block, in order.
        size: the block's number of parameters ``n_b``.
        top: ``(min(k, n_b),)`` eigenvalues of the block, ordered by ``which`` (``"LA"``: largest first).
        trace: :class:`~overparam.hessian.Estimate` of the block's trace (``stderr`` 0 when exact).
        n_matvecs: Hessian-block products used for this row.

    Example (the read-out block; its trace is exact: at most ``probes`` parameters):
        >>> net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 1)).double()
        >>> data = (torch.randn(16, 3, dtype=torch.float64), torch.randn(16, 1, dtype=torch.float64))
        >>> table = block_spectra(net, torch.nn.functional.mse_loss, data, k=2, generator=0)
        >>> row = table["2"]
        >>> row.params, row.size, row.top.shape, bool(row.trace.mean > 0), float(row.trace.stderr)
        (['2.weight', '2.bias'], 5, torch.Size([2]), True, 0.0)
    """

    name: str
    params: list[str]
    size: int
    top: Tensor
    trace: Estimate
    n_matvecs: int


@dataclass
class SpectraTable:
    """Rows of :class:`BlockSpectrum`, one per block, in parameter order; ``table["layer"]`` finds a row by name.

    Example:
        >>> net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 1)).double()
        >>> data = (torch.randn(16, 3, dtype=torch.float64), torch.randn(16, 1, dtype=torch.float64))
        >>> table = block_spectra(net, torch.nn.functional.mse_loss, data, k=2, generator=0)
        >>> len(table), [row.name for row in table], table["0"].size
        (2, ['0', '2'], 16)
    """

    rows: list[BlockSpectrum]

    def __iter__(self) -> Iterator[BlockSpectrum]:
        return iter(self.rows)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, name: str) -> BlockSpectrum:
        for row in self.rows:
            if row.name == name:
                return row
        raise KeyError(f"no block named {name!r}; blocks: {[r.name for r in self.rows]}")

    def to_text(self, *, digits: int = 4) -> str:
        """A markdown table: block, size, top eigenvalues, trace and its standard error.

        Example:
            >>> net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 1)).double()
            >>> data = (torch.randn(16, 3, dtype=torch.float64), torch.randn(16, 1, dtype=torch.float64))
            >>> table = block_spectra(net, torch.nn.functional.mse_loss, data, k=2, generator=0)
            >>> print(table.to_text().splitlines()[0])
            | block | size | top eigenvalues | trace | ± |
        """
        check_int(digits, "digits")
        out = ["| block | size | top eigenvalues | trace | ± |", "| --- | --- | --- | --- | --- |"]
        for r in self.rows:
            top = ", ".join(f"{float(v):.{digits}g}" for v in r.top)
            out.append(f"| {r.name or '<root>'} | {r.size} | {top} | {float(r.trace.mean):.{digits}g} | "
                       f"{float(r.trace.stderr):.2g} |")
        return "\n".join(out)


def block_spectra(model: nn.Module, loss_fn: Callable, data, *, params: Spec = None, exclude: Spec = None, k: int = 3,
                  which: str = "LA", probes: int = 30, tol: float | None = None, generator: GeneratorLike = None,
                  **kwargs) -> SpectraTable:
    """Top eigenvalues and trace of every layer's diagonal Hessian block, as one table.

    Each block is the Hessian w.r.t. the parameters one module owns directly (``"0"`` for
    ``0.weight`` and ``0.bias``), exactly as :func:`~overparam.hessian.blocks` splits them.
    ``generator=None`` never advances the global RNG (the measurement rule, docs/index.md).

    Args:
        model, loss_fn, data, params, exclude: as for :func:`~overparam.hessian.hessian`.
        k: eigenvalues per block, at most the largest block's size (a block with fewer parameters
            gets all of its ``n_b``).
        which: ``"LA"`` (largest), ``"SA"`` (most negative) or ``"LM"`` (largest magnitude), as in
            :func:`~overparam.hessian.lanczos`.
        probes: trace budget per block: a block of at most ``probes`` parameters gets its exact
            trace (``n_b`` products with unit vectors), a larger one Hutch++ with ``probes`` products.
        tol: Lanczos tolerance (default ``√eps``).
        generator: one generator for every block's Lanczos start vector and trace probes.
        **kwargs: options of :func:`~overparam.hessian.hessian` (``backend``, ``reduction``, ...).

    Returns:
        :class:`SpectraTable` with one :class:`BlockSpectrum` per block.

    Example (each row's eigenvalues are those of the dense block):
        >>> net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 1)).double()
        >>> data = (torch.randn(16, 3, dtype=torch.float64), torch.randn(16, 1, dtype=torch.float64))
        >>> table = block_spectra(net, torch.nn.functional.mse_loss, data, k=2, generator=0)
        >>> from overparam.hessian import hessian
        >>> H = hessian(net, torch.nn.functional.mse_loss, data).to_dense()
        >>> torch.allclose(table["2"].top, torch.linalg.eigvalsh(H[16:, 16:]).flip(0)[:2])
        True
    """
    check_int(k, "k")
    check_int(probes, "probes", at_least=3)
    g = measurement_generator(generator)
    rows, ops = [], blocks(model, loss_fn, data, params=params, exclude=exclude, **kwargs)
    largest = max(H.n for H in ops.values())
    if k > largest:
        raise ValueError(f"k={k} exceeds the size of the largest block ({largest} parameters)")
    for name, H in ops.items():
        eig = lanczos(H, k=min(k, H.n), which=which, tol=tol, generator=g)
        if H.n <= probes:
            diag = torch.diagonal(H.to_dense())
            tr = Estimate(diag.sum(), torch.zeros((), dtype=H.dtype, device=H.device), H.n)
        else:
            tr = trace(H, probes=probes, method="hutch++", generator=g)
        rows.append(BlockSpectrum(name, H.names, H.n, eig.values, tr, eig.n_matvecs + tr.n_matvecs))
    return SpectraTable(rows)
