import sys

import pytest
import torch
from torch import nn

import overparam.hessian as oh
from overparam.backend.dispatch import implementations
from overparam.backend.random import construction_generator, gaussian
from overparam.testing import assert_no_side_effects, dense_hessian, max_rel_error, tanh_mlp
from overparam.testing.hessian_oracles import dense_ggn, small_cnn

F = nn.functional


@pytest.mark.parametrize("loss", ["mse", "cross_entropy"])
def test_ggn_matches_dense_jacobian_oracle(loss):
    g = construction_generator(0)
    net = tanh_mlp([4, 6, 3], generator=1)
    x = gaussian((10, 4), generator=g, dtype=torch.float64)
    y = gaussian((10, 3), generator=g, dtype=torch.float64) if loss == "mse" else torch.randint(0, 3, (10,), generator=g)
    Gd = dense_ggn(net, loss, (x, y))
    with assert_no_side_effects(net):
        G = oh.ggn(net, loss, (x, y))
        dense = G.to_dense()
    assert max_rel_error(dense, Gd) < 1e-12
    assert float(torch.linalg.eigvalsh(dense).min()) > -1e-12 * float(dense.abs().max())  # PSD


def test_ggn_loader_and_cnn():
    g = construction_generator(2)
    net = small_cnn(generator=3)
    x = gaussian((9, 1, 8, 8), generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (9,), generator=g)
    G = oh.ggn(net, F.cross_entropy, [(x[:5], y[:5]), (x[5:], y[5:])])
    assert max_rel_error(G.to_dense(), dense_ggn(net, "cross_entropy", (x, y))) < 1e-12


def test_ggn_equals_hessian_for_linear_model_mse():
    g = construction_generator(4)
    lin = tanh_mlp([5, 2], generator=5)  # a single Linear layer: outputs linear in θ
    x, y = gaussian((12, 5), generator=g, dtype=torch.float64), gaussian((12, 2), generator=g, dtype=torch.float64)
    G = oh.ggn(lin, nn.MSELoss(), (x, y)).to_dense()
    assert max_rel_error(G, dense_hessian(lin, F.mse_loss, (x, y))) < 1e-12


@pytest.mark.parametrize("bad", ["l1", F.l1_loss, nn.MSELoss(reduction="none"), nn.CrossEntropyLoss(label_smoothing=0.1),
                                 nn.CrossEntropyLoss(weight=torch.ones(2)), lambda o, t: F.mse_loss(o, t), 3])
def test_ggn_refuses_losses_without_a_closed_form_output_hessian(bad):
    lin = tanh_mlp([2, 1], generator=0)
    with pytest.raises(ValueError, match="loss_fn"):
        oh.ggn(lin, bad, (torch.zeros(2, 2, dtype=torch.float64), torch.zeros(2, 1, dtype=torch.float64)))


def test_ggn_loss_fn_spellings_agree_and_params_select():
    g = construction_generator(8)
    net = tanh_mlp([4, 5, 3], generator=9)
    x, y = gaussian((7, 4), generator=g, dtype=torch.float64), torch.randint(0, 3, (7,), generator=g)
    dense = {str(f): oh.ggn(net, f, (x, y)).to_dense() for f in ("cross_entropy", F.cross_entropy, nn.CrossEntropyLoss())}
    full = dense["cross_entropy"]
    assert max_rel_error(full, dense_ggn(net, "cross_entropy", (x, y))) < 1e-12
    assert all(torch.equal(d, full) for d in dense.values())
    last = oh.ggn(net, "cross_entropy", (x, y), params="2")  # the last layer: 5*3 + 3 trailing coordinates
    assert last.names == ["2.weight", "2.bias"]
    torch.testing.assert_close(last.to_dense(), full[-18:, -18:], rtol=1e-12, atol=1e-14)
    no_bias = oh.ggn(net, "cross_entropy", (x, y), exclude="bias")
    assert no_bias.names == ["0.weight", "2.weight"]
    with pytest.raises(ValueError, match="params: 'nope'"):
        oh.ggn(net, "cross_entropy", (x, y), params="nope")


def test_ggn_mse_on_ragged_loader_is_per_sample_mean():
    g = construction_generator(6)
    net = tanh_mlp([4, 5, 3], generator=7)
    x, y = gaussian((11, 4), generator=g, dtype=torch.float64), gaussian((11, 3), generator=g, dtype=torch.float64)
    loader = [(x[:4], y[:4]), (x[4:8], y[4:8]), (x[8:], y[8:])]  # sizes 4, 4, 3
    G = oh.ggn(net, F.mse_loss, loader)
    assert max_rel_error(G.to_dense(), dense_ggn(net, "mse", (x, y))) < 1e-12


# -- sequence outputs (B, T, V), ignore_index, reductions (issue 14) ---------------------------------------------------
from _sequences import V, dense_jacobian, dense_token_ggn, seq_case  # noqa: E402


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_sequence_ggn_equals_dense_token_oracle_with_ignored_targets(reduction):
    net, ids, y = seq_case(0)
    G = oh.ggn(net, nn.CrossEntropyLoss(reduction=reduction), (ids, y)).to_dense()
    assert max_rel_error(G, dense_token_ggn(net, ids, y, reduction=reduction)) < 1e-12


def test_sequence_ggn_equals_flattened_computation_with_ignored_rows_removed():
    net, ids, y = seq_case(1)
    keep = y.reshape(-1) != -100
    flat = oh.ggn(net, "cross_entropy", (ids, y[y != -100]), output=lambda o: o.reshape(-1, V)[keep]).to_dense()
    seq = oh.ggn(net, "cross_entropy", (ids, y)).to_dense()
    assert max_rel_error(seq, flat) < 1e-13
    # the ×T bug: a flattened (B·T, V) output is averaged over its B·T rows, not over the B sequences
    all_flat = oh.ggn(net, "cross_entropy", (ids, y.reshape(-1)), output=lambda o: o.reshape(-1, V)).to_dense()
    assert max_rel_error(all_flat, seq) < 1e-13


def test_sequence_ggn_token_mean_over_a_ragged_loader():
    net, ids, y = seq_case(2, batch=5, ignored=((0, 0), (0, 1), (3, 2)))
    loader = [(ids[:1], y[:1]), (ids[1:], y[1:])]  # 2 and 19 kept targets: per-batch means would weigh them 1:1
    G = oh.ggn(net, "cross_entropy", loader).to_dense()
    assert max_rel_error(G, dense_token_ggn(net, ids, y)) < 1e-12


def test_ignore_index_from_the_module_or_the_keyword():
    net, ids, y = seq_case(3)
    y0 = torch.where(y == -100, torch.zeros_like(y), y)  # class 0 ignored instead
    a = oh.ggn(net, nn.CrossEntropyLoss(ignore_index=0), (ids, y0)).to_dense()
    b = oh.ggn(net, "cross_entropy", (ids, y0), ignore_index=0).to_dense()
    want = dense_token_ggn(net, ids, torch.where(y0 == 0, torch.full_like(y0, -100), y0))
    assert max_rel_error(a, want) < 1e-12 and torch.equal(a, b)
    with pytest.raises(ValueError, match="ignore_index=1 contradicts"):
        oh.ggn(net, nn.CrossEntropyLoss(ignore_index=0), (ids, y0), ignore_index=1)
    with pytest.raises(ValueError, match="ignore_index applies to cross_entropy"):
        oh.ggn(net, "mse", (ids, y0), ignore_index=0)
    with pytest.raises(ValueError, match="every target equals ignore_index"):
        oh.ggn(net, "cross_entropy", (ids, torch.full_like(y, -100)))


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_sequence_ggn_mse_is_over_all_output_entries(reduction):
    net, ids, y = seq_case(4, mse=True)
    _, J = dense_jacobian(net, ids)
    G = oh.ggn(net, "mse", (ids, y), reduction=reduction).to_dense()
    assert max_rel_error(G, 2 * J.mT @ J / (y.numel() if reduction == "mean" else 1)) < 1e-12


def test_sequence_ggn_refuses_mismatched_targets():
    net, ids, y = seq_case(5)
    with pytest.raises(ValueError, match="integer targets shaped like their leading dimensions"):
        oh.ggn(net, "cross_entropy", (ids, y.reshape(-1)))
    with pytest.raises(ValueError, match="mse needs targets shaped like the outputs"):
        oh.ggn(net, "mse", (ids, y.double()))
    with pytest.raises(ValueError, match="contradicts"):
        oh.ggn(net, nn.CrossEntropyLoss(reduction="sum"), (ids, y), reduction="mean")


@pytest.mark.parametrize("op", [oh.ggn, oh.empirical_fisher])
@pytest.mark.parametrize("loss", ["mse", "cross_entropy"])
def test_products_never_write_into_the_callers_vector(op, loss):
    """The output-space product works in place on autograd's ``Jv``; where a model passes ``v``
    straight through (outputs = a parameter, or a broadcast bias) it must not write into ``v``."""

    class Through(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.randn(4, 3, dtype=torch.float64))
            self.b = nn.Parameter(torch.randn(3, dtype=torch.float64))

        def forward(self, x):
            return self.w.view(4, 3) + 0 * x + self.b

    net = Through()
    x = torch.zeros(4, 3, dtype=torch.float64)
    y = torch.randn(4, 3, dtype=torch.float64) if loss == "mse" else torch.tensor([0, 1, 2, 1])
    A = op(net, loss, (x, y))
    for params in (None, "b"):
        B = op(net, loss, (x, y), params=params) if params else A
        v = tuple(torch.randn(s, dtype=torch.float64) for s in B.like)
        kept = tuple(t.clone() for t in v)
        B @ v
        assert all(torch.equal(a, b) for a, b in zip(v, kept))
    assert max_rel_error(A.to_dense()[-3:, -3:], op(net, loss, (x, y), params="b").to_dense()) < 1e-14


# -- the cross-entropy output product through backend.softmax_ce (issue 14 / 17 part 3) -----------------------------
def test_cross_entropy_product_goes_through_the_softmax_ce_routine_with_the_chosen_impl(monkeypatch):
    ggn_mod = sys.modules["overparam.hessian.ggn"]
    real, seen = ggn_mod.softmax_ce_hvp, []

    def spy(z, u, target=None, **kw):
        seen.append((kw["impl"], z.shape, kw["reduction"]))
        return real(z, u, target, **kw)

    monkeypatch.setattr(ggn_mod, "softmax_ce_hvp", spy)
    monkeypatch.setattr(ggn_mod, "row_chunks", lambda f: [slice(0, 3), slice(3, None)])  # two chunks of rows
    net, ids, y = seq_case(0)
    G = oh.ggn(net, "cross_entropy", (ids, y), impl="reference")
    Gd = G.to_dense()
    assert seen and {s[0] for s in seen} == {"reference"} and {s[2] for s in seen} == {"sum"}
    assert {s[1] for s in seen[:2]} == {torch.Size([3, V]), torch.Size([2 * 4 - 3, V])}
    assert max_rel_error(Gd, dense_token_ggn(net, ids, y)) < 1e-12
    seen.clear()
    oh.ggn(net, "cross_entropy", (ids, y)) @ tuple(torch.ones(s, dtype=torch.float64) for s in G.like)
    assert {s[0] for s in seen} == {None}  # the dispatch's own choice (OVERPARAM_IMPL, else auto)


def test_impl_is_checked():
    net, ids, y = seq_case(0)
    with pytest.raises(ValueError, match="one of 'auto', 'reference', 'compiled'"):
        oh.ggn(net, "cross_entropy", (ids, y), impl="fused")
    mse_net, mse_ids, mse_y = seq_case(0, mse=True)
    with pytest.raises(ValueError, match="impl applies to cross_entropy only"):
        oh.ggn(mse_net, "mse", (mse_ids, mse_y), impl="reference")
    triton = next(i for i in implementations("softmax_ce_hvp") if i.name == "triton")
    if not triton.available:
        with pytest.raises(RuntimeError, match="triton"):
            oh.ggn(net, "cross_entropy", (ids, y), impl="triton")


def test_the_kept_graph_holds_no_output_sized_buffer_for_the_double_vjp():
    """The graph of ``Jᵀu`` saves ``u``; ``u`` is one zero expanded to the logits' shape, so the
    tensors the construction saves (forward and ``Jᵀu`` graphs) stay below one logits buffer."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Embedding(7, 3), nn.Linear(3, 512)).double()
    ids, y = torch.randint(0, 7, (4, 16)), torch.randint(0, 512, (4, 16))
    saved = {}

    def pack(t):
        saved[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        G = oh.ggn(net, "cross_entropy", (ids, y), check=False)
    logits_bytes = 4 * 16 * 512 * 8
    assert 0 < sum(saved.values()) < logits_bytes / 2
    v = tuple(torch.randn(s, dtype=torch.float64) for s in G.like)  # the product itself: the oracles above
    assert sum(float((a * b).sum()) for a, b in zip(v, G @ v)) > 0  # (PSD, and J v ≠ 0 for a random v)
