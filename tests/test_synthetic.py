"""The built-in synthetic collection: parts, determinism, normalisation, normals, cache, and
the scan simulation (visibility, labels through noise)."""

import hashlib

import numpy as np
import pytest
import trimesh
from pykdtree.kdtree import KDTree

from pointssl.data import synthetic as S
from pointssl.data.synthetic import collection, scan
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


@pytest.mark.parametrize("cat", ["chair", "mug", "vase", "airplane", "car", "lamp", "stool",
                                 "cup", "truck", "fan", "ladder"])
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
    for cat in ["shelf", "chair", "table", "cabinet", "ladder", "stool"]:
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


# ----------------------------------------------------------------------------- generator v3


def _digest(cs) -> str:
    h = hashlib.sha256()
    for name in ("points", "normals", "parts"):
        h.update(np.ascontiguousarray(np.stack(getattr(cs, name))).tobytes())
    h.update(np.asarray(cs.labels).tobytes())
    return h.hexdigest()


def test_same_bytes_as_pinned_and_v2_still_reproducible():
    # The v2 digest is generator v2's own output (commit 3960249, before v3): v2 is still
    # there, byte for byte. Both digests pin the bytes across machines and numpy versions.
    kw = dict(num_points=128, shapes_per_class=2, cache_dir=False)
    v2 = S.load_synthetic("train", scan=False, categories=S.V2_CATEGORIES, **kw)
    assert _digest(v2) == "4fb6303dba51505ac37ddb09497541ee475f1f369e4006bfa6a30352b69e9066"
    v3 = S.load_synthetic("train", **kw)
    assert _digest(v3) == "ff07f25c9255f219b29aaa0321ff3f50f1c0801d2ed707907626662a267309a2"
    assert v3.class_names == S.CATEGORIES and S.CATEGORIES[:12] == S.V2_CATEGORIES


def _plates(n=40):
    """A 2x2 plate at z = 1 (part 0) over a 4x4 plate at z = 0 (part 1, both faces)."""
    g = np.stack(np.meshgrid(*[np.linspace(-1.95, 1.95, n)] * 2), -1).reshape(-1, 2)
    small = g[np.abs(g).max(1) < 0.95]
    pts = np.concatenate([np.c_[small, np.ones(len(small))], np.c_[g, np.zeros(len(g))],
                          np.c_[g, np.zeros(len(g))]])
    up, down = [0.0, 0, 1], [0.0, 0, -1]
    nrm = np.array([up] * len(small) + [up] * len(g) + [down] * len(g))
    part = np.repeat([0, 1, 2], [len(small), len(g), len(g)])  # 2: the big plate's underside
    return pts, nrm, part


def test_visibility_by_hand():
    pts, nrm, part = _plates()
    seen = S.visible_from(pts, nrm, np.array([0.0, 0, 1]))  # camera above, looking down
    r = np.abs(pts[:, :2]).max(1)
    assert seen[part == 0].all()  # the near plate
    assert not seen[part == 2].any()  # back faces
    # the far plate: hidden under the near one, seen beyond its edge and the 3x3 pixel ring
    # (extent 3.9 over 40 pixels: 0.1 per pixel; the near plate ends at 0.95)
    assert not seen[(part == 1) & (r < 0.9)].any()
    assert seen[(part == 1) & (r > 1.2)].all()
    below = S.visible_from(pts, nrm, np.array([0.0, 0, -1]))
    np.testing.assert_array_equal(below, part == 2)


def test_every_scanned_point_keeps_its_sample(monkeypatch):
    # Parts = each sample's own index, so the output says where every point came from.
    monkeypatch.setattr(scan, "JITTER", (0.0, 0.0))
    monkeypatch.setattr(scan, "OUTLIERS", (0.05, 0.05))
    mesh, fp = _shape("chair", 0)
    p, n, q = S.sample_surface(mesh, fp, 3000, np.random.default_rng(0))
    out, on, src, info = S.simulate_scan(p, n, np.arange(len(p)), 500, np.random.default_rng(1))
    assert out.shape == (500, 3) and len(set(src.tolist())) == 500  # no duplicates needed
    np.testing.assert_array_equal(on, n[src])
    err = out * info["scale"] + info["centre"] - p[src]  # back in the mesh frame
    flying = info["outliers"]
    assert len(flying) == 25
    inl = np.setdiff1d(np.arange(500), flying)
    np.testing.assert_allclose(err[inl], 0, atol=1e-9)  # no jitter: exactly the sample
    # flying pixels moved along the view ray only, by at most FLYING in the units of the
    # first normalisation (radius s1 of the picked samples)
    along = err[flying] @ info["view"]
    np.testing.assert_allclose(err[flying] - along[:, None] * info["view"], 0, atol=1e-9)
    s1 = np.linalg.norm(p[src] - p[src].mean(0), axis=1).max()
    assert 0 < np.abs(along).max() <= scan.FLYING * s1 + 1e-9
    if info["partial"]:  # a single view: every kept sample faces the camera
        assert (n[src] @ info["view"] > 0).all()


def test_scanned_parts_are_the_nearest_faces_parts():
    # With every nuisance on: points still sit on (within jitter of) a face of their part.
    cs = S.load_synthetic("val", num_points=512, shapes_per_class=2, cache_dir=False,
                          categories=["chair", "lamp", "truck"])
    for i in range(len(cs)):
        m = cs.meshes[i]
        _, fp = S.make_shape(m.category, S.shape_rng(m.seed, m.split, m.category, m.index))
        verts, faces = m.read()
        _, dist, tri = trimesh.Trimesh(verts, faces, process=False).nearest.on_surface(
            cs.points[i])
        near = dist < 0.03  # jitter sigma <= 0.015; flying pixels are the far ones
        assert near.mean() > 0.9
        assert np.mean(fp[tri[near]] == cs.parts[i][near]) > 0.95


def test_scan_is_harder_than_clean_and_stays_in_the_unit_sphere():
    clean = S.load_synthetic("val", num_points=256, shapes_per_class=3, cache_dir=False,
                             scan=False, categories=["cabinet", "bus"])
    scans = S.load_synthetic("val", num_points=256, shapes_per_class=3, cache_dir=False,
                             categories=["cabinet", "bus"])
    for p in scans.points:
        np.testing.assert_allclose(np.linalg.norm(p, axis=1).max(), 1.0, atol=1e-5)
        np.testing.assert_allclose(p.mean(0), 0.0, atol=1e-5)
    # a single view of a box shows at most three faces: fewer normal directions than whole
    def faces_seen(cs):
        return [len({tuple(np.round(v, 3)) for v in n}) for n in cs.normals]
    assert np.mean(faces_seen(scans)) < np.mean(faces_seen(clean))


def test_cache_key_follows_scan_options_and_generator_version(tmp_path, monkeypatch):
    kw = dict(num_points=64, shapes_per_class=1, categories=["mug"], cache_dir=tmp_path)
    S.load_synthetic("val", **kw)
    S.load_synthetic("val", scan=False, **kw)
    assert len(list(tmp_path.glob("*.npz"))) == 2
    monkeypatch.setattr(scan, "JITTER", (0.0, 0.001))  # a simulator constant changed
    S.load_synthetic("val", **kw)
    monkeypatch.setattr(collection, "GENERATOR_VERSION", 99)
    S.load_synthetic("val", **kw)
    names = sorted(f.name for f in tmp_path.glob("*.npz"))
    assert len(names) == 4 and sum("_v99_" in n for n in names) == 1
