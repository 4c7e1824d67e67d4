"""Backend vector ops on a ResNet-like list of parameters vs the per-tensor Python loop that
hand-written code uses (fp32, one thread).

Run from the repository root: ``overparam bench backend``.
"""

from __future__ import annotations

import argparse
import platform

import torch
from _rows import Rows
from _timing import median_time, table

from overparam.backend import vec


def resnet_like_params(dtype=torch.float32):
    g = torch.Generator().manual_seed(0)
    shapes = []
    for c in (64, 128, 256, 512):
        for _ in range(4):
            shapes += [(c, c, 3, 3), (c,), (c,)]  # conv weight, BN weight, BN bias
    shapes += [(1000, 512), (1000,)]
    return tuple(torch.randn(s, generator=g, dtype=dtype) for s in shapes)


def many_small_params(dtype=torch.float32):
    """A transformer-like list: 24 blocks x (4 projections 256x256, 2 norms, 4 biases) = 240 tensors."""
    g = torch.Generator().manual_seed(1)
    shapes = []
    for _ in range(24):
        shapes += [(256, 256)] * 4 + [(256,)] * 6
    return tuple(torch.randn(s, generator=g, dtype=dtype) for s in shapes)


def bench(x) -> list[tuple[str, float, float]]:
    y = tuple(t.clone() for t in x)
    return [
        ("dot", median_time(lambda: vec.dot(x, y), inner=20),
         median_time(lambda: sum((a * b).sum() for a, b in zip(x, y)), inner=20)),
        ("norm", median_time(lambda: vec.norm(x), inner=20),
         median_time(lambda: sum((a * a).sum() for a in x).sqrt(), inner=20)),
        ("axpy_ (y += 0.1 x)", median_time(lambda: vec.axpy_(0.1, x, y), inner=20),
         median_time(lambda: [b.add_(a, alpha=0.1) for a, b in zip(x, y)], inner=20)),
        ("flatten", median_time(lambda: vec.flatten(x), inner=20),
         median_time(lambda: torch.cat([a.flatten() for a in x]), inner=20)),
    ]


def main() -> None:
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args()
    torch.set_num_threads(1)
    rows = Rows()
    for x in (resnet_like_params(), many_small_params()):
        print(f"\n{len(x)} tensors, {vec.numel(x) / 1e6:.1f}M parameters, fp32, 1 thread, torch {torch.__version__}, "
              f"{platform.machine()}")
        measured = bench(x)
        print(table(measured, ours="overparam.backend.vec", anchor="per-tensor loop"))
        for case, ours, theirs in measured:
            rows.add("backend", f"vec {case}, {len(x)} tensors ({vec.numel(x) / 1e6:.1f}M parameters), fp32, 1 thread",
                     "the per-tensor Python loop", ours=ours, theirs=theirs)
    rows.write()


if __name__ == "__main__":
    main()
