"""Scenes: synthetic rooms (deterministic, cached, labelled), ScanNet .ply and S3DIS readers on
fixtures written in the public layouts, and the real ScanNet scene when it is present."""

from pathlib import Path

import numpy as np
import pytest
from conftest import shared_path

from pointssl.data.datasets import load_dataset
from pointssl.data.scenes import ROOM_CLASSES, S3DIS_CLASSES, SCANNET_CLASSES, make_room
from pointssl.data.scenes.readers import read_xyzrgb_txt
from pointssl.errors import DataError


@pytest.fixture(scope="module")
def room():
    return make_room(seed=3, split="train", index=1, density=60.0, objects=(2, 3))


def test_room_is_deterministic_labelled_and_metric(room):
    again = make_room(seed=3, split="train", index=1, density=60.0, objects=(2, 3))
    other = make_room(seed=3, split="train", index=2, density=60.0, objects=(2, 3))
    assert all(np.array_equal(room[k], again[k]) for k in room)
    assert len(other["points"]) != len(room["points"]) or \
        not np.array_equal(other["points"], room["points"])
    p, sem = room["points"], room["semantic"]
    assert len(p) == len(sem) == len(room["colors"]) == len(room["normals"])
    assert sem.min() >= 0 and sem.max() < len(ROOM_CLASSES)
    floor, wall = sem == 0, sem == 1
    assert np.allclose(p[floor, 2], 0.0) and p[wall, 2].max() > 2.5  # z up, metres
    ext = p.max(0) - p.min(0)
    assert 4.0 <= ext[0] <= 7.0 and 4.0 <= ext[1] <= 7.0
    assert (sem >= 2).sum() > 0  # furniture
    # every object is inside the room and stands on the floor
    objs = sem >= 2
    assert p[objs, 2].min() >= -1e-4 and (p[objs, :2] <= p[wall, :2].max(0) + 1e-4).all()
    assert 0 <= room["colors"].min() and room["colors"].max() <= 1


def test_rooms_dataset_caches_and_splits(tmp_path):
    tr = load_dataset("synthetic_rooms", tmp_path, "train", seed=0, rooms=2, density=40.0)
    te = load_dataset("synthetic_rooms", tmp_path, "test", seed=0, rooms=1, density=40.0)
    assert len(tr) == 2 and len(te) == 1 and tr.class_names == ROOM_CLASSES
    item = tr[1]
    assert set(item) >= {"points", "colors", "normals", "semantic"}
    files = sorted(tmp_path.rglob("room_*.npz"))
    assert [f.name for f in files] == ["room_0001.npz"]  # lazy: only the room read is made
    again = load_dataset("synthetic_rooms", tmp_path, "train", seed=0, rooms=2, density=40.0)
    assert np.array_equal(again.points[1], item["points"])
    assert not np.array_equal(te.points[0][:50], tr.points[0][:50])
    cut = load_dataset("synthetic_rooms", tmp_path, "train", num_points=500, seed=0, rooms=2,
                       density=40.0)
    assert len(cut.points[0]) == 500 and len(cut.semantic[0]) == 500
    assert len(np.unique(cut.points[0], axis=0)) == 500  # no repeated points


def _write_ply(path, xyz, rgb=None, labels=None):
    from plyfile import PlyData, PlyElement

    fields = [("x", "f4"), ("y", "f4"), ("z", "f4")]
    if rgb is not None:
        fields += [("red", "u1"), ("green", "u1"), ("blue", "u1"), ("alpha", "u1")]
    if labels is not None:
        fields += [("label", "u2")]
    v = np.empty(len(xyz), dtype=fields)
    v["x"], v["y"], v["z"] = xyz.T
    if rgb is not None:
        v["red"], v["green"], v["blue"] = rgb.T
        v["alpha"] = 255
    if labels is not None:
        v["label"] = labels
    faces = np.empty(1, dtype=[("vertex_indices", "i4", (3,))])
    faces["vertex_indices"][0] = [0, 1, 2]
    PlyData([PlyElement.describe(v, "vertex"), PlyElement.describe(faces, "face")]).write(
        str(path))


def test_scannet_ply_layout(tmp_path):
    rng = np.random.default_rng(0)
    for name, n in [("scene0000_00", 40), ("scene0001_00", 30), ("scene0002_00", 20)]:
        d = tmp_path / "scans" / name
        d.mkdir(parents=True)
        xyz = rng.random((n, 3)).astype(np.float32) * 3
        rgb = rng.integers(0, 256, (n, 3))
        ids = np.array([1, 2, 5, 13, 39, 0, 40] * n)[:n]  # 13 and 40 and 0 are not benchmark
        _write_ply(d / f"{name}_vh_clean_2.ply", xyz, rgb)
        if name != "scene0002_00":
            _write_ply(d / f"{name}_vh_clean_2.labels.ply", xyz, rgb, ids)
    (tmp_path / "scannetv2_train.txt").write_text("scene0000_00\nscene0002_00\n")
    (tmp_path / "scannetv2_val.txt").write_text("scene0001_00\n")
    tr = load_dataset("scannet_ply", tmp_path, "train")
    va = load_dataset("scannet_ply", tmp_path, "val")
    assert [Path(s).name for s in tr.sources] == ["scene0000_00", "scene0002_00"]
    assert [Path(s).name for s in va.sources] == ["scene0001_00"]
    assert tr.class_names == SCANNET_CLASSES
    sem = tr.semantic[0]
    # NYU40 1 wall -> 0, 2 floor -> 1, 5 chair -> 4, 39 otherfurniture -> 19, others -1
    assert sem[:7].tolist() == [0, 1, 4, -1, 19, -1, -1]
    assert (tr.semantic[1] == -1).all()  # no labels file: unlabelled, still readable
    assert tr.colors[0].max() <= 1 and tr.points[0].dtype == np.float32
    with pytest.raises(DataError, match="scannetv2_test"):
        load_dataset("scannet_ply", tmp_path / "scans", "test")


def test_s3dis_layout_and_stray_byte(tmp_path):
    base = tmp_path / "Stanford3dDataset_v1.2_Aligned_Version"
    rng = np.random.default_rng(1)
    for area, room in [("Area_1", "office_1"), ("Area_5", "hallway_6"), ("Area_2", "WC_1")]:
        d = base / area / room / "Annotations"
        d.mkdir(parents=True)
        rows = []
        for cls, n in [("chair_1", 5), ("wall_2", 7), ("clutter_1", 3)]:
            a = np.hstack([rng.random((n, 3)) * 4, rng.integers(0, 256, (n, 3))])
            text = "\n".join(" ".join(f"{v:.3f}" if i < 3 else str(int(v))
                                      for i, v in enumerate(r)) for r in a)
            if room == "hallway_6" and cls == "wall_2":  # the public file's stray byte
                text = text.replace(" ", " \x10", 1)
            (d / f"{cls}.txt").write_text(text + "\n")
            rows.append(text)
        (d.parent / f"{room}.txt").write_text("\n".join(rows) + "\n")
    tr = load_dataset("s3dis", tmp_path, "train")
    te = load_dataset("s3dis", base, "test")
    assert tr.sources == ["Area_1/office_1", "Area_2/WC_1"] and te.sources == ["Area_5/hallway_6"]
    assert tr.class_names == S3DIS_CLASSES
    sem = te.semantic[0]
    assert len(sem) == 15 and len(te.points[0]) == 15
    assert sorted(np.unique(sem).tolist()) == sorted(
        S3DIS_CLASSES.index(c) for c in ("chair", "wall", "clutter"))
    assert te.colors[0].max() <= 1.0
    bad = tmp_path / "bad.txt"
    bad.write_text("1 2 3 4 5\n")
    with pytest.raises(DataError, match="x y z r g b"):
        read_xyzrgb_txt(bad)


def test_real_scannet_scene():
    d = shared_path("scannet_scene0000_00", "points_xyzrgb_float32.bin").parent
    with pytest.warns(Warning):  # no scannetv2_train.txt in the shared folder
        cs = load_dataset("scannet", d.parent, "train")
    cs = cs.subset([i for i, s in enumerate(cs.sources) if "scene0000_00" in s])
    p = cs.points[0]
    assert p.shape == (40684, 3) and np.isfinite(p).all()
    ext = p.max(0) - p.min(0)
    assert 3 < ext[0] < 15 and 2 < ext[2] < 4  # a room in metres, z up
