"""Readers, validation, dataset layouts and ``check_root`` (pointssl/data/formats/ and
pointssl/data/datasets/)."""

import json
import os
import struct
import warnings

import h5py
import numpy as np
import pytest
import trimesh
from conftest import shared_path
from plyfile import PlyData, PlyElement

from pointssl.data.datasets import load_dataset
from pointssl.data.datasets.folder import load_folder
from pointssl.data.datasets.modelnet import (
    load_modelnet_h5,
    load_modelnet_normal_resampled,
    load_modelnet_off,
)
from pointssl.data.formats import DataWarning, check_root, lzf_decompress, read_h5, read_scannet_bin
from pointssl.data.formats import read_cloud as read_cloud_full
from pointssl.errors import DataError, PointSSLError

RNG = np.random.default_rng(0)
XYZ = RNG.normal(size=(50, 3)).astype(np.float32)
NRM = RNG.normal(size=(50, 3)).astype(np.float32)
NRM /= np.linalg.norm(NRM, axis=1, keepdims=True)


def read_cloud(path, *args, **kwargs):
    """(points, normals) of ``formats.read_cloud``'s Cloud."""
    c = read_cloud_full(path, *args, **kwargs)
    return c.points, c.normals


# ---------------------------------------------------------------------- writers


def write_ply(path, xyz, normals=None, text=False, faces=None):
    names = ["x", "y", "z"] + (["nx", "ny", "nz"] if normals is not None else [])
    cols = [xyz] if normals is None else [xyz, normals]
    v = np.zeros(len(xyz), dtype=[(n, "f4") for n in names])
    for i, n in enumerate(names):
        v[n] = np.concatenate(cols, axis=1)[:, i]
    elements = [PlyElement.describe(v, "vertex")]
    if faces is not None:
        f = np.zeros(len(faces), dtype=[("vertex_indices", "i4", (3,))])
        f["vertex_indices"] = faces
        elements.append(PlyElement.describe(f, "face"))
    PlyData(elements, text=text).write(str(path))


def lzf_literals(raw: bytes) -> bytes:
    """Valid LZF made only of literal runs (what a trivial compressor would emit)."""
    out = bytearray()
    for i in range(0, len(raw), 32):
        chunk = raw[i : i + 32]
        out.append(len(chunk) - 1)
        out += chunk
    return bytes(out)


def write_pcd(path, xyz, normals=None, mode="ascii", points=None):
    cols = xyz if normals is None else np.concatenate([xyz, normals], axis=1)
    fields = "x y z" + ("" if normals is None else " normal_x normal_y normal_z")
    k, n = cols.shape[1], len(cols)
    header = (
        f"# .PCD v0.7 - Point Cloud Data file format\nVERSION 0.7\nFIELDS {fields}\n"
        f"SIZE {' '.join(['4'] * k)}\nTYPE {' '.join(['F'] * k)}\nCOUNT {' '.join(['1'] * k)}\n"
        f"WIDTH {points or n}\nHEIGHT 1\nVIEWPOINT 0 0 0 1 0 0 0\nPOINTS {points or n}\n"
        f"DATA {mode}\n"
    ).encode()
    if mode == "ascii":
        body = "".join(" ".join(f"{v:.9g}" for v in row) + "\n" for row in cols).encode()
    elif mode == "binary":
        body = cols.astype("<f4").tobytes()
    else:  # binary_compressed stores fields column-major
        raw = np.ascontiguousarray(cols.astype("<f4").T).tobytes()
        comp = lzf_literals(raw)
        body = struct.pack("<II", len(comp), len(raw)) + comp
    path.write_bytes(header + body)


def box_mesh(scale=1.0, offset=(0.0, 0.0, 0.0)):
    m = trimesh.creation.box(extents=(1, 1, 1))
    m.apply_scale(scale)
    m.apply_translation(offset)
    return m


def assert_on_unit_box(points, normals):
    """Samples of the 1x1x1 box: on a face, with that face's outward axis normal."""
    a = np.abs(points)
    assert np.allclose(a.max(axis=1), 0.5, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(normals, axis=1), 1.0, atol=1e-5)
    axis = a.argmax(axis=1)
    expected = np.zeros_like(normals)
    expected[np.arange(len(points)), axis] = np.sign(points[np.arange(len(points)), axis])
    np.testing.assert_allclose(normals, expected, atol=1e-5)


# ---------------------------------------------------------------------- round trips


@pytest.mark.parametrize("text", [False, True])
def test_ply_round_trip_with_normals(tmp_path, text):
    p = tmp_path / "a.ply"
    write_ply(p, XYZ, NRM, text=text)
    pts, nrm = read_cloud(p)
    np.testing.assert_allclose(pts, XYZ, rtol=1e-6)
    np.testing.assert_allclose(nrm, NRM, rtol=1e-6)
    assert pts.dtype == np.float32


def test_ply_without_normals(tmp_path):
    write_ply(tmp_path / "a.ply", XYZ)
    pts, nrm = read_cloud(tmp_path / "a.ply")
    np.testing.assert_array_equal(pts, XYZ)
    assert nrm is None


@pytest.mark.parametrize("mode", ["ascii", "binary", "binary_compressed"])
def test_pcd_round_trip(tmp_path, mode):
    p = tmp_path / f"{mode}.pcd"
    write_pcd(p, XYZ, NRM, mode=mode)
    pts, nrm = read_cloud(p)
    np.testing.assert_allclose(pts, XYZ, rtol=1e-6)
    np.testing.assert_allclose(nrm, NRM, rtol=1e-6)


def test_pcd_binary_mixed_field_types(tmp_path):
    # PCL writes e.g. a 1-byte intensity between float fields: the record layout must follow
    n = len(XYZ)
    rec = np.zeros(
        n, dtype=[("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("i", "u1"), ("pad", "u1", (3,))]
    )
    rec["x"], rec["y"], rec["z"], rec["i"] = XYZ[:, 0], XYZ[:, 1], XYZ[:, 2], 7
    header = (
        f"VERSION .7\nFIELDS x y z intensity _\nSIZE 4 4 4 1 1\nTYPE F F F U U\n"
        f"COUNT 1 1 1 1 3\nWIDTH {n}\nHEIGHT 1\nPOINTS {n}\nDATA binary\n"
    ).encode()
    (tmp_path / "m.pcd").write_bytes(header + rec.tobytes())
    pts, nrm = read_cloud(tmp_path / "m.pcd")
    np.testing.assert_array_equal(pts, XYZ)
    assert nrm is None


def test_lzf_back_reference_overlapping():
    # literal "abc", then a back reference of length 6 at distance 3 -> "abcabcabc"
    assert lzf_decompress(bytes([2]) + b"abc" + bytes([4 << 5, 2]), 9) == b"abcabcabc"
    with pytest.raises(ValueError, match="out of range"):
        lzf_decompress(bytes([4 << 5, 9]), 6)


def test_text_formats(tmp_path):
    np.savetxt(tmp_path / "a.xyz", XYZ, fmt="%.9g")
    np.savetxt(tmp_path / "b.txt", np.hstack([XYZ, NRM]), fmt="%.9g", delimiter=",")
    pts, nrm = read_cloud(tmp_path / "a.xyz")
    np.testing.assert_allclose(pts, XYZ, rtol=1e-6)
    assert nrm is None
    pts, nrm = read_cloud(tmp_path / "b.txt")
    np.testing.assert_allclose(pts, XYZ, rtol=1e-6)
    np.testing.assert_allclose(nrm, NRM, rtol=1e-6)


def test_xyzrgb_columns_are_not_taken_as_normals(tmp_path):
    rgb = RNG.integers(0, 256, size=(len(XYZ), 3))
    np.savetxt(tmp_path / "c.xyz", np.hstack([XYZ, rgb]), fmt="%.9g")
    pts, nrm = read_cloud(tmp_path / "c.xyz")
    np.testing.assert_allclose(pts, XYZ, rtol=1e-6)
    assert nrm is None


def test_numpy_formats(tmp_path):
    np.save(tmp_path / "a.npy", XYZ)
    np.save(tmp_path / "b.npy", np.hstack([XYZ, NRM]))
    np.savez(tmp_path / "c.npz", points=XYZ, normals=NRM, labels=np.arange(3))
    np.savez(tmp_path / "d.npz", xyz=XYZ.astype(np.float64))
    np.savez(tmp_path / "e.npz", XYZ)  # a single unnamed array
    for name, normals in [
        ("a.npy", None),
        ("b.npy", NRM),
        ("c.npz", NRM),
        ("d.npz", None),
        ("e.npz", None),
    ]:
        pts, nrm = read_cloud(tmp_path / name)
        np.testing.assert_array_equal(pts, XYZ)
        if normals is None:
            assert nrm is None, name
        else:
            np.testing.assert_array_equal(nrm, normals)


@pytest.mark.parametrize("ext", [".off", ".obj", ".ply"])
def test_mesh_sampling_lies_on_surface(tmp_path, ext):
    m = box_mesh()
    p = tmp_path / f"box{ext}"
    if ext == ".ply":
        write_ply(p, m.vertices.astype(np.float32), faces=m.faces)
    else:
        m.export(p)
    pts, nrm = read_cloud(p, num_points=500, seed=3)
    assert pts.shape == (500, 3) and nrm.shape == (500, 3)
    assert_on_unit_box(pts, nrm)
    again, _ = read_cloud(p, num_points=500, seed=3)
    other, _ = read_cloud(p, num_points=500, seed=4)
    np.testing.assert_array_equal(pts, again)
    assert not np.allclose(pts, other)


def test_off_fused_header_and_polygons(tmp_path):
    quad = "0 0 0\n1 0 0\n1 1 0\n0 1 0\n4 0 1 2 3\n"
    (tmp_path / "plain.off").write_text("OFF\n4 1 0\n" + quad)
    (tmp_path / "fused.off").write_text("OFF4 1 0\n# a comment\n" + quad)
    a, na = read_cloud(tmp_path / "plain.off", num_points=400, seed=1)
    b, _ = read_cloud(tmp_path / "fused.off", num_points=400, seed=1)
    np.testing.assert_array_equal(a, b)
    assert np.allclose(a[:, 2], 0) and a[:, :2].min() >= 0 and a[:, :2].max() <= 1
    # both fan triangles of the quad are sampled, in proportion to their (equal) areas
    frac = (a[:, 0] > a[:, 1]).mean()
    assert 0.4 < frac < 0.6
    np.testing.assert_allclose(np.abs(na[:, 2]), 1.0)


def test_obj_without_faces_is_a_point_cloud(tmp_path):
    (tmp_path / "v.obj").write_text("".join(f"v {x} {y} {z}\n" for x, y, z in XYZ))
    pts, nrm = read_cloud(tmp_path / "v.obj")
    np.testing.assert_allclose(pts, XYZ, rtol=1e-6)
    assert nrm is None


def test_scannet_bin_round_trip(tmp_path):
    arr = RNG.random((20, 6)).astype(np.float32)
    arr.tofile(tmp_path / "s.bin")
    xyz, rgb = read_scannet_bin(tmp_path / "s.bin")
    np.testing.assert_array_equal(xyz, arr[:, :3])
    np.testing.assert_array_equal(rgb, arr[:, 3:])


# ---------------------------------------------------------------------- broken files


def _truncate(path, keep):
    b = path.read_bytes()
    path.write_bytes(b[: keep if keep > 0 else len(b) + keep])


def make_broken(d):
    """Write one broken file per case; returns {file name: expected problem word}."""
    d.mkdir(parents=True, exist_ok=True)
    write_ply(d / "trunc.ply", XYZ)
    _truncate(d / "trunc.ply", -40)
    bad = XYZ.copy()
    bad[3, 1] = np.nan
    np.save(d / "nan.npy", bad)
    bad = XYZ.copy()
    bad[0, 0] = np.inf
    np.savez(d / "inf.npz", points=bad)
    (d / "empty.xyz").write_text("")
    np.save(d / "flat.npy", XYZ[:, :2])
    np.save(d / "cube.npy", np.zeros((2, 4, 3), np.float32))
    (d / "notes.foo").write_text("hello")
    box_mesh().export(d / "trunc.off")
    _truncate(d / "trunc.off", -60)
    write_pcd(d / "count.pcd", XYZ, points=len(XYZ) + 5)
    write_pcd(d / "short.pcd", XYZ, mode="binary")
    _truncate(d / "short.pcd", -7)
    (d / "ragged.txt").write_text("1 2 3\n4 5\n")
    (d / "badindex.off").write_text("OFF\n3 1 0\n0 0 0\n1 0 0\n0 1 0\n3 0 1 7\n")
    np.savez(d / "trunc.npz", points=XYZ)
    _truncate(d / "trunc.npz", 100)
    (d / "odd.bin").write_bytes(np.zeros(25, np.float32).tobytes())
    (d / "nolabel.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 20)
    return {
        "trunc.ply": "truncated",
        "nan.npy": "NaN",
        "inf.npz": "Inf",
        "empty.xyz": "empty",
        "flat.npy": "shape",
        "cube.npy": "shape",
        "notes.foo": "unknown extension",
        "trunc.off": "truncated",
        "count.pcd": "POINTS",
        "short.pcd": "POINTS",
        "ragged.txt": "malformed",
        "badindex.off": "out of range",
        "trunc.npz": "corrupt",
        "odd.bin": "multiple of 24",
        "nolabel.h5": "corrupt",
    }


def test_each_broken_file_gives_one_line_error(tmp_path):
    cases = make_broken(tmp_path)
    for name, word in cases.items():
        p = tmp_path / name
        reader = {".bin": read_scannet_bin, ".h5": read_h5}.get(p.suffix, read_cloud)
        with pytest.raises(DataError) as exc:
            reader(p)
        msg = str(exc.value)
        assert name in msg and word in msg, msg
        assert "\n" not in msg and exc.value.path == str(p)


def test_min_points_missing_file_and_folder(tmp_path):
    np.save(tmp_path / "few.npy", XYZ[:5])
    with pytest.raises(DataError, match=r"few\.npy: only 5 points, fewer than min_points=10"):
        read_cloud(tmp_path / "few.npy", min_points=10)
    with pytest.raises(DataError, match=r"gone\.ply: no such file"):
        read_cloud(tmp_path / "gone.ply")
    for fn in (load_folder, load_modelnet_off, load_modelnet_h5):
        with pytest.raises(DataError, match=r"nowhere: no such folder"):
            fn(tmp_path / "nowhere")
    with pytest.raises(DataError, match="nowhere: no such file or folder"):
        check_root(tmp_path / "nowhere")


def test_folder_scan_reports_all_bad_files_and_loads_good_ones(tmp_path):
    root = tmp_path / "data"
    cases = make_broken(root / "chair")
    np.save(root / "chair" / "good.npy", XYZ * 10 + 3)
    (root / "table").mkdir()
    write_pcd(root / "table" / "good.pcd", XYZ, NRM, mode="binary")
    (root / "table" / "list.txt").write_text("chair_0001\nchair_0002\n")  # a name list
    (root / "README.md").write_text("about")
    (root / ".hidden.foo").write_text("x")

    checked, errors = check_root(root)
    assert sorted(os.path.basename(e.path) for e in errors) == sorted(cases)
    assert checked == len(cases) + 2

    with pytest.warns(DataWarning) as record:
        cs = load_folder(root, min_points=1)
    assert len(cs) == 2 and cs.class_names == ["chair", "table"]
    assert list(cs.labels) == [0, 1]
    np.testing.assert_allclose(np.linalg.norm(cs.points[0], axis=1).max(), 1.0, rtol=1e-6)
    np.testing.assert_allclose(cs.points[0].mean(axis=0), 0.0, atol=1e-6)
    # .bin/.h5/.foo are not folder-dataset formats: ignored (one summary line), not errors
    folder_bad = {n for n in cases if n.rsplit(".", 1)[1] in "ply npy npz xyz off pcd txt"}
    assert sorted(os.path.basename(e.path) for e in cs.errors) == sorted(folder_bad)
    lines = [str(w.message) for w in record]
    assert sum("ignored 3 files" in ln for ln in lines) == 1
    assert all(any(str(e) == ln for ln in lines) for e in cs.errors)


def test_folder_unlabeled_and_none_readable(tmp_path):
    np.save(tmp_path / "a.npy", XYZ)
    write_ply(tmp_path / "b.ply", XYZ, NRM)
    cs = load_folder(tmp_path, normalize=False)
    assert list(cs.labels) == [-1, -1] and cs.class_names == [] and cs.errors == []
    np.testing.assert_array_equal(cs.points[1], XYZ)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "e.xyz").write_text("")
    with pytest.warns(DataWarning), pytest.raises(DataError, match="none of the 1 files"):
        load_folder(bad)


def test_check_root_skips_side_files(tmp_path):
    for name, text in [
        ("train_files.txt", "data/x/ply_data_train0.h5\n"),
        ("shape_names.txt", "airplane\nbathtub\n"),
        ("filelist.txt", "a/a_1.txt\n"),
        ("modelnet40_train.txt", "airplane_0001\n"),
        ("mine.txt", "chair_0001\n"),
        ("x_id2file.json", "[]"),
        ("README", "hi"),
    ]:
        (tmp_path / name).write_text(text)
    np.savetxt(tmp_path / "cloud.txt", XYZ)
    assert check_root(tmp_path) == (1, [])
    assert check_root(tmp_path / "cloud.txt") == (1, [])


# ---------------------------------------------------------------------- layouts


def make_h5_layout(root, n=6, p=16, normals=False, label_max=2):
    root.mkdir()
    data = RNG.normal(size=(n, p, 3)).astype(np.float32)
    label = (np.arange(n) % (label_max + 1)).astype(np.uint8)[:, None]
    with h5py.File(root / "ply_data_train0.h5", "w") as f:
        f["data"], f["label"] = data, label
        if normals:
            f["normal"] = data / np.linalg.norm(data, axis=2, keepdims=True)
    (root / "train_files.txt").write_text("data/modelnet40_ply_hdf5_2048/ply_data_train0.h5\n")
    (root / "shape_names.txt").write_text("a\nb\nc\n")
    (root / "ply_data_train_0_id2file.json").write_text(json.dumps([f"s{i}" for i in range(n)]))
    return data, label[:, 0]


def test_modelnet_h5_layout(tmp_path):
    data, label = make_h5_layout(tmp_path / "h5", normals=True)
    cs = load_modelnet_h5(tmp_path / "h5", "train")
    assert len(cs) == 6 and cs.class_names == ["a", "b", "c"]
    np.testing.assert_array_equal(np.stack(cs.points), data)
    np.testing.assert_array_equal(cs.labels, label)
    assert cs.sources == [f"s{i}" for i in range(6)] and cs.normals[0].shape == (16, 3)
    cs = load_modelnet_h5(tmp_path / "h5", "train", num_points=8)
    np.testing.assert_array_equal(cs.points[2], data[2, :8])
    with pytest.raises(DataError, match="ply_data_train0.h5: has 16 points per shape"):
        load_modelnet_h5(tmp_path / "h5", "train", num_points=32)
    with pytest.raises(DataError, match="test_files.txt: no such file"):
        load_modelnet_h5(tmp_path / "h5", "test")


def test_modelnet_h5_label_outside_class_list(tmp_path):
    make_h5_layout(tmp_path / "h5", label_max=3)
    with pytest.raises(DataError, match="label 3 outside the 3 classes"):
        load_modelnet_h5(tmp_path / "h5", "train")


def make_off_layout(root):
    for cls, scale in [("chair", 40.0), ("table", 7.0)]:
        for split in ("train", "test"):
            d = root / cls / split
            d.mkdir(parents=True)
            box_mesh(scale, (100, -5, 3)).export(d / f"{cls}_0001.off")
    # ModelNet's fused first line
    f = root / "table" / "train" / "table_0001.off"
    f.write_text(f.read_text().replace("OFF\n", "OFF", 1))


def test_modelnet_off_layout_and_cache(tmp_path, monkeypatch):
    make_off_layout(tmp_path / "mn")
    cache = tmp_path / "cache"
    cs = load_modelnet_off(tmp_path / "mn", "train", num_points=256, cache_dir=cache)
    assert cs.class_names == ["chair", "table"] and list(cs.labels) == [0, 1]
    for pts, nrm in zip(cs.points, cs.normals, strict=True):
        assert pts.shape == (256, 3)
        np.testing.assert_allclose(np.linalg.norm(pts, axis=1).max(), 1.0, rtol=1e-5)
        np.testing.assert_allclose(np.linalg.norm(nrm, axis=1), 1.0, rtol=1e-5)
    entries = sorted(cache.rglob("*"))
    assert len(entries) == 2 and all(e.suffix == ".npz" for e in entries)

    def fail(*a, **k):
        raise AssertionError("mesh re-sampled despite cache")

    from pointssl.data.formats import cache as mesh_cache

    monkeypatch.setattr(mesh_cache, "read_cloud", fail)
    again = load_modelnet_off(tmp_path / "mn", "train", num_points=256, cache_dir=cache)
    np.testing.assert_array_equal(again.points[1], cs.points[1])
    monkeypatch.undo()
    # a changed file (new mtime) gets a new cache entry
    f = tmp_path / "mn" / "chair" / "train" / "chair_0001.off"
    os.utime(f, ns=(f.stat().st_atime_ns, f.stat().st_mtime_ns + 10**9))
    load_modelnet_off(tmp_path / "mn", "train", num_points=256, cache_dir=cache)
    assert len(list(cache.rglob("*.npz"))) == 3
    test = load_modelnet_off(tmp_path / "mn", "test", num_points=64, cache_dir=None)
    assert len(test) == 2 and test.points[0].shape == (64, 3)


def make_normal_layout(root, lists=True):
    names = {"airplane": ["airplane_0001", "airplane_0002"], "night_stand": ["night_stand_0001"]}
    for cls, files in names.items():
        (root / cls).mkdir(parents=True)
        for f in files:
            np.savetxt(root / cls / f"{f}.txt", np.hstack([XYZ, NRM]), fmt="%.6f", delimiter=",")
    if lists:
        (root / "modelnet40_shape_names.txt").write_text("airplane\nbathtub\nnight_stand\n")
        (root / "modelnet40_train.txt").write_text("airplane_0002\nnight_stand_0001\n")
        (root / "modelnet40_test.txt").write_text("airplane_0001\n")
        (root / "filelist.txt").write_text("airplane/airplane_0001.txt\n")


def test_modelnet_normal_resampled_layout(tmp_path):
    make_normal_layout(tmp_path / "nr")
    cs = load_modelnet_normal_resampled(tmp_path / "nr", "train", num_points=20)
    assert cs.class_names == ["airplane", "bathtub", "night_stand"]
    assert list(cs.labels) == [0, 2] and cs.sources[1].endswith("night_stand_0001.txt")
    np.testing.assert_allclose(cs.points[0], XYZ[:20], atol=1e-6)
    np.testing.assert_allclose(cs.normals[0], NRM[:20], atol=1e-6)
    assert len(load_modelnet_normal_resampled(tmp_path / "nr", "test")) == 1
    with pytest.raises(DataError, match="only 50 points, fewer than min_points=60"):
        load_modelnet_normal_resampled(tmp_path / "nr", "train", num_points=60)


def test_modelnet_normal_resampled_without_lists_warns(tmp_path):
    make_normal_layout(tmp_path / "nr", lists=False)
    with pytest.warns(DataWarning, match=r"using all 3 files .* \(no official split\)"):
        cs = load_modelnet_normal_resampled(tmp_path / "nr", "train")
    assert cs.class_names == ["airplane", "night_stand"] and list(cs.labels) == [0, 0, 1]


def test_load_dataset_dispatch(tmp_path, monkeypatch):
    make_h5_layout(tmp_path / "h5")
    make_off_layout(tmp_path / "off")
    make_normal_layout(tmp_path / "nr")
    assert load_dataset("modelnet40", tmp_path / "h5", "train").sources[0] == "s0"
    off = load_dataset("modelnet10", tmp_path / "off", "test", 32, cache_dir=None)
    assert off.points[0].shape == (32, 3) and off.class_names == ["chair", "table"]
    assert list(load_dataset("modelnet40", tmp_path / "nr", "train").labels) == [0, 2]
    (tmp_path / "f" / "train" / "cat").mkdir(parents=True)
    np.save(tmp_path / "f" / "train" / "cat" / "a.npy", XYZ)
    assert load_dataset("folder", tmp_path / "f", "train").class_names == ["cat"]
    with pytest.raises(PointSSLError, match="unknown dataset 'shapenet'.*modelnet40"):
        load_dataset("shapenet", tmp_path)
    # f is a {train}/<class>/ tree without a test split: said so, no fallback to train
    with pytest.raises(DataError, match=r"f: no 'test' split here \(this split/class layout "
                                        r"holds: train\)"):
        load_dataset("modelnet40", tmp_path / "f", "test")
    with pytest.raises(DataError, match="no ModelNet layout found"):
        load_dataset("modelnet40", tmp_path / "f" / "train", "test")

    from pointssl.data import synthetic
    from pointssl.data.datasets import CloudSet

    seen = {}

    def fake(split, **kw):
        seen.update(kw, s=split)
        return CloudSet(points=[XYZ], labels=[0])

    monkeypatch.setattr(synthetic, "load_synthetic", fake)
    # the generator builds shapes resting on z = 0: the dataset says so
    assert load_dataset("synthetic", tmp_path / "c", "test", 512, seed=3).up_axis == "z"
    assert seen == {"s": "test", "num_points": 512, "seed": 3, "cache_dir": tmp_path / "c"}


# ---------------------------------------------------------------------- real data


def test_real_modelnet40_h5():
    root = shared_path("modelnet40_1024")
    train = load_modelnet_h5(root, "train")
    test = load_modelnet_h5(root, "test")
    assert (len(train), len(test)) == (9843, 2468)
    assert len(train.class_names) == 40 and train.class_names[:2] == ["airplane", "bathtub"]
    assert train.points[0].shape == (1024, 3) and train.points[0].dtype == np.float32
    assert set(np.unique(train.labels)) == set(range(40)) == set(np.unique(test.labels))
    assert train.sources[0] == "airplane/airplane_0001.ply"
    assert train.class_names[train.labels[-1]] in train.sources[-1]
    assert np.linalg.norm(test.points[5], axis=1).max() <= 1.0 + 1e-4


def test_real_modelnet10_off_sample():
    root = shared_path("modelnet10_off_sample")
    cs = load_modelnet_off(root, "train", num_points=512, cache_dir=None)
    assert len(cs) == 5 and cs.class_names == ["bathtub"]
    for pts, nrm in zip(cs.points, cs.normals, strict=True):
        np.testing.assert_allclose(np.linalg.norm(pts, axis=1).max(), 1.0, rtol=1e-5)
        np.testing.assert_allclose(pts.mean(axis=0), 0.0, atol=1e-5)
        np.testing.assert_allclose(np.linalg.norm(nrm, axis=1), 1.0, rtol=1e-4)


def test_real_modelnet40_normal_resampled_sample():
    root = shared_path("modelnet40_normal_resampled_sample")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        cs = load_modelnet_normal_resampled(root, "train")
    assert len(cs) == 6 and cs.class_names == ["airplane", "bathtub"]
    assert cs.points[0].shape == (10000, 3)
    np.testing.assert_allclose(np.linalg.norm(cs.normals[0], axis=1), 1.0, atol=2e-3)


def test_real_scannet_bin():
    path = shared_path("scannet_scene0000_00", "points_xyzrgb_float32.bin")
    xyz, rgb = read_scannet_bin(path)
    assert xyz.shape == rgb.shape == (40684, 3)
    assert 0 <= rgb.min() and rgb.max() <= 255


def test_real_data_checks_clean():
    for name in ("modelnet40_1024", "modelnet10_off_sample", "modelnet40_normal_resampled_sample"):
        checked, errors = check_root(shared_path(name))
        assert errors == [] and checked > 0, errors
