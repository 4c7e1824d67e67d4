"""Top Hessian eigenvalues and the trace of a DDP model, each rank on its share of the data; then
the same eigenvalues of an FSDP2 (``fully_shard``) copy of the model.

Launch (CPU, gloo):
    torchrun --nproc-per-node 2 examples/distributed_hessian.py --out dist_hessian

Every rank builds the Hessian on its own shard (a DistributedSampler DataLoader); the
DistributedOperator all-reduces the sample-weighted products, so Lanczos and Hutch++ run
unchanged and print the same numbers on every rank as one process on all the data would —
rank 0 computes that single-process answer too and compares. Started without torchrun
(``python examples/distributed_hessian.py``) the script makes a one-process gloo group itself
and runs the same code. Rank 0 writes ``hessian.json`` and ``eigenvalues.png`` into ``--out``;
``--quick`` uses fewer samples and Hutch++ probes.
"""

import argparse
import json
import os
import socket
from pathlib import Path

import torch
import torch.distributed as tdist
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

import overparam as op


def single_process_group() -> None:
    """A one-process gloo group on a free local port (when not started by torchrun)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK="0", WORLD_SIZE="1")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=256, help="samples (split over the ranks)")
    ap.add_argument("--probes", type=int, default=60, help="Hutch++ matrix-vector products")
    ap.add_argument("--out", type=Path, default=Path("dist_hessian"))
    ap.add_argument("--quick", action="store_true", help="fewer samples and probes")
    args = ap.parse_args(argv)
    if args.quick:
        args.n, args.probes = 64, 30
    if "RANK" not in os.environ:
        single_process_group()
    tdist.init_process_group("gloo")
    rank, world = tdist.get_rank(), tdist.get_world_size()
    torch.manual_seed(0)  # the same model and data on every rank
    net = torch.nn.Sequential(torch.nn.Linear(8, 32), torch.nn.Tanh(), torch.nn.Linear(32, 1)).double()
    x, y = torch.randn(args.n, 8, dtype=torch.float64), torch.randn(args.n, 1, dtype=torch.float64)
    ddp = torch.nn.parallel.DistributedDataParallel(net)
    loader = DataLoader(TensorDataset(x, y), batch_size=32, sampler=DistributedSampler(TensorDataset(x, y), shuffle=False))
    H = op.hessian.distributed_hessian(ddp, torch.nn.functional.mse_loss, loader)
    seed = op.backend.dist.broadcast_seed()  # one probe seed for every rank
    eig = op.hessian.lanczos(H, k=5, which="LA", generator=seed)
    tr = op.hessian.hutchpp(H, args.probes, generator=seed)
    print(f"rank {rank}/{world}: share {H.weight:.3f}, top-5 {[round(v, 6) for v in eig.values.tolist()]}, "
          f"trace {float(tr.mean):.4f} ± {float(tr.stderr):.4f}")
    from torch.distributed.fsdp import fully_shard

    fs = torch.nn.Sequential(torch.nn.Linear(8, 32), torch.nn.Tanh(), torch.nn.Linear(32, 1)).double()
    fs.load_state_dict(net.state_dict())
    fully_shard(fs)  # DTensor parameters: the operator gathers them once into a plain copy
    eig_fsdp = op.hessian.lanczos(op.hessian.distributed_hessian(fs, torch.nn.functional.mse_loss, loader), k=5,
                                  which="LA", generator=seed)
    print(f"rank {rank}: FSDP2 top-5 {[round(v, 6) for v in eig_fsdp.values.tolist()]}")
    if rank == 0:  # the single-process answer on all the data, for comparison
        one = op.hessian.lanczos(op.hessian.hessian(net, torch.nn.functional.mse_loss, (x, y)), k=5, which="LA",
                                 generator=seed)
        print(f"one process: top-5 {[round(v, 6) for v in one.values.tolist()]}")
        gap = float((eig.values - one.values).abs().max() / one.values.abs().max())
        gap_fsdp = float((eig_fsdp.values - one.values).abs().max() / one.values.abs().max())
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "hessian.json").write_text(json.dumps({
            "world_size": world, "distributed_top5": eig.values.tolist(), "one_process_top5": one.values.tolist(),
            "fsdp_top5": eig_fsdp.values.tolist(), "relative_gap": gap, "relative_gap_fsdp": gap_fsdp, "trace": float(tr.mean), "trace_stderr": float(tr.stderr)}, indent=1))
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(4, 3))
        ax.plot(range(1, 6), eig.values.tolist(), "o", label=f"{world} rank(s), DistributedOperator")
        ax.plot(range(1, 6), eig_fsdp.values.tolist(), "+", ms=12, label="FSDP2 copy (fully_shard)")
        ax.plot(range(1, 6), one.values.tolist(), "x", ms=9, label="one process, all the data")
        ax.set(xlabel="index", ylabel="eigenvalue", title="top-5 Hessian eigenvalues")
        ax.legend(fontsize=8)
        fig.savefig(args.out / "eigenvalues.png", dpi=100, bbox_inches="tight")
        plt.close(fig)
        print(f"largest relative gap {gap:.1e} (FSDP2 {gap_fsdp:.1e}); wrote hessian.json and eigenvalues.png to {args.out}")
    tdist.destroy_process_group()


if __name__ == "__main__":
    torch.set_num_threads(1)
    main()
