"""The fused EdgeConv op (edgeconv.py) equals the plain edge-tensor path: values, gradients
of the input and of every parameter, BN running statistics, eval outputs."""

import copy

import pytest
import torch
from torch import nn

import pointssl.backbones.edgeconv as ec
from pointssl.backbones import build_backbone
from pointssl.backbones.dgcnn import EdgeConv, knn_indices, smallest_k
from pointssl.structures import PointBatch


def close(a, b, tol=1e-5):
    return torch.allclose(a, b, rtol=tol, atol=tol * max(1.0, b.abs().max().item()))


def pair(c_in, c_out, momentum=0.1, seed=0):
    """A fused EdgeConv with BN scales of both signs (the max turns into a min where the
    scale is negative) and its plain twin with the same parameters."""
    torch.manual_seed(seed)
    fused = EdgeConv(c_in, c_out, impl="fused")
    with torch.no_grad():
        fused.bn.weight.copy_(torch.randn(c_out) + 0.1)
        fused.bn.weight[::2] = -fused.bn.weight[::2].abs()
        fused.bn.bias.copy_(torch.randn(c_out))
    fused.bn.momentum = momentum
    plain = copy.deepcopy(fused)
    plain.impl = "plain"
    return fused, plain


@pytest.mark.parametrize("c_in,c_out,momentum", [(3, 8, 0.1), (6, 16, None)])
def test_fused_edgeconv_equals_plain_in_train_and_eval(c_in, c_out, momentum):
    fused, plain = pair(c_in, c_out, momentum)
    x = torch.randn(2, 40, c_in)
    idx = knn_indices(x, 6)
    outs, grads = [], []
    for conv in (fused, plain):
        xi = x.clone().requires_grad_()
        out = conv.train()(xi, idx)
        out.backward(torch.cos(3 * out.detach()))  # a gradient that varies per element
        outs.append(out)
        grads.append([xi.grad] + [p.grad for p in conv.parameters()])
    assert close(outs[0], outs[1])
    for gf, gp in zip(*grads):  # input, W, BN gamma, BN beta
        assert close(gf, gp, 1e-4)
    for bf, bp in zip(fused.bn.buffers(), plain.bn.buffers()):  # running mean / var / count
        assert close(bf.float(), bp.float())
    assert fused.bn.num_batches_tracked.item() == 1
    with torch.no_grad():  # a second batch in no-grad train mode updates the stats the same
        y = torch.randn(2, 40, c_in)
        assert close(fused(y, knn_indices(y, 6)), plain(y, knn_indices(y, 6)))
    for bf, bp in zip(fused.bn.buffers(), plain.bn.buffers()):
        assert close(bf.float(), bp.float())
    with torch.no_grad():
        assert close(fused.eval()(x, idx), plain.eval()(x, idx))


def test_fused_statistics_are_exact_when_edges_nearly_cancel():
    """W2 ~ 0: e_ij ~ W1 (x_j - x_i) is small next to a and c, whose per-point sums then
    cancel; the variance still matches BN over the explicit edges."""
    fused, plain = pair(3, 8)
    with torch.no_grad():
        fused.w.weight[:, 3:] = 1e-3 * fused.w.weight[:, 3:]
        plain.w.weight.copy_(fused.w.weight)
    x = 10 + torch.randn(2, 60, 3)  # far from the origin: large a, c, small differences
    idx = knn_indices(x, 8)
    assert close(fused(x, idx), plain(x, idx), 1e-4)
    assert close(fused.bn.running_var, plain.bn.running_var, 1e-4)


def test_fused_dgcnn_equals_plain_dense_and_packed():
    """Whole backbone, train mode: global and point features, every parameter's gradient
    and every BN buffer, for a dense batch and a packed one of two sizes."""
    nets = {}
    for impl in ("fused", "plain"):
        torch.manual_seed(0)
        nets[impl] = build_backbone("dgcnn", k=5, channels=(8, 16), emb_dim=32, edge_impl=impl)
    g = torch.Generator().manual_seed(1)
    dense = torch.randn(2, 40, 3, generator=g)
    packed = PointBatch.from_list([torch.randn(n, 3, generator=g).numpy() for n in (30, 23)])
    for batch in (dense, packed):
        res = {}
        for impl, m in nets.items():
            m.zero_grad()
            out = m.train()(batch)
            (out.global_feat.square().sum() + out.point_feat.sin().sum()).backward()
            res[impl] = out
        assert close(res["fused"].global_feat, res["plain"].global_feat, 1e-4)
        assert close(res["fused"].point_feat, res["plain"].point_feat, 1e-4)
        for (name, pf), pp in zip(nets["fused"].named_parameters(), nets["plain"].parameters()):
            assert close(pf.grad, pp.grad, 1e-4), name
        for (name, bf), bp in zip(nets["fused"].named_buffers(), nets["plain"].buffers()):
            assert close(bf.float(), bp.float(), 1e-4), name
    with torch.no_grad():
        assert close(nets["fused"].eval()(dense).global_feat,
                     nets["plain"].eval()(dense).global_feat, 1e-4)


def test_neighbour_max_values_and_gradient_equal_gather_max():
    a = torch.randn(50, 7, requires_grad=True)
    rows = torch.randint(0, 50, (50, 5))
    ref = a[rows].max(dim=1).values
    out = ec.neighbour_max(a, rows)
    assert torch.equal(out, ref)
    g = torch.randn_like(ref)
    assert torch.equal(torch.autograd.grad(out, a, g)[0], torch.autograd.grad(ref, a, g)[0])
    with torch.no_grad():
        assert torch.equal(ec.neighbour_max(a, rows), ref)


def test_slot_argmax_keys_handle_signs_zeros_and_row_blocks(monkeypatch):
    a = torch.randn(300, 5)
    a[::7] = 0.0  # exact zeros: the keys' subnormal case
    a[1::7] = -0.0
    cols = torch.randint(0, 300, (6, 300))
    ref = a[cols.t()].max(dim=1).values
    sign = torch.tensor([1.0, -1.0, 1.0, -1.0, -1.0])
    monkeypatch.setattr(ec, "_BLOCK_BYTES", 5 * 8 * 37)  # 37 rows a block, a ragged last one
    for s in (None, sign):
        val, src = ec._slot_argmax(a, cols, s)
        want = ref if s is None else (a * s)[cols.t()].max(dim=1).values
        assert torch.equal(val, want)
        assert torch.equal((a if s is None else a * s).gather(0, src), want)  # its own row
        assert (src[:, None] == cols.t()[:, :, None]).any(1).all()  # ... a neighbour


@pytest.mark.parametrize("n", [1024, 96, 100])  # grouped (g = 128, 32), and plain topk
def test_smallest_k_equals_topk(n):
    d = torch.randn(3, 17, n)
    got = smallest_k(d, 20).sort(-1).values
    assert torch.equal(got, d.topk(20, -1, largest=False).indices.sort(-1).values)


def test_fused_is_the_default_and_plain_is_selectable():
    assert build_backbone("dgcnn").config["edge_impl"] == "fused"
    m = build_backbone("dgcnn", k=4, channels=(8,), emb_dim=16, edge_impl="plain")
    assert all(c.impl == "plain" for c in m.convs)
    from pointssl.errors import PointSSLError

    with pytest.raises(PointSSLError, match="edge_impl"):
        build_backbone("dgcnn", edge_impl="fast")
    assert isinstance(m.convs[0].bn, nn.BatchNorm2d)  # same parameters and buffers either way
