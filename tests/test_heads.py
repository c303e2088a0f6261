import pytest
import torch
from torch import nn
from torch.nn import functional as F

from pointssl.backbones.pointnet import PointwiseMLP
from pointssl.errors import PointSSLError
from pointssl.heads import ClassificationHead, PredictionHead, ProjectionHead, SegmentationHead
from pointssl.heads.segmentation import ActDropout

# ----------------------------------------------------------------------------- the former heads
# Verbatim copies of the classes these heads replace (git 6366bae: methods/conclu.py
# projector/predictor, evaluate/finetune.py ClsHead/SegHead, methods/parae.py SegHead), kept
# as references: same seeded init and same outputs, bit for bit.


def old_projector(c_in, hidden, out):
    return nn.Sequential(
        nn.Linear(c_in, hidden, bias=False), nn.BatchNorm1d(hidden), nn.LeakyReLU(0.2, True),
        nn.Linear(hidden, hidden, bias=False), nn.BatchNorm1d(hidden), nn.LeakyReLU(0.2, True),
        nn.Linear(hidden, out, bias=False), nn.BatchNorm1d(out),
    )


def old_predictor(dim, hidden):
    return nn.Sequential(nn.Linear(dim, hidden, bias=False), nn.BatchNorm1d(hidden),
                         nn.LeakyReLU(0.2, True), nn.Linear(hidden, dim))


class OldClsHead(nn.Module):
    def __init__(self, c_in, num_classes, dropout=0.5):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(c_in, 512, bias=False), nn.BatchNorm1d(512), nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(512, 256, bias=False), nn.BatchNorm1d(256), nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(256, num_classes),
        )

    def forward(self, g):
        return self.net(g)


class OldPartSegHead(nn.Module):
    def __init__(self, point_dim, global_dim, num_categories, num_parts, dropout=0.5):
        super().__init__()
        self.num_categories = num_categories
        self.lin_point = nn.Linear(point_dim, 256, bias=False)
        self.lin_ctx = nn.Linear(global_dim + num_categories, 256, bias=False)
        self.bn1 = nn.BatchNorm1d(256)
        self.drop = nn.Dropout(dropout)
        self.fc2 = PointwiseMLP(256, 128)
        self.out = nn.Linear(128, num_parts)

    def forward(self, point_feat, global_feat, category):
        b, n, _ = point_feat.shape
        onehot = F.one_hot(category, self.num_categories).to(point_feat.dtype)
        ctx = self.lin_ctx(torch.cat([global_feat, onehot], dim=-1)).unsqueeze(1)
        x = (self.lin_point(point_feat) + ctx).reshape(b * n, -1)
        x = F.relu(self.bn1(x)).reshape(b, n, -1)
        return self.out(self.fc2(self.drop(x)))


class OldParAEHead(nn.Module):
    def __init__(self, point_dim, global_dim, channels, num_out):
        super().__init__()
        c0 = channels[0]
        self.point_proj = nn.Linear(point_dim, c0, bias=False)
        self.global_proj = nn.Linear(global_dim, c0, bias=False)
        self.bn0 = nn.BatchNorm1d(c0)
        self.mlp = nn.Sequential(*(PointwiseMLP(a, b)
                                   for a, b in zip(channels[:-1], channels[1:], strict=True)))
        self.out = nn.Linear(channels[-1], num_out)

    def hidden(self, point_feat, global_feat):
        b, n, _ = point_feat.shape
        x = self.point_proj(point_feat) + self.global_proj(global_feat).unsqueeze(1)
        x = torch.relu(self.bn0(x.reshape(b * n, -1))).reshape(b, n, -1)
        return self.mlp(x)

    def forward(self, point_feat, global_feat):
        return self.out(self.hidden(point_feat, global_feat))


def seeded(factory, seed=0):
    torch.manual_seed(seed)
    return factory()


def values(module):
    return [v.detach().clone() for v in module.state_dict().values()]


def assert_same_init(new, old):
    a, b = values(new), values(old)
    assert len(a) == len(b) and all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


def bn_eval(x, bn):
    return (x - bn.running_mean) / torch.sqrt(bn.running_var + bn.eps) * bn.weight + bn.bias


def randomise_bn(module, seed=1):
    """Non-trivial running statistics so eval-mode BN is not the identity."""
    g = torch.Generator().manual_seed(seed)
    for m in module.modules():
        if isinstance(m, nn.BatchNorm1d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g))
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=g))
    return module


# ------------------------------------------------------------------ projection / prediction


def test_projection_and_prediction_heads_are_the_former_conclu_layers():
    proj, old = seeded(lambda: ProjectionHead(10, 12, 6)), seeded(lambda: old_projector(10, 12, 6))
    assert list(proj.state_dict()) == list(old.state_dict())  # "0.weight", ...: keys kept
    assert_same_init(proj, old)
    pred, oldq = seeded(lambda: PredictionHead(6, 8)), seeded(lambda: old_predictor(6, 8))
    assert list(pred.state_dict()) == list(oldq.state_dict())
    assert_same_init(pred, oldq)
    x = torch.randn(5, 10)
    torch.testing.assert_close(pred(proj(x)), oldq(old(x)), rtol=0, atol=0)


def test_projection_head_equation_eval_mode():
    proj = randomise_bn(ProjectionHead(4, 6, 3)).eval()
    x = torch.randn(7, 4)
    h = F.leaky_relu(bn_eval(x @ proj[0].weight.t(), proj[1]), 0.2)
    h = F.leaky_relu(bn_eval(h @ proj[3].weight.t(), proj[4]), 0.2)
    torch.testing.assert_close(proj(x), bn_eval(h @ proj[6].weight.t(), proj[7]))
    pred = randomise_bn(PredictionHead(3, 5)).eval()
    z = torch.randn(7, 3)
    h = F.leaky_relu(bn_eval(z @ pred[0].weight.t(), pred[1]), 0.2)
    torch.testing.assert_close(pred(z), h @ pred[3].weight.t() + pred[3].bias)


# ----------------------------------------------------------------------------- classification


def test_classification_head_matches_former_head_and_equation():
    new, old = seeded(lambda: ClassificationHead(9, 4)), seeded(lambda: OldClsHead(9, 4))
    assert_same_init(new, old)
    g = torch.randn(6, 9)
    torch.manual_seed(3)
    a = new.train()(g)  # dropout draws from the global generator: same draws, same masks
    torch.manual_seed(3)
    torch.testing.assert_close(a, old.train()(g), rtol=0, atol=0)
    new = randomise_bn(new).eval()
    h = torch.relu(bn_eval(g @ new[0].weight.t(), new[1]))
    h = torch.relu(bn_eval(h @ new[4].weight.t(), new[5]))
    torch.testing.assert_close(new(g), h @ new[8].weight.t() + new[8].bias)


# ----------------------------------------------------------------------------- segmentation


def partseg_head():
    return SegmentationHead(5, 4, [256, 128], 7, num_categories=3, dropout=0.5)


def test_segmentation_head_first_layer_is_one_linear_on_the_concatenation():
    head = randomise_bn(partseg_head()).eval()
    pf, gf, cat = torch.randn(2, 6, 5), torch.randn(2, 4), torch.tensor([0, 2])
    x = torch.cat([pf, gf[:, None].expand(2, 6, 4),
                   F.one_hot(cat, 3)[:, None].expand(2, 6, 3).float()], -1)
    w = torch.cat([head.point_proj.weight, head.ctx_proj.weight], 1)
    h = torch.relu(bn_eval(x @ w.t(), head.bn0))
    torch.testing.assert_close(head(pf, gf, cat), head.out(head.mlp(h)))
    torch.testing.assert_close(head.hidden(pf, gf, cat), head.mlp(h))
    assert not torch.allclose(head(pf, gf, cat), head(pf, gf, torch.tensor([1, 2])))
    # ParAE's form: no categories, the context is the global feature alone.
    parae = randomise_bn(SegmentationHead(5, 4, [6, 3], 2)).eval()
    assert isinstance(parae.drop, nn.Identity)
    x = torch.cat([pf, gf[:, None].expand(2, 6, 4)], -1)
    w = torch.cat([parae.point_proj.weight, parae.ctx_proj.weight], 1)
    h = torch.relu(bn_eval(x @ w.t(), parae.bn0))
    torch.testing.assert_close(parae(pf, gf), parae.out(parae.mlp(h)))


@pytest.mark.parametrize("train", [False, True])
def test_segmentation_head_reproduces_the_partseg_head(train):
    new = seeded(partseg_head)
    old = seeded(lambda: OldPartSegHead(5, 4, 3, 7))
    assert_same_init(new, old)
    pf, gf, cat = torch.randn(3, 8, 5), torch.randn(3, 4), torch.tensor([2, 0, 1])
    new.train(train)
    old.train(train)
    if train:  # the masks come from different generators (ActDropout's tests cover it)
        new.drop.p = old.drop.p = 0.0
    torch.testing.assert_close(new(pf, gf, cat), old(pf, gf, cat), rtol=0, atol=0)


@pytest.mark.parametrize("train", [False, True])
def test_segmentation_head_reproduces_the_parae_head(train):
    new = seeded(lambda: SegmentationHead(5, 7, [6, 4], 3))
    old = seeded(lambda: OldParAEHead(5, 7, [6, 4], 3))
    assert_same_init(new, old)
    pf, gf = torch.randn(2, 9, 5), torch.randn(2, 7)
    new.train(train)
    old.train(train)
    torch.testing.assert_close(new(pf, gf), old(pf, gf), rtol=0, atol=0)
    torch.testing.assert_close(new.hidden(pf, gf), old.hidden(pf, gf), rtol=0, atol=0)


def test_segmentation_head_loads_a_former_parae_state_dict():
    old = seeded(lambda: OldParAEHead(5, 7, [6, 4], 3), seed=4)
    new = SegmentationHead(5, 7, [6, 4], 3)
    new.load_state_dict(old.state_dict())  # global_proj.weight -> ctx_proj.weight
    assert torch.equal(new.ctx_proj.weight, old.global_proj.weight)
    pf, gf = torch.randn(2, 9, 5), torch.randn(2, 7)
    torch.testing.assert_close(new.eval()(pf, gf), old.eval()(pf, gf), rtol=0, atol=0)


@pytest.mark.parametrize("train", [False, True])
def test_segmentation_head_packed_equals_dense(train):
    head = randomise_bn(partseg_head()).train(train)
    head.drop.p = 0.0  # dropout masks are the only thing a layout may not share
    pf, gf, cat = torch.randn(3, 8, 5), torch.randn(3, 4), torch.tensor([2, 0, 1])
    offset = torch.tensor([0, 8, 16, 24])
    dense = head(pf, gf, cat)
    packed = head(pf.reshape(24, 5), gf, cat, offset)
    assert packed.shape == (24, 7)
    torch.testing.assert_close(packed, dense.reshape(24, 7))


def test_segmentation_head_packed_clouds_of_any_size_equal_one_by_one():
    head = randomise_bn(partseg_head()).eval()
    sizes = [3, 7, 5]
    clouds = [torch.randn(n, 5) for n in sizes]
    gf, cat = torch.randn(3, 4), torch.tensor([1, 1, 0])
    offset = torch.tensor([0, 3, 10, 15])
    packed = head(torch.cat(clouds), gf, cat, offset)
    for b, c in enumerate(clouds):
        one = head(c[None], gf[b:b + 1], cat[b:b + 1])[0]
        torch.testing.assert_close(packed[offset[b]:offset[b + 1]], one)
    assert head.hidden(torch.cat(clouds), gf, cat, offset).shape == (15, 128)


def test_segmentation_head_rejects_missing_inputs():
    head = partseg_head()
    with pytest.raises(PointSSLError, match="category"):
        head(torch.randn(2, 4, 5), torch.randn(2, 4))
    with pytest.raises(PointSSLError, match="offset"):
        head(torch.randn(8, 5), torch.randn(2, 4), torch.tensor([0, 1]))
    with pytest.raises(PointSSLError, match="hidden layer"):
        SegmentationHead(5, 4, [], 3)


# ----------------------------------------------------------------------------- paper presets


def test_for_backbone_gives_the_papers_segmentation_networks():
    from pointssl.backbones import build_backbone

    pn = build_backbone("pointnet", channels=(8, 16), emb_dim=32)
    dg = build_backbone("dgcnn", k=4, channels=(8, 16), emb_dim=32)
    h = SegmentationHead.for_backbone(pn, 50, num_categories=16)
    assert h.config == {"channels": [256, 256, 128], "num_out": 50, "num_categories": 16,
                        "dropout": 0.2, "act": "relu"}  # PointNet-seg
    assert h.point_proj.in_features == 24 and h.ctx_proj.in_features == 32 + 16
    d = SegmentationHead.for_backbone(dg, 32)  # ParAE: no category one-hot
    assert d.config["act"] == "leaky_relu" and d.config["dropout"] == 0.5  # DGCNN-seg
    assert d.ctx_proj.in_features == 32 and isinstance(d.mlp[0].act, nn.LeakyReLU)

    class Other:
        name, point_dim, global_dim = "mine", 5, 7

    assert SegmentationHead.for_backbone(Other(), 3).config["channels"] == [256, 256, 128]
    with pytest.raises(PointSSLError, match="activation"):
        SegmentationHead(5, 4, [6], 2, act="gelu")


def test_leaky_head_equation_eval_mode():
    head = randomise_bn(SegmentationHead(5, 4, [6, 6, 3], 2, act="leaky_relu",
                                         dropout=0.5)).eval()
    pf, gf = torch.randn(2, 7, 5), torch.randn(2, 4)
    x = torch.cat([pf, gf[:, None].expand(2, 7, 4)], -1)
    w = torch.cat([head.point_proj.weight, head.ctx_proj.weight], 1)
    h = F.leaky_relu(bn_eval(x @ w.t(), head.bn0), 0.2)
    for layer in head.mlp:
        h = F.leaky_relu(bn_eval(h @ layer.lin.weight.t(), layer.bn), 0.2)
    torch.testing.assert_close(head(pf, gf), h @ head.out.weight.t() + head.out.bias)


def test_dropout_follows_every_hidden_layer_but_the_last():
    """PointNet-seg / DGCNN-seg: dropout after both 256 layers, none after the 128 one."""
    head = SegmentationHead(5, 4, [6, 6, 3], 2, dropout=0.5).train()
    seen = []
    head.drop.register_forward_hook(lambda mod, inp, out: seen.append(out.shape[-1]))
    head(torch.randn(2, 7, 5), torch.randn(2, 4))
    assert seen == [6, 6]
    seen.clear()
    old_style = SegmentationHead(5, 4, [8, 3], 2, dropout=0.5).train()  # former [256, 128]
    old_style.drop.register_forward_hook(lambda mod, inp, out: seen.append(out.shape[-1]))
    old_style(torch.randn(2, 7, 5), torch.randn(2, 4))
    assert seen == [8]


@pytest.mark.parametrize("slope", [0.0, 0.2])
def test_act_dropout_is_the_activation_times_a_seeded_keep_mask(slope):
    x = torch.randn(256, 512, requires_grad=True)
    mod = ActDropout(0.2, slope).train()
    torch.manual_seed(3)
    y = mod(x)
    torch.manual_seed(3)
    assert torch.equal(y, mod(x))  # torch's seed reproduces the mask
    assert not torch.equal(y, mod(x))  # and the next call draws a new one
    act = F.leaky_relu(x, slope) if slope else torch.relu(x)
    kept = y != 0
    scale = 65536 / (65536 - round(0.2 * 65536))
    torch.testing.assert_close(y[kept], act[kept] * scale, rtol=1e-6, atol=0)
    # the kept fraction over the elements the activation leaves non-zero, overall and in
    # each 16-bit lane of the 64-bit random words (none of them unused or biased)
    live = x > 0 if slope == 0 else torch.ones_like(x, dtype=torch.bool)
    lane = torch.arange(x.numel()).reshape(x.shape) % 4
    for sel in [live] + [live & (lane == j) for j in range(4)]:
        frac, n = kept[sel].float().mean().item(), sel.sum().item()
        assert abs(frac - 0.8) < 5 * (0.16 / n) ** 0.5
    # gradient = the same per-element factor: act'(x) * keep * scale
    y.backward(torch.ones_like(y))
    f = torch.where(x > 0, 1.0, slope) * kept * scale
    torch.testing.assert_close(x.grad, f.detach(), rtol=0, atol=1e-7)


def test_act_dropout_in_eval_mode_is_the_activation():
    x = torch.randn(64, 8)
    torch.testing.assert_close(ActDropout(0.5, 0.2).eval()(x), F.leaky_relu(x, 0.2))
    torch.testing.assert_close(ActDropout(0.5).eval()(x), torch.relu(x))
