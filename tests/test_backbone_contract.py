"""The contract every registered backbone keeps (a new ``@BACKBONES.register`` file is picked
up here with no edit): shapes, packed = one by one, dense = packed, export round trip, seeded
init. Small configs come from the class's ``test_config()``."""

import pytest
import torch
from torch import nn

from pointssl.backbones import BACKBONES, load_backbone, random_backbone, save_backbone
from pointssl.structures import PointBatch

NAMES = BACKBONES.names()
SIZES = [13, 21, 8]  # three different sizes


def make(name, seed=0):
    """A small backbone with every parameter perturbed (nothing at a degenerate init such as
    an identity transform) and BN statistics taken from one train-mode batch, so eval-mode
    activations are of order one."""
    m = random_backbone(name, seed, **BACKBONES.get(name).test_config())
    g = torch.Generator().manual_seed(seed)
    bns = [b for b in m.modules() if isinstance(b, nn.modules.batchnorm._BatchNorm)]
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=g))
        for b in bns:
            b.reset_running_stats()
            b.momentum = None  # cumulative average: the stats of the one batch below
        m.train()(torch.randn(4, 32, m.in_dim, generator=g))
        for b in bns:
            b.momentum = 0.1
    return m.eval()


def clouds(m, sizes=SIZES, extra=0, seed=1):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(n, m.in_dim + extra, generator=g) for n in sizes]


def close(a, b):
    # float32 rounding grows with the activations' scale (a perturbed 16 x 16 feature
    # transform lifts them to ~100), so the absolute tolerance is relative to the largest
    return torch.allclose(a, b, rtol=1e-4, atol=1e-5 * max(1.0, b.abs().max().item()))


@pytest.mark.parametrize("name", NAMES)
def test_registered_name_rebuilds_the_class(name):
    cls = BACKBONES.get(name)
    assert cls.name == name  # the export stores .name and rebuilds from the registry with it


@pytest.mark.parametrize("name", NAMES)
def test_shapes_dense_and_packed(name):
    m = make(name)
    x = torch.stack(clouds(m, [16, 16]))
    with torch.no_grad():
        d = m(x)
        p = m(PointBatch.from_list(clouds(m)))
    assert d.global_feat.shape == (2, m.global_dim)
    assert d.point_feat.shape == (2, 16, m.point_dim)
    assert p.global_feat.shape == (3, m.global_dim)
    assert p.point_feat.shape == (sum(SIZES), m.point_dim)
    assert p.offset.tolist() == [0, 13, 34, 42]
    assert [t.shape[0] for t in p.per_cloud()] == SIZES


@pytest.mark.parametrize("name", NAMES)
def test_packed_batch_equals_each_cloud_alone(name):
    m = make(name)
    cs = clouds(m)
    with torch.no_grad():
        packed = m(PointBatch.from_list(cs))
        alone = [m(c[None]) for c in cs]
    for i, (pf, a) in enumerate(zip(packed.per_cloud(), alone)):
        assert close(packed.global_feat[i], a.global_feat[0]), f"cloud {i} global"
        assert close(pf, a.point_feat[0]), f"cloud {i} points"


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("train", [False, True])
def test_dense_equals_uniform_packed(name, train):
    m = make(name).train(train)
    x = torch.stack(clouds(m, [16, 16, 16]))
    with torch.no_grad():
        d = m(x)
        p = m(PointBatch.from_dense(x))
    assert close(d.global_feat, p.global_feat)
    assert close(d.point_feat.reshape(-1, m.point_dim), p.point_feat)


@pytest.mark.parametrize("name", NAMES)
def test_extra_feature_columns_are_dropped(name):
    m = make(name)
    cs, cs_extra = clouds(m), clouds(m, extra=2)
    cs_extra = [torch.cat([c[:, :m.in_dim], e[:, m.in_dim:]], 1) for c, e in zip(cs, cs_extra)]
    with torch.no_grad():
        a, b = m(PointBatch.from_list(cs)), m(PointBatch.from_list(cs_extra))
        c, d = m(torch.stack(cs[:1])), m(torch.stack(cs_extra[:1]).numpy())  # numpy input too
    assert torch.equal(a.global_feat, b.global_feat) and torch.equal(a.point_feat, b.point_feat)
    assert torch.equal(c.global_feat, d.global_feat)


@pytest.mark.parametrize("name", NAMES)
def test_packed_train_step_has_finite_gradients(name):
    m = make(name).train()
    out = m(PointBatch.from_list(clouds(m)))
    (out.global_feat.square().mean() + out.point_feat.mean()).backward()
    grads = [p.grad for p in m.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize("name", NAMES)
def test_bf16_autocast_train_step_gives_fp32_gradients_and_close_outputs(name):
    """``--precision bf16`` on any backbone: its custom autograd functions must take
    autocast's operands (autocast does not cast them) and every gradient must come back."""
    # unperturbed, and clouds large enough for train-mode BN statistics: the perturbed
    # 42-point batch of make() puts PointNet's bf16 output 58% off (its eval mode 5%)
    m = random_backbone(name, 0, **BACKBONES.get(name).test_config()).train()
    batch = PointBatch.from_list(clouds(m, [256, 300, 200]))
    feats = []
    for bf16 in (False, True):
        m.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out = m(batch)
        g = out.global_feat.float()
        (g.square().mean() + out.point_feat.float().mean()).backward()
        feats.append(g.detach())
    grads = [p.grad for p in m.parameters() if p.requires_grad]
    assert all(g is not None and g.dtype == torch.float32 and torch.isfinite(g).all()
               for g in grads)
    # bf16 keeps ~3 significant digits (gradients may differ more: near-tied max-pool
    # winners rank differently)
    err = ((feats[1] - feats[0]).norm() / feats[0].norm()).item()
    assert err < 0.05, err


@pytest.mark.parametrize("name", NAMES)
def test_export_round_trip_gives_identical_outputs(name, tmp_path):
    m = make(name)
    save_backbone(tmp_path / "b.pt", m, method="contract")
    m2, meta = load_backbone(tmp_path / "b.pt")
    assert type(m2) is type(m) and m2.config == m.config and meta["method"] == "contract"
    m2.eval()
    batch = PointBatch.from_list(clouds(m))
    with torch.no_grad():
        a, b = m(batch), m2(batch)
    assert torch.equal(a.global_feat, b.global_feat) and torch.equal(a.point_feat, b.point_feat)


@pytest.mark.parametrize("name", NAMES)
def test_random_backbone_is_deterministic(name):
    cfg = BACKBONES.get(name).test_config()
    a, b = random_backbone(name, 3, **cfg), random_backbone(name, 3, **cfg)
    c = random_backbone(name, 4, **cfg)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert any(not torch.equal(sa[k], sc[k]) for k in sa)
