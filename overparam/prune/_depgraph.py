"""The channel dependency graph of a traced model (private to :mod:`overparam.prune.removal`).

Every Linear/Conv output starts a *space* of channels. Each tensor of the ``torch.fx`` graph
carries a :class:`Layout` — which of its dims index which space — propagated node by node
through channel-wise ops (activations, BatchNorm, pooling, dropout), reshapes, transposes
(heads) and indexing of other dims (:mod:`overparam.prune._layouts`), elementwise ops between
two tensors (which *join* their spaces: a residual add, a gate, ``q·kᵀ``), and ``att @ v``. A space reaching something that mixes its channels (a
LayerNorm, a softmax over channels, an op this file does not know, the model's output) is
*fixed*, with the reason, so a removal there is refused naming it.
"""

from __future__ import annotations

import math
import operator
from dataclasses import dataclass, field

import torch
from torch import Tensor, fx, nn

from ._convt import CONV, TRANSPOSED, depthwise, in_dim
from ._layouts import Layout, indexed, reduced, reshaped

NORM = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
POOL = tuple(getattr(nn, f"{k}{d}d") for k in ("MaxPool", "AvgPool", "AdaptiveAvgPool", "AdaptiveMaxPool") for d in (1, 2, 3))
UNARY_MODULES = (nn.ReLU, nn.ReLU6, nn.GELU, nn.SiLU, nn.Sigmoid, nn.Tanh, nn.LeakyReLU, nn.ELU, nn.Hardswish,
                 nn.Hardsigmoid, nn.Mish, nn.Softplus, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d,
                 nn.Identity) + POOL
UNARY = {"relu", "relu6", "gelu", "silu", "sigmoid", "tanh", "leaky_relu", "elu", "hardswish", "mish", "softplus",
         "dropout", "exp", "abs", "neg", "sqrt", "rsqrt", "square", "contiguous", "clone", "float", "double", "half",
         "to", "type_as", "max_pool1d", "max_pool2d", "max_pool3d", "avg_pool1d", "avg_pool2d", "avg_pool3d",
         "adaptive_avg_pool1d", "adaptive_avg_pool2d", "adaptive_avg_pool3d", "adaptive_max_pool2d"}
BINARY = {"add", "sub", "mul", "truediv", "div", "iadd", "isub", "imul", "itruediv", "rsub", "masked_fill"}
RESHAPE = {"view", "reshape", "flatten", "squeeze", "unsqueeze"}
PERMUTE = {"transpose", "permute", "t"}


@dataclass
class Space:
    size: int
    fixed: str | None = None                  # why its channels cannot be removed
    producers: list[tuple[str, nn.Module, int]] = field(default_factory=list)   # (name, Linear/Conv, first row)


@dataclass
class Use:
    """Parameter ``module.attr`` indexed along ``dim`` by a space (``repeat`` entries per channel)."""
    module: str
    attr: str
    dim: int
    space: int
    repeat: int = 1


def _name(target) -> str:
    return target if isinstance(target, str) else getattr(target, "__name__", str(target))


class DepGraph:
    """Spaces, layouts and parameter uses of ``gm`` given every node's recorded output ``values``."""

    def __init__(self, gm: fx.GraphModule, values: dict[fx.Node, object]) -> None:
        self.gm, self.values = gm, values
        self.parent: list[int] = []
        self.spaces: list[Space] = []
        self.layout: dict[fx.Node, Layout | None] = {}
        self.uses: list[Use] = []
        self.consumers: list[tuple[fx.Node, nn.Module, Layout]] = []     # Linear/Conv reading a space
        self.mha: list[tuple[fx.Node, str]] = []
        self.parts: dict[int, list[tuple[int, int]]] = {}                # a split space → [(part, offset)]
        self.split: dict[fx.Node, list[Layout]] = {}                     # a split node → its parts' layouts
        mods = dict(gm.named_modules())
        for node in gm.graph.nodes:
            self.layout[node] = self._visit(node, mods)

    # ------------------------------------------------------------------ spaces
    def find(self, s: int) -> int:
        while self.parent[s] != s:
            self.parent[s] = self.parent[self.parent[s]]
            s = self.parent[s]
        return s

    def _new(self, size: int) -> int:
        self.parent.append(len(self.spaces))
        self.spaces.append(Space(size))
        return len(self.spaces) - 1

    def _union(self, a: int, b: int, why: str) -> None:
        a, b = self.find(a), self.find(b)
        if a == b:
            return
        if self.spaces[a].size != self.spaces[b].size:
            self.fix(a, why)
            self.fix(b, why)
            return
        self.parent[b] = a
        sa, sb = self.spaces[a], self.spaces[b]
        sa.producers += sb.producers
        sa.fixed = sa.fixed or sb.fixed

    def fix(self, s: int, why: str) -> None:
        sp = self.spaces[self.find(s)]
        sp.fixed = sp.fixed or why

    # ------------------------------------------------------------------ helpers
    def _shape(self, node) -> tuple[int, ...] | None:
        v = self.values.get(node) if isinstance(node, fx.Node) else None
        return tuple(v.shape) if isinstance(v, Tensor) else None

    def _block_inputs(self, node: fx.Node, why: str) -> None:
        for a in node.all_input_nodes:
            if self.layout.get(a) is not None:
                self.fix(self.layout[a].space, why)

    def _fresh(self, node: fx.Node, dim: int, producer: tuple[str, nn.Module, int] | None) -> Layout:
        shape = self._shape(node)
        s = self._new(shape[dim])
        if producer is not None:
            self.spaces[s].producers.append(producer)
        return Layout(s, (dim % len(shape),))

    # ------------------------------------------------------------------ the visit
    def _visit(self, node: fx.Node, mods: dict[str, nn.Module]) -> Layout | None:
        if node.op in ("placeholder", "get_attr"):
            return None
        if node.op == "output":
            self._block_inputs(node, "it reaches the model's output")
            return None
        if not isinstance(self.values.get(node), Tensor) and not (node.op == "call_module"
                                                                   and isinstance(mods[node.target], nn.MultiheadAttention)):
            if _name(node.target) in ("split", "chunk"):
                return self._split(node)
            if node.op == "call_function" and node.target is operator.getitem and isinstance(node.args[0], fx.Node):
                return self._getitem(node, mods)
            if node.op == "call_method" and node.target == "size" or node.op == "call_function" and node.target is getattr:
                return None          # shapes are read at run time
            self._block_inputs(node, f"it reaches {node.op} {_name(node.target)!r} (node {node.name})")
            return None
        x = node.args[0] if node.args else None
        lx = self.layout.get(x) if isinstance(x, fx.Node) else None
        if node.op == "call_module":
            return self._module(node, mods[node.target], lx)
        name = _name(node.target).lstrip("_")
        if name in UNARY:
            return self._same(node, x, lx)
        if name in BINARY:
            return self._binary(node)
        if name in RESHAPE:
            return self._reshape(node, x, lx)
        if name in PERMUTE:
            return self._permute(node, x, lx)
        if name == "getitem":
            return self.split[x][node.args[1]] if x in self.split else self._index(node, x, lx)
        if name in ("softmax", "log_softmax"):
            d = node.kwargs.get("dim", node.args[1] if len(node.args) > 1 else None)
            if lx is not None and (d is None or d % len(self._shape(x)) in lx.dims):
                self.fix(lx.space, f"a softmax over its channels (node {node.name})")
            return lx
        if name in ("mean", "sum", "amax"):
            return self._reduce(node, x, lx)
        if name in ("matmul", "bmm"):
            return self._matmul(node, node.args[0], node.args[1])
        if name == "scaled_dot_product_attention":
            q, k, v = node.args[:3]
            if any(not isinstance(a, fx.Node) for a in (q, k, v)):
                self._block_inputs(node, f"unsupported call of scaled_dot_product_attention (node {node.name})")
                return None
            qk = self._contract(node, q, k)
            return self._join(node, qk, self._lay(v, self._shape(v), len(self._shape(node))))
        self._block_inputs(node, f"unsupported op {name!r} (node {node.name})")
        return None

    def _module(self, node: fx.Node, mod: nn.Module, lx: Layout | None) -> Layout | None:
        nd = len(self._shape(node.args[0]) or ())
        if isinstance(mod, nn.Linear):
            if lx is not None:
                if lx.dims != (nd - 1,) or lx.block != 1:
                    self.fix(lx.space, f"Linear {node.target!r} reads it across several dims")
                else:
                    self.uses.append(Use(node.target, "weight", 1, lx.space, lx.repeat))
                    self.consumers.append((node, mod, lx))
            lay = self._fresh(node, -1, (node.target, mod, 0))
            self.uses += [Use(node.target, a, 0, lay.space) for a in ("weight", "bias")]
            return lay
        if isinstance(mod, CONV + TRANSPOSED):      # weights (out, in, k...), transposed (in, out, k...)
            if not depthwise(mod):                                         # dense or grouped (regrouped)
                if lx is not None:
                    if lx.dims != (1,) or lx.block != 1 or lx.repeat != 1:
                        self.fix(lx.space, f"Conv {node.target!r} reads it across several dims")
                    else:
                        self.uses.append(Use(node.target, "weight", in_dim(mod), lx.space))
                        self.consumers.append((node, mod, lx))
                lay = self._fresh(node, 1, (node.target, mod, 0))
            elif lx is not None and lx.dims == (1,):
                lay = lx                                                   # depthwise: channel by channel
            else:
                self._block_inputs(node, f"depthwise Conv {node.target!r} reads it across several dims")
                return None
            self.uses += [Use(node.target, a, 1 - in_dim(mod) if a == "weight" else 0, lay.space) for a in ("weight", "bias")]
            return lay
        if isinstance(mod, NORM):
            if lx is not None:
                self.uses += [Use(node.target, a, 0, lx.space) for a in ("weight", "bias", "running_mean", "running_var")]
            return lx
        if isinstance(mod, nn.LayerNorm):
            if lx is not None and any(d >= nd - len(mod.normalized_shape) for d in lx.dims):
                self.fix(lx.space, f"LayerNorm {node.target!r} normalizes over it")
            return lx
        if isinstance(mod, UNARY_MODULES):
            return self._same(node, node.args[0], lx)
        if isinstance(mod, nn.Flatten):
            return self._reshape(node, node.args[0], lx)
        if isinstance(mod, nn.Softmax):
            if lx is not None and (mod.dim is None or mod.dim % nd in lx.dims):
                self.fix(lx.space, f"Softmax {node.target!r} over its channels")
            return lx
        if isinstance(mod, nn.MultiheadAttention):
            self._block_inputs(node, f"it is an input of MultiheadAttention {node.target!r}")
            self.mha.append((node, node.target))
            return None
        self._block_inputs(node, f"it is an input of {type(mod).__name__} {node.target!r}, which is not supported")
        return None

    def _getitem(self, node: fx.Node, mods) -> Layout | None:
        src = node.args[0]
        if src in self.split:
            return self.split[src][node.args[1]]
        if src.op == "call_module" and isinstance(mods.get(src.target), nn.MultiheadAttention) and node.args[1] == 0:
            lay = self._fresh(node, -1, None)
            self.fix(lay.space, f"it is the output of MultiheadAttention {src.target!r}")
            return lay
        if self.layout.get(src) is not None:
            self.fix(self.layout[src].space, f"it is indexed (node {node.name})")
        return None

    def _split(self, node: fx.Node) -> None:
        """A fused output (``qkv(x).split(d, dim=-1)``): each part becomes a space of its own, produced by its rows."""
        x = node.args[0]
        lx = self.layout.get(x) if isinstance(x, fx.Node) else None
        if lx is None:
            return None
        nd = len(self._shape(x))
        dim = node.kwargs.get("dim", node.args[2] if len(node.args) > 2 else 0) % nd
        root = self.find(lx.space)
        sp = self.spaces[root]
        if lx.dims != (dim,) or lx.block != 1 or lx.repeat != 1 or len(x.users) != 1 or len(sp.producers) != 1 or (
                root in self.parts):
            self.fix(root, f"{_name(node.target)!r} splits it (node {node.name}), not the output of one layer read once")
            return None
        name, mod, first = sp.producers[0]
        outs, start = [], 0
        for t in self.values[node]:
            c = self._new(t.shape[dim])
            self.spaces[c].producers.append((name, mod, first + start))
            self.parts.setdefault(root, []).append((c, start))
            outs.append(Layout(c, lx.dims))
            start += t.shape[dim]
        self.split[node] = outs
        return None

    def _same(self, node: fx.Node, x, lx: Layout | None) -> Layout | None:
        if lx is not None and self._shape(node) is not None and self._shape(x) is not None:
            sx, so = self._shape(x), self._shape(node)
            if len(sx) != len(so) or any(sx[d] != so[d] for d in lx.dims):
                self.fix(lx.space, f"{_name(node.target)!r} changes its dims (node {node.name})")
                return None
        return lx

    def _lay(self, arg, shape, out_nd: int) -> Layout | None:
        """The layout of operand ``arg`` right-aligned to ``out_nd`` dims (broadcasting)."""
        lay = self.layout.get(arg) if isinstance(arg, fx.Node) else None
        if lay is None or shape is None:
            return None
        off = out_nd - len(shape)
        return Layout(lay.space, tuple(d + off for d in lay.dims), lay.block, lay.repeat)

    def _binary(self, node: fx.Node) -> Layout | None:
        out = self._shape(node)
        ops = [a for a in list(node.args) + list(node.kwargs.values()) if isinstance(a, fx.Node)]
        lays = [self._lay(a, self._shape(a), len(out)) for a in ops]
        result = None
        for a, lay in zip(ops, lays):
            sh = self._shape(a)
            if lay is None:
                if sh is None:
                    continue
                for other in lays:   # a plain tensor added to tracked channels: fine only if it broadcasts over them
                    if other is not None:
                        off = len(out) - len(sh)
                        if any(d - off >= 0 and sh[d - off] != 1 for d in other.dims):
                            self.fix(other.space, f"it is combined with the untracked tensor {a.name!r} (node {node.name})")
                continue
            result = lay if result is None else self._join(node, result, lay)
        return result

    def _join(self, node: fx.Node, a: Layout | None, b: Layout | None) -> Layout | None:
        """Two layouts of one output: their spaces become one; returns the finer layout."""
        if a is None or b is None:
            return a or b
        fine, coarse = (a, b) if len(a.dims) >= len(b.dims) else (b, a)
        shape = self._shape(node)
        extra = math.prod(shape[d] for d in fine.dims[len(coarse.dims):])
        if (fine.dims[:len(coarse.dims)] != coarse.dims or coarse.block != extra * fine.block
                or coarse.repeat != fine.repeat):
            self.fix(a.space, f"incompatible channel layouts meet at node {node.name}")
            self.fix(b.space, f"incompatible channel layouts meet at node {node.name}")
            return None
        self._union(a.space, b.space, f"spaces of different sizes meet at node {node.name}")
        return fine

    def _reshape(self, node: fx.Node, x, lx: Layout | None) -> Layout | None:
        out = None if lx is None else reshaped(lx, self._shape(x), self._shape(node))
        if lx is not None and out is None:
            self.fix(lx.space, f"unsupported reshape (node {node.name})")
        return out

    def _permute(self, node: fx.Node, x, lx: Layout | None) -> Layout | None:
        if lx is None:
            return None
        nd, name = len(self._shape(x)), _name(node.target)
        if name == "permute":
            perm = [a % nd for a in (node.args[1] if isinstance(node.args[1], (list, tuple)) else node.args[1:])]
        else:
            d0, d1 = (node.args[1] % nd, node.args[2] % nd) if name == "transpose" else (0, 1)
            perm = list(range(nd))
            perm[d0], perm[d1] = perm[d1], perm[d0]
        return Layout(lx.space, tuple(perm.index(d) for d in lx.dims), lx.block, lx.repeat)

    def _reduce(self, node: fx.Node, x, lx: Layout | None) -> Layout | None:
        dim = node.kwargs.get("dim", node.args[1] if len(node.args) > 1 else None)
        keepdim = node.kwargs.get("keepdim", node.args[2] if len(node.args) > 2 else False)
        out = None if lx is None else reduced(lx, len(self._shape(x)), dim, keepdim)
        if lx is not None and out is None:
            self.fix(lx.space, f"{_name(node.target)!r} reduces over it (node {node.name})")
        return out

    def _index(self, node: fx.Node, x, lx: Layout | None) -> Layout | None:
        out = None if lx is None else indexed(lx, len(self._shape(x)), node.args[1])
        if lx is not None and out is None:
            self.fix(lx.space, f"it is indexed (node {node.name})")
        return out

    def _contract(self, node: fx.Node, a, b) -> Layout | None:
        """``a @ bᵀ`` over the last dims of both (q·kᵀ inside an attention)."""
        sa, sb, out = self._shape(a), self._shape(b), len(self._shape(node))
        la, lb = self._lay(a, sa, out), self._lay(b, sb, out)
        if la is None or lb is None or la.dims[-1] != out - 1 or lb.dims[-1] != out - 1:
            for lay in (la, lb):
                if lay is not None:
                    self.fix(lay.space, f"a product over its channels (node {node.name})")
            return None
        self._union(la.space, lb.space, f"spaces of different sizes meet at node {node.name}")
        size = sa[-1] * la.block
        if la.repeat != 1 or len(la.dims) < 2:
            self.fix(la.space, f"a product over its channels (node {node.name})")
            return None
        return Layout(la.space, la.dims[:-1], size, 1)

    def _matmul(self, node: fx.Node, a, b) -> Layout | None:
        sa, sb = self._shape(a), self._shape(b)
        out = len(self._shape(node))
        la, lb = self._lay(a, sa, out), self._lay(b, sb, out)
        if la is not None and out - 1 in la.dims:               # a's contracted dim is a channel dim
            if lb is None or out - 2 not in lb.dims:
                self.fix(la.space, f"a product over its channels (node {node.name})")
                return None
            bt = Layout(lb.space, tuple(out - 1 if d == out - 2 else (out - 2 if d == out - 1 else d) for d in lb.dims),
                        lb.block, lb.repeat)
            if la.dims[-1] != out - 1 or bt.dims[-1] != out - 1 or la.repeat != 1 or len(la.dims) < 2:
                self.fix(la.space, f"a product over its channels (node {node.name})")
                return None
            self._union(la.space, bt.space, f"spaces of different sizes meet at node {node.name}")
            return Layout(la.space, la.dims[:-1], sa[-1] * la.block, 1)
        if lb is not None and out - 2 in lb.dims:
            self.fix(lb.space, f"a product over its channels (node {node.name})")
            return None
        return self._join(node, la, lb)


def trace(net: nn.Module, inputs: tuple) -> DepGraph:
    """The dependency graph of ``net`` (traced, then run once in eval mode on ``inputs``; ``net``
    is left in eval mode: the caller owns it and restores its flags)."""
    if not isinstance(inputs, tuple) or not inputs:
        raise TypeError(f"example_inputs must be a non-empty tuple of the model's inputs, got {type(inputs).__name__}")
    try:
        gm = fx.symbolic_trace(net)
    except Exception as e:   # torch.fx raises many kinds (TraceError, TypeError on proxies, ...)
        raise ValueError(f"model cannot be traced by torch.fx ({type(e).__name__}: {e}); structural removal "
                         "needs a traceable forward") from e
    gm.eval()
    out: dict[fx.Node, object] = {}

    class _Rec(fx.Interpreter):
        def run_node(self, n):
            out[n] = r = super().run_node(n)
            return r

    with torch.no_grad():
        _Rec(gm).run(*inputs)
    return DepGraph(gm, out)
