"""Top Hessian eigenvalues and the trace of a DDP model, each rank on half the data; then the
same eigenvalues of an FSDP2 (``fully_shard``) copy of the model.

Launch (CPU, gloo):
    torchrun --nproc-per-node 2 examples/distributed_hessian.py

Every rank builds the Hessian on its own shard (a DistributedSampler DataLoader); the
DistributedOperator all-reduces the sample-weighted products, so Lanczos and Hutch++ run
unchanged and print the same numbers on every rank as one process on all the data would.
"""

import torch
import torch.distributed as tdist
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

import overparam as op


def main() -> None:
    tdist.init_process_group("gloo")
    rank = tdist.get_rank()
    torch.manual_seed(0)  # the same model and data on every rank
    net = torch.nn.Sequential(torch.nn.Linear(8, 32), torch.nn.Tanh(), torch.nn.Linear(32, 1)).double()
    x, y = torch.randn(256, 8, dtype=torch.float64), torch.randn(256, 1, dtype=torch.float64)
    ddp = torch.nn.parallel.DistributedDataParallel(net)
    loader = DataLoader(TensorDataset(x, y), batch_size=32, sampler=DistributedSampler(TensorDataset(x, y), shuffle=False))
    H = op.hessian.distributed_hessian(ddp, torch.nn.functional.mse_loss, loader)
    seed = op.backend.dist.broadcast_seed()  # one probe seed for every rank
    eig = op.hessian.lanczos(H, k=5, which="LA", generator=seed)
    tr = op.hessian.hutchpp(H, 60, generator=seed)
    print(f"rank {rank}: share {H.weight:.3f}, top-5 {[round(v, 6) for v in eig.values.tolist()]}, "
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
    tdist.destroy_process_group()


if __name__ == "__main__":
    main()
