"""The data package: registry, CloudSet fields, lazy scenes, colours and meshes."""

import warnings

import numpy as np
import pytest
import trimesh
from conftest import shared_path
from plyfile import PlyData, PlyElement

from pointssl.data.datasets import DATASETS, CloudSet, LazyField, load_dataset
from pointssl.data.datasets import scannet as scannet_mod
from pointssl.data.formats import DataWarning, read_cloud, read_mesh, read_scannet_bin
from pointssl.data.synthetic import load_synthetic
from pointssl.errors import DataError, PointSSLError

RNG = np.random.default_rng(0)
XYZ = RNG.normal(size=(40, 3)).astype(np.float32)
RGB8 = RNG.integers(0, 256, size=(40, 3)).astype(np.uint8)


def test_registry_names_and_errors(tmp_path):
    assert DATASETS.names() == sorted(["folder", "modelnet10", "modelnet40", "modelnet_normal",
                                       "modelnet_off", "scannet", "shapenetpart", "synthetic",
                                       "synthetic_rooms", "scannet_ply", "s3dis", "pairs"])
    with pytest.raises(PointSSLError, match="unknown dataset 'nope'"):
        load_dataset("nope", tmp_path)
    for name in ("modelnet40", "scannet", "folder"):
        with pytest.raises(PointSSLError, match=f"dataset '{name}' needs a data folder"):
            load_dataset(name)
    with pytest.raises(DataError, match="no such folder"):
        load_dataset("scannet", tmp_path / "missing")


def test_cloudset_item_fields_and_subset():
    n = [5, 6, 7]
    cs = CloudSet(points=[np.zeros((k, 3), np.float32) + i for i, k in enumerate(n)],
                  labels=[2, 0, 1], class_names=["a", "b", "c"],
                  normals=[np.ones((k, 3)) for k in n], parts=[np.arange(k) for k in n],
                  part_names=["p"], colors=[np.full((k, 3), 0.5) for k in n],
                  semantic=[np.arange(k) + 10 for k in n], meshes=[None, "m1", None],
                  errors=[DataError("x.ply", "bad")])
    item = cs[1]
    assert list(item) == ["points", "label", "index", "normals", "parts", "colors", "semantic",
                          "mesh"]
    assert item["label"] == 0 and item["mesh"] == "m1" and item["semantic"][0] == 10
    assert "mesh" not in cs[0]
    sub = cs.subset([2, 1])
    assert sub.labels.tolist() == [1, 0] and sub.sources == ["#2", "#1"]
    for name in ("points", "normals", "parts", "colors", "semantic"):
        assert [len(x) for x in getattr(sub, name)] == [7, 6], name
    assert sub.points[0][0, 0] == 2 and sub.meshes == [None, "m1"]
    assert sub.part_names == ["p"] and str(sub.errors[0]) == "x.ply: bad"
    with pytest.raises(ValueError, match="3 clouds but 2 colors"):
        CloudSet(points=cs.points, labels=[0, 0, 0], colors=cs.colors[:2])


# ---------------------------------------------------------------------- scenes, lazily


def _write_scenes(root, sizes=(30, 50, 20)):
    scenes = []
    for i, n in enumerate(sizes):
        arr = np.hstack([RNG.normal(size=(n, 3)), RNG.integers(0, 256, (n, 3))]).astype("<f4")
        (root / f"scene{i:04d}_00").mkdir(parents=True)
        arr.tofile(root / f"scene{i:04d}_00" / "points.bin")
        scenes.append(arr)
    return scenes


def test_scannet_scenes_are_read_on_access_and_equal_eager(tmp_path, monkeypatch):
    scenes = _write_scenes(tmp_path)
    (tmp_path / "scannetv2_val.txt").write_text("scene0002_00\nscene0000_00\n")
    calls = []
    real = scannet_mod.read_bin
    monkeypatch.setattr(scannet_mod, "read_bin", lambda p: calls.append(p.parent.name) or real(p))
    lazy = load_dataset("scannet", tmp_path, "val")
    assert calls == [] and len(lazy) == 2 and isinstance(lazy.points, LazyField)
    assert lazy.labels.tolist() == [-1, -1] and lazy.sources[1].endswith("scene0002_00/points.bin")
    sub = lazy.subset([1])
    assert calls == [] and len(sub) == 1  # a subset reads nothing either
    item = lazy[1]
    assert calls == ["scene0002_00"]  # points and colours of one item: one read
    np.testing.assert_array_equal(item["points"], scenes[2][:, :3])
    np.testing.assert_allclose(item["colors"], scenes[2][:, 3:] / 255, rtol=1e-6)
    assert item["colors"].dtype == np.float32
    eager = load_dataset("scannet", tmp_path, "val", lazy=False)
    assert len(calls) == 3
    for a, b in ((lazy.points, eager.points), (lazy.colors, eager.colors)):
        for x, y in zip(a, b, strict=True):
            np.testing.assert_array_equal(x, y)
    np.testing.assert_array_equal(sub.points[0], eager.points[1])


def test_scannet_subsampling_does_not_depend_on_access_order(tmp_path):
    _write_scenes(tmp_path)
    with pytest.warns(DataWarning, match="no scannetv2_train.txt; using all 3 scenes"):
        lazy = load_dataset("scannet", tmp_path, "train", num_points=25, seed=4)
        eager = load_dataset("scannet", tmp_path, "train", num_points=25, seed=4, lazy=False)
    for i in (2, 0, 1):  # reverse order: each scene draws from its own stream
        assert lazy.points[i].shape == (25, 3)
        np.testing.assert_array_equal(lazy.points[i], eager.points[i])
        np.testing.assert_array_equal(lazy.colors[i], eager.colors[i])
    # 25 of 30 points without replacement; the 20-point scene is drawn with replacement
    assert len(np.unique(lazy.points[0], axis=0)) == 25
    assert len(np.unique(lazy.points[2], axis=0)) <= 20


def test_bad_scene_is_one_line_naming_the_file(tmp_path):
    (tmp_path / "s.bin").write_bytes(np.zeros(25, np.float32).tobytes())
    with pytest.warns(DataWarning):
        cs = load_dataset("scannet", tmp_path, "train")
    with pytest.raises(DataError, match=r"s\.bin: size 100 bytes is not a multiple of 24"):
        cs[0]


def test_real_scannet_scene():
    root = shared_path("scannet_scene0000_00")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        cs = load_dataset("scannet", root, "train")
    assert len(cs) == 1 and cs.labels.tolist() == [-1]
    item = cs[0]
    assert item["points"].shape == item["colors"].shape == (40684, 3)
    xyz, rgb = read_scannet_bin(root / "points_xyzrgb_float32.bin")
    np.testing.assert_array_equal(item["points"], xyz)
    np.testing.assert_allclose(item["colors"], rgb / 255, rtol=1e-6)
    assert 0 <= item["colors"].min() and item["colors"].max() <= 1 and item["colors"].std() > 0.05


# ---------------------------------------------------------------------- colours


def test_colours_from_every_format_that_has_them(tmp_path):
    want = RGB8 / 255.0
    v = np.zeros(len(XYZ), dtype=[(n, "f4") for n in "xyz"] + [(c, "u1") for c in
                                                              ("red", "green", "blue")])
    for i, n in enumerate("xyz"):
        v[n] = XYZ[:, i]
    for i, c in enumerate(("red", "green", "blue")):
        v[c] = RGB8[:, i]
    PlyData([PlyElement.describe(v, "vertex")]).write(str(tmp_path / "c.ply"))
    packed = (RGB8[:, 0].astype(np.uint32) << 16) | (RGB8[:, 1].astype(np.uint32) << 8) | RGB8[:, 2]
    head = ("VERSION .7\nFIELDS x y z rgb\nSIZE 4 4 4 4\nTYPE F F F {t}\nCOUNT 1 1 1 1\n"
            f"WIDTH {len(XYZ)}\nHEIGHT 1\nPOINTS {len(XYZ)}\nDATA {{mode}}\n")
    rec = np.zeros(len(XYZ), dtype=[("xyz", "<f4", (3,)), ("rgb", "<u4")])
    rec["xyz"], rec["rgb"] = XYZ, packed
    (tmp_path / "b.pcd").write_bytes(head.format(t="F", mode="binary").encode() + rec.tobytes())
    (tmp_path / "u.pcd").write_bytes(head.format(t="U", mode="binary").encode() + rec.tobytes())
    as_float = packed.view("<f4")
    rows = "".join(f"{a:.9g} {b:.9g} {c:.9g} {f:.9g}\n" for (a, b, c), f in zip(XYZ, as_float))
    (tmp_path / "a.pcd").write_text(head.format(t="F", mode="ascii") + rows)
    np.savetxt(tmp_path / "c.txt", np.hstack([XYZ, RGB8]), fmt="%.9g")
    # 0-255 columns: 0-1 colours of about unit length would pass for normals (today's rule)
    np.save(tmp_path / "c.npy", np.hstack([XYZ, RGB8]).astype(np.float32))
    np.savez(tmp_path / "c.npz", points=XYZ, colors=RGB8)
    np.hstack([XYZ, RGB8]).astype("<f4").tofile(tmp_path / "c.bin")
    for name in ("c.ply", "b.pcd", "u.pcd", "a.pcd", "c.txt", "c.npy", "c.npz", "c.bin"):
        c = read_cloud(tmp_path / name)
        np.testing.assert_allclose(c.points, XYZ, rtol=1e-6, err_msg=name)
        assert c.normals is None and c.colors.dtype == np.float32, name
        np.testing.assert_allclose(c.colors, want, atol=1e-6, err_msg=name)
    # unit vectors in columns 3:6 stay normals; other numbers are neither
    nrm = XYZ / np.linalg.norm(XYZ, axis=1, keepdims=True)
    np.save(tmp_path / "n.npy", np.hstack([XYZ, nrm]))
    np.save(tmp_path / "x.npy", np.hstack([XYZ, XYZ * 1000]))
    n, x = read_cloud(tmp_path / "n.npy"), read_cloud(tmp_path / "x.npy")
    assert n.colors is None and np.allclose(n.normals, nrm, atol=1e-6)
    assert x.colors is None and x.normals is None


# ---------------------------------------------------------------------- meshes


def _box(tmp_path, ext):
    m = trimesh.creation.box(extents=(1, 2, 3))
    m.export(tmp_path / f"box{ext}")
    return m


@pytest.mark.parametrize("ext", [".off", ".obj", ".ply"])
def test_mesh_is_kept_with_its_samples(tmp_path, ext):
    m = _box(tmp_path, ext)
    verts, faces = read_mesh(tmp_path / f"box{ext}")
    assert faces.shape == (12, 3) and faces.dtype == np.int64
    np.testing.assert_allclose(trimesh.Trimesh(verts, faces).area, m.area)
    c = read_cloud(tmp_path / f"box{ext}", num_points=100)
    np.testing.assert_array_equal(c.mesh[1], faces)
    assert c.points.shape == (100, 3)


def test_read_mesh_errors_name_the_file(tmp_path):
    np.save(tmp_path / "a.npy", XYZ)
    with pytest.raises(DataError, match=r"a\.npy: not a mesh file"):
        read_mesh(tmp_path / "a.npy")
    with pytest.raises(DataError, match=r"gone\.off: no such file"):
        read_mesh(tmp_path / "gone.off")


def test_mesh_datasets_carry_a_mesh_handle(tmp_path):
    for cls in ("a", "b"):
        (tmp_path / cls / "train").mkdir(parents=True)
        _box(tmp_path / cls / "train", ".off")
    np.save(tmp_path / "a" / "train" / "pts.npy", XYZ)
    off = load_dataset("modelnet_off", tmp_path, "train", 64, cache_dir=None)
    v, f = off[1]["mesh"].read()
    np.testing.assert_array_equal(f, read_mesh(tmp_path / "b" / "train" / "box.off")[1])
    assert off.subset([1]).meshes[0] == off.meshes[1]
    fold = load_dataset("folder", tmp_path, "train", 64)  # a <class>/train/ tree
    kinds = {s.rsplit(".", 1)[1]: ("mesh" in fold[i]) for i, s in enumerate(fold.sources)}
    assert kinds == {"off": True, "npy": False}


def test_synthetic_mesh_lies_under_its_cloud():
    cs = load_synthetic("val", num_points=128, shapes_per_class=1, categories=["mug", "table"],
                        cache_dir=False, scan=False)
    for i in range(len(cs)):
        verts, faces = cs[i]["mesh"].read()
        _, dist, _ = trimesh.Trimesh(verts, faces, process=False).nearest.on_surface(cs.points[i])
        assert dist.max() < 1e-5
