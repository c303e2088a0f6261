"""The multi-view renderer (Section 3.1 of the cross-modal paper): cameras, fit, lighting,
engines agreeing, splats, cache and skipping of bad meshes."""

import numpy as np
import pytest
import trimesh

from pointssl.data.render import (
    RenderCache,
    RenderConfig,
    area_centroid,
    has_embree,
    pca_normals,
    render_dataset,
    render_item,
    render_key,
    render_mesh,
    render_points,
    sample_cameras,
)

SPHERE = trimesh.creation.icosphere(3)


def test_cameras_in_the_papers_ranges():
    cams = sample_cameras(2000, np.random.default_rng(0))
    assert cams.shape == (2000, 2)
    assert 10 <= cams[:, 0].min() < 20 and 330 < cams[:, 0].max() <= 340  # azimuth
    assert 10 <= cams[:, 1].min() < 20 and 155 < cams[:, 1].max() <= 165  # polar


def test_area_weighted_centroid_by_hand():
    # a unit right triangle (area 0.5, centre (1/3, 1/3, 0)) and one of area 2 at x = 10
    v = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [10, 0, 0], [12, 0, 0], [10, 2, 0]], float)
    f = np.array([[0, 1, 2], [3, 4, 5]])
    want = (0.5 * np.array([1 / 3, 1 / 3, 0]) + 2 * np.array([32 / 3, 2 / 3, 0])) / 2.5
    assert np.allclose(area_centroid(v, f), want)


def test_sphere_fills_the_predicted_disc_and_both_lights_reach_it():
    cfg = RenderConfig(views=3, size=64, engine="raster")
    im = render_mesh(SPHERE.vertices * 3 + 5, SPHERE.faces, sample_cameras(3, np.random
                     .default_rng(1), cfg), cfg)
    assert im.shape == (3, 64, 64) and im.dtype == np.uint8
    half = np.radians(cfg.fov_deg) / 2
    r_px = np.tan(np.arcsin(np.sin(half) / cfg.margin)) / np.tan(half) * 32  # scale-free fit
    area = (im > 0).sum((1, 2))
    assert np.allclose(area, np.pi * r_px ** 2, rtol=0.06), (area, np.pi * r_px ** 2)
    ys, xs = np.nonzero(im[0])
    assert abs(xs.mean() - 31.5) < 0.5 and abs(ys.mean() - 31.5) < 0.5  # centred
    # light 1 comes from the upper right, light 2 from the lower left: both halves are lit
    # well above the ambient term (a single light would leave one side at ambient)
    amb = 255 * cfg.ambient
    assert im[0][ys[ys > 40], xs[ys > 40]].mean() > amb + 20
    assert im[0][ys[ys < 23], xs[ys < 23]].mean() > amb + 20


@pytest.mark.skipif(not has_embree(), reason="embreex is not installed")
def test_ray_casting_and_rasteriser_agree():
    box = trimesh.creation.box((1, 2, 0.5))
    mesh = trimesh.util.concatenate([box, SPHERE.copy().apply_translation([1.5, 0, 0])])
    cams = sample_cameras(3, np.random.default_rng(2))
    a = render_mesh(mesh.vertices, mesh.faces, cams, RenderConfig(size=48, engine="raster"))
    b = render_mesh(mesh.vertices, mesh.faces, cams, RenderConfig(size=48, engine="embree"))
    assert ((a > 0) == (b > 0)).mean() > 0.995  # silhouettes: ties on edges at most
    both = (a > 0) & (b > 0)
    assert np.abs(a.astype(int) - b.astype(int))[both].max() <= 2


def test_up_axis_is_a_cyclic_relabelling():
    cfg = RenderConfig(size=32, engine="raster")
    cams = sample_cameras(2, np.random.default_rng(3))
    box = trimesh.creation.box((1, 2, 3))
    z_up = render_mesh(box.vertices, box.faces, cams, cfg, "z")
    y_up = render_mesh(box.vertices[:, [1, 2, 0]], box.faces, cams, cfg, "y")
    assert np.array_equal(z_up, y_up)
    assert not np.array_equal(z_up, render_mesh(box.vertices, box.faces, cams, cfg, "y"))


def test_pca_normals_of_a_plane_and_splats_cover_the_mesh_silhouette():
    rng = np.random.default_rng(0)
    plane = np.c_[rng.uniform(-1, 1, (200, 2)), np.zeros(200)]
    assert np.allclose(np.abs(pca_normals(plane)[:, 2]), 1, atol=1e-6)
    cfg = RenderConfig(size=48, engine="raster")
    cams = sample_cameras(2, rng)
    pts = trimesh.sample.sample_surface_even(SPHERE, 3000, seed=0)[0]
    mesh = render_mesh(SPHERE.vertices, SPHERE.faces, cams, cfg) > 0
    dots = render_points(pts, cams, cfg) > 0
    iou = (mesh & dots).sum() / (mesh | dots).sum()
    assert iou > 0.85, iou


class _Mesh:
    def __init__(self, v, f):
        self.v, self.f = v, f

    def read(self):
        return self.v, self.f

    def __repr__(self):
        return f"_Mesh({len(self.v)}, {float(np.nansum(self.v)):.3f})"


class _Set:
    def __init__(self, items, sources):
        self.items, self.sources = items, sources

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


def test_dataset_render_is_cached_resumable_and_names_bad_meshes(tmp_path):
    nan = SPHERE.vertices.copy()
    nan[0, 0] = np.nan
    rng = np.random.default_rng(0)
    items = [{"points": rng.normal(size=(64, 3)), "mesh": _Mesh(SPHERE.vertices, SPHERE.faces)},
             {"points": rng.normal(size=(64, 3)), "mesh": _Mesh(nan, SPHERE.faces)},
             {"points": rng.normal(size=(64, 3)),
              "mesh": _Mesh(np.zeros((3, 3)), np.array([[0, 1, 2]]))},  # zero area
             {"points": rng.normal(size=(64, 3))}]  # point-only: splats
    lines = []
    cfg = RenderConfig(views=2, size=24)
    ds = _Set(items, ["good.off", "nan.off", "flat.off", "cloud.h5#3"])
    res = render_dataset(ds, tmp_path, cfg, progress=False, log=lines.append)
    assert res["rendered"] == 2 and res["failed"] == 2
    assert res["failed_sources"] == ["nan.off", "flat.off"]
    assert len(lines) == 2 and lines[0].startswith("skip nan.off:") and "NaN" in lines[0]
    assert "zero surface area" in lines[1]
    cache = RenderCache(tmp_path, cfg)
    im = cache.load(render_key(items[0]))
    assert im.shape == (2, 24, 24) and im.any()
    # the same settings: nothing to do; deterministic from (seed, key)
    again = render_dataset(ds, tmp_path, cfg, progress=False, log=lines.append)
    assert again["rendered"] == 0 and again["cached"] == 2
    assert np.array_equal(render_item(items[0], cfg)[0], im)
    # other settings are not interchangeable: rendered anew
    assert render_dataset(ds, tmp_path, RenderConfig(views=3, size=24), progress=False,
                          log=lines.append)["rendered"] == 2
    assert render_key(items[3]).startswith("pts-") and render_key(items[0]).startswith("mesh-")
