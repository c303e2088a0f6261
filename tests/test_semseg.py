"""Scene semantic segmentation protocol: metrics by hand, scene fractions, the three regimes,
the random-init twin, the train/test leak check and `pointssl eval finetune --task semseg`."""

import json

import numpy as np
import pytest
import torch
from torch import nn

from pointssl.backbones import build_backbone, save_backbone
from pointssl.backbones.base import Backbone
from pointssl.cli import main
from pointssl.data.datasets import CloudSet
from pointssl.errors import PointSSLError
from pointssl.evaluate.semseg import (
    confusion_matrix,
    finetune_semseg,
    run_semseg,
    scene_fraction,
    semseg_metrics,
)
from pointssl.structures import BackboneOutput

UNET = {"voxel_size": 0.25, "init_dim": 8, "enc_planes": [8, 16], "enc_layers": [1, 1],
        "dec_planes": [16, 8], "dec_layers": [1, 1]}
CLASSES = ["floor", "wall", "table"]


def toy_room(seed, n=600):
    """Floor (0), two walls (1) and a table top at 0.8 m (2), labelled."""
    rng = np.random.default_rng(seed)
    w, d = rng.uniform(3, 5), rng.uniform(3, 5)
    k = n // 4
    floor = np.c_[rng.random((k, 2)) * [w, d], np.zeros(k)]
    wall1 = np.c_[rng.random(k) * w, np.zeros(k), rng.random(k) * 2.5]
    wall2 = np.c_[np.zeros(k), rng.random(k) * d, rng.random(k) * 2.5]
    top = np.c_[1 + rng.random((k, 2)), np.full(k, 0.8)]
    pts = np.concatenate([floor, wall1, wall2, top]).astype(np.float32)
    sem = np.repeat([0, 1, 1, 2], k)
    sem[:5] = -1  # a few unlabelled points
    return pts, sem


def toy_set(seeds, tag):
    rooms = [toy_room(s) for s in seeds]
    return CloudSet(points=[r[0] for r in rooms], semantic=[r[1] for r in rooms],
                    labels=np.full(len(rooms), -1), class_names=list(CLASSES),
                    sources=[f"{tag}/{s}" for s in seeds])


def test_metrics_on_a_hand_example():
    pred = np.array([0, 0, 1, 1, 1, 2, 0])
    gt = np.array([0, 1, 1, 1, -1, 0, 0])  # class 2 absent from the ground truth
    conf = confusion_matrix(pred, gt, 3)
    assert conf.tolist() == [[2, 0, 1], [1, 2, 0], [0, 0, 0]]
    m = semseg_metrics(conf, CLASSES)
    # IoU floor = 2 / (3 + 3 - 2) = 0.5; wall = 2 / (3 + 2 - 2) = 2/3; table not present
    assert m["miou"] == pytest.approx((0.5 + 2 / 3) / 2)
    assert m["macc"] == pytest.approx((2 / 3 + 2 / 3) / 2)
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert set(m["per_class_iou"]) == {"floor", "wall"}


def test_scene_fractions_are_nested_and_seeded():
    a, b, c = scene_fraction(200, 0.01, 0), scene_fraction(200, 0.1, 0), scene_fraction(200, 1, 0)
    assert len(a) == 2 and len(b) == 20 and len(c) == 200
    assert set(a) <= set(b) <= set(c)
    assert len(scene_fraction(5, 0.01, 0)) == 1  # at least one scene
    assert not np.array_equal(scene_fraction(200, 0.1, 1), b)


class HeightBackbone(Backbone):
    """Fixed features a linear probe can segment with: height and its square."""

    name = "height_probe"
    point_dim = global_dim = 3

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.ones(1))

    def forward_packed(self, x, offset):
        z = x[:, 2:3]
        f = torch.cat([z, z * z, (z - 0.8).abs()], 1) * self.w
        return BackboneOutput(torch.zeros(len(offset) - 1, 3), f, offset)


def test_fix_trains_a_linear_probe_on_frozen_features():
    train, test = toy_set(range(4), "tr"), toy_set(range(10, 12), "te")
    bb = HeightBackbone()
    res = finetune_semseg(bb, train, test, "fix", 1.0, epochs=30, point_batch=512, lr=0.05,
                          log=None)
    # walls above 0.8 m and the floor/table split by height: most points are right
    assert res["accuracy"] > 0.85 and res["miou"] > 0.6
    assert bb.w.item() == 1.0 and res["n_labeled_scenes"] == 4
    half = finetune_semseg(bb, train, test, "fix", 0.5, epochs=1, log=None)
    assert half["n_labeled_scenes"] == 2


def test_regimes_with_the_sparse_unet_and_the_random_init_twin(tmp_path):
    train, test = toy_set(range(3), "tr"), toy_set(range(10, 12), "te")
    torch.manual_seed(0)
    bb = build_backbone("sparse_unet", **UNET)
    save_backbone(tmp_path / "b.pt", bb, method="pointcontrast")
    before = {k: v.clone() for k, v in bb.state_dict().items()}
    res = run_semseg("finetune", 1.0, train=train, test=test, checkpoint=tmp_path / "b.pt",
                     epochs=2, batch_size=2, log=None)
    assert 0 <= res["miou"] <= 1 and "random_init_baseline" in res
    assert res["checkpoint_meta"]["method"] == "pointcontrast" and not res["random_init"]
    assert all(torch.equal(v, before[k]) for k, v in bb.state_dict().items())  # not modified
    scratch = run_semseg("scratch", 0.5, train=train, test=test, backbone_name="sparse_unet",
                         backbone_config=UNET, epochs=1, log=None)
    assert scratch["random_init"] and "random_init_baseline" not in scratch
    assert scratch["n_labeled_scenes"] == 2
    with pytest.raises(PointSSLError, match="pre-trained weights"):
        run_semseg("fix", 1.0, train=train, test=test)


def test_refuses_to_test_on_training_scenes():
    train = toy_set(range(3), "tr")
    with pytest.raises(PointSSLError, match="also in train"):
        finetune_semseg(HeightBackbone(), train, train.subset([1]), "fix", 1.0, epochs=1,
                        log=None)


def _s3dis(root):
    """A tiny S3DIS tree in the public layout: Area_1, Area_2 train, Area_5 test."""
    base = root / "Stanford3dDataset_v1.2_Aligned_Version"
    for k, (area, room) in enumerate([("Area_1", "office_1"), ("Area_2", "office_2"),
                                      ("Area_5", "office_1")]):
        pts, sem = toy_room(k, 200)
        d = base / area / room / "Annotations"
        d.mkdir(parents=True)
        for c, name in enumerate(["floor", "wall", "table"]):
            sel = pts[sem == c] if c else pts[sem <= 0]
            rgb = np.full((len(sel), 3), 128)
            np.savetxt(d / f"{name}_1.txt", np.hstack([sel, rgb]), fmt="%.4f")
    return root


_TINY_UNET = ["--backbone", "sparse_unet", "--set", "voxel_size=0.25", "--set", "init_dim=8",
              "--set", "enc_planes=8,16", "--set", "enc_layers=1,1", "--set",
              "dec_planes=16,8", "--set", "dec_layers=1,1"]


def test_cli_eval_finetune_semseg(tmp_path, capsys):
    root = _s3dis(tmp_path)
    rc = main(["eval", "finetune", "--task", "semseg", "--mode", "scratch", "--fraction", "0.5",
               *_TINY_UNET, "--data", "s3dis", "--root", str(root), "--epochs", "1", "--json"])
    assert rc == 0
    res = json.loads(capsys.readouterr().out)
    assert res["task"] == "semseg" and res["mode"] == "scratch"
    assert res["n_train_scenes"] == 2 and res["n_test_scenes"] == 1
    assert res["n_labeled_scenes"] == 1 and 0 <= res["miou"] <= 1
    assert set(res["per_class_iou"]) <= {"floor", "wall", "table"}


def test_cli_eval_finetune_semseg_sets_the_synthetic_room_counts(tmp_path, capsys):
    rc = main(["eval", "finetune", "--task", "semseg", "--mode", "scratch", *_TINY_UNET,
               "--data", "synthetic_rooms", "--root", str(tmp_path), "--train-rooms", "2",
               "--test-rooms", "1", "--epochs", "1", "--num-points", "2000", "--json"])
    assert rc == 0
    res = json.loads(capsys.readouterr().out)
    assert res["n_train_scenes"] == 2 and res["n_test_scenes"] == 1
    rc = main(["eval", "finetune", "--task", "semseg", "--mode", "scratch", *_TINY_UNET,
               "--data", "s3dis", "--root", str(_s3dis(tmp_path)), "--train-rooms", "2",
               "--epochs", "1", "--json"])
    assert rc == 2
    assert "--train-rooms is for --data synthetic_rooms" in capsys.readouterr().err
