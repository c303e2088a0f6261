"""Splits that cannot leak: layouts with train/test folders for every file type, class
indices from names, the leak check every protocol runs, and the seeded hold-out."""

import json
import os
import shutil
import warnings

import h5py
import numpy as np
import pytest
from conftest import shared_path

from pointssl.data.datasets import CloudSet, load_dataset
from pointssl.data.datasets.folder import folder_splits, split_layout
from pointssl.data.datasets.modelnet import MODELNET10
from pointssl.data.formats import DataWarning
from pointssl.errors import DataError, PointSSLError
from pointssl.evaluate.splits import check_disjoint, holdout_split

EXTS = (".npy", ".pcd", ".ply", ".off", ".obj", ".xyz", ".txt", ".npz")
TETRA = [[0, 1, 2], [0, 1, 3], [0, 2, 3], [1, 2, 3]]


def write_cloud(path, rng):
    """A small cloud (or, for .off/.obj, a tetrahedron mesh) with distinct random points."""
    p = rng.normal(size=(4 if path.suffix in (".off", ".obj") else 32, 3)).astype(np.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    ext = path.suffix
    if ext == ".npy":
        np.save(path, p)
    elif ext == ".npz":
        np.savez(path, points=p)
    elif ext in (".xyz", ".txt"):
        np.savetxt(path, p)
    elif ext == ".pcd":  # binary, as the ModelNet10 tree
        head = ("# .PCD v0.7\nVERSION 0.7\nFIELDS x y z\nSIZE 4 4 4\nTYPE F F F\nCOUNT 1 1 1\n"
                f"WIDTH {len(p)}\nHEIGHT 1\nVIEWPOINT 0 0 0 1 0 0 0\nPOINTS {len(p)}\n"
                "DATA binary\n")
        path.write_bytes(head.encode() + p.astype("<f4").tobytes())
    elif ext == ".ply":
        head = (f"ply\nformat ascii 1.0\nelement vertex {len(p)}\nproperty float x\n"
                "property float y\nproperty float z\nend_header\n")
        path.write_text(head + "\n".join(" ".join(map(str, r)) for r in p) + "\n")
    elif ext == ".off":
        path.write_text("OFF\n4 4 0\n" + "\n".join(" ".join(map(str, r)) for r in p) + "\n"
                        + "\n".join("3 " + " ".join(map(str, f)) for f in TETRA) + "\n")
    elif ext == ".obj":
        path.write_text("\n".join("v " + " ".join(map(str, r)) for r in p) + "\n"
                        + "\n".join("f " + " ".join(str(i + 1) for i in f) for f in TETRA)
                        + "\n")


# train: 8 chairs (one per file type), 2 lamps, 3 tables; test: 2 chairs, 1 table, no lamp
COUNTS = {"train": {"chair": 8, "lamp": 2, "table": 3}, "test": {"chair": 2, "table": 1}}


def make_tree(root, layout, counts=COUNTS, seed=0):
    rng = np.random.default_rng(seed)
    for split, per_class in counts.items():
        for cls, n in per_class.items():
            d = root / split / cls if layout == "split/class" else root / cls / split
            for i in range(n):
                write_cloud(d / f"{cls}_{split}_{i}{EXTS[i % len(EXTS)]}", rng)
    return root


@pytest.mark.parametrize("layout", ["split/class", "class/split"])
@pytest.mark.parametrize("name", ["folder", "modelnet40"])
def test_split_layouts_every_file_type(tmp_path, layout, name):
    root = make_tree(tmp_path / "t", layout)
    assert split_layout(root) == layout and folder_splits(root) == ["test", "train"]
    kw = dict(num_points=16, cache_dir=None)
    train = load_dataset(name, root, "train", **kw)
    test = load_dataset(name, root, "test", **kw)
    assert (len(train), len(test)) == (13, 3)
    assert sorted(s.rsplit(".", 1)[1] for s in train.sources
                  if "chair" in s) == sorted(e[1:] for e in EXTS)
    # indices from names: the test split has no lamp, yet a table is still 2, not 1
    assert train.class_names == test.class_names == ["chair", "lamp", "table"]
    assert list(np.bincount(train.labels)) == [8, 2, 3] and list(test.labels) == [0, 0, 2]
    assert all(f"{os.sep}train{os.sep}" in s for s in train.sources)
    assert all(f"{os.sep}test{os.sep}" in s for s in test.sources)
    assert len(load_dataset("folder", root, "all", **kw)) == 16
    check_disjoint(train, test)  # a clean split passes
    with pytest.raises(DataError, match=r"t: no 'val' split here"):
        load_dataset(name, root, "val", **kw)


@pytest.mark.parametrize("layout", ["split/class", "class/split"])
def test_test_class_unknown_to_training_is_named(tmp_path, layout):
    root = make_tree(tmp_path / "t", layout)
    bad = root / "test" / "sofa" if layout == "split/class" else root / "sofa" / "test"
    write_cloud(bad / "sofa_0.npy", np.random.default_rng(9))
    assert len(load_dataset("folder", root, "train")) == 13  # train does not need the test
    with pytest.raises(DataError, match=rf"{bad}: class .sofa. is not a class of the train split "
                                        r"\(chair, lamp, table\)"):
        load_dataset("folder", root, "test")


def test_folder_without_split_refuses_train_and_test(tmp_path):
    flat = make_tree(tmp_path / "t", "split/class", {"x": {"chair": 3, "lamp": 2}}) / "x"
    assert split_layout(flat) is None and folder_splits(flat) == []
    everything = load_dataset("folder", flat, "all")
    assert len(everything) == 5 and everything.class_names == ["chair", "lamp"]
    for split in ("train", "test"):
        with pytest.raises(PointSSLError) as e:
            load_dataset("folder", flat, split)
        assert str(e.value) == (
            f"{flat}: this folder has no train/test split (no train/ or test/ folder at the top "
            "or under each class); pass --holdout F to hold out a seeded, stratified fraction "
            "F as the test set (or use split 'all' for everything)")


# ---------------------------------------------------------------------- the leak check


def test_the_same_file_on_both_sides_is_refused(tmp_path):
    root = make_tree(tmp_path / "t", "split/class")
    train = load_dataset("folder", root, "train", num_points=16)
    with pytest.raises(PointSSLError) as e:
        check_disjoint(train, train, "svm")
    first = train.sources[0]
    assert str(e.value) == (f"svm: 13 test cloud(s) are also in train (same file or h5 row), "
                            f"first {first}; a protocol never tests on its training data")
    # a symlink of a train file in test is the same file
    src = root / "train" / "chair" / "chair_train_0.npy"
    os.symlink(src, root / "test" / "chair" / "link.npy")
    test = load_dataset("folder", root, "test", num_points=16)
    link = next(s for s in test.sources if s.endswith("link.npy"))
    with pytest.raises(PointSSLError, match="^finetune cls: 1 test cloud"):
        check_disjoint(train, test, "finetune cls")
    with pytest.raises(PointSSLError) as e:
        check_disjoint(train, test, "svm")
    assert str(e.value) == (f"svm: 1 test cloud(s) are also in train (same file or h5 row), "
                            f"first {src} (in test as {link}); a protocol never tests on its "
                            "training data")


def test_protocols_refuse_a_leak_before_any_work():
    from pointssl.backbones import random_backbone
    from pointssl.evaluate.finetune import finetune_classification, finetune_partseg
    from pointssl.evaluate.svm import svm_eval

    rng = np.random.default_rng(0)
    pts = [rng.normal(size=(16, 3)).astype(np.float32) for _ in range(4)]
    ds = CloudSet(points=pts, labels=[0, 1, 0, 1], sources=[f"synthetic/x/{i}" for i in range(4)],
                  parts=[np.zeros(16, dtype=np.int64)] * 4)
    bb = random_backbone("pointnet", 0, channels=[8, 8], emb_dim=16)
    for run in (lambda: svm_eval(bb, ds, ds.subset([3, 2])),
                lambda: finetune_classification(bb, ds, ds.subset([2]), "fix", epochs=1),
                lambda: finetune_partseg(bb, ds, ds.subset([2]), "fix", epochs=1)):
        with pytest.raises(PointSSLError, match=r"test cloud\(s\) are also in train .* first "
                                                r"synthetic/x/[23];"):
            run()


def test_identical_clouds_on_both_sides_warn(tmp_path):
    root = make_tree(tmp_path / "t", "split/class")
    for i in (0, 1):  # copies (not links) of two train files
        shutil.copy(root / "train" / "lamp" / f"lamp_train_{i}{EXTS[i]}",
                    root / "test" / "chair" / f"copy{i}{EXTS[i]}")
    train = load_dataset("folder", root, "train")
    test = load_dataset("folder", root, "test")
    a, b = (root / "train" / "lamp" / "lamp_train_0.npy", root / "test" / "chair" / "copy0.npy")
    with pytest.warns(DataWarning, match=rf"^svm: 2 test cloud\(s\) identical to training "
                                         rf"clouds \({a} = {b}, .*copy1\.pcd\)$"):
        check_disjoint(train, test, "svm")


def make_h5(root, n, test_same_file=False):
    root.mkdir()
    rng = np.random.default_rng(0)
    names = ["airplane", *MODELNET10, "zebra"]  # MN10 classes at indices 1..10
    for split, k in (("train", n), ("test", n // 2)):
        with h5py.File(root / f"ply_data_{split}0.h5", "w") as f:
            f["data"] = rng.normal(size=(k, 8, 3)).astype(np.float32)
            f["label"] = (np.arange(k) % len(names)).astype(np.uint8)[:, None]
        with open(root / f"{split}_files.txt", "w") as fh:
            fh.write(f"ply_data_{'train' if test_same_file else split}0.h5\n")
    (root / "shape_names.txt").write_text("\n".join(names) + "\n")
    return names


def test_one_h5_file_backing_both_sides_is_refused(tmp_path):
    make_h5(tmp_path / "h5", 24, test_same_file=True)
    train = load_dataset("modelnet40", tmp_path / "h5", "train")
    test = load_dataset("modelnet40", tmp_path / "h5", "test")
    h5 = (tmp_path / "h5" / "ply_data_train0.h5").resolve()
    with pytest.raises(PointSSLError, match=rf"^svm: 24 test cloud\(s\) are also in train "
                                            rf"\(same file or h5 row\), first {h5}#0;"):
        check_disjoint(train, test, "svm")
    a, b = holdout_split(train, 0.25)  # disjoint rows of one h5 file are fine
    check_disjoint(a, b)


def test_modelnet10_selects_its_classes_from_a_modelnet40_h5(tmp_path):
    names = make_h5(tmp_path / "h5", 36)
    m40 = load_dataset("modelnet40", tmp_path / "h5", "train")
    m10 = load_dataset("modelnet10", tmp_path / "h5", "train")
    assert m10.class_names == list(MODELNET10) and len(m10) == 30  # 36 rows, 12 classes
    keep = (m40.labels >= 1) & (m40.labels <= 10)
    np.testing.assert_array_equal(m10.labels, m40.labels[keep] - 1)
    assert [m10.class_names[y] for y in m10.labels] == [names[y] for y in m40.labels[keep]]
    assert m10.up_axis == m40.up_axis == "z" and m10[0]["up_axis"] == "z"


def test_real_modelnet10_from_the_modelnet40_h5():
    root = shared_path("modelnet40_1024")
    train = load_dataset("modelnet10", root, "train")
    test = load_dataset("modelnet10", root, "test")
    assert (len(train), len(test)) == (3991, 908)
    assert train.class_names == test.class_names == list(MODELNET10)
    assert set(np.unique(train.labels)) == set(range(10)) == set(np.unique(test.labels))
    assert all(s.split("/")[0] == train.class_names[y]
               for s, y in zip(train.sources, train.labels, strict=True))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no shared file, no identical cloud
        check_disjoint(train, test)


# ---------------------------------------------------------------------- hold-out


def test_holdout_is_stratified_seeded_and_deterministic():
    labels = [0] * 10 + [1] * 5 + [2] + [-1] * 4
    ds = CloudSet(points=[np.full((4, 3), i, np.float32) for i in range(20)], labels=labels,
                  up_axis="y")
    tr, te = holdout_split(ds, 0.2, seed=3)
    # per group round(0.2 n), one cloud of every class kept in train: 2 + 1 + 0 + 1
    assert sorted(te.labels.tolist()) == [-1, 0, 0, 1]
    assert len(tr) == 16 and sorted(tr.labels.tolist()).count(2) == 1
    ids = sorted(int(p[0, 0]) for p in list(tr.points) + list(te.points))
    assert ids == list(range(20))  # a partition
    assert tr.split_info == te.split_info == {"holdout": 0.2, "seed": 3}
    assert tr.up_axis == te.up_axis == "y"
    again = holdout_split(ds, 0.2, seed=3)[1]
    assert again.sources == te.sources
    others = {tuple(holdout_split(ds, 0.2, seed=s)[1].sources) for s in range(6)}
    assert len(others) > 1  # the seed matters
    with pytest.raises(PointSSLError, match="between 0 and 1"):
        holdout_split(ds, 1.0)
    check_disjoint(tr, te)


def test_up_axis_of_each_layout(tmp_path):
    root = make_tree(tmp_path / "t", "class/split", {"train": {"a": 1}, "test": {"a": 1}})
    assert load_dataset("folder", root, "train").up_axis is None
    assert "up_axis" not in load_dataset("folder", root, "train")[0]
    cs = load_dataset("folder", root, "train", up_axis="y")
    assert cs[0]["up_axis"] == "y" and cs.subset([0]).up_axis == "y"
    with pytest.raises(PointSSLError, match="up_axis must be one of"):
        load_dataset("folder", root, "train", up_axis="up")
    off = tmp_path / "off"
    write_cloud(off / "a" / "train" / "m.off", np.random.default_rng(0))
    assert load_dataset("modelnet10", off, "train", num_points=8, cache_dir=None).up_axis == "z"
    nr = tmp_path / "nr" / "airplane"
    nr.mkdir(parents=True)
    np.savetxt(nr / "airplane_0001.txt", np.random.default_rng(0).normal(size=(8, 3)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        assert load_dataset("modelnet40", tmp_path / "nr", "train").up_axis == "y"


def test_h5_origins_survive_json_free_layout(tmp_path):
    """Without id2file names, h5 rows are still told apart by file and row."""
    make_h5(tmp_path / "h5", 12)
    train = load_dataset("modelnet40", tmp_path / "h5", "train")
    assert train.sources[0] == "ply_data_train0.h5#0"
    assert train.origins[3] == f"{(tmp_path / 'h5' / 'ply_data_train0.h5').resolve()}#3"
    assert json.dumps(train.subset([3]).origins)  # carried by subset, plain strings


def test_modelnet10_from_normal_resampled_with_only_modelnet40_lists(tmp_path):
    root = tmp_path / "nr"
    rng = np.random.default_rng(0)
    for name in ("airplane_0001", "bathtub_0001", "toilet_0001", "toilet_0002"):
        (root / name.rsplit("_", 1)[0]).mkdir(parents=True, exist_ok=True)
        np.savetxt(root / name.rsplit("_", 1)[0] / f"{name}.txt", rng.normal(size=(8, 3)),
                   delimiter=",")
    (root / "modelnet40_shape_names.txt").write_text("\n".join(["airplane", *MODELNET10]))
    (root / "modelnet40_train.txt").write_text("airplane_0001\ntoilet_0002\nbathtub_0001\n")
    cs = load_dataset("modelnet10", root, "train")
    assert cs.class_names == list(MODELNET10) and list(cs.labels) == [9, 0]
    assert [s.rsplit("/", 1)[1] for s in cs.sources] == ["toilet_0002.txt", "bathtub_0001.txt"]


def test_a_test_folder_linked_to_the_train_folder_is_read_and_refused(tmp_path):
    root = make_tree(tmp_path / "t", "split/class", {"train": {"a": 3, "b": 2}})
    os.symlink(root / "train", root / "test")  # a linked folder is followed, not skipped
    os.symlink(root, root / "train" / "a" / "loop")  # a link to a folder above ends there
    train, test = (load_dataset("folder", root, s) for s in ("train", "test"))
    assert (len(train), len(test)) == (5, 5)
    with pytest.raises(PointSSLError, match=r"^svm: 5 test cloud\(s\) are also in train"):
        check_disjoint(train, test, "svm")
