"""prune.distributed in one process: the masks of prune.magnitude / prune.nm_masks (the 2-process
DDP and FSDP2 checks are in tests/distributed/test_dist_prune.py)."""

import pytest
import torch

from overparam import prune


def _net():
    net = torch.nn.Sequential(torch.nn.Linear(8, 6), torch.nn.ReLU(), torch.nn.Linear(6, 4))
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randint(-2, 3, p.shape, generator=g).float())  # ties at every threshold
    return net


@pytest.mark.parametrize("sparsity", [0.0, 0.3, 0.5, 0.9])
def test_global_magnitude_is_magnitude_in_one_process(sparsity):
    net = _net()
    got, want = prune.global_magnitude(net, sparsity), prune.magnitude(net, sparsity)
    assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want)
    pruned = sum(int((~m).sum()) for m in got.values())
    assert pruned == prune.n_pruned(sparsity, 48 + 24)  # exact count under ties


def test_distributed_nm_masks_is_nm_masks_in_one_process():
    net = _net()
    got, want = prune.distributed_nm_masks(net, 2, 4, targets="0"), prune.nm_masks(net, 2, 4, targets="0")
    assert got.keys() == want.keys() and torch.equal(got["0.weight"], want["0.weight"])
    with pytest.raises(ValueError, match="2.weight"):
        prune.distributed_nm_masks(net, 2, 4)  # 6 inputs: not divisible by 4
    with pytest.raises(ValueError, match="sparsity"):
        prune.global_magnitude(net, 1.0)
