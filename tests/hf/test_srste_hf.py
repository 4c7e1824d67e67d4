"""SR-STE on transformers' ``Conv1D`` (weight stored ``(in, out)``): the N:M groups run along the input
features (storage dim 0), as ``nm_masks`` does; gradient = the SR-STE rule with that mask (fp64)."""

import itertools

import torch

from overparam.prune import SRSTE, nm_masks
from _models import SEQ, gpt2


def _oracle(w, n, m):
    """Along dim 1 of ``w``: in each run of ``m`` the ``n`` entries of largest ``|w|`` (sorted by hand; the
    largest sum of ``n`` is made of the ``n`` largest; random weights have no ties)."""
    out = torch.zeros_like(w, dtype=torch.bool)
    for r, g0 in itertools.product(range(w.shape[0]), range(0, w.shape[1], m)):
        order = sorted(range(m), key=lambda i: (-float(w[r, g0 + i].abs()), i))
        out[r, [g0 + i for i in order[:n]]] = True
    return out


def test_srste_on_conv1d_groups_along_the_input_features():
    net = gpt2(n=16).double().eval()
    name = "transformer.h.0.mlp.c_fc.weight"                                     # (16 in, 64 out)
    sr = SRSTE(net, 2, 4, decay=0.3, targets="transformer.h.0.mlp.c_fc")
    w = net.get_parameter(name).detach().clone()
    want = _oracle(w.T, 2, 4).T                                                   # groups of 4 input features
    assert torch.equal(sr.masks()[name], want) and torch.equal(want, nm_masks(net, 2, 4, targets="transformer.h.0.mlp.c_fc")[name])
    ids = torch.randint(0, 64, (2, SEQ), generator=torch.Generator().manual_seed(0))
    sr(ids).logits.square().mean().backward()
    g = net.get_parameter(name).grad.clone()
    net.zero_grad()
    with torch.no_grad():
        net.get_parameter(name).mul_(want)                                        # the masked forward, plain autograd
    net(ids).logits.square().mean().backward()
    torch.testing.assert_close(g, net.get_parameter(name).grad + 0.3 * (~want) * w, rtol=1e-10, atol=1e-12)
