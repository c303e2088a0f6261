import json

import h5py
import numpy as np
import pytest

from pointssl.data.datasets.shapenetpart import (
    CATEGORIES,
    CATEGORY_PARTS,
    NORMAL_DIR,
    NUM_PARTS,
    SYNSETS,
    category_parts_by_label,
    load_shapenetpart,
)
from pointssl.errors import DataError


def test_standard_part_table():
    assert NUM_PARTS == 50 and len(CATEGORIES) == 16
    assert CATEGORY_PARTS["Airplane"] == [0, 1, 2, 3]
    assert CATEGORY_PARTS["Motorbike"] == list(range(30, 36))
    assert CATEGORY_PARTS["Table"] == [47, 48, 49]
    flat = [p for c in CATEGORIES for p in CATEGORY_PARTS[c]]
    assert flat == list(range(50))
    assert category_parts_by_label(["Mug", "Bag"]) == {0: [36, 37], 1: [4, 5]}


# ----------------------------------------------------------------------------- normal layout


def _write_shape(path, n, parts, rng, offset=0.0):
    xyz = rng.normal(size=(n, 3)) * 3 + offset
    nrm = rng.normal(size=(n, 3))
    part = rng.choice(parts, n)
    rows = [f"{a:.6f} {b:.6f} {c:.6f} {d:.6f} {e:.6f} {f:.6f} {p}"
            for (a, b, c), (d, e, f), p in zip(xyz, nrm, part)]
    path.write_text("\n".join(rows) + "\n")
    return part


def make_normal_layout(root):
    """Airplane and Mug shapes: 2 train, 1 val, 1 test; all 16 categories listed."""
    base = root / NORMAL_DIR
    (base / "train_test_split").mkdir(parents=True)
    (base / "synsetoffset2category.txt").write_text(
        "".join(f"{c}\t{SYNSETS[c]}\n" for c in CATEGORIES))
    rng = np.random.default_rng(0)
    lists = {"train": [], "val": [], "test": []}
    truth = {}
    for cat in ("Airplane", "Mug"):
        syn = SYNSETS[cat]
        (base / syn).mkdir()
        for k, split in enumerate(["train", "train", "val", "test"]):
            sid = f"{cat.lower()}{k:02d}"
            truth[sid] = _write_shape(base / syn / f"{sid}.txt", 20 + k, CATEGORY_PARTS[cat],
                                      rng, offset=5.0)
            lists[split].append(f"shape_data/{syn}/{sid}")
    for split, items in lists.items():
        (base / "train_test_split" / f"shuffled_{split}_file_list.json").write_text(
            json.dumps(items))
    return base, truth


def test_normal_layout_reads_every_split(tmp_path):
    base, truth = make_normal_layout(tmp_path)
    tr = load_shapenetpart(tmp_path, "train")  # finds the layout folder inside root
    assert len(tr) == 4 and tr.class_names == list(CATEGORIES)
    assert tr.labels.tolist() == [0, 0, 11, 11]  # Airplane, Mug in the 16-category order
    assert [len(p) for p in tr.points] == [20, 21, 20, 21]
    assert tr.normals is not None and tr.normals[1].shape == (21, 3)
    np.testing.assert_array_equal(tr.parts[0], truth["airplane00"])
    np.testing.assert_array_equal(tr.parts[3], truth["mug01"])
    assert tr.sources[3].endswith("mug01.txt")
    # Normalised: centred, farthest point on the unit sphere (raw data sits around 5.0).
    assert np.abs(tr.points[0].mean(0)).max() < 1e-5
    assert np.linalg.norm(tr.points[0], axis=1).max() == pytest.approx(1.0, abs=1e-5)
    assert len(load_shapenetpart(base, "val")) == 2
    te = load_shapenetpart(base, "test", num_points=64, seed=1)
    assert [p.shape for p in te.points] == [(64, 3), (64, 3)] and te.parts[0].shape == (64,)
    assert len(load_shapenetpart(base, "trainval")) == 6
    raw = load_shapenetpart(base, "train", normalize=False)
    assert raw.points[0].mean() > 3.0


@pytest.mark.parametrize("bad, problem", [
    ("1 2 3 0 0 1\n", "7 columns"),
    ("1 2 3 0 0 1 0\n1 2 3 0 0 1\n", "7 columns"),
    ("1 2 nan 0 0 1 0\n", "NaN"),
    ("1 2 3 0 0 1 x\n", "non-numeric"),
    ("1 2 3 0 0 1 7\n", "do not belong to Airplane"),
    ("1 2 3 0 0 1 1.5\n", "non-integer"),
    ("", "empty"),
])
def test_normal_layout_bad_shape_file_names_the_file(tmp_path, bad, problem):
    base, _ = make_normal_layout(tmp_path)
    target = base / SYNSETS["Airplane"] / "airplane01.txt"
    target.write_text(bad)
    with pytest.raises(DataError, match=problem) as e:
        load_shapenetpart(base, "train")
    assert e.value.path == str(target)


def test_normal_layout_missing_and_inconsistent_files(tmp_path):
    base, _ = make_normal_layout(tmp_path)
    (base / SYNSETS["Mug"] / "mug03.txt").unlink()
    with pytest.raises(DataError, match="missing") as e:
        load_shapenetpart(base, "test")
    assert e.value.path.endswith("mug03.txt")
    lst = base / "train_test_split" / "shuffled_val_file_list.json"
    lst.write_text(json.dumps(["shape_data/99999999/abc"]))
    with pytest.raises(DataError, match="synset 99999999") as e:
        load_shapenetpart(base, "val")
    assert e.value.path == str(lst)
    lst.write_text("{not json")
    with pytest.raises(DataError, match="JSON") as e:
        load_shapenetpart(base, "val")
    assert e.value.path == str(lst)
    cat = base / "synsetoffset2category.txt"
    cat.write_text("Spaceship\t01234567\n")
    with pytest.raises(DataError, match="not a ShapeNetPart category") as e:
        load_shapenetpart(base, "train")
    assert e.value.path == str(cat)


def test_unknown_folder_and_split(tmp_path):
    with pytest.raises(DataError, match="not a ShapeNetPart folder"):
        load_shapenetpart(tmp_path, "train")
    make_normal_layout(tmp_path)
    with pytest.raises(DataError, match="unknown split"):
        load_shapenetpart(tmp_path, "dev")
    with pytest.raises(DataError, match="hdf5 layout but found the normal"):
        load_shapenetpart(tmp_path, "train", layout="hdf5")


# ----------------------------------------------------------------------------- hdf5 layout


def _h5(path, data, label, pid):
    with h5py.File(path, "w") as f:
        f["data"], f["label"], f["pid"] = data, label, pid


def make_hdf5_layout(root, n_pts=32):
    base = root / "hdf5_data"
    base.mkdir()
    (base / "all_object_categories.txt").write_text(
        "".join(f"{c}\t{SYNSETS[c]}\n" for c in CATEGORIES))
    rng = np.random.default_rng(0)
    files = {"train": ["ply_data_train0.h5", "ply_data_train1.h5"], "val": ["ply_data_val0.h5"],
             "test": ["ply_data_test0.h5"]}
    truth = {}
    for split, names in files.items():
        for name in names:
            label = np.array([[4], [15], [4]], dtype=np.uint8)  # Chair, Table, Chair
            pid = np.stack([rng.choice(CATEGORY_PARTS[CATEGORIES[c]], n_pts)
                            for c in label[:, 0]]).astype(np.uint8)
            data = rng.normal(size=(3, n_pts, 3)).astype(np.float32)
            _h5(base / name, data, label, pid)
            truth[name] = (data, label, pid)
        (base / f"{split}_hdf5_file_list.txt").write_text("\n".join(names) + "\n")
    return base, truth


def test_hdf5_layout_reads_every_split(tmp_path):
    base, truth = make_hdf5_layout(tmp_path)
    tr = load_shapenetpart(tmp_path, "train", normalize=False)
    assert len(tr) == 6 and tr.labels.tolist() == [4, 15, 4] * 2
    assert tr.class_names[4] == "Chair" and tr.normals is None
    np.testing.assert_array_equal(tr.points[4], truth["ply_data_train1.h5"][0][1])
    np.testing.assert_array_equal(tr.parts[4], truth["ply_data_train1.h5"][2][1])
    assert tr.sources[4].endswith("ply_data_train1.h5#1")
    assert len(load_shapenetpart(base, "trainval")) == 9
    te = load_shapenetpart(base, "test", num_points=16)
    assert te.points[0].shape == (16, 3) and te.parts[0].shape == (16,)
    # Sampled rows keep their own part ids.
    full = load_shapenetpart(base, "test", normalize=False)
    sub = load_shapenetpart(base, "test", num_points=16, normalize=False)
    for p, q, fp, fq in zip(sub.points, sub.parts, full.points, full.parts):
        rows = [int(np.flatnonzero((fp == x).all(1))[0]) for x in p]
        np.testing.assert_array_equal(fq[rows], q)


def test_hdf5_layout_without_list_file_globs(tmp_path):
    base, _ = make_hdf5_layout(tmp_path)
    (base / "train_hdf5_file_list.txt").unlink()
    assert len(load_shapenetpart(base, "train")) == 6


def test_hdf5_layout_inconsistent_files(tmp_path):
    base, truth = make_hdf5_layout(tmp_path)
    path = base / "ply_data_val0.h5"
    data, label, pid = truth["ply_data_val0.h5"]
    cases = [
        ((data, label, pid[:, :5]), "'pid' has shape"),
        ((data, np.array([[4], [16], [4]]), pid), "outside the 16 categories"),
        ((data, np.array([[4], [4], [4]]), pid), "shape 1: part ids"),  # Table parts on a Chair
        ((data[..., :2], label, pid), "'data' has shape"),
    ]
    for arrays, problem in cases:
        path.unlink()
        _h5(path, *arrays)
        with pytest.raises(DataError, match=problem) as e:
            load_shapenetpart(base, "val")
        assert e.value.path == str(path)
    path.write_bytes(b"not an hdf5 file")
    with pytest.raises(DataError, match="not a readable HDF5") as e:
        load_shapenetpart(base, "val")
    assert e.value.path == str(path)
    (base / "test_hdf5_file_list.txt").write_text("ply_data_test7.h5\n")
    with pytest.raises(DataError, match="ply_data_test7.h5") as e:
        load_shapenetpart(base, "test")
    assert e.value.path.endswith("test_hdf5_file_list.txt")
