"""The cross-modal 2D-3D method: its losses on hand-checked numbers (Eqs. 1-3), the
correspondence head, the negatives being other objects, the CM / CM+CV switch, the image
augmentation, and a run exporting both encoders from cached renders."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from pointssl.backbones import build_backbone, load_backbone
from pointssl.backbones.resnet import load_image_encoder
from pointssl.data.datasets import CloudSet
from pointssl.data.render import RenderConfig, render_dataset
from pointssl.engine.trainer import Trainer
from pointssl.errors import DataError
from pointssl.heads import CorrespondenceHead
from pointssl.losses.crossmodal import CrossModalityLoss, TripletLoss
from pointssl.methods import build_method
from pointssl.methods.crossmodal import CrossModal, CrossModalConfig

SMALL = {**CrossModal.test_config(), "batch_size": 4}


def make(**over):
    torch.manual_seed(0)
    bb = build_backbone("pointnet", channels=(8,), emb_dim=8)
    return build_method("crossmodal", bb, {**SMALL, **over})[0]


def test_triplet_loss_by_hand():
    a = torch.tensor([[0.0, 0.0], [0.0, 0.0]])
    p = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    n = torch.tensor([[0.0, 2.0], [0.0, 1.0]])
    # squared distances: pos 1 and 1, neg 4 and 1 -> max(1 - 4 + 1, 0) = 0, max(1 - 1 + 1, 0) = 1
    assert TripletLoss(1.0)(a, p, n).item() == pytest.approx(0.5)
    assert TripletLoss(0.5)(a, p, n).item() == pytest.approx(0.25)
    n.requires_grad_(True)
    TripletLoss(1.0)(a, p, n).backward()
    assert torch.equal(n.grad[0], torch.zeros(2))  # satisfied triplet: no gradient
    assert torch.allclose(n.grad[1], torch.tensor([0.0, -1.0]))  # d/dn of -|a-n|²/2 = (a-n)


def test_cross_modality_loss_is_the_summed_binary_cross_entropy():
    labels = torch.tensor([1, 1, 0])
    assert CrossModalityLoss()(torch.zeros(5, 3, 2), labels).item() == \
        pytest.approx(3 * math.log(2))  # per sample: three pairs at p = 1/2
    # logits [0, s]: p(same) = sigmoid(s); Eq. 2 by hand for one sample
    s = torch.tensor([2.0, -1.0, 0.5])
    logits = torch.stack([torch.zeros(3), s], 1)[None]
    sig = torch.sigmoid(s)
    want = -(math.log(sig[0]) + math.log(sig[1]) + math.log(1 - sig[2]))
    assert CrossModalityLoss()(logits, labels).item() == pytest.approx(want, rel=1e-6)


def test_correspondence_head_shapes_and_concat_order():
    h = CorrespondenceHead(512, 512)
    assert h.fc1.weight.shape == (256, 1024) and h.fc2.weight.shape == (2, 256)
    fi, fp = torch.randn(3, 512), torch.randn(3, 512)
    assert h(fi, fp).shape == (3, 2)
    with torch.no_grad():
        h.fc1.weight[:, 512:] = 0  # the point half of the input is off: image decides alone
    assert torch.equal(h(fi, fp), h(fi, torch.randn(3, 512)))


class _Spy(nn.Module):
    """An image encoder that records its input and returns each image's mean intensity."""

    global_dim = 1

    def forward(self, x):
        self.seen = x.detach().clone()
        return x.mean((1, 2, 3))[:, None] * self.w

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.ones(1))


def _batch(m, b=4):
    # sample i: constant images of value 10 i, so a view names its object
    views = [{"points": np.random.default_rng(i).normal(size=(40, 3)).astype(np.float32),
              "img1": np.full((1, 8, 8), 10 * i, np.uint8),
              "img2": np.full((1, 8, 8), 10 * i, np.uint8),
              "img_other": np.full((1, 8, 8), 10 * i, np.uint8)} for i in range(b)]
    return m.collate(views)


def test_negatives_are_views_of_another_object_and_the_switch():
    m = make()
    m.image_encoder = _Spy()
    m.head = CorrespondenceHead(1, m.backbone.global_dim)
    out = m(_batch(m))
    seen = (m.image_encoder.seen[:, 0, 0, 0] * 0.5 + 0.5) * 255  # undo images_to_input
    obj = torch.round(seen / 10).long().view(3, 4)  # (img1, img2, img3) x sample
    assert torch.equal(obj[0], torch.arange(4)) and torch.equal(obj[1], torch.arange(4))
    assert torch.equal(obj[2], torch.tensor([1, 2, 3, 0]))  # never the sample's own object
    assert out["d_pos"].item() == 0 and out["d_neg"].item() > 0
    assert out["loss"].item() == pytest.approx(out["cross"].item() + out["triplet"].item())
    cm_only = make(cross_view=False)
    cm_only.image_encoder, cm_only.head = m.image_encoder, m.head
    out2 = cm_only(_batch(m))
    assert out2["triplet"].item() > 0  # still logged...
    assert out2["loss"].item() == pytest.approx(out2["cross"].item())  # ...but not trained


def test_image_augmentation_is_a_translation_and_a_flip():
    m = make(crop_pad=0.0, hflip_p=1.0)
    img = np.arange(36, dtype=np.uint8).reshape(6, 6)
    assert np.array_equal(m.augment_image(img, np.random.default_rng(0)), img[:, ::-1])
    m = make(crop_pad=0.25, hflip_p=0.0)
    img = np.zeros((8, 8), np.uint8)
    img[3:5, 3:5] = 200
    outs = [m.augment_image(img, np.random.default_rng(i)) for i in range(20)]
    assert all(o.shape == (8, 8) and (o == 200).sum() == 4 for o in outs)  # whole blob kept
    assert len({o.tobytes() for o in outs}) > 3  # and moved around


def test_paper_defaults():
    c = CrossModalConfig()
    assert (c.optimizer, c.lr, c.momentum, c.weight_decay, c.batch_size) == \
        ("sgd", 1e-3, 0.9, 5e-4, 32)
    assert c.lr_gamma == 0.1 and c.jitter_sigma == 0.02 and c.hflip_p == 0.5
    assert c.cross_view and c.num_points == 2048 and tuple(c.image_widths) == (64, 128, 256, 512)


def test_run_from_cached_renders_exports_both_encoders(tmp_path):
    rng = np.random.default_rng(0)
    data = CloudSet(points=[rng.normal(size=(48, 3)).astype(np.float32) for _ in range(8)],
                    labels=np.arange(8) % 2)
    render_dataset(data, tmp_path / "renders", RenderConfig(views=3, size=16), progress=False)
    m = make(render_dir=str(tmp_path / "renders"))
    views = m.make_views(data[0], np.random.default_rng(0))
    assert views["img1"].shape == (1, 16, 16) and views["points"].shape == (32, 3)
    Trainer(m, data, tmp_path / "run", progress=False, max_steps=2, batch_size=4).fit()
    enc, meta = load_image_encoder(tmp_path / "run" / "image_encoder.pt")
    bb, _ = load_backbone(tmp_path / "run" / "backbone.pt")
    assert bb.name == "pointnet" and meta["method"] == "crossmodal"
    assert all(torch.equal(a, b) for a, b in zip(enc.state_dict().values(),
                                                 m.image_encoder.state_dict().values()))
    with pytest.raises(Exception, match="not an image encoder"):
        load_image_encoder(tmp_path / "run" / "backbone.pt")
    other = CloudSet(points=[rng.normal(size=(48, 3)).astype(np.float32)], labels=[0])
    with pytest.raises(DataError, match="pointssl data render"):
        m.make_views(other[0], np.random.default_rng(0))
