"""Partial views with correspondences: z-buffer visibility, matches, pair selection, the
resumable on-disk build (bad scenes skipped with one line) and `pointssl data pairs`."""

import json
import warnings

import numpy as np
import pytest
from conftest import shared_path

from pointssl.cli import main
from pointssl.data.datasets import CloudSet, load_dataset
from pointssl.data.pairs import (
    PairConfig,
    PairSet,
    build_pairs,
    match_points,
    scene_mesh,
    scene_pairs,
    visible_points,
    visible_points_mesh,
)
from pointssl.errors import PointSSLError


def box_room(seed=0, density=150.0, w=5.0, d=4.0, h=2.8):
    """Floor, four walls and a box in the middle, as surface samples."""
    rng = np.random.default_rng(seed)

    def rect(o, u, v):
        n = int(density * np.linalg.norm(np.cross(u, v)))
        st = rng.random((n, 2))
        return np.asarray(o) + st[:, :1] * np.asarray(u) + st[:, 1:] * np.asarray(v)

    parts = [rect([0, 0, 0], [w, 0, 0], [0, d, 0]),
             rect([0, 0, 0], [w, 0, 0], [0, 0, h]), rect([0, d, 0], [w, 0, 0], [0, 0, h]),
             rect([0, 0, 0], [0, d, 0], [0, 0, h]), rect([w, 0, 0], [0, d, 0], [0, 0, h]),
             rect([2, 1.5, 0.8], [1, 0, 0], [0, 1, 0])]  # a table top
    return np.concatenate(parts)


def test_zbuffer_hides_points_behind_a_surface():
    rng = np.random.default_rng(0)
    front = np.c_[rng.uniform(-0.5, 0.5, (4000, 2)), np.full(4000, 2.0)]  # a plane at z=2
    back = np.c_[rng.uniform(-0.3, 0.3, (1000, 2)), np.full(1000, 3.0)]  # behind it
    aside = np.c_[rng.uniform(2.0, 2.2, (500, 2)), np.full(500, 3.0)]  # beside it, visible?
    behind_cam = np.c_[rng.uniform(-0.3, 0.3, (200, 2)), np.full(200, -1.0)]
    pts = np.concatenate([front, back, aside, behind_cam])
    pose = (np.zeros(3), np.eye(3))  # camera axes = world axes, looking along +z
    vis = np.zeros(len(pts), bool)
    vis[visible_points(pts, pose, PairConfig(), spacing=0.02)] = True
    assert vis[:4000].mean() > 0.95  # the front plane is seen
    assert vis[4000:5000].mean() < 0.02  # what is behind it is hidden
    # x/z = 0.7: outside a 60-degree field of view (tan 30 = 0.58) -> not seen
    assert not vis[5000:5500].any()
    assert not vis[5500:].any()  # behind the camera


def test_ray_casting_hides_points_behind_a_mesh_and_keeps_those_on_it():
    """Mesh visibility: points on the front quad are seen, points behind it hidden even where
    they are dense (no z-buffer gaps to fall through), points beside it and behind the camera
    are out of view."""
    rng = np.random.default_rng(0)
    front = np.c_[rng.uniform(-0.5, 0.5, (400, 2)), np.full(400, 2.0)]
    back = np.c_[rng.uniform(-0.3, 0.3, (4000, 2)), np.full(4000, 3.0)]  # denser than the front
    back_open = np.c_[rng.uniform(0.8, 1.0, (300, 1)), rng.uniform(-0.3, 0.3, (300, 1)),
                      np.full(300, 3.0)]  # behind, but not behind the quad: seen
    aside = np.c_[rng.uniform(2.0, 2.2, (100, 2)), np.full(100, 3.0)]
    behind_cam = np.c_[rng.uniform(-0.3, 0.3, (50, 2)), np.full(50, -1.0)]
    pts = np.concatenate([front, back, back_open, aside, behind_cam])
    quad = [[-0.5, -0.5, 2], [0.5, -0.5, 2], [0.5, 0.5, 2], [-0.5, 0.5, 2],
            [-2, -2, 3], [2, -2, 3], [2, 2, 3], [-2, 2, 3]]
    mesh = scene_mesh(quad, [[0, 1, 2], [0, 2, 3], [4, 5, 6], [4, 6, 7]])
    vis = np.zeros(len(pts), bool)
    vis[visible_points_mesh(pts, (np.zeros(3), np.eye(3)), PairConfig(), mesh)] = True
    assert vis[:400].all()
    assert not vis[400:4400].any()
    assert vis[4400:4700].all()
    assert not vis[4700:].any()


def test_synthetic_rooms_carry_their_surfaces_and_pairs_use_them(tmp_path):
    """The rooms' meshes come with the points (every point lies on them) and build_pairs casts
    rays against them: frames differ from the z-buffer's, pairs still reach 30% overlap."""
    rooms = load_dataset("synthetic_rooms", tmp_path / "c", "train", rooms=1)
    verts, faces = rooms.meshes[0].read()
    mesh = scene_mesh(verts, faces)
    pts = rooms.points[0].astype(np.float64)
    _, dist, _ = mesh.nearest.on_surface(pts[::50])
    assert dist.max() < 1e-3
    cfg = PairConfig(frames=8)
    fz, pz = scene_pairs(pts, cfg, np.random.default_rng(0))
    fm, pm = scene_pairs(pts, cfg, np.random.default_rng(0), mesh)
    assert len(fm) == len(fz) and pm and min(p[2] for p in pm) >= 0.3
    assert any(len(a[0]) != len(b[0]) or (a[0] != b[0]).any() for a, b in zip(fm, fz))


def test_match_points_within_radius():
    a = np.array([[0, 0, 0], [1, 0, 0], [5, 5, 5]], np.float32)
    b = np.array([[1.01, 0, 0], [0.02, 0, 0], [9, 9, 9]], np.float32)
    m, frac = match_points(a, b, 0.03)
    assert m.tolist() == [[0, 1], [1, 0]] and frac == pytest.approx(2 / 3)


def test_scene_pairs_overlap_and_matches_are_true():
    pts = box_room()
    cfg = PairConfig(frames=12)
    frames, pairs = scene_pairs(pts, cfg, np.random.default_rng(0))
    assert len(frames) == 12 and len(pairs) > 3
    again = scene_pairs(pts, cfg, np.random.default_rng(0))[1]
    assert [(i, j) for i, j, _, _ in pairs] == [(i, j) for i, j, _, _ in again]
    for i, j, o, m in pairs:
        assert o >= cfg.min_overlap
        ids1, x1, _ = frames[i]
        ids2, x2, _ = frames[j]
        d = np.linalg.norm(x1[m[:, 0]] - x2[m[:, 1]], axis=1)
        assert d.max() <= cfg.match_mult * cfg.voxel_size + 1e-6
        # most matches are noisy copies of the same scene point
        assert (ids1[m[:, 0]] == ids2[m[:, 1]]).mean() > 0.8
        assert len(np.unique(m[:, 0])) == len(m)  # one match per frame-1 point
    # frames are partial: none holds the whole room
    assert max(len(f[0]) for f in frames) < 0.6 * len(pts)


def test_build_pairs_skips_bad_scenes_and_resumes(tmp_path):
    good = box_room(1)
    nan = box_room(2)
    nan[5] = np.nan
    cs = CloudSet(points=[good, nan, np.zeros((3, 3)), box_room(3)], labels=np.full(4, -1),
                  sources=["a/good", "b/nan", "c/empty", "d/good2"])  # no colours: 0 columns
    lines = []
    cfg = PairConfig(frames=10)
    res = build_pairs(cs, tmp_path, cfg, log=lines.append, progress=False)
    assert res["scenes"] == 2 and len(res["bad_scenes"]) == 2
    assert len(lines) == 2 and "b_nan" in lines[0] and "NaN" in lines[0]
    assert "c_empty" in lines[1]
    assert res["pairs"] > 0 and res["overlap"]["mean"] >= cfg.min_overlap
    assert sum(res["overlap"]["histogram"].values()) == res["pairs"]
    stamp = (tmp_path / "00000_a_good" / "pairs.npz").stat().st_mtime_ns
    again = build_pairs(cs, tmp_path, cfg, log=lines.append, progress=False)
    assert again["new_frames"] == 0 and again["pairs"] == res["pairs"]  # resumed: nothing redone
    assert len(lines) == 2  # bad scenes are not retried or re-reported
    assert (tmp_path / "00000_a_good" / "pairs.npz").stat().st_mtime_ns == stamp
    with pytest.raises(PointSSLError, match="other settings"):
        build_pairs(cs, tmp_path, PairConfig(frames=11), progress=False)

    ps = PairSet(tmp_path)
    assert len(ps) == res["pairs"]
    it = ps[0]
    m = it["matches"]
    assert m[:, 0].max() < len(it["xyz1"]) and m[:, 1].max() < len(it["xyz2"])
    assert it["colors1"].shape == (len(it["xyz1"]), 0)
    d = np.linalg.norm(it["xyz1"][m[:, 0]] - it["xyz2"][m[:, 1]], axis=1)
    assert d.max() <= cfg.match_mult * cfg.voxel_size + 1e-6
    with pytest.raises(PointSSLError, match="training split only"):
        PairSet(tmp_path, split="test")
    assert len(load_dataset("pairs", tmp_path)) == len(ps)


def test_cli_data_pairs_synthetic(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("POINTSSL_CACHE", str(tmp_path / "cache"))
    rc = main(["data", "pairs", "--scene", "synthetic", "--rooms", "1", "--frames", "12",
               "--out", str(tmp_path / "p"), "--no-progress", "--json"])
    assert rc == 0
    res = json.loads(capsys.readouterr().out)
    assert res["scenes"] == 1 and res["pairs"] > 0 and res["frames"] == 12
    man = json.loads((tmp_path / "p" / "manifest.json").read_text())
    assert man["complete"] and man["pairs"] == res["pairs"]
    ps = PairSet(tmp_path / "p")
    assert ps[0]["colors1"].shape == (len(ps[0]["xyz1"]), 3)


def test_pairs_from_the_real_scannet_scene():
    d = shared_path("scannet_scene0000_00", "points_xyzrgb_float32.bin").parent
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cs = load_dataset("scannet", d, "train")
    cfg = PairConfig(frames=12)
    frames, pairs = scene_pairs(cs.points[0].astype(np.float64), cfg, np.random.default_rng(0))
    assert len(frames) >= 10 and len(pairs) >= 3
    assert all(o >= cfg.min_overlap and len(m) > 100 for _, _, o, m in pairs)
    assert max(len(f[0]) for f in frames) < 0.25 * len(cs.points[0])  # partial views
