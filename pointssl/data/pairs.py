"""Partial views with correspondences (PointContrast Sec. 3.6): a virtual depth camera moves
through a scene; every frame keeps the scene points it sees, in world coordinates; pairs of
frames that overlap by at least 30% are kept with their point matches.

The camera (ScanNet-like: 60 x 47 degree field of view, depth 0.3-5 m, 1.4 m above the floor,
pitched down) walks an ellipse around the scene centre and looks across the room. Where the
scene has meshes (the synthetic rooms: ``meshes[i]``), visibility is ray casting (trimesh,
with embreex when installed): a point is kept when the first surface hit by the ray from the
camera towards it lies no nearer than ``0.02 m + 1%`` of its distance. For point-only scenes
(the ScanNet ``.bin`` rows) it is a z-buffer: points are projected into a depth image whose pixel
subtends about one point spacing at 2 m; a 3 x 3 minimum filter closes the gaps between
sparse foreground points, and a point is kept when its depth is within ``0.05 m + 3%`` of the
filtered buffer. Each frame then gets its own sensor noise (Gaussian, a fraction ``noise`` (1/4) of
the Kinect axial model 0.0012 + 0.0019 (z - 0.4)^2 m, Nguyen et al. 2012) and drops 10% of
its points at random, so two frames never hold identical copies of a point.

Overlap of a pair = min over the two frames of the fraction of its points that have a
neighbour within ``voxel_size`` in the other frame. Matches: every point of frame 1 with its
nearest frame-2 point when that is within ``match_mult * voxel_size`` (1.5, the authors'
``positive_pair_search_voxel_size_multiplier``); pykdtree.

On disk (``out/<scene>/``): ``frames.npz`` (xyz float32, colors, scene point ids, offsets,
camera positions) and ``pairs.npz`` (frame indices i, j, overlap, matches with offsets);
``bad.txt`` names why a scene was skipped. A re-run skips scenes that have either, so an
interrupted build resumes. ``manifest.json`` sums it up.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from pointssl.errors import DataError, PointSSLError
from pointssl.utils.io import write_json_atomic

__all__ = ["PairConfig", "camera_trajectory", "visible_points", "visible_points_mesh",
           "scene_mesh", "render_frames", "match_points",
           "scene_pairs", "build_pairs", "PairSet", "load_pairs"]


@dataclass
class PairConfig:
    frames: int = 36  # frames along the trajectory (every 10 degrees)
    fov_deg: tuple = (60.0, 46.8)  # horizontal, vertical (ScanNet's depth camera, ~58 x 45)
    min_depth: float = 0.3
    max_depth: float = 5.0
    height: float = 1.4  # camera height above the floor (m)
    pitch_deg: float = -20.0  # looking down
    voxel_size: float = 0.025  # overlap radius; matches within match_mult x this
    match_mult: float = 1.5  # authors' positive_pair_search_voxel_size_multiplier
    min_overlap: float = 0.3  # Sec. 3.6: at least 30% overlap
    max_pairs: int = 100  # per scene (a seeded subset when more qualify)
    noise: float = 0.25  # fraction of the Kinect axial noise model
    dropout: float = 0.1
    min_frame_points: int = 200


def _scene_frame(points: np.ndarray):
    """(centre xy, half extents xy, floor z) robust to a few stray points."""
    lo, hi = np.percentile(points, 2, axis=0), np.percentile(points, 98, axis=0)
    return (lo[:2] + hi[:2]) / 2, (hi[:2] - lo[:2]) / 2, float(np.percentile(points[:, 2], 1))


def camera_trajectory(points: np.ndarray, cfg: PairConfig, rng) -> list[tuple]:
    """``cfg.frames`` camera poses (position (3,), rotation (3, 3) whose rows are the camera's
    right, down and forward axes in world coordinates)."""
    centre, half, floor = _scene_frame(points)
    out = []
    for k in range(cfg.frames):
        th = 2 * np.pi * k / cfg.frames + rng.uniform(-0.05, 0.05)
        pos = np.array([*(centre + 0.45 * half * [np.cos(th), np.sin(th)]), floor + cfg.height])
        yaw = th + np.pi + rng.uniform(-0.5, 0.5)  # look across the room
        pitch = np.deg2rad(cfg.pitch_deg + rng.uniform(-8, 8))
        fwd = np.array([np.cos(yaw) * np.cos(pitch), np.sin(yaw) * np.cos(pitch), np.sin(pitch)])
        right = np.cross(fwd, [0.0, 0.0, 1.0])
        right /= np.linalg.norm(right)
        down = np.cross(fwd, right)
        out.append((pos, np.stack([right, down, fwd])))
    return out


def point_spacing(points: np.ndarray, rng, k: int = 2000) -> float:
    """Median nearest-neighbour distance of a sample of the points."""
    from pykdtree.kdtree import KDTree

    pts = np.ascontiguousarray(points, dtype=np.float64)
    q = pts[rng.choice(len(pts), min(k, len(pts)), replace=False)]
    d, _ = KDTree(pts).query(q, k=2)
    return float(np.median(d[:, 1]))


def _camera(points: np.ndarray, pose, cfg: PairConfig):
    """(camera coordinates (x right, y down, z forward), mask of the depth range, tan of the
    half field of view horizontally and vertically)."""
    pos, rot = pose
    cam = (points - pos) @ rot.T
    z = cam[:, 2]
    fx, fy = [np.tan(np.deg2rad(f) / 2) for f in cfg.fov_deg]
    return cam, (z > cfg.min_depth) & (z < cfg.max_depth), fx, fy


def visible_points(points: np.ndarray, pose, cfg: PairConfig, spacing: float) -> np.ndarray:
    """Indices of the points the camera at ``pose`` sees (z-buffer with a 3 x 3 min filter)."""
    from scipy.ndimage import minimum_filter

    cam, ok, fx, fy = _camera(points, pose, cfg)
    z = cam[:, 2]
    ang = max(spacing / 2.0, 1e-4)  # one pixel ~ one point spacing at 2 m
    w = int(np.clip(np.ceil(2 * np.arctan(fx) / ang), 16, 320))
    h = int(np.clip(np.ceil(2 * np.arctan(fy) / ang), 12, 240))
    u = (cam[:, 0] / np.where(ok, z, 1) / fx + 1) * (w / 2)
    v = (cam[:, 1] / np.where(ok, z, 1) / fy + 1) * (h / 2)
    ok &= (u >= 0) & (u < w) & (v >= 0) & (v < h)
    idx = np.flatnonzero(ok)
    if len(idx) == 0:
        return idx
    pix = v[idx].astype(np.int64) * w + u[idx].astype(np.int64)
    zbuf = np.full(w * h, np.inf)
    np.minimum.at(zbuf, pix, z[idx])
    zmin = minimum_filter(zbuf.reshape(h, w), size=3, mode="nearest").reshape(-1)
    keep = z[idx] <= zmin[pix] + 0.05 + 0.03 * z[idx]
    return idx[keep]


def in_frustum(points: np.ndarray, pose, cfg: PairConfig) -> np.ndarray:
    """Indices of the points inside the camera's field of view and depth range."""
    cam, ok, fx, fy = _camera(points, pose, cfg)
    zs = np.where(ok, cam[:, 2], 1)
    ok &= (np.abs(cam[:, 0] / zs) < fx) & (np.abs(cam[:, 1] / zs) < fy)
    return np.flatnonzero(ok)


def visible_points_mesh(points: np.ndarray, pose, cfg: PairConfig, mesh) -> np.ndarray:
    """Indices of the points the camera at ``pose`` sees, by casting a ray from the camera to
    each point in the frustum against the scene's surfaces (``mesh``: a trimesh.Trimesh)."""
    idx = in_frustum(points, pose, cfg)
    if len(idx) == 0:
        return idx
    pos = np.asarray(pose[0], dtype=np.float64)
    vec = points[idx] - pos
    dist = np.linalg.norm(vec, axis=1)
    dirs = vec / dist[:, None]
    hits, ray, _ = mesh.ray.intersects_location(np.broadcast_to(pos, dirs.shape), dirs,
                                                multiple_hits=False)
    first = np.full(len(idx), np.inf)
    np.minimum.at(first, ray, np.linalg.norm(hits - pos, axis=1))
    return idx[first >= dist - (0.02 + 0.01 * dist)]


def scene_mesh(verts, faces):
    """A trimesh of the scene's surfaces for :func:`visible_points_mesh`."""
    import trimesh

    return trimesh.Trimesh(np.asarray(verts, dtype=np.float64), np.asarray(faces), process=False)


def render_frames(points: np.ndarray, cfg: PairConfig, rng, poses=None, mesh=None):
    """The frames' (ids into ``points``, noisy world xyz float32) along the trajectory;
    frames with fewer than ``cfg.min_frame_points`` points are dropped. ``mesh``: the scene's
    surfaces (ray-cast visibility); None: the z-buffer."""
    poses = camera_trajectory(points, cfg, rng) if poses is None else poses
    spacing = point_spacing(points, rng)
    frames = []
    for pose in poses:
        ids = (visible_points(points, pose, cfg, spacing) if mesh is None
               else visible_points_mesh(points, pose, cfg, mesh))
        ids = ids[rng.random(len(ids)) >= cfg.dropout]
        if len(ids) < cfg.min_frame_points:
            continue
        depth = np.linalg.norm(points[ids] - pose[0], axis=1)
        sigma = cfg.noise * (0.0012 + 0.0019 * (depth - 0.4) ** 2)
        xyz = points[ids] + rng.normal(size=(len(ids), 3)) * sigma[:, None]
        frames.append((ids.astype(np.int64), xyz.astype(np.float32), pose[0]))
    return frames


def match_points(xyz1: np.ndarray, xyz2: np.ndarray, radius: float):
    """(matches (K, 2) int64: each frame-1 point and its nearest frame-2 point within
    ``radius``; fraction of frame-1 points matched)."""
    from pykdtree.kdtree import KDTree

    a = np.ascontiguousarray(xyz1, dtype=np.float32)
    b = np.ascontiguousarray(xyz2, dtype=np.float32)
    d, j = KDTree(b).query(a, k=1, distance_upper_bound=radius)
    ok = np.isfinite(d) & (j < len(b))
    m = np.stack([np.flatnonzero(ok), j[ok].astype(np.int64)], 1)
    return m, float(ok.mean()) if len(a) else 0.0


def pair_overlap(xyz1, xyz2, radius: float) -> float:
    return min(match_points(xyz1, xyz2, radius)[1], match_points(xyz2, xyz1, radius)[1])


def scene_pairs(points: np.ndarray, cfg: PairConfig, rng, mesh=None):
    """Frames and pairs of one scene: (frames, pairs) with pairs a list of
    (i, j, overlap, matches). ``mesh``: the scene's surfaces, when it has them."""
    frames = render_frames(points, cfg, rng, mesh=mesh)
    n = len(frames)
    if n < 2:
        return frames, []
    npts = len(points)
    masks = np.zeros((n, npts), dtype=np.float32)
    for k, (ids, _, _) in enumerate(frames):
        masks[k, ids] = 1
    shared = masks @ masks.T  # scene points two frames share: a cheap upper bound
    counts = masks.sum(1)
    cand = [(i, j) for i in range(n) for j in range(i + 1, n)
            if shared[i, j] >= 0.5 * cfg.min_overlap * max(counts[i], counts[j])]
    pairs = []
    for i, j in cand:
        o = pair_overlap(frames[i][1], frames[j][1], cfg.voxel_size)
        if o >= cfg.min_overlap:
            pairs.append((i, j, o))
    if len(pairs) > cfg.max_pairs:
        keep = np.sort(rng.choice(len(pairs), cfg.max_pairs, replace=False))
        pairs = [pairs[k] for k in keep]
    out = []
    for i, j, o in pairs:
        m, _ = match_points(frames[i][1], frames[j][1], cfg.match_mult * cfg.voxel_size)
        out.append((i, j, o, m))
    return frames, out


def _scene_name(i: int, source: str) -> str:
    s = str(source).rstrip("/")
    parts = [p for p in re.split(r"[/\\]", s) if p]
    tail = "_".join(parts[-2:]) if len(parts) >= 2 else (parts[-1] if parts else "scene")
    tail = re.sub(r"\.(bin|ply|txt|npz)$", "", tail)
    return f"{i:05d}_" + re.sub(r"[^A-Za-z0-9_.-]", "_", tail)[-60:]


def _write_scene(d: Path, frames, pairs, colors) -> None:
    from pointssl.utils import atomic_savez

    d.mkdir(parents=True, exist_ok=True)
    off = np.cumsum([0] + [len(f[0]) for f in frames])
    atomic_savez(d / "frames.npz", xyz=np.concatenate([f[1] for f in frames]),
                 ids=np.concatenate([f[0] for f in frames]).astype(np.int32),
                 colors=(np.concatenate([colors[f[0]] for f in frames]).astype(np.float16)
                         if colors is not None else np.zeros((off[-1], 0), np.float16)),
                 offset=off, positions=np.stack([f[2] for f in frames]))
    moff = np.cumsum([0] + [len(p[3]) for p in pairs])
    atomic_savez(d / "pairs.npz", i=np.array([p[0] for p in pairs], np.int64),
                 j=np.array([p[1] for p in pairs], np.int64),
                 overlap=np.array([p[2] for p in pairs], np.float32),
                 matches=(np.concatenate([p[3] for p in pairs]).astype(np.int32)
                          if pairs else np.zeros((0, 2), np.int32)),
                 match_offset=moff)


def build_pairs(dataset, out, cfg: PairConfig | None = None, seed: int = 0, split: str = "train",
                log=print, progress: bool = True) -> dict:
    """Frames and pairs of every scene of ``dataset`` into ``out``; resumable. A scene that
    cannot be used (unreadable, NaN, empty, no pair reaching the overlap) gets one line from
    ``log`` naming it and a ``bad.txt``; the others go on. Returns the summary that is also
    written to ``out/manifest.json``."""
    cfg = cfg or PairConfig()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    manifest = out / "manifest.json"
    if manifest.exists():
        old = json.loads(manifest.read_text())
        if old.get("config") != _plain(cfg) or old.get("split") != split:
            raise PointSSLError(f"{out}: holds pairs built with other settings or split "
                                f"({old.get('split')}); choose another --out")
    write_json_atomic(manifest, {"config": _plain(cfg), "split": split, "complete": False})
    n_frames = n_new_frames = 0
    t_new = read_s = 0.0
    bad, scenes = [], []
    it = range(len(dataset))
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(it, desc="pairs", unit="scene")
        it = bar
    for i in it:
        name = _scene_name(i, dataset.sources[i] if dataset.sources else f"#{i}")
        d = out / name
        if (d / "bad.txt").exists():
            bad.append(name)
            continue
        if (d / "pairs.npz").exists():
            scenes.append(name)
            continue
        t_read = time.perf_counter()
        try:
            item = dataset[i]
            t0 = time.perf_counter()  # frames/s counts rendering + pairing, not reading
            read_s += t0 - t_read
            pts = np.asarray(item["points"], dtype=np.float64)[:, :3]
            if len(pts) < cfg.min_frame_points:
                raise DataError(name, f"{len(pts)} points: too few for a frame")
            if not np.isfinite(pts).all():
                raise DataError(name, "NaN or infinite coordinates")
            handle = dataset.meshes[i] if dataset.meshes is not None else None
            mesh = None if handle is None else scene_mesh(*handle.read())
            if mesh is not None and not np.isfinite(mesh.vertices).all():
                raise DataError(name, "non-finite mesh vertices")
            frames, pairs = scene_pairs(pts, cfg, np.random.default_rng([seed, i]), mesh)
            if not pairs:
                raise DataError(name, f"no pair of its {len(frames)} frames reaches "
                                      f"{cfg.min_overlap:.0%} overlap")
            colors = item.get("colors")
            _write_scene(d, frames, pairs, None if colors is None else np.asarray(colors))
        except (DataError, OSError, ValueError) as e:
            d.mkdir(parents=True, exist_ok=True)
            (d / "bad.txt").write_text(str(e) + "\n")
            msg = f"skipped scene {name}: {e}"
            (bar.write if bar is not None else log)(msg)
            bad.append(name)
            continue
        t_new += time.perf_counter() - t0
        n_new_frames += len(frames)
        scenes.append(name)
        if bar is not None:
            bar.set_postfix(frames=len(frames), pairs=len(pairs))
    overlaps = []
    for name in scenes:
        with np.load(out / name / "pairs.npz", allow_pickle=False) as z:
            overlaps.append(z["overlap"])
        with np.load(out / name / "frames.npz", allow_pickle=False) as z:
            n_frames += len(z["offset"]) - 1
    ov = np.concatenate(overlaps) if overlaps else np.zeros(0)
    edges = np.round(np.arange(cfg.min_overlap, 1.0001, 0.1), 2)
    hist = np.histogram(ov, bins=np.append(edges[:-1], 1.0))[0] if len(ov) else []
    summary = {
        "config": _plain(cfg), "split": split, "complete": True, "scenes": len(scenes),
        "bad_scenes": bad, "frames": int(n_frames), "pairs": int(len(ov)),
        "overlap": {"mean": float(ov.mean()) if len(ov) else None,
                    "quartiles": np.percentile(ov, [25, 50, 75]).round(3).tolist()
                    if len(ov) else None,
                    "histogram": {f"{a:.1f}-{b:.1f}": int(c) for a, b, c in
                                  zip(edges[:-1], np.append(edges[1:-1], 1.0), hist)}},
        "new_frames": int(n_new_frames), "seconds": round(t_new, 2),
        "read_seconds": round(read_s, 2),
        "frames_per_second": round(n_new_frames / t_new, 2) if t_new > 0 else None,
    }
    write_json_atomic(manifest, summary)
    return summary


def _plain(cfg: PairConfig) -> dict:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(cfg).items()}


# ----------------------------------------------------------------------------- reading pairs


class _FirstViews:
    """``PairSet.points``: the first view of each pair, read on access."""

    def __init__(self, ps: PairSet):
        self.ps = ps

    def __len__(self):
        return len(self.ps)

    def __getitem__(self, i):
        return self.ps[i]["xyz1"]


class PairSet:
    """The pairs under a ``build_pairs`` folder as a dataset: item ``i`` is a dict with
    ``xyz1``, ``xyz2`` (N_k, 3) float32 world coordinates, ``colors1``, ``colors2`` (N_k, 3)
    (0 columns when the scenes had none), ``matches`` (K, 2) int64 rows into the two views,
    ``overlap``, ``scene`` and ``index``. ``points`` lists the first views (what the trainer
    reports sizes from)."""

    def __init__(self, root, split: str | None = "train"):
        root = Path(root)
        man = root / "manifest.json"
        if not man.exists():
            raise DataError(root, "no manifest.json: not a `pointssl data pairs` folder")
        meta = json.loads(man.read_text())
        if split is not None and meta.get("split") != split:
            raise PointSSLError(f"{root}: pairs of the {meta.get('split')!r} split, not "
                                f"{split!r} (pre-training sees the training split only)")
        self.root, self.meta = root, meta
        self.scenes = sorted(d.name for d in root.iterdir() if (d / "pairs.npz").exists())
        self.index: list[tuple[int, int]] = []
        for s, name in enumerate(self.scenes):
            with np.load(root / name / "pairs.npz", allow_pickle=False) as z:
                self.index += [(s, k) for k in range(len(z["i"]))]
        if not self.index:
            raise DataError(root, "holds no pairs")
        self.sources = [f"{self.scenes[s]}#{k}" for s, k in self.index]
        self.labels = np.full(len(self.index), -1)
        self._cache: tuple[int, dict, dict] | None = None

    def __len__(self):
        return len(self.index)

    @property
    def points(self):
        return _FirstViews(self)

    def _scene(self, s: int):
        if self._cache is None or self._cache[0] != s:
            d = self.root / self.scenes[s]
            with np.load(d / "frames.npz", allow_pickle=False) as f, \
                    np.load(d / "pairs.npz", allow_pickle=False) as p:
                self._cache = (s, {k: f[k] for k in f.files}, {k: p[k] for k in p.files})
        return self._cache[1], self._cache[2]

    def __getitem__(self, idx: int) -> dict:
        s, k = self.index[idx]
        fr, pr = self._scene(s)
        off, i, j = fr["offset"], int(pr["i"][k]), int(pr["j"][k])
        mo = pr["match_offset"]
        return {"xyz1": fr["xyz"][off[i]:off[i + 1]], "xyz2": fr["xyz"][off[j]:off[j + 1]],
                "colors1": fr["colors"][off[i]:off[i + 1]].astype(np.float32),
                "colors2": fr["colors"][off[j]:off[j + 1]].astype(np.float32),
                "matches": pr["matches"][mo[k]:mo[k + 1]].astype(np.int64),
                "overlap": float(pr["overlap"][k]), "scene": self.scenes[s], "index": idx}


def load_pairs(root, split: str = "train", num_points=None, seed: int = 0) -> PairSet:
    return PairSet(root, split)
