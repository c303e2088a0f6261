"""The correspondence head F_f's input normalisation (``head_norm``): what made F_f stay at
the label prior in the first pre-training runs, and the fix. The raw ResNet feature is a
large constant plus a small image-dependent part (ReLU + average pool, shrunk further by the
triplet loss), the point feature a larger one; fed raw, F_f learns the prior and nothing
else."""

import numpy as np
import pytest
import torch

from pointssl.backbones import build_backbone
from pointssl.errors import PointSSLError
from pointssl.heads import CorrespondenceHead
from pointssl.losses.crossmodal import CrossModalityLoss
from pointssl.methods import build_method
from pointssl.methods.crossmodal import CrossModal, CrossModalConfig


def _pairs(gen, b, dim=8, objects=8):
    """B samples of (img1, img2, img3, points) features as F_img / F_p produce them: an
    object code z, image features 1 + 0.02 (z + view noise), point features 3 + z W (codes
    and W fixed, the draw from ``gen``)."""
    fixed = torch.Generator().manual_seed(12345)
    codes = torch.randn(objects, dim, generator=fixed)
    w = torch.randn(dim, dim, generator=fixed) / dim ** 0.5
    obj = torch.randint(0, objects, (b,), generator=gen)
    other = (obj + torch.randint(1, objects, (b,), generator=gen)) % objects

    def img(o):
        return 1.0 + 0.02 * (codes[o] + 0.3 * torch.randn(len(o), dim, generator=gen))

    return img(obj), img(obj), img(other), 3.0 + codes[obj] @ w


def _train_head(input_norm, steps=300, b=32, dim=8, seed=0):
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    head = CorrespondenceHead(dim, dim, hidden=64, input_norm=input_norm)
    opt = torch.optim.SGD(head.parameters(), lr=0.05, momentum=0.9)
    loss_fn, labels = CrossModalityLoss(), torch.tensor([1, 1, 0])
    gen_data = torch.Generator().manual_seed(seed + 1)
    for _ in range(steps):
        gen_data.manual_seed(int(torch.randint(0, 2 ** 31, (1,), generator=gen)))
        i1, i2, i3, p = _pairs(gen_data, b, dim)
        logits = head(torch.cat([i1, i2, i3]), p.repeat(3, 1)).view(3, b, 2).transpose(0, 1)
        opt.zero_grad()
        loss_fn(logits, labels).backward()
        opt.step()
    head.eval()
    with torch.no_grad():  # balanced held-out pairs, as the pretext protocol draws them
        i1, _, i3, p = _pairs(torch.Generator().manual_seed(999), 512, dim)
        pos = head(i1, p).argmax(1) == 1
        neg = head(i3, p).argmax(1) == 0
    return torch.cat([pos, neg]).float().mean().item()


def test_raw_features_leave_the_head_at_the_prior_and_bn_inputs_learn():
    # the failure seen in pre-training, reproduced on the head alone: raw inputs -> a
    # constant answer (0.5 on balanced pairs); standardised inputs -> the correspondence
    assert _train_head("none") < 0.6
    assert _train_head("bn") > 0.8


def test_bn_head_ignores_each_modality_scale_and_offset_in_training():
    torch.manual_seed(0)
    h = CorrespondenceHead(8, 6, hidden=16, input_norm="bn").train()
    fi, fp = torch.randn(10, 8), torch.randn(10, 6)
    out = h(fi, fp)
    assert torch.allclose(h(50 * fi + 7, 0.2 * fp - 3), out, atol=1e-3)
    raw = CorrespondenceHead(8, 6, hidden=16, input_norm="none")
    assert not torch.allclose(raw(50 * fi + 7, fp), raw(fi, fp), atol=1e-2)


def test_bn_head_uses_running_statistics_at_eval():
    torch.manual_seed(0)
    h = CorrespondenceHead(4, 4, hidden=8, input_norm="bn")
    for _ in range(50):
        h(torch.randn(16, 4) * 5 + 2, torch.randn(16, 4))
    h.eval()
    assert h.norm_image.running_mean.mean().item() == pytest.approx(2.0, abs=0.5)
    one = h(torch.full((1, 4), 2.0), torch.zeros(1, 4))  # a batch of one works at eval
    assert one.shape == (1, 2) and torch.isfinite(one).all()


def test_head_norm_option_reaches_the_method_and_is_checked():
    assert CrossModalConfig().head_norm == "bn"  # not in the paper; chosen on a val split
    bb = build_backbone("pointnet", channels=(8,), emb_dim=8)
    m = build_method("crossmodal", bb, {**CrossModal.test_config(), "head_norm": "bn"})[0]
    assert m.head.input_norm == "bn" and hasattr(m.head, "norm_image")
    assert m.head.norm_point.num_features == 8
    with pytest.raises(PointSSLError, match="input_norm"):
        build_method("crossmodal", bb, {**CrossModal.test_config(), "head_norm": "l2"})
    assert np.isfinite(m.head(torch.randn(4, m.image_encoder.global_dim),
                              torch.randn(4, 8)).detach().numpy()).all()


def test_a_checkpoint_with_a_raw_head_still_loads():
    bb = build_backbone("pointnet", channels=(8,), emb_dim=8)
    old = build_method("crossmodal", bb, {**CrossModal.test_config(), "head_norm": "none"})[0]
    state = old.state_dict()
    assert not any(k.startswith("head.norm_") for k in state)
    new = build_method("crossmodal", build_backbone("pointnet", channels=(8,), emb_dim=8),
                       CrossModal.test_config())[0]
    assert new.head.input_norm == "bn"
    new.load_state_dict(state)
    assert new.head.input_norm == "none" and new.cfg.head_norm == "none"
    assert torch.equal(new.head.fc1.weight, old.head.fc1.weight)
    bn_state = build_method("crossmodal", build_backbone("pointnet", channels=(8,), emb_dim=8),
                            CrossModal.test_config())[0].state_dict()
    again = build_method("crossmodal", build_backbone("pointnet", channels=(8,), emb_dim=8),
                         CrossModal.test_config())[0]
    again.load_state_dict(bn_state)  # a state with F_f's norm buffers keeps them
    assert again.head.input_norm == "bn"
