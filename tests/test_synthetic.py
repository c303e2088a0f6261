"""The built-in synthetic collection: parts, determinism, normalisation, normals, cache."""

import numpy as np
import pytest
import trimesh
from pykdtree.kdtree import KDTree

from pointssl.data import synthetic as S
from pointssl.data.synthetic import collection
from pointssl.errors import PointSSLError
from pointssl.utils import cache_dir

SMALL = dict(num_points=256, shapes_per_class=2)


def _shape(cat, i=0, split="train", seed=0, **kw):
    return S.make_shape(cat, S.shape_rng(seed, split, cat, i), **kw)


@pytest.fixture(scope="module")
def small_train():
    return S.load_synthetic("train", cache_dir=False, **SMALL)


def test_part_tables_are_global_and_disjoint():
    assert len(S.CATEGORIES) >= 10
    for c in ["table", "chair", "lamp", "mug", "airplane", "bottle", "car", "bed", "shelf", "sofa"]:
        assert c in S.CATEGORIES
    assert len(set(S.PART_NAMES)) == len(S.PART_NAMES)
    ids = [i for c in S.CATEGORIES for i in S.CATEGORY_PARTS[c]]
    assert sorted(ids) == list(range(len(S.PART_NAMES)))
    for c in S.CATEGORIES:
        assert len(S.CATEGORY_PARTS[c]) >= 2
        assert all(S.PART_NAMES[i].startswith(c + "/") for i in S.CATEGORY_PARTS[c])
    assert S.PART_NAMES[S.CATEGORY_PARTS["chair"][0]] == "chair/seat"


@pytest.mark.parametrize("cat", S.CATEGORIES)
def test_face_parts_cover_category_and_mesh_rests_on_ground(cat):
    seen = set()
    for i in range(12):
        mesh, fp = _shape(cat, i)
        assert fp.dtype == np.int64 and fp.shape == (len(mesh.faces),)
        assert set(fp.tolist()) <= set(S.CATEGORY_PARTS[cat])
        seen |= set(fp.tolist())
        lo, hi = mesh.bounds
        assert abs(lo[2]) < 1e-9
        np.testing.assert_allclose((lo[:2] + hi[:2]) / 2, 0, atol=1e-9)
    assert seen == set(S.CATEGORY_PARTS[cat])


@pytest.mark.parametrize("cat", ["chair", "mug", "vase", "airplane", "car", "lamp"])
def test_every_piece_is_closed_and_faces_outward(cat):
    for i in range(3):
        mesh, _ = _shape(cat, i)
        pieces = mesh.split(only_watertight=False)
        assert len(pieces) >= 2
        for p in pieces:
            assert p.is_watertight
            assert p.volume > 0


def test_make_shape_is_deterministic_and_keyed():
    a, pa = _shape("chair", 3)
    b, pb = _shape("chair", 3)
    np.testing.assert_array_equal(a.vertices, b.vertices)
    np.testing.assert_array_equal(pa, pb)
    for other in [_shape("chair", 4), _shape("chair", 3, split="test"), _shape("chair", 3, seed=1)]:
        assert other[0].vertices.shape != a.vertices.shape or not np.allclose(
            other[0].vertices, a.vertices
        )


def test_load_is_deterministic_and_seed_dependent(small_train):
    again = S.load_synthetic("train", cache_dir=False, **SMALL)
    other = S.load_synthetic("train", cache_dir=False, seed=1, **SMALL)
    for x, y, z in zip(small_train.points, again.points, other.points, strict=True):
        np.testing.assert_array_equal(x, y)
        assert not np.allclose(x, z)
    for x, y in zip(small_train.parts, again.parts, strict=True):
        np.testing.assert_array_equal(x, y)


def test_shape_depends_only_on_its_own_key(small_train):
    # More shapes per class, or fewer categories, must not change shape i of a class.
    more = S.load_synthetic("train", num_points=256, shapes_per_class=3, cache_dir=False)
    only = S.load_synthetic("train", cache_dir=False, categories=["mug"], **SMALL)
    src = {s: p for s, p in zip(more.sources, more.points, strict=True)}
    for s, p in zip(small_train.sources, small_train.points, strict=True):
        np.testing.assert_array_equal(src[s], p)
    mug = small_train.class_names.index("mug")
    np.testing.assert_array_equal(only.points[1], small_train.points[2 * mug + 1])
    assert only.class_names == ["mug"] and list(only.labels) == [0, 0]


def test_cloudset_fields(small_train):
    ds = small_train
    assert ds.class_names == S.CATEGORIES and ds.part_names == S.PART_NAMES
    assert len(ds) == 2 * len(S.CATEGORIES)
    assert np.bincount(ds.labels).tolist() == [2] * len(S.CATEGORIES)
    assert ds.sources[0] == f"synthetic/{S.CATEGORIES[0]}/train/0000"
    assert ds.sources[3] == f"synthetic/{S.CATEGORIES[1]}/train/0001"
    for p, n, q, y in zip(ds.points, ds.normals, ds.parts, ds.labels, strict=True):
        assert p.shape == (256, 3) and p.dtype == np.float32
        assert n.shape == (256, 3) and n.dtype == np.float32
        assert q.shape == (256,) and q.dtype == np.int64
        assert set(q.tolist()) <= set(S.CATEGORY_PARTS[ds.class_names[y]])
        # unit sphere, centred
        np.testing.assert_allclose(np.linalg.norm(p, axis=1).max(), 1.0, atol=1e-5)
        np.testing.assert_allclose(p.mean(0), 0.0, atol=1e-5)
        np.testing.assert_allclose(np.linalg.norm(n, axis=1), 1.0, atol=1e-5)
    item = ds[0]
    assert set(item) >= {"points", "label", "normals", "parts"}


@pytest.mark.parametrize("cat", ["bottle", "car", "vase"])
def test_normals_agree_with_pca_of_the_cloud(cat):
    # Solid shapes only: on thin boards the neighbourhood spans both faces and PCA is moot.
    mesh, fp = _shape(cat, 1)
    p, n, _ = S.sample_shape(mesh, fp, 4096, np.random.default_rng(0))
    p = p.astype(np.float64)
    _, idx = KDTree(p).query(p, k=12)
    nb = p[idx] - p[idx].mean(1, keepdims=True)
    pca = np.linalg.eigh(np.einsum("nki,nkj->nij", nb, nb))[1][:, :, 0]
    agree = np.abs(np.einsum("ij,ij->i", pca, n))
    assert np.median(agree) > 0.95
    assert np.mean(agree > 0.8) > 0.8


@pytest.mark.parametrize("cat", S.CATEGORIES)
def test_normals_and_parts_come_from_the_sampled_face(cat):
    mesh, fp = _shape(cat, 2)
    p, n, q = S.sample_shape(mesh, fp, 512, np.random.default_rng(0), normalize=False)
    _, _, tri = mesh.nearest.on_surface(p)
    # A few ties where a piece pokes into a non-convex one (a cap into a lipped neck).
    assert np.mean(np.einsum("ij,ij->i", n, mesh.face_normals[tri]) > 0.99) > 0.97
    assert np.mean(q == fp[tri]) > 0.97
    np.testing.assert_allclose(np.linalg.norm(n, axis=1), 1.0, atol=1e-5)
    # Divergence theorem: over closed pieces, the mean of n.(x - c) is 3 * volume / area > 0
    # for any c, and negative if the winding were flipped.
    assert np.mean(np.einsum("ij,ij->i", n, p - p.mean(0))) > 0


def test_hidden_contact_faces_are_not_sampled():
    mesh, fp = _shape("bed", 0, rotate_deg=0)
    mattress = S.CATEGORY_PARTS["bed"][1]
    p, n, q = S.sample_shape(mesh, fp, 2000, np.random.default_rng(0))
    assert len(p) == 2000
    # The mattress lies on the frame: its bottom face is invisible.
    assert not np.any((q == mattress) & (n[:, 2] < -0.9))
    bare = trimesh.Trimesh(mesh.vertices, mesh.faces, process=False)  # no piece metadata
    p, n, q = S.sample_shape(bare, fp, 2000, np.random.default_rng(0))
    assert np.sum((q == mattress) & (n[:, 2] < -0.9)) > 50


def test_cache_round_trip_and_corruption(tmp_path, monkeypatch):
    first = S.load_synthetic("test", cache_dir=tmp_path, categories=["mug", "chair"], **SMALL)
    files = list(tmp_path.iterdir())
    assert len(files) == 1 and files[0].suffix == ".npz"

    real = collection._generate

    def forbidden(*a, **k):
        raise AssertionError("regenerated although a valid cache file exists")

    monkeypatch.setattr(collection, "_generate", forbidden)
    second = S.load_synthetic("test", cache_dir=tmp_path, categories=["mug", "chair"], **SMALL)
    for a, b in zip(first.points + first.normals, second.points + second.normals, strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(np.stack(first.parts), np.stack(second.parts))
    assert second.sources == first.sources

    # Other options go to another file, never the same one.
    with pytest.raises(AssertionError, match="regenerated"):
        S.load_synthetic("test", cache_dir=tmp_path, categories=["mug", "chair"], seed=5, **SMALL)

    monkeypatch.setattr(collection, "_generate", real)
    for garbage in [b"not a zip file", files[0].read_bytes()[:200]]:
        files[0].write_bytes(garbage)
        third = S.load_synthetic("test", cache_dir=tmp_path, categories=["mug", "chair"], **SMALL)
        np.testing.assert_array_equal(np.stack(third.points), np.stack(first.points))
        assert files[0].stat().st_size > 1000  # rewritten
    assert sorted(f.name for f in tmp_path.iterdir()) == [files[0].name]  # no temp leftovers


def test_cache_dir_from_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("POINTSSL_CACHE", str(tmp_path))
    assert cache_dir("synthetic") == tmp_path / "synthetic"
    S.load_synthetic("val", num_points=64, shapes_per_class=1, categories=["mug"])
    assert len(list((tmp_path / "synthetic").glob("val_*.npz"))) == 1
    # without POINTSSL_CACHE, XDG_CACHE_HOME is honoured (it used to be ignored)
    monkeypatch.delenv("POINTSSL_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    S.load_synthetic("val", num_points=64, shapes_per_class=1, categories=["mug"])
    assert len(list((tmp_path / "xdg" / "pointssl" / "synthetic").glob("val_*.npz"))) == 1


def test_shapes_vary_within_a_class():
    for cat in S.CATEGORIES:
        ext = np.array([_shape(cat, i, rotate_deg=0)[0].extents for i in range(8)])
        ratios = ext / ext.max(1, keepdims=True)
        assert ratios.std(0).max() > 0.03, cat
    # Discrete parameters: the number of separate pieces (legs, shelves, arms...) varies.
    for cat in ["shelf", "chair", "table"]:
        counts = {len(_shape(cat, i)[0].split(only_watertight=False)) for i in range(10)}
        assert len(counts) >= 3, (cat, counts)


def test_pose_options():
    # Unrotated airplanes lie along x; rotated ones do not all.
    along_x = [_shape("airplane", i, rotate_deg=0)[0].extents.argmax() == 0 for i in range(6)]
    assert all(along_x)
    spun = [_shape("airplane", i)[0].extents for i in range(6)]
    assert any(e[1] > 0.5 * e[0] for e in spun)
    flat = _shape("table", 0, rotate_deg=0)[0]
    tilted = _shape("table", 0, rotate_deg=0, tilt_deg=20)[0]
    assert not np.allclose(flat.extents, tilted.extents)


def test_train_and_test_differ(small_train):
    test = S.load_synthetic("test", cache_dir=False, **SMALL)
    for p in test.points:
        assert not any(np.allclose(p, q) for q in small_train.points)
    assert test.sources[0].split("/")[2] == "test"


def test_bad_options_are_user_errors():
    with pytest.raises(PointSSLError, match="unknown synthetic category"):
        S.make_shape("spaceship", np.random.default_rng(0))
    with pytest.raises(PointSSLError, match="unknown synthetic categories"):
        S.load_synthetic(categories=["spaceship"], cache_dir=False)
    with pytest.raises(PointSSLError, match="split"):
        S.load_synthetic("../train", cache_dir=False)
    with pytest.raises(PointSSLError, match="num_points"):
        S.load_synthetic(num_points=0, cache_dir=False)
