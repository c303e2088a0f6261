"""Multi-view grayscale renders for the cross-modal method (Section 3.1 of the cross-modal
2D-3D paper): V virtual cameras on a sphere around the area-weighted centroid of the faces,
azimuth ~ U(10°, 340°), polar ~ U(10°, 165°) from the up axis, all looking at the centroid,
the shape scaled to fit a perspective view; Phong reflection evaluated at the vertices and
interpolated over each face (Gouraud), two directional lights facing each other with the
object between them.

Two engines draw meshes with the same cameras, pixel centres and shading, and agree pixel for
pixel up to ties on silhouettes (tests/test_render.py):

- ``"raster"``: a small numpy z-buffer rasteriser (triangles grouped by bounding-box size,
  every candidate pixel tested at once, the nearest fragment per pixel kept by one sort);
- ``"embree"``: trimesh ray casting with embreex (optional; one ray per pixel).

``"auto"`` takes the faster one that is installed: measured on this repository's 2-core
machine, 1 thread, 23 synthetic meshes (one per category, median 236 faces) x 4 views: ray
casting 81 images/s at 224² and 262 at 128², the rasteriser 32 and 126 (the same images),
so ``auto`` = ``embree`` when embreex imports, else ``raster`` (embreex is optional:
``pip install embreex``).

Point-only data (the ModelNet40 h5 has no meshes) is drawn as shaded splats: discs of about
the nearest-neighbour spacing, lit with PCA normals, through the same z-buffer.

Renders are cached per shape as compressed ``<key>.npz`` (``images`` (V, H, W) uint8, ``cameras``
(V, 2) azimuth/polar degrees, ``meta`` JSON), written atomically; :func:`render_dataset`
skips shapes already rendered with the same settings (resumable) and names every shape it
cannot render in one line instead of stopping.
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from pointssl.errors import DataError, PointSSLError
from pointssl.utils import atomic_path

__all__ = ["RenderConfig", "sample_cameras", "render_mesh", "render_points", "render_item",
           "render_key", "RenderCache", "render_dataset", "ENGINES", "pca_normals",
           "area_centroid", "has_embree"]

ENGINES = ("auto", "raster", "embree")
_UP = {"x": (1, 2, 0), "y": (2, 0, 1), "z": (0, 1, 2)}  # cyclic: handedness kept


@dataclass(frozen=True)
class RenderConfig:
    views: int = 12  # V; the paper renders 180 per mesh (Sec. 4.1): fewer by default on CPU
    size: int = 224  # H = W; ResNet-18's input (Sec. 3.2)
    azimuth: tuple = (10.0, 340.0)  # Sec. 3.1: azimuth ~ U(10°, 340°)
    polar: tuple = (10.0, 165.0)  # Sec. 3.1: polar ~ U(10°, 165°)
    fov_deg: float = 30.0  # not stated: perspective field of view
    margin: float = 1.05  # not stated: bounding sphere inside the view cone, 5% spare
    ambient: float = 0.15  # Phong constants: not stated
    diffuse: float = 0.65
    specular: float = 0.2
    shininess: float = 16.0
    splat_scale: float = 1.0  # point splats: disc radius = scale x mean NN spacing
    max_splat_px: int = 6
    engine: str = "auto"  # auto | raster | embree

    def __post_init__(self):
        if self.views < 1 or self.size < 8:
            raise PointSSLError(f"render needs views >= 1 and size >= 8, got {self.views}, "
                                f"{self.size}")
        if self.engine not in ENGINES:
            raise PointSSLError(f"render engine {self.engine!r}: expected one of {ENGINES}")

    def settings(self) -> dict:
        """What makes two renders of a shape interchangeable (the cache checks it)."""
        d = asdict(self)
        d.pop("engine")
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}


def has_embree() -> bool:
    try:
        import embreex  # noqa: F401
    except ImportError:
        return False
    return True


def _engine(name: str) -> str:
    if name == "embree" and not has_embree():
        raise PointSSLError("render engine 'embree' needs the embreex package "
                            "(pip install embreex)")
    if name == "auto":
        return "embree" if has_embree() else "raster"
    return name


# ------------------------------------------------------------------------------- geometry
def sample_cameras(views: int, rng: np.random.Generator, cfg: RenderConfig | None = None
                   ) -> np.ndarray:
    """(V, 2) azimuth and polar angles in degrees, uniform in the paper's ranges."""
    cfg = cfg or RenderConfig()
    az = rng.uniform(*cfg.azimuth, size=views)
    po = rng.uniform(*cfg.polar, size=views)
    return np.stack([az, po], 1)


def area_centroid(verts: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """The mean of the face centres weighted by face area (Sec. 3.1)."""
    tri = verts[faces]
    area = 0.5 * np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1)
    return (tri.mean(1) * area[:, None]).sum(0) / area.sum()


def _camera(center, radius, az_deg, polar_deg, cfg):
    """(eye, forward, right, up) for a camera at (az, polar) on the sphere, z up."""
    a, p = np.radians(az_deg), np.radians(polar_deg)
    dist = radius * cfg.margin / np.sin(np.radians(cfg.fov_deg) / 2)
    eye = center + dist * np.array([np.sin(p) * np.cos(a), np.sin(p) * np.sin(a), np.cos(p)])
    f = center - eye
    f /= np.linalg.norm(f)
    r = np.cross(f, [0.0, 0.0, 1.0])
    r /= np.linalg.norm(r)  # polar in [10°, 165°]: never parallel to z
    u = np.cross(r, f)
    return eye, f, r, u


def _lights(f, r, u):
    """Two directional lights facing each other, the object between: one from the camera's
    upper right, one from the opposite side (unit vectors towards the lights)."""
    l1 = -f + 0.6 * u + 0.4 * r
    l1 /= np.linalg.norm(l1)
    return np.stack([l1, -l1])


def _phong(n, v, lights, cfg):
    """Phong reflection at unit normals n (M, 3) seen along unit v (M, 3) (towards the eye)."""
    out = np.full(len(n), cfg.ambient)
    for lt in lights:
        nl = n @ lt
        lit = nl > 0
        refl = 2 * nl[:, None] * n - lt
        spec = np.clip((refl * v).sum(1), 0, None) ** cfg.shininess
        out += np.where(lit, cfg.diffuse * nl + cfg.specular * spec, 0.0)
    return np.clip(out, 0.0, 1.0)


def _project(pts, eye, f, r, u, cfg):
    """(M, 3) -> pixel x, y (pixel centres at integers) and depth along the view axis."""
    q = pts - eye
    z = q @ f
    t = np.tan(np.radians(cfg.fov_deg) / 2)
    s = cfg.size
    x = (q @ r) / (z * t)
    y = (q @ u) / (z * t)
    return (x + 1) * s / 2 - 0.5, (1 - y) * s / 2 - 0.5, z


def _zbuffer(pix, depth, value, size):
    """Nearest fragment per pixel: (H, W) values, 0 where nothing was drawn."""
    img = np.zeros(size * size)
    if len(pix):
        order = np.lexsort((depth, pix))
        pix, value = pix[order], value[order]
        first = np.ones(len(pix), bool)
        first[1:] = pix[1:] != pix[:-1]
        img[pix[first]] = value[first]
    return img.reshape(size, size)


# ------------------------------------------------------------------------------- meshes
def _check_mesh(verts, faces):
    verts = np.asarray(verts, dtype=np.float64)
    faces = np.asarray(faces, dtype=np.int64)
    if verts.ndim != 2 or verts.shape[1] != 3 or len(verts) == 0:
        raise ValueError(f"vertices must be a non-empty (N, 3) array, got {verts.shape}")
    if faces.ndim != 2 or faces.shape[1] != 3 or len(faces) == 0:
        raise ValueError("mesh has no triangles")
    if faces.min() < 0 or faces.max() >= len(verts):
        raise ValueError("face indices out of range")
    if not np.isfinite(verts).all():
        raise ValueError("mesh has NaN or Inf vertex coordinates")
    tri = verts[faces]
    area = 0.5 * np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1)
    if not area.sum() > 0:
        raise ValueError("mesh has zero surface area (degenerate)")
    return verts, faces[area > 0]


def _vertex_normals(verts, faces):
    fn = np.cross(verts[faces[:, 1]] - verts[faces[:, 0]], verts[faces[:, 2]] - verts[faces[:, 0]])
    vn = np.zeros_like(verts)
    for k in range(3):  # area-weighted (unnormalised face normals)
        np.add.at(vn, faces[:, k], fn)
    fn /= np.maximum(np.linalg.norm(fn, axis=1, keepdims=True), 1e-20)
    nrm = np.linalg.norm(vn, axis=1, keepdims=True)
    return np.divide(vn, nrm, out=np.zeros_like(vn), where=nrm > 0), fn


def _corner_intensity(verts, faces, vn, fn, eye, lights, cfg):
    """(F, 3) Phong intensity at each face's corners, normals turned towards the eye by the
    face's side (two-sided: meshes with inconsistent winding shade the same)."""
    side = np.sign(((eye - verts[faces].mean(1)) * fn).sum(1))
    side[side == 0] = 1
    n = vn[faces] * side[:, None, None]  # (F, 3, 3)
    bad = np.linalg.norm(n, axis=2) < 0.5  # a vertex whose normals cancelled: the face's
    n[bad] = (fn * side[:, None])[np.nonzero(bad)[0]]
    p = verts[faces].reshape(-1, 3)
    v = eye - p
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    return _phong(n.reshape(-1, 3), v, lights, cfg).reshape(-1, 3)


def _raster(verts, faces, inten, eye, f, r, u, cfg, chunk=1 << 22):
    s = cfg.size
    px, py, z = _project(verts, eye, f, r, u, cfg)
    X, Y, Z = px[faces], py[faces], z[faces]  # (F, 3)
    x0 = np.clip(np.ceil(X.min(1)), 0, s).astype(np.int64)
    x1 = np.clip(np.floor(X.max(1)), -1, s - 1).astype(np.int64)
    y0 = np.clip(np.ceil(Y.min(1)), 0, s).astype(np.int64)
    y1 = np.clip(np.floor(Y.max(1)), -1, s - 1).astype(np.int64)
    w, h = x1 - x0 + 1, y1 - y0 + 1
    area2 = (X[:, 1] - X[:, 0]) * (Y[:, 2] - Y[:, 0]) - (X[:, 2] - X[:, 0]) * (Y[:, 1] - Y[:, 0])
    keep = (w > 0) & (h > 0) & (np.abs(area2) > 1e-12)
    ext = np.maximum(w, h)
    bucket = np.where(keep, np.ceil(np.log2(np.maximum(ext, 1))).astype(np.int64), -1)
    frags_pix, frags_d, frags_v = [], [], []
    for b in np.unique(bucket[bucket >= 0]):
        side = 1 << int(b)
        ids_all = np.nonzero(bucket == b)[0]
        per = max(1, chunk // (side * side))
        oy, ox = np.divmod(np.arange(side * side), side)
        for c in range(0, len(ids_all), per):
            ids = ids_all[c:c + per]
            cx = x0[ids, None] + ox[None]  # (T, side^2)
            cy = y0[ids, None] + oy[None]
            valid = (cx <= x1[ids, None]) & (cy <= y1[ids, None])
            xa, ya = X[ids], Y[ids]
            # barycentric weights from edge functions, normalised by the signed area
            inv = 1.0 / area2[ids, None]
            w0 = ((xa[:, 1, None] - cx) * (ya[:, 2, None] - cy)
                  - (xa[:, 2, None] - cx) * (ya[:, 1, None] - cy)) * inv
            w1 = ((xa[:, 2, None] - cx) * (ya[:, 0, None] - cy)
                  - (xa[:, 0, None] - cx) * (ya[:, 2, None] - cy)) * inv
            w2 = 1.0 - w0 - w1
            eps = -1e-9
            inside = valid & (w0 >= eps) & (w1 >= eps) & (w2 >= eps)
            t, k = np.nonzero(inside)
            if not len(t):
                continue
            bw = np.stack([w0[t, k], w1[t, k], w2[t, k]], 1)
            fz = Z[ids[t]]
            pw = bw / fz  # perspective-correct weights
            depth = 1.0 / pw.sum(1)
            val = (pw * inten[ids[t]]).sum(1) * depth
            frags_pix.append(cy[t, k] * s + cx[t, k])
            frags_d.append(depth)
            frags_v.append(val)
    if not frags_pix:
        return np.zeros((s, s))
    return _zbuffer(np.concatenate(frags_pix), np.concatenate(frags_d),
                    np.concatenate(frags_v), s)


def _embree_scene(verts, faces):
    import trimesh
    from trimesh.ray.ray_pyembree import RayMeshIntersector

    mesh = trimesh.Trimesh(vertices=verts, faces=faces, process=False, validate=False)
    return mesh, RayMeshIntersector(mesh)


def _raycast(scene, verts, faces, inten, eye, f, r, u, cfg):
    import trimesh

    mesh, rays = scene
    s = cfg.size
    t = np.tan(np.radians(cfg.fov_deg) / 2)
    c = (np.arange(s) + 0.5) / s * 2 - 1  # pixel centres in [-1, 1]
    yy, xx = np.meshgrid(-c, c, indexing="ij")
    d = f + (xx.reshape(-1, 1) * t) * r + (yy.reshape(-1, 1) * t) * u
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    o = np.broadcast_to(eye, d.shape)
    tri, ray, loc = rays.intersects_id(o, d, multiple_hits=False, return_locations=True)
    img = np.zeros(s * s)
    if len(tri):
        bw = trimesh.triangles.points_to_barycentric(verts[faces[tri]], loc)
        img[ray] = (bw * inten[tri]).sum(1)
    return img.reshape(s, s)


def _to_uint8(img):
    return np.clip(np.rint(img * 255), 0, 255).astype(np.uint8)


def render_mesh(verts, faces, cameras: np.ndarray, cfg: RenderConfig | None = None,
                up_axis: str = "z") -> np.ndarray:
    """(V, H, W) uint8 grayscale renders of a triangle mesh from ``cameras`` (V, 2) degrees.
    A mesh that cannot be drawn (no triangles, non-finite, zero area) is a ValueError."""
    cfg = cfg or RenderConfig()
    verts, faces = _check_mesh(verts, faces)
    verts = verts[:, _UP[up_axis]]
    center = area_centroid(verts, faces)
    radius = float(np.linalg.norm(verts[np.unique(faces)] - center, axis=1).max())
    if not radius > 0:
        raise ValueError("mesh has zero extent")
    vn, fn = _vertex_normals(verts, faces)
    engine = _engine(cfg.engine)
    scene = _embree_scene(verts, faces) if engine == "embree" else None
    out = np.empty((len(cameras), cfg.size, cfg.size), np.uint8)
    for i, (az, po) in enumerate(cameras):
        eye, f, r, u = _camera(center, radius, az, po, cfg)
        inten = _corner_intensity(verts, faces, vn, fn, eye, _lights(f, r, u), cfg)
        img = (_raycast(scene, verts, faces, inten, eye, f, r, u, cfg) if scene is not None
               else _raster(verts, faces, inten, eye, f, r, u, cfg))
        out[i] = _to_uint8(img)
    return out


# ------------------------------------------------------------------------------- points
def pca_normals(points: np.ndarray, k: int = 16) -> np.ndarray:
    """(N, 3) unit normals: the least-variance direction of each point's k neighbours (sign
    arbitrary; the splat renderer turns each towards the eye)."""
    from scipy.spatial import cKDTree

    n = len(points)
    kk = min(k, n)
    _, idx = cKDTree(points).query(points, kk)
    idx = np.asarray(idx).reshape(n, kk)
    nb = points[idx] - points[idx].mean(1, keepdims=True)
    cov = np.einsum("nki,nkj->nij", nb, nb)
    _, vec = np.linalg.eigh(cov)
    return vec[:, :, 0]


def render_points(points, cameras: np.ndarray, cfg: RenderConfig | None = None,
                  up_axis: str = "z", normals: np.ndarray | None = None) -> np.ndarray:
    """(V, H, W) uint8 renders of a point cloud as shaded splats (discs of about the mean
    nearest-neighbour spacing, Phong-lit with PCA normals unless ``normals`` are given)."""
    from scipy.spatial import cKDTree

    cfg = cfg or RenderConfig()
    pts = np.asarray(points, dtype=np.float64)[:, :3]
    if pts.ndim != 2 or len(pts) < 3:
        raise ValueError(f"a point cloud to render needs >= 3 points, got {pts.shape}")
    if not np.isfinite(pts).all():
        raise ValueError("point cloud has NaN or Inf coordinates")
    pts = pts[:, _UP[up_axis]]
    nrm = pca_normals(pts) if normals is None else \
        np.asarray(normals, dtype=np.float64)[:, _UP[up_axis]]
    center = pts.mean(0)
    radius = float(np.linalg.norm(pts - center, axis=1).max())
    if not radius > 0:
        raise ValueError("point cloud has zero extent")
    dnn = cKDTree(pts).query(pts, 2)[0][:, 1]
    disc = cfg.splat_scale * float(np.mean(dnn))
    s, t = cfg.size, np.tan(np.radians(cfg.fov_deg) / 2)
    rmax = cfg.max_splat_px
    oy, ox = np.mgrid[-rmax:rmax + 1, -rmax:rmax + 1]
    oy, ox = oy.ravel(), ox.ravel()
    out = np.empty((len(cameras), s, s), np.uint8)
    for i, (az, po) in enumerate(cameras):
        eye, f, r, u = _camera(center, radius, az, po, cfg)
        px, py, z = _project(pts, eye, f, r, u, cfg)
        v = eye - pts
        v /= np.linalg.norm(v, axis=1, keepdims=True)
        n = nrm * np.where((nrm * v).sum(1) < 0, -1.0, 1.0)[:, None]
        val = _phong(n, v, _lights(f, r, u), cfg)
        rad = np.clip(disc / (z * t) * s / 2, 0.5, rmax)  # disc radius in pixels
        cx = np.rint(px)[:, None] + ox[None]
        cy = np.rint(py)[:, None] + oy[None]
        inside = ((cx - px[:, None]) ** 2 + (cy - py[:, None]) ** 2 <= rad[:, None] ** 2) \
            & (cx >= 0) & (cx < s) & (cy >= 0) & (cy < s)
        pi, k = np.nonzero(inside)
        pix = (cy[pi, k] * s + cx[pi, k]).astype(np.int64)
        out[i] = _to_uint8(_zbuffer(pix, z[pi], val[pi], s))
    return out


# ------------------------------------------------------------------------------- items
def render_key(item: dict) -> str:
    """A stable file name for a dataset item's renders: from its mesh handle (a frozen
    description: synthetic key or file path) when it has one, else from its points' bytes."""
    if item.get("mesh") is not None:
        h = hashlib.sha1(repr(item["mesh"]).encode()).hexdigest()[:20]
        return f"mesh-{h}"
    pts = np.ascontiguousarray(np.asarray(item["points"])[:, :3], dtype=np.float32)
    return f"pts-{hashlib.sha1(pts.tobytes()).hexdigest()[:20]}"


def _item_seed(seed: int, key: str) -> np.random.Generator:
    return np.random.default_rng([int(seed), int(key.split("-")[1][:12], 16)])


def render_item(item: dict, cfg: RenderConfig | None = None, seed: int = 0,
                rng: np.random.Generator | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(images (V, H, W) uint8, cameras (V, 2)) of a dataset item: its mesh when it has one,
    else its points as splats. Cameras come from ``rng``, else from (seed, item key)."""
    cfg = cfg or RenderConfig()
    rng = rng if rng is not None else _item_seed(seed, render_key(item))
    cams = sample_cameras(cfg.views, rng, cfg)
    up = item.get("up_axis") or "z"
    if item.get("mesh") is not None:
        verts, faces = item["mesh"].read()
        if faces is not None and len(faces):
            return render_mesh(verts, faces, cams, cfg, up), cams
    return render_points(item["points"], cams, cfg, up), cams


class RenderCache:
    """``DIR/<key>.npz`` per shape (see the module doc)."""

    def __init__(self, root, cfg: RenderConfig | None = None):
        self.root = Path(root)
        self.cfg = cfg

    def path(self, key: str) -> Path:
        return self.root / f"{key}.npz"

    def has(self, key: str) -> bool:
        """True when ``key`` is rendered with this cache's settings (any, without a cfg)."""
        p = self.path(key)
        if not p.is_file():
            return False
        if self.cfg is None:
            return True
        try:
            with np.load(p, allow_pickle=False) as z:
                return json.loads(str(z["meta"]))["settings"] == self.cfg.settings()
        except Exception:  # a truncated or foreign file: render it again
            return False

    def load(self, key: str) -> np.ndarray:
        p = self.path(key)
        if not p.is_file():
            raise DataError(p, "no renders for this shape: run `pointssl data render` with "
                               "the same --data/--root/--split first")
        with np.load(p, allow_pickle=False) as z:
            return z["images"]

    def save(self, key: str, images, cameras, source: str) -> None:
        meta = {"settings": (self.cfg or RenderConfig()).settings(), "source": source}
        # compressed: the black background makes renders ~4-8x smaller (V = 180 at 224² is
        # 9 MB a shape raw)
        with atomic_path(self.path(key), suffix=".npz") as tmp:
            np.savez_compressed(tmp, images=images, cameras=cameras.astype(np.float32),
                                meta=np.array(json.dumps(meta)))


def render_dataset(dataset, out, cfg: RenderConfig | None = None, seed: int = 0,
                   progress: bool = True, log: Callable[[str], None] | None = None) -> dict:
    """Render every item of ``dataset`` into ``out`` (skipping those already there with the
    same settings); an item that cannot be rendered gets one line naming it and is skipped.
    Returns counts ``{"rendered", "cached", "failed", "failed_sources"}``."""
    cfg = cfg or RenderConfig()
    log = log or (lambda m: print(m, file=sys.stderr, flush=True))
    cache = RenderCache(out, cfg)
    cache.root.mkdir(parents=True, exist_ok=True)
    sources = getattr(dataset, "sources", None) or [f"#{i}" for i in range(len(dataset))]
    done = cached = 0
    failed = []
    it = range(len(dataset))
    if progress:
        from tqdm import tqdm

        it = tqdm(it, desc="render", unit="shape", file=sys.stderr)
    for i in it:
        src = str(sources[i])
        try:
            item = dataset[i]
            key = render_key(item)
            if cache.has(key):
                cached += 1
                continue
            images, cams = render_item(item, cfg, seed)
            cache.save(key, images, cams, src)
            done += 1
        except (ValueError, IndexError, OSError, DataError, FloatingPointError, RuntimeError,
                np.linalg.LinAlgError) as e:
            log(f"skip {src}: cannot render ({' '.join(str(e).split())[:200]})")
            failed.append(src)
    return {"rendered": done, "cached": cached, "failed": len(failed),
            "failed_sources": failed}
