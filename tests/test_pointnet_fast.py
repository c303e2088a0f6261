"""PointNet's fused paths (BN folded with batch or running statistics, max-pool without the
(P, C_out) activations) against the plain Linear -> BN -> act path: values, gradients and
running statistics, dense and packed, T-nets on and off."""

import copy

import pytest
import torch
from torch import nn

import pointssl.backbones.pointnet as pn
from pointssl.backbones import build_backbone
from pointssl.backbones.pointnet import PointwiseMLP, set_fused
from pointssl.structures import PointBatch


def _perturb(m: nn.Module, seed: int = 0) -> nn.Module:
    """BN with negative scales and non-trivial running statistics, T-nets away from I."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, nn.BatchNorm1d):
                mod.weight.copy_(torch.randn(mod.num_features, generator=g))
                mod.bias.copy_(torch.randn(mod.num_features, generator=g))
                mod.running_mean.copy_(torch.randn(mod.num_features, generator=g))
                mod.running_var.copy_(torch.rand(mod.num_features, generator=g) + 0.5)
        for t in (getattr(m, "tnet", None), getattr(m, "ftnet", None)):
            if t is not None:
                t.fc[-1].weight.copy_(0.05 * torch.randn(t.fc[-1].weight.shape, generator=g))
    return m


def _run(m, inp, train: bool):
    m.train(train)
    m.zero_grad()
    x = (inp.coord if isinstance(inp, PointBatch) else inp).detach().requires_grad_(True)
    out = m(PointBatch(x, inp.offset) if isinstance(inp, PointBatch) else x)
    loss = out.global_feat.square().sum() + out.point_feat.sin().sum()
    if out.aux_loss is not None:
        loss = loss + 100 * out.aux_loss
    loss.backward()
    grads = {k: p.grad.clone() for k, p in m.named_parameters() if p.grad is not None}
    return out, x.grad, grads


def _close(a, b, rtol=1e-4, atol=1e-5):
    assert a.shape == b.shape
    scale = float(b.detach().abs().max().clamp_min(1.0))
    assert torch.allclose(a, b, rtol=rtol, atol=atol * scale), (a - b).abs().max()


def _err(a, b) -> float:
    a, b = a.detach(), b.detach()
    return float((a.double() - b).abs().max() / b.abs().max().clamp_min(1e-12))


@pytest.mark.parametrize("tnet", [True, False])
@pytest.mark.parametrize("packed", [False, True])
@pytest.mark.parametrize("train", [True, False])
def test_fused_equals_plain_values_gradients_and_running_stats(tnet, packed, train):
    """Outputs, input and parameter gradients and BN running statistics of the fused fp32
    path are as close to the plain path run in float64 as the plain fp32 path is (float
    reassociation: train-mode BN over few clouds in the T-nets' FC layers amplifies it)."""
    torch.manual_seed(0)
    fused = _perturb(build_backbone("pointnet", tnet=tnet, channels=(16, 16, 24, 32),
                                    emb_dim=64))
    plain = set_fused(copy.deepcopy(fused), False)
    ref = copy.deepcopy(plain).double()
    x = torch.randn(6, 40, 3)
    inp = PointBatch.from_list([x[0], x[1, :29], x[2, :17], *x[3:]]) if packed else x
    inp64 = PointBatch(inp.coord.double(), inp.offset) if packed else x.double()
    runs = [_run(fused, inp, train), _run(plain, inp, train), _run(ref, inp64, train)]
    (o1, gx1, g1), (o2, gx2, g2), (o3, gx3, g3) = runs
    assert g1.keys() == g3.keys() and len(g1) == len(list(fused.parameters()))
    pairs = [(o1.global_feat, o2.global_feat, o3.global_feat),
             (o1.point_feat, o2.point_feat, o3.point_feat), (gx1, gx2, gx3),
             *((g1[k], g2[k], g3[k]) for k in g3)]
    if train and tnet:
        pairs.append((o1.aux_loss, o2.aux_loss, o3.aux_loss))
    for (k, a), b, c in zip(fused.state_dict().items(), plain.state_dict().values(),
                            ref.state_dict().values(), strict=True):
        if a.dtype == torch.long:  # num_batches_tracked
            assert torch.equal(a, b) and torch.equal(a, c), k
        else:
            pairs.append((a, b, c))
    for fast, slow, exact in pairs:
        assert fast.shape == exact.shape
        assert _err(fast, exact) <= max(10 * _err(slow, exact), 1e-5)


@pytest.mark.parametrize("dense", [False, True])
@pytest.mark.parametrize("act", [nn.ReLU(inplace=True), nn.LeakyReLU(0.2, inplace=True)])
def test_fused_maxpool_over_several_blocks_equals_plain(monkeypatch, act, dense):
    """Ragged clouds larger than one score block (the per-block maxima merge exactly) or
    same-size clouds two per block (blocks of 2, 2, 1); no score tensor exceeds the block
    (never (P, C_out))."""
    block = (2 * 10 if dense else 7) * 24  # 7 rows (two clouds of 10) of 24 channels
    monkeypatch.setattr(pn, "_BLOCK_ELEMS", dict.fromkeys(pn._BLOCK_ELEMS, block))
    sizes, real = [], torch.Tensor.max

    def spy(t, *a, **kw):
        sizes.append(t.numel())
        return real(t, *a, **kw)

    torch.manual_seed(1)
    layer = PointwiseMLP(5, 24, act)
    _perturb(layer)
    ref = set_fused(copy.deepcopy(layer), False)
    x = torch.randn(50, 5)
    offset = None if dense else torch.tensor([0, 23, 24, 50])  # 23 rows, 1 row, 26 rows
    for train in (True, False):
        outs = []
        for m in (layer, ref):
            m.train(train)
            xi = (x.view(5, 10, 5) if dense else x).clone().requires_grad_(True)
            if m is layer:
                monkeypatch.setattr(torch.Tensor, "max", spy)
            y = m.forward_maxpool(xi, offset)
            monkeypatch.setattr(torch.Tensor, "max", real)
            gx, gw = torch.autograd.grad((y * torch.linspace(-1, 2, 24)).sum(),
                                         [xi, m.lin.weight])
            outs.append((y, gx, gw))
        for a, b in zip(*outs, strict=True):
            _close(a, b)
    # blocks per forward: 2 + 2 + 1 clouds, or 4 + 1 + 4 row blocks; train and eval
    assert len(sizes) == 2 * (3 if dense else 9) and max(sizes) <= block


def test_custom_backwards_pass_gradcheck():
    torch.manual_seed(0)
    d = dict(dtype=torch.float64, requires_grad=True)
    x, w = torch.randn(13, 4, **d), torch.randn(5, 4, **d)
    assert torch.autograd.gradcheck(lambda x, w: pn._Moments.apply(x, w), (x, w))
    assert torch.autograd.gradcheck(lambda x, w: pn._MaxScore.apply(x, w, [6, 7], None), (x, w))


def test_train_mode_dense_fast_path_matches_explicit_batch_norm():
    """The fold's statistics are BN's: mean and biased variance of y = W x over all rows."""
    torch.manual_seed(2)
    layer = _perturb(PointwiseMLP(3, 8)).train()
    x = torch.randn(4, 30, 3)
    y = layer.lin(x).reshape(-1, 8)
    ref = torch.relu((y - y.mean(0)) / torch.sqrt(y.var(0, unbiased=False) + layer.bn.eps)
                     * layer.bn.weight + layer.bn.bias)
    _close(layer(x).reshape(-1, 8), ref)
    _close(layer.forward_maxpool(x), ref.reshape(4, 30, 8).max(1).values)
