"""2:4 hand-off: overparam's 2:4 masks and compressed format, then torch's semi-structured sparse kernels.

1. ``op.prune.nm_masks(model, 2, 4)`` picks, in every group of 4 consecutive inputs of each hidden
   ``Linear``, the 2 largest-magnitude weights (the read-out stays dense); the masks are applied.
2. ``op.backend.sparse24.nm_compress_24`` selects and compresses each weight in one call into
   ``values (out, in/2)`` and 4-bit-per-quad ``meta (out, in/16)`` int16 — the layout of NVIDIA's
   sparse metadata — and the example checks that its selection is the mask of step 1 and that
   ``decompress_24(values, meta)`` gives back the masked weight exactly (half the values memory).
3. On CUDA the masked weights go to ``op.prune.to_semi_structured`` (validation first, then
   ``torch.sparse.to_sparse_semi_structured``) in float16, and the semi-structured model's output
   is compared with the dense masked model's. On CPU, where those kernels do not exist, the same
   masks run through a *checked dense fallback*: each layer's weight is rebuilt from the compressed
   ``(values, meta)`` and the output compared with the masked model's; the script says which path ran.

Writes ``handoff.json`` (path taken, errors, bytes) and ``weights.png`` (a corner of one masked weight)
into ``--out``.

Run: ``python examples/sparse24_handoff.py --out handoff`` (seconds; uses CUDA when available,
``--device cpu`` to force the fallback), ``--quick`` for smaller layers.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

import overparam as op


def make(width: int, seed: int) -> torch.nn.Sequential:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(width, width), torch.nn.ReLU(), torch.nn.Linear(width, width),
                               torch.nn.ReLU(), torch.nn.Linear(width, 10))


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--width", type=int, default=1024, help="hidden width (a multiple of 64)")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path("sparse24_handoff"))
    ap.add_argument("--quick", action="store_true", help="small layers")
    args = ap.parse_args(argv)
    if args.quick:
        args.width, args.batch = 128, 64
    if args.width % 64:
        ap.error(f"--width must be a multiple of 64, got {args.width}")
    cuda = torch.cuda.is_available() if args.device == "auto" else args.device == "cuda"
    if cuda and not torch.cuda.is_available():
        ap.error("--device cuda: torch.cuda.is_available() is False")
    args.out.mkdir(parents=True, exist_ok=True)

    model = make(args.width, args.seed).eval()
    hidden = ["0", "2"]                                        # the read-out "4" stays dense
    masks = op.prune.nm_masks(model, 2, 4, targets=hidden)
    op.prune.apply_masks_(model, masks)
    x = torch.randn(args.batch, args.width, generator=torch.Generator().manual_seed(args.seed))
    report: dict = {"layers": {}}
    packed = {}
    for name in hidden:
        w = model.get_submodule(name).weight.detach()
        mask, values, meta = op.backend.sparse24.nm_compress_24(w)
        assert torch.equal(mask, masks[f"{name}.weight"]), "nm_compress_24 and nm_masks disagree"
        rebuilt = op.backend.sparse24.decompress_24(values, meta, w.shape[1])
        assert torch.equal(rebuilt, w), "decompress(compress(w)) != w"
        packed[name] = (values, meta)
        report["layers"][name] = {"shape": list(w.shape), "dense_bytes": w.numel() * w.element_size(),
                                  "values_bytes": values.numel() * values.element_size(),
                                  "meta_bytes": meta.numel() * meta.element_size()}
        print(f"layer {name}: {tuple(w.shape)} -> values {tuple(values.shape)} + meta {tuple(meta.shape)} int16; "
              f"mask == nm_masks, decompress(compress) exact")

    if cuda:
        report["path"] = "cuda: torch.sparse.to_sparse_semi_structured (float16)"
        dense = model.half().cuda()
        xs = x.half().cuda()
        with torch.no_grad():
            expected = dense(xs).float()
            sparse = make(args.width, args.seed).half().cuda().eval()
            sparse.load_state_dict(dense.state_dict())
            for name in hidden:
                layer = sparse.get_submodule(name)
                layer.weight = torch.nn.Parameter(op.prune.to_semi_structured(layer.weight.detach()),
                                                  requires_grad=False)
            got = sparse(xs).float()
    else:
        report["path"] = "cpu: checked dense fallback (weights rebuilt from the compressed values and meta)"
        with torch.no_grad():
            expected = model(x)
            fallback = make(args.width, args.seed).eval()
            fallback.load_state_dict(model.state_dict())
            for name in hidden:
                values, meta = packed[name]
                fallback.get_submodule(name).weight.copy_(
                    op.backend.sparse24.decompress_24(values, meta, args.width))
            got = fallback(x)
    err = float((got - expected).norm() / expected.norm())
    report["relative_output_error"] = err
    tol = 1e-2 if cuda else 1e-6
    report["within_tolerance"] = err <= tol
    print(f"path: {report['path']}\nrelative output error vs the dense masked model: {err:.2e} (tolerance {tol:g})")
    if not cuda:
        print("no CUDA device: the semi-structured kernels were not run; the same masks ran as dense weights")

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4, 3))
    ax.imshow(masks["0.weight"][:16, :32].float(), cmap="Greys", interpolation="nearest")
    ax.set(title="layer 0, rows 0-15 × cols 0-31: kept (2 of every 4)", xlabel="input", ylabel="output")
    fig.savefig(args.out / "weights.png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    (args.out / "handoff.json").write_text(json.dumps(report, indent=1))
    print(f"wrote handoff.json and weights.png to {args.out}")
    if not report["within_tolerance"]:
        raise SystemExit(f"the hand-off changed the outputs: relative error {err:.2e} > {tol:g}")
    return report


if __name__ == "__main__":
    torch.set_num_threads(1)
    main()
