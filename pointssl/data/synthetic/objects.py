"""The object categories: part tables and one procedural builder per category.

Part labels are global across categories, like ShapeNetPart: ``PART_NAMES[k]`` is
``"category/part"`` and ``CATEGORY_PARTS[category]`` lists that category's part ids.
"""

from __future__ import annotations

import numpy as np
import trimesh

from pointssl.data.synthetic.geometry import _arc, _Builder, _rot, _tf
from pointssl.errors import PointSSLError

GENERATOR_VERSION = 3

_PARTS: dict[str, list[str]] = {
    "airplane": ["fuselage", "wings", "tail", "engines"],
    "bed": ["frame", "mattress", "headboard", "pillow"],
    "bench": ["seat", "legs", "back"],
    "bottle": ["body", "neck", "cap"],
    "car": ["body", "cabin", "wheels"],
    "chair": ["seat", "back", "legs", "arms"],
    "lamp": ["base", "stem", "shade"],
    "mug": ["body", "handle"],
    "shelf": ["sides", "shelves", "back"],
    "sofa": ["seat", "back", "arms", "base"],
    "table": ["top", "legs"],
    "vase": ["body", "lip", "handles"],
    # v3: near neighbours of the classes above (same kinds of parts, other arrangements)
    "stool": ["seat", "legs", "footrest"],
    "desk": ["top", "legs", "drawers"],
    "cabinet": ["body", "doors", "handles", "legs"],
    "cup": ["bowl", "stem", "foot"],
    "bowl": ["body", "foot"],
    "jar": ["body", "lid"],
    "truck": ["cab", "cargo", "wheels"],
    "bus": ["body", "wheels"],
    "monitor": ["screen", "stand", "base"],
    "ladder": ["rails", "rungs"],
    "fan": ["base", "stem", "head"],
}
CATEGORIES: list[str] = list(_PARTS)
V2_CATEGORIES: list[str] = CATEGORIES[:12]  # generator v2's classes (v3 appends, never reorders)
PART_NAMES: list[str] = [f"{c}/{p}" for c in CATEGORIES for p in _PARTS[c]]
CATEGORY_PARTS: dict[str, list[int]] = {}
for _c in CATEGORIES:
    _start = PART_NAMES.index(f"{_c}/{_PARTS[_c][0]}")
    CATEGORY_PARTS[_c] = list(range(_start, _start + len(_PARTS[_c])))
del _c, _start


# Each builder draws its parameters from ``rng`` and adds pieces with local part indices
# (order of _PARTS[category]). Units are roughly metres, z up, resting on z = 0.


def _leg_set(b, part, corners, z0, z1, thick, round_legs, splay=0.0):
    for x, y in corners:
        norm = np.hypot(x, y) or 1.0
        dx, dy = splay * x / norm, splay * y / norm
        if round_legs:
            b.cyl(part, [x + dx, y + dy, z0], [x, y, z1], thick / 2, sections=10)
        else:
            c = [(x + x + dx) / 2, (y + y + dy) / 2, (z0 + z1) / 2]
            b.box(part, [thick, thick, z1 - z0], c)


def _table(b, rng):
    top, legs = 0, 1
    u = rng.uniform
    h = u(0.3, 0.95)
    t = u(0.02, 0.08)
    shape = rng.choice(["rect", "round", "oval"], p=[0.55, 0.25, 0.2])
    w = u(0.5, 1.4) if shape == "round" else u(0.6, 2.0)
    d = w if shape == "round" else w * u(0.35, 0.95)
    zt = h - t
    if shape == "rect":
        b.box(top, [w, d, t], [0, 0, h - t / 2])
    else:
        b.ellipse_cyl(top, w / 2, d / 2, t, [0, 0, h - t / 2])
    style = rng.choice(["legs4", "legs3", "pedestal", "panels"], p=[0.5, 0.12, 0.2, 0.18])
    thick = u(0.03, 0.09)
    round_legs = rng.random() < 0.4
    inset = u(0.02, 0.12)
    if style == "legs4":
        if shape == "rect":
            ax, ay = w / 2 - inset - thick / 2, d / 2 - inset - thick / 2
        else:
            ax, ay = (w / 2 - inset) * 0.7, (d / 2 - inset) * 0.7
        corners = [(sx * ax, sy * ay) for sx in (-1, 1) for sy in (-1, 1)]
        _leg_set(b, legs, corners, 0, zt, thick, round_legs, u(0, 0.08))
        if rng.random() < 0.35:  # apron
            ah = u(0.04, 0.12)
            b.box(top, [2 * ax, thick * 0.5, ah], [0, ay, zt - ah / 2])
            b.box(top, [2 * ax, thick * 0.5, ah], [0, -ay, zt - ah / 2])
            b.box(top, [thick * 0.5, 2 * ay, ah], [ax, 0, zt - ah / 2])
            b.box(top, [thick * 0.5, 2 * ay, ah], [-ax, 0, zt - ah / 2])
        if rng.random() < 0.2:  # lower shelf
            b.box(legs, [2 * ax, 2 * ay, t * 0.7], [0, 0, h * u(0.1, 0.3)])
    elif style == "legs3":
        rad = min(w, d) / 2 * u(0.5, 0.8)
        corners = [(rad * np.cos(a), rad * np.sin(a)) for a in np.arange(3) * 2 * np.pi / 3]
        _leg_set(b, legs, corners, 0, zt, thick, round_legs, u(0, 0.1))
    elif style == "pedestal":
        b.cyl(legs, [0, 0, 0.02], [0, 0, zt], u(0.03, 0.12), sections=14)
        if rng.random() < 0.6:
            r = min(w, d) * u(0.2, 0.4)
            b.ellipse_cyl(legs, r, r, u(0.02, 0.05), [0, 0, 0.02])
        else:
            foot = min(w, d) * u(0.25, 0.45)
            b.box(legs, [2 * foot, thick, 0.04], [0, 0, 0.02])
            b.box(legs, [thick, 2 * foot, 0.04], [0, 0, 0.02])
    else:  # two slab ends, like a desk
        pt = u(0.025, 0.06)
        ax = w / 2 - inset - pt / 2
        pd = d * u(0.6, 1.0)
        b.box(legs, [pt, pd, zt], [ax, 0, zt / 2])
        b.box(legs, [pt, pd, zt], [-ax, 0, zt / 2])
        if rng.random() < 0.5:
            b.box(legs, [2 * ax, pt, zt * u(0.2, 0.5)], [0, 0, zt * u(0.4, 0.7)])


def _chair(b, rng):
    seat, back, legs, arms = 0, 1, 2, 3
    u = rng.uniform
    sh = u(0.38, 0.52)
    sw = u(0.38, 0.62)
    sd = sw * u(0.8, 1.25)
    st = u(0.03, 0.1)
    if rng.random() < 0.15:
        b.ellipse_cyl(seat, sw / 2, sd / 2, st, [0, 0, sh + st / 2])
    else:
        b.box(seat, [sw, sd, st], [0, 0, sh + st / 2])
    # Back, tilted backwards about its bottom edge.
    bh = u(0.3, 0.75)
    bt = u(0.02, 0.08)
    tilt = u(0.0, 0.3)
    hinge = _tf([0, -sd / 2 + bt / 2, sh + st], _rot("x", tilt))
    style = rng.choice(["panel", "slats", "rails"], p=[0.5, 0.25, 0.25])
    bw = sw * u(0.8, 1.0)
    if style == "panel":
        b.box(back, [bw, bt, bh], (hinge @ [0, 0, bh / 2, 1])[:3], hinge[:3, :3])
    else:
        post = u(0.02, 0.05)
        for sx in (-1, 1):
            c = hinge @ [sx * (bw / 2 - post / 2), 0, bh / 2, 1]
            b.box(back, [post, bt, bh], c[:3], hinge[:3, :3])
        rail = u(0.04, 0.15)
        b.box(back, [bw, bt, rail], (hinge @ [0, 0, bh - rail / 2, 1])[:3], hinge[:3, :3])
        k = int(rng.integers(1, 5))
        for i in range(k):
            if style == "slats":
                x = (i + 1) / (k + 1) * bw - bw / 2
                c = hinge @ [x, 0, (bh - rail) / 2, 1]
                b.box(back, [post * 0.8, bt * 0.8, bh - rail], c[:3], hinge[:3, :3])
            else:
                z = (i + 1) / (k + 1) * (bh - rail)
                c = hinge @ [0, 0, z, 1]
                b.box(back, [bw, bt * 0.8, rail * 0.5], c[:3], hinge[:3, :3])
    # Legs.
    lstyle = rng.choice(["four", "swivel", "sled"], p=[0.6, 0.22, 0.18])
    thick = u(0.025, 0.06)
    if lstyle == "four":
        ax, ay = sw / 2 - thick / 2 - u(0, 0.04), sd / 2 - thick / 2 - u(0, 0.04)
        corners = [(sx * ax, sy * ay) for sx in (-1, 1) for sy in (-1, 1)]
        _leg_set(b, legs, corners, 0, sh, thick, rng.random() < 0.4, u(0, 0.06))
    elif lstyle == "swivel":
        b.cyl(legs, [0, 0, 0.06], [0, 0, sh], u(0.02, 0.04), sections=10)
        spoke = min(sw, sd) * u(0.45, 0.65)
        n = int(rng.choice([4, 5]))
        for a in np.arange(n) * 2 * np.pi / n + u(0, np.pi):
            end = [spoke * np.cos(a), spoke * np.sin(a), 0.03]
            b.cyl(legs, [0, 0, 0.06], end, 0.015, sections=8)
    else:  # two U-shaped tubes
        r = u(0.01, 0.02)
        for sx in (-1, 1):
            x = sx * (sw / 2 - r)
            path = [
                [x, sd / 2, sh],
                [x, sd / 2 + 0.02, r],
                [x, -sd / 2 - 0.02, r],
                [x, -sd / 2, sh],
            ]
            b.tube(legs, path, r)
    # Arms.
    if rng.random() < 0.45:
        ah = u(0.15, 0.28)
        aw = u(0.03, 0.08)
        ad = sd * u(0.6, 1.0)
        for sx in (-1, 1):
            x = sx * (sw / 2 - aw / 2)
            b.box(arms, [aw, ad, 0.03], [x, sd / 2 - ad / 2, sh + st + ah])
            b.box(arms, [aw * 0.6, 0.03, ah], [x, sd / 2 - 0.05, sh + st + ah / 2])


def _sofa(b, rng):
    seat, back, arms, base = 0, 1, 2, 3
    u = rng.uniform
    w = u(0.9, 2.6)
    d = u(0.75, 1.05)
    bh = u(0.1, 0.3)
    if rng.random() < 0.4:
        lh = u(0.05, 0.15)
        b.box(base, [w, d, bh - lh], [0, 0, lh + (bh - lh) / 2])
        _leg_set(
            b,
            base,
            [(sx * (w / 2 - 0.05), sy * (d / 2 - 0.05)) for sx in (-1, 1) for sy in (-1, 1)],
            0,
            lh,
            0.04,
            True,
        )
    else:
        b.box(base, [w, d, bh], [0, 0, bh / 2])
    n_arms = int(rng.choice([0, 1, 2], p=[0.15, 0.1, 0.75]))
    aw = u(0.08, 0.28)
    ah = u(0.1, 0.35)
    back_t = u(0.12, 0.3)
    back_h = u(0.25, 0.6)
    cush_t = u(0.1, 0.22)
    left = -w / 2 + (aw if n_arms >= 1 else 0)
    right = w / 2 - (aw if n_arms == 2 else 0)
    k = int(rng.choice([1, 2, 3]))
    cw = (right - left) / k
    for i in range(k):
        cx = left + (i + 0.5) * cw
        b.box(seat, [cw * 0.98, d - back_t, cush_t], [cx, back_t / 2, bh + cush_t / 2])
    tilt = u(0, 0.25)
    hinge = _tf([0, -d / 2 + back_t / 2, bh], _rot("x", tilt))
    bz = cush_t + back_h
    b.box(back, [w, back_t, bz], (hinge @ [0, 0, bz / 2, 1])[:3], hinge[:3, :3])
    if rng.random() < 0.4:  # back cushions
        for i in range(k):
            cx = left + (i + 0.5) * cw
            c = hinge @ [cx, back_t / 2 + 0.06, cush_t + back_h * 0.45, 1]
            b.box(back, [cw * 0.95, 0.12, back_h * 0.8], c[:3], hinge[:3, :3])
    for sx in [-1, 1][:n_arms]:
        # In front of the back, not through it.
        c = [sx * (w / 2 - aw / 2), back_t / 2, bh + (cush_t + ah) / 2]
        b.box(arms, [aw, d - back_t, cush_t + ah], c)
    if rng.random() < 0.15:  # chaise extension on one end
        ew = min(u(0.6, 0.9), w / 2)
        el = u(0.5, 0.8)
        ex = right - ew / 2
        b.box(base, [ew, el, bh], [ex, d / 2 + el / 2, bh / 2])
        b.box(seat, [ew * 0.98, el, cush_t], [ex, d / 2 + el / 2, bh + cush_t / 2])


def _bed(b, rng):
    frame, mattress, headboard, pillow = 0, 1, 2, 3
    u = rng.uniform
    length = u(1.9, 2.2)
    w = u(0.9, 2.0)
    fh = u(0.1, 0.45)
    ft = u(0.08, 0.25)
    if rng.random() < 0.5:
        b.box(frame, [w, length, ft], [0, 0, fh - ft / 2])
        ax, ay = w / 2 - 0.05, length / 2 - 0.05
        corners = [(sx * ax, sy * ay) for sx in (-1, 1) for sy in (-1, 1)]
        _leg_set(b, frame, corners, 0, fh - ft, u(0.04, 0.08), rng.random() < 0.4)
    else:
        b.box(frame, [w, length, fh], [0, 0, fh / 2])
    mt = u(0.12, 0.32)
    mw, ml = w * u(0.92, 1.0), length * u(0.92, 1.0)
    b.box(mattress, [mw, ml, mt], [0, 0, fh + mt / 2])
    top = fh + mt
    hb_t = u(0.04, 0.12)
    if rng.random() < 0.9:
        hh = u(0.2, 1.0)
        y = -length / 2 - hb_t / 2
        if rng.random() < 0.7:
            b.box(headboard, [w, hb_t, top + hh], [0, y, (top + hh) / 2])
        else:
            for sx in (-1, 1):
                b.box(
                    headboard,
                    [0.08, hb_t * 1.2, top + hh],
                    [sx * (w / 2 - 0.04), y, (top + hh) / 2],
                )
            b.box(headboard, [w, hb_t, hh * 0.8], [0, y, top + hh * 0.5])
    if rng.random() < 0.35:
        fb = u(0.0, 0.4)
        b.box(frame, [w, hb_t, top + fb], [0, length / 2 + hb_t / 2, (top + fb) / 2])
    n = int(rng.choice([0, 1, 2], p=[0.15, 0.35, 0.5]))
    for i in range(n):
        pw = mw / n * u(0.6, 0.9)
        x = (i + 0.5) * mw / n - mw / 2
        radii = [pw / 2, u(0.12, 0.22), u(0.04, 0.09)]
        b.ellipsoid(pillow, radii, [x, -ml / 2 + radii[1] + 0.03, top + radii[2] * 0.8])


def _shelf(b, rng):
    sides, shelves, back = 0, 1, 2
    u = rng.uniform
    if rng.random() < 0.3:  # low and wide, like a TV stand or sideboard
        h, w = u(0.35, 0.8), u(1.0, 2.0)
    else:
        h, w = u(0.6, 2.0), u(0.4, 1.6)
    d = u(0.2, 0.55)
    th = u(0.015, 0.05)
    lift = u(0, 0.12) if rng.random() < 0.4 else 0.0
    if rng.random() < 0.75:
        for sx in (-1, 1):
            b.box(sides, [th, d, h], [sx * (w / 2 - th / 2), 0, h / 2])
        inner = w - 2 * th
    else:
        post = u(0.02, 0.04)
        for sx in (-1, 1):
            for sy in (-1, 1):
                b.box(
                    sides,
                    [post, post, h],
                    [sx * (w / 2 - post / 2), sy * (d / 2 - post / 2), h / 2],
                )
        inner = w - 2 * post  # boards run between the posts
    n = int(rng.integers(2, 7))
    zs = np.linspace(lift + th / 2, h - th / 2, n)
    if rng.random() < 0.3:  # uneven spacing
        zs[1:-1] += rng.uniform(-0.3, 0.3, n - 2) * (zs[1] - zs[0])
    bt = th * 0.5 if rng.random() < 0.6 else 0.0
    for z in zs:  # boards stop at the back panel rather than run through it
        b.box(shelves, [inner, d - bt, th], [0, bt / 2, z])
    if bt:
        b.box(back, [inner, bt, h - lift], [0, -d / 2 + bt / 2, lift + (h - lift) / 2])


def _lamp(b, rng):
    base, stem, shade = 0, 1, 2
    u = rng.uniform
    kind = rng.choice(["floor", "table", "desk"], p=[0.35, 0.4, 0.25])
    if kind == "floor":
        h = u(1.2, 1.9)
        br = u(0.12, 0.28)
        bt = u(0.02, 0.06)
        b.ellipse_cyl(base, br, br, bt, [0, 0, bt / 2])
        b.cyl(stem, [0, 0, bt], [0, 0, h], u(0.01, 0.025))
        top = h
        sr = u(0.15, 0.3)
    elif kind == "table":
        h = u(0.4, 0.8)
        bh = h * u(0.3, 0.55)
        r0 = u(0.06, 0.14)
        prof = [
            [0, 0],
            [r0, 0],
            [r0 * u(1.0, 1.6), bh * u(0.3, 0.6)],
            [r0 * u(0.3, 0.7), bh],
            [0, bh],
        ]
        b.revolve(base, prof, sections=int(rng.choice([4, 24], p=[0.2, 0.8])))
        b.cyl(stem, [0, 0, bh], [0, 0, h], u(0.008, 0.02))
        top = h
        sr = u(0.12, 0.25)
    else:  # articulated desk lamp: bent arm ending in a tilted cone shade
        br = u(0.07, 0.14)
        bt = u(0.02, 0.05)
        if rng.random() < 0.5:
            b.ellipse_cyl(base, br, br, bt, [0, 0, bt / 2])
        else:
            b.box(base, [2 * br, 2 * br * u(0.6, 1), bt], [0, 0, bt / 2])
        a1, a2 = u(0.3, 0.5), u(0.25, 0.45)
        t1, t2 = u(-0.4, 0.3), u(0.6, 1.4)
        p1 = np.array([a1 * np.sin(t1), 0, bt + a1 * np.cos(t1)])
        p2 = p1 + [a2 * np.sin(t2), 0, a2 * np.cos(t2)]
        b.tube(stem, [[0, 0, bt], p1, p2], u(0.008, 0.015), sections=8)
        sr = u(0.06, 0.12)
        sh = u(0.08, 0.18)
        prof = [[0, 0], [u(0.1, 0.4) * sr, 0], [sr, -sh], [0, -sh]]
        b.revolve(shade, prof, _tf(p2, _rot("y", u(0.2, 0.9))), sections=20)
        return
    style = rng.choice(["drum", "cone", "dome", "bowl"], p=[0.3, 0.4, 0.15, 0.15])
    sh = sr * u(0.6, 1.3)
    if style == "drum":
        b.ellipse_cyl(shade, sr, sr, sh, [0, 0, top])
    elif style == "cone":
        rt = sr * u(0.35, 0.8)
        b.revolve(shade, [[0, 0], [sr, 0], [rt, sh], [0, sh]], _tf([0, 0, top - sh * 0.6]))
    elif style == "dome":
        b.ellipsoid(shade, [sr, sr, sh * 0.6], [0, 0, top])
    else:  # uplighter bowl
        b.revolve(shade, [[0, 0], [sr * 0.3, 0], [sr, sh * 0.5], [0, sh * 0.5]], _tf([0, 0, top]))


def _mug(b, rng):
    body, handle = 0, 1
    u = rng.uniform
    r = u(0.035, 0.06)
    h = u(0.06, 0.14) if rng.random() < 0.8 else u(0.14, 0.2)
    rt = r * u(0.85, 1.2)
    wall = u(0.003, 0.008)
    bottom = u(0.004, 0.012)
    prof = [[0, 0], [r, 0], [rt, h], [rt - wall, h], [r - wall, bottom], [0, bottom]]
    b.revolve(body, prof, sections=24)
    if rng.random() < 0.85:
        hr = h * u(0.25, 0.42)
        hx = hr * u(0.6, 1.3)
        zc = h * u(0.45, 0.6)
        tr = u(0.004, 0.01)
        xw = (r + rt) / 2 - wall
        if rng.random() < 0.75:
            path = _arc([xw, zc], hx, hr, -np.pi / 2, np.pi / 2, n=12)
        else:  # squared handle
            path = [
                [xw, 0, zc - hr],
                [xw + hx, 0, zc - hr],
                [xw + hx, 0, zc + hr],
                [xw, 0, zc + hr],
            ]
        b.tube(handle, path, tr, sections=8)


def _bottle(b, rng):
    body, neck, cap = 0, 1, 2
    u = rng.uniform
    rb = u(0.03, 0.055)
    hb = u(0.12, 0.28) if rng.random() < 0.8 else u(0.06, 0.12)
    rn = rb * u(0.22, 0.5)
    hs = u(0.005, 0.07)
    mid = rb * u(0.85, 1.15)
    nl = u(0.015, 0.1)
    z0 = hb + hs
    # Body and neck are one solid (no hidden internal faces), labelled by height.
    prof = [[0, 0], [rb, 0], [mid, hb * u(0.3, 0.7)], [rb, hb], [rn, z0], [rn, z0 + nl]]
    if rng.random() < 0.4:  # lip ring
        prof += [[rn * 1.2, z0 + nl], [rn * 1.2, z0 + nl + 0.004]]
        nl += 0.004
    prof += [[rn, z0 + nl], [0, z0 + nl]]
    sections = int(rng.choice([4, 6, 24], p=[0.15, 0.1, 0.75]))

    def label(c):
        return np.where(c[:, 2] > z0 + 1e-9, neck, body)

    b.revolve(label, prof, _tf(r=_rot("z", np.pi / 4)), sections=sections)
    if rng.random() < 0.2:
        return
    ch = u(0.008, 0.03)
    cr = rn * u(1.0, 1.35)
    b.ellipse_cyl(cap, cr, cr, ch, [0, 0, z0 + nl + ch / 2], sections=16)


def _vase(b, rng):
    body, lip, handles = 0, 1, 2
    u = rng.uniform
    h = u(0.18, 0.6)
    r0 = h * (u(0.12, 0.3) if rng.random() < 0.75 else u(0.3, 0.6))  # some squat bowls
    belly = r0 * u(1.0, 1.8)
    neck = r0 * u(0.3, 1.2)
    zb = h * u(0.25, 0.6)
    zn = h * u(0.75, 0.92)
    sections = int(rng.choice([6, 8, 28], p=[0.1, 0.1, 0.8]))
    lh = h * u(0.03, 0.12)
    lr = neck * u(1.05, 1.6)
    outer = [[r0, 0], [belly, zb], [neck, zn], [neck, h]]
    if rng.random() < 0.5:  # open top: an inner wall, like a mug
        wall = max(0.004, neck * u(0.05, 0.2))
        inner = [[max(x - wall, 1e-3), max(z, wall)] for x, z in outer[::-1]]
        b.revolve(body, [[0, 0], *outer, *inner, [0, wall]], sections=sections)
        ring = [[neck - wall, 0], [neck, 0], [lr, lh], [lr - wall, lh], [neck - wall, 0]]
        b.revolve(lip, ring, _tf([0, 0, h - 0.002]), sections=sections)
    else:
        b.revolve(body, [[0, 0], *outer, [0, h]], sections=sections)
        lip_prof = [[0, 0], [neck, 0], [lr, lh], [0, lh]]
        b.revolve(lip, lip_prof, _tf([0, 0, h - 0.002]), sections=sections)
    if rng.random() < 0.3:
        zc = (zb + zn) / 2
        hr = (zn - zb) / 2 * u(0.6, 1.0)
        tr = h * u(0.01, 0.025)
        for sx in (-1, 1):
            xw = sx * (neck + belly) / 2 * 0.95
            path = _arc([xw, zc], sx * h * u(0.08, 0.18), hr, -np.pi / 2, np.pi / 2, n=10)
            b.tube(handles, path, tr, sections=8)


def _airplane(b, rng):
    fuselage, wings, tail, engines = 0, 1, 2, 3
    u = rng.uniform
    fr = u(0.035, 0.08)
    nose, tcone = u(0.08, 0.2), u(0.15, 0.3)
    prof = [[0, 0], [fr * 0.2, 0], [fr, nose], [fr, 1 - tcone], [fr * u(0.15, 0.4), 1], [0, 1]]
    # Revolve about z, then lay along x with the nose at x = 0.
    b.revolve(fuselage, prof, _tf(r=_rot("y", np.pi / 2)), sections=16)
    delta = rng.random() < 0.12
    if delta:
        c0, taper, sweep, span = u(0.4, 0.6), u(0.03, 0.15), u(0.7, 1.05), u(0.2, 0.4)
    else:
        c0, taper, sweep, span = u(0.12, 0.3), u(0.15, 0.7), u(-0.1, 0.7), u(0.3, 0.65)
    x0 = u(0.3, 0.5) if not delta else 1 - tcone - c0 * u(0.8, 1.0)
    zw = rng.choice([-0.7, 0.0, 0.7]) * fr
    dihedral = u(-0.07, 0.14)
    thick = c0 * u(0.06, 0.12)
    xt = span * np.tan(sweep)
    wing = [[x0, 0], [x0 + c0, 0], [x0 + xt + c0 * taper, span], [x0 + xt, span]]
    for sy in (-1, 1):
        m = _tf([0, 0, zw], _rot("x", sy * dihedral), (1, sy, 1))
        b.prism(wings, wing, thick, m)
    # Tail: vertical fin (x-z polygon extruded along y) and horizontal stabilisers.
    fh = u(0.08, 0.22)
    fc = u(0.08, 0.16)
    fs = u(0.02, 0.1)
    xf = 1 - fc - u(0.0, 0.05)
    fin = [[xf, 0], [xf + fc, 0], [xf + fc + fs * 0.3, fh], [xf + fs + fc * 0.3, fh]]
    b.prism(tail, fin, fc * 0.1, _tf([0, 0, fr * 0.5], _rot("x", np.pi / 2)))
    if not delta or rng.random() < 0.3:
        hs, hc = span * u(0.25, 0.45), u(0.06, 0.12)
        ht = fr * 0.5 + fh if rng.random() < 0.2 else 0.0
        xh = 1 - hc - u(0.0, 0.06)
        stab = [[xh, 0], [xh + hc, 0], [xh + hc + hs * 0.3, hs], [xh + hs * 0.3 + hc * 0.4, hs]]
        for sy in (-1, 1):
            b.prism(tail, stab, hc * 0.1, _tf([0, 0, ht], s=(1, sy, 1)))
    n = int(rng.choice([0, 2, 4], p=[0.25, 0.55, 0.2]))
    er, el = u(0.02, 0.04), u(0.08, 0.16)
    if n == 2 and rng.random() < 0.2:  # rear-mounted
        for sy in (-1, 1):
            x = 1 - tcone - el
            b.cyl(engines, [x, sy * (fr + er), fr * 0.4], [x + el, sy * (fr + er), fr * 0.4], er)
        return
    fracs = [u(0.3, 0.4)] if n == 2 else [u(0.25, 0.35), u(0.55, 0.7)] if n == 4 else []
    for f in fracs:
        y = f * span
        xl = x0 + f * xt - el * 0.4
        z = zw + y * np.tan(dihedral) - thick / 2 - er * 1.1
        for sy in (-1, 1):
            b.cyl(engines, [xl, sy * y, z], [xl + el, sy * y, z], er)


def _car(b, rng):
    body, cabin, wheels = 0, 1, 2
    u = rng.uniform
    kind = rng.choice(
        ["sedan", "hatch", "suv", "van", "pickup", "sports"], p=[0.25, 0.2, 0.2, 0.1, 0.12, 0.13]
    )
    length = u(3.5, 5.5)
    w = u(1.6, 2.0)
    wr = u(0.28, 0.42)
    z0 = wr * u(0.4, 0.8)
    bh = {"sports": u(0.35, 0.5), "suv": u(0.6, 0.9), "van": u(0.6, 0.9)}.get(kind, u(0.45, 0.7))
    z1 = z0 + bh
    hood = u(0.0, 0.25) * bh
    front = u(0.1, 0.5)
    side = [
        [0, z0 + 0.05],
        [front * 0.5, z0],
        [length, z0],
        [length, z1 - u(0, 0.1)],
        [length - u(0.3, 1.0), z1],
        [front, z1 - hood],
        [0, z1 - hood - u(0.05, 0.2)],
    ]
    # Profile is in x-z, extruded across the width (y).
    across = _tf([0, 0, 0], _rot("x", np.pi / 2))
    b.prism(body, side, w, across)
    ch = {"sports": u(0.25, 0.35), "van": u(0.7, 1.1), "suv": u(0.5, 0.75)}.get(kind, u(0.35, 0.55))
    if kind == "van":
        xa, xb = front + u(0.2, 0.6), length - 0.05
    elif kind == "pickup":
        xa = front + u(0.6, 1.0)
        xb = xa + u(1.0, 1.6)
    elif kind == "hatch":
        xa, xb = front + u(0.6, 1.1), length - u(0.05, 0.2)
    else:
        xa = front + u(0.8, 1.4)
        xb = min(length - 0.4, xa + length * u(0.35, 0.55))
    ws = u(0.2, 0.7) * ch
    rs = u(0.05, 0.6) * ch if kind not in ("van", "suv", "hatch") else u(0.0, 0.2) * ch
    cab = [[xa, 0], [xb, 0], [xb - rs, ch], [xa + ws, ch]]
    b.prism(cabin, [[x, z + z1 - 0.01] for x, z in cab], w * u(0.8, 0.95), across)
    n_axles = 3 if kind in ("pickup", "van") and rng.random() < 0.25 else 2
    xs = [front + u(0.3, 0.6), length - u(0.5, 0.9)]
    if n_axles == 3:
        xs.append(xs[1] - 2.2 * wr)
    _wheels(b, wheels, xs, w, wr, u(0.18, 0.3))


def _bench(b, rng):
    seat, legs, back = 0, 1, 2
    u = rng.uniform
    w = u(0.6, 2.2)
    d = u(0.3, 0.6)
    h = u(0.38, 0.5)
    st = u(0.03, 0.07)
    if rng.random() < 0.5:
        b.box(seat, [w, d, st], [0, 0, h - st / 2])
    else:
        k = int(rng.integers(3, 7))
        sd = d / k * 0.8
        for i in range(k):
            b.box(seat, [w, sd, st], [0, (i + 0.5) * d / k - d / 2, h - st / 2])
    style = rng.choice(["four", "panels", "aframe"], p=[0.45, 0.35, 0.2])
    inset = u(0.03, 0.25)
    thick = u(0.03, 0.08)
    ax = w / 2 - inset
    if style == "four":
        corners = [(sx * ax, sy * (d / 2 - thick / 2)) for sx in (-1, 1) for sy in (-1, 1)]
        _leg_set(b, legs, corners, 0, h - st, thick, rng.random() < 0.3, u(0, 0.05))
    elif style == "panels":
        for sx in (-1, 1):
            b.box(legs, [thick, d * u(0.7, 1.0), h - st], [sx * ax, 0, (h - st) / 2])
    else:
        r = u(0.012, 0.025)
        for sx in (-1, 1):
            b.tube(legs, [[sx * ax, -d / 2, 0], [sx * ax, 0, h - st], [sx * ax, d / 2, 0]], r)
    if rng.random() < 0.5:
        bh = u(0.25, 0.5)
        bt = u(0.02, 0.05)
        hinge = _tf([0, -d / 2 + bt / 2, h], _rot("x", u(0.05, 0.35)))
        if rng.random() < 0.5:
            b.box(back, [w, bt, bh], (hinge @ [0, 0, bh / 2, 1])[:3], hinge[:3, :3])
        else:
            k = int(rng.integers(2, 4))
            for i in range(k):
                c = hinge @ [0, 0, (i + 0.6) * bh / k, 1]
                b.box(back, [w, bt, bh / k * 0.6], c[:3], hinge[:3, :3])
            for sx in (-1, 1):
                c = hinge @ [sx * ax, 0, bh / 2, 1]
                b.box(back, [0.04, bt * 1.2, bh], c[:3], hinge[:3, :3])


# ------------------------------------------------------------------ v3 categories


def _stool(b, rng):
    seat, legs, footrest = 0, 1, 2
    u = rng.uniform
    bar = rng.random() < 0.4
    h = u(0.6, 0.85) if bar else u(0.35, 0.5)
    r = u(0.14, 0.22)
    st = u(0.03, 0.08)
    if rng.random() < 0.65:
        b.ellipse_cyl(seat, r, r, st, [0, 0, h - st / 2])
    else:
        b.box(seat, [2 * r, 2 * r * u(0.8, 1.0), st], [0, 0, h - st / 2])
    zt = h - st
    if rng.random() < 0.2:  # one post on a round foot
        b.cyl(legs, [0, 0, 0.02], [0, 0, zt], u(0.02, 0.04))
        b.ellipse_cyl(legs, r * u(0.8, 1.2), r * u(0.8, 1.2), 0.03, [0, 0, 0.015])
        if bar or rng.random() < 0.3:
            t = np.linspace(0, 2 * np.pi, 17)
            ring = np.stack([np.cos(t), np.sin(t), np.zeros(17)], 1) * r * 0.8
            b.tube(footrest, ring + [0, 0, h * u(0.3, 0.45)], 0.01, sections=6)
        return
    n = int(rng.choice([3, 4], p=[0.35, 0.65]))
    splay = u(1.0, 1.35)
    thick = u(0.02, 0.045)
    tops = [(r * 0.75 * np.cos(a), r * 0.75 * np.sin(a)) for a in np.arange(n) * 2 * np.pi / n
            + np.pi / 4]
    for x, y in tops:
        b.cyl(legs, [x * splay, y * splay, 0], [x, y, zt], thick / 2, sections=8)
    if rng.random() < (0.8 if bar else 0.35):  # rungs between neighbouring legs
        z = h * u(0.25, 0.45)
        f = 1 - z / zt
        at = [(x * (1 + (splay - 1) * f), y * (1 + (splay - 1) * f), z) for x, y in tops]
        for i in range(n):
            b.cyl(footrest, at[i], at[(i + 1) % n], thick * 0.35, sections=6)


def _desk(b, rng):
    top, legs, drawers = 0, 1, 2
    u = rng.uniform
    h, w, d, t = u(0.68, 0.8), u(1.0, 1.8), u(0.5, 0.8), u(0.025, 0.05)
    b.box(top, [w, d, t], [0, 0, h - t / 2])
    zt = h - t
    pw = w * u(0.25, 0.4)
    sides = [int(rng.choice([-1, 1]))] if rng.random() < 0.65 else [-1, 1]
    for sx in sides:  # drawer pedestals, fronts on -y
        x = sx * (w / 2 - pw / 2 - 0.01)
        b.box(drawers, [pw, d * 0.95, zt], [x, 0, zt / 2])
        k = int(rng.integers(2, 5))
        for j in range(k):
            zj = (j + 0.5) * zt / k
            b.box(drawers, [pw * 0.9, 0.02, zt / k * 0.85], [x, -d * 0.475 - 0.01, zj])
    if len(sides) == 1:
        x = -sides[0] * (w / 2 - 0.04)
        if rng.random() < 0.5:
            b.box(legs, [0.03, d * 0.9, zt], [x, 0, zt / 2])
        else:
            for sy in (-1, 1):
                b.box(legs, [0.05, 0.05, zt], [x, sy * (d / 2 - 0.05), zt / 2])
    if rng.random() < 0.5 or len(sides) == 2:  # modesty panel at the back
        b.box(legs, [w - 2 * pw - 0.04, 0.02, zt * u(0.3, 0.6)], [0, d / 2 - 0.04, zt * 0.7])


def _cabinet(b, rng):
    body, doors, handles, legs = 0, 1, 2, 3
    u = rng.uniform
    if rng.random() < 0.4:
        h, w = u(1.2, 2.0), u(0.5, 1.2)
    else:
        h, w = u(0.5, 1.0), u(0.5, 1.8)
    d = u(0.35, 0.6)
    lift = u(0.08, 0.2) if rng.random() < 0.45 else 0.0
    hb = h - lift
    b.box(body, [w, d, hb], [0, 0, lift + hb / 2])
    if lift:
        for sx in (-1, 1):
            for sy in (-1, 1):
                b.cyl(legs, [sx * (w / 2 - 0.05), sy * (d / 2 - 0.05), 0],
                      [sx * (w / 2 - 0.05), sy * (d / 2 - 0.05), lift], 0.02, sections=8)
    y = -d / 2 - 0.01
    if rng.random() < 0.6:  # doors in columns, vertical handles near the middle
        n = int(rng.choice([1, 2, 3], p=[0.3, 0.55, 0.15]))
        dw = w / n
        for i in range(n):
            x = -w / 2 + (i + 0.5) * dw
            b.box(doors, [dw * 0.96, 0.02, hb * 0.96], [x, y, lift + hb / 2])
            hx = x + (dw * 0.38 if i % 2 == 0 else -dw * 0.38)
            b.box(handles, [0.02, 0.03, min(0.15, hb * 0.2)], [hx, y - 0.025, lift + hb * 0.55])
    else:  # a chest of drawers, horizontal bar handles
        k = int(rng.integers(2, 6))
        dh = hb / k
        for j in range(k):
            z = lift + (j + 0.5) * dh
            b.box(doors, [w * 0.96, 0.02, dh * 0.9], [0, y, z])
            b.box(handles, [min(0.3, w * 0.3), 0.03, 0.02], [0, y - 0.025, z])


def _cup(b, rng):
    bowl, stem, foot = 0, 1, 2
    u = rng.uniform
    r = u(0.03, 0.05)
    hb = u(0.05, 0.12)
    rb = r * u(0.35, 1.0)
    wall = u(0.002, 0.005)
    if rng.random() < 0.55:  # a goblet: foot disc, stem, bowl
        rf, hs = r * u(0.6, 1.0), u(0.04, 0.12)
        b.ellipse_cyl(foot, rf, rf, 0.006, [0, 0, 0.003], sections=20)
        b.cyl(stem, [0, 0, 0.006], [0, 0, 0.006 + hs], u(0.003, 0.007), sections=8)
        z0 = 0.006 + hs
    else:  # a tumbler on a thick base
        z0 = u(0.006, 0.02)
        b.ellipse_cyl(foot, rb, rb, z0, [0, 0, z0 / 2], sections=20)
    prof = [[0, 0], [rb, 0], [r, hb], [r - wall, hb], [rb - wall, wall], [0, wall]]
    # 1 mm into the foot: the bowl's underside is inside a convex piece, hence hidden
    b.revolve(bowl, prof, _tf([0, 0, z0 - 0.001]), sections=20)


def _bowl(b, rng):
    body, foot = 0, 1
    u = rng.uniform
    r = u(0.06, 0.15)
    h = r * u(0.3, 0.7)
    rb = r * u(0.3, 0.6)
    wall = r * u(0.03, 0.08)
    s = np.linspace(0, 1, 7)
    outer = [[rb + (r - rb) * t ** u(0.4, 0.8), h * t] for t in s]
    inner = [[max(x - wall, 1e-3), max(z, wall)] for x, z in outer[::-1]]
    z0 = 0.0
    if rng.random() < 0.7:
        z0 = h * u(0.06, 0.15)
        b.ellipse_cyl(foot, rb * 0.85, rb * 0.85, z0, [0, 0, z0 / 2], sections=20)
    sections = int(rng.choice([6, 24], p=[0.15, 0.85]))
    b.revolve(body, [[0, 0], *outer, *inner, [0, wall]], _tf([0, 0, max(z0 - 0.001, 0.0)]),
              sections=sections)


def _jar(b, rng):
    body, lid = 0, 1
    u = rng.uniform
    r = u(0.05, 0.12)
    h = r * u(1.0, 2.5)
    rn = r * u(0.7, 0.95)
    prof = [[0, 0], [r * u(0.85, 1.0), 0], [r, h * u(0.15, 0.4)], [r, h * u(0.75, 0.85)],
            [rn, h * 0.93], [rn, h], [0, h]]
    sections = int(rng.choice([4, 24], p=[0.2, 0.8]))
    b.revolve(body, prof, _tf(r=_rot("z", np.pi / 4)), sections=sections)
    if rng.random() < 0.9:
        # the lid sits 2 mm over the rim, so no face of the jar is pressed flat against it
        lh = h * u(0.05, 0.15)
        if sections == 4:
            side = rn * np.sqrt(2) * 1.04
            b.box(lid, [side, side, lh], [0, 0, h - 0.002 + lh / 2])
        else:
            b.ellipse_cyl(lid, rn * 1.04, rn * 1.04, lh, [0, 0, h - 0.002 + lh / 2])
        if rng.random() < 0.5:  # knob
            b.ellipsoid(lid, [rn * 0.25, rn * 0.25, lh * 0.8], [0, 0, h + lh], subdiv=1)


def _wheels(b, part, xs, w, wr, ww):
    for x in xs:
        for sy in (-1, 1):
            y = sy * (w / 2 - ww / 2 + 0.02)
            b.cyl(part, [x, y - ww / 2, wr], [x, y + ww / 2, wr], wr, sections=16)


def _truck(b, rng):
    cab, cargo, wheels = 0, 1, 2
    u = rng.uniform
    length, w = u(5.0, 9.0), u(2.0, 2.5)
    wr = u(0.4, 0.55)
    z0 = wr * u(0.9, 1.3)
    lc, hc = u(1.6, 2.4), u(1.4, 2.2)
    across = _tf([0, 0, 0], _rot("x", np.pi / 2))
    side = [[0, z0], [lc, z0], [lc, z0 + hc], [lc * u(0.15, 0.35), z0 + hc],
            [0, z0 + hc * u(0.45, 0.7)]]
    b.prism(cab, side, w, across)
    x0 = lc + u(0.05, 0.3)
    kind = rng.choice(["box", "flatbed", "tank"], p=[0.5, 0.25, 0.25])
    if kind == "box":
        hk = u(1.8, 2.8)
        b.box(cargo, [length - x0, w, hk], [(x0 + length) / 2, 0, z0 + hk / 2])
    elif kind == "flatbed":
        b.box(cargo, [length - x0, w, 0.15], [(x0 + length) / 2, 0, z0 + 0.075])
        sh = u(0.2, 0.8)
        for sy in (-1, 1):
            b.box(cargo, [length - x0, 0.05, sh], [(x0 + length) / 2, sy * (w / 2 - 0.025),
                                                    z0 + 0.15 + sh / 2])
    else:
        tr = w / 2 * u(0.8, 1.0)
        b.cyl(cargo, [x0, 0, z0 + tr], [length, 0, z0 + tr], tr, sections=16)
        b.box(cargo, [length - x0, w * 0.6, 0.15], [(x0 + length) / 2, 0, z0 + 0.075])
    xs = [lc * 0.5, length - u(0.6, 1.2)]
    if length > 6.5:
        xs.append(xs[1] - 2.2 * wr)
    _wheels(b, wheels, xs, w, wr, u(0.25, 0.4))


def _bus(b, rng):
    body, wheels = 0, 1
    u = rng.uniform
    length, w = u(8.0, 13.0), u(2.3, 2.6)
    h = u(2.6, 3.2) if rng.random() < 0.8 else u(3.9, 4.3)  # some double-deckers
    wr = u(0.45, 0.55)
    z0 = wr * u(0.7, 1.0)  # the wheels' lower part shows below the body
    nose = u(0.1, 0.6)
    side = [[0, z0], [length, z0], [length, z0 + h], [nose, z0 + h], [0, z0 + h - u(0.3, 0.8)]]
    b.prism(body, side, w, _tf([0, 0, 0], _rot("x", np.pi / 2)))
    if rng.random() < 0.5:  # roof unit
        b.box(body, [u(1.5, 3.0), w * 0.6, 0.25], [length * u(0.3, 0.6), 0, z0 + h + 0.125])
    xs = [u(1.8, 2.8), length - u(2.0, 3.2)]
    if length > 11.5:
        xs.append(xs[1] - 2.3 * wr)
    _wheels(b, wheels, xs, w, wr, u(0.25, 0.35))


def _monitor(b, rng):
    screen, stand, base = 0, 1, 2
    u = rng.uniform
    w = u(0.4, 0.8)
    h = w * u(0.5, 0.75)
    t = u(0.015, 0.06)
    hs = u(0.05, 0.25)
    bt = 0.02
    if rng.random() < 0.6:
        b.box(base, [u(0.15, 0.3), u(0.12, 0.25), bt], [0, 0, bt / 2])
    else:
        br = u(0.08, 0.14)
        b.ellipse_cyl(base, br, br, bt, [0, 0, bt / 2])
    zc = bt + hs + h / 2
    pole = [u(0.03, 0.08), u(0.02, 0.04)]
    b.box(stand, [pole[0], pole[1], zc - bt], [0, t / 2 + pole[1] / 2 + 0.01, bt + (zc - bt) / 2])
    tilt = _rot("x", u(-0.08, 0.25))
    b.box(screen, [w, t, h], [0, 0, zc], tilt)
    if rng.random() < 0.4:  # a bulge at the back
        b.box(screen, [w * 0.5, t * 1.5, h * 0.5], tilt @ [0, t * 0.75, 0] + [0, 0, zc], tilt)


def _ladder(b, rng):
    rails, rungs = 0, 1
    u = rng.uniform
    h = u(0.8, 2.5)
    wb = u(0.35, 0.6)
    wt = wb * u(0.7, 1.0)
    rr = u(0.015, 0.03)
    k = max(2, int(h / u(0.25, 0.32)))
    if rng.random() < 0.6:  # step ladder: front rails with rungs, back legs, top cap
        spread = h * u(0.2, 0.35)
        for sx in (-1, 1):
            b.cyl(rails, [sx * wb / 2, -spread, 0], [sx * wt / 2, 0, h], rr, sections=6)
            b.cyl(rails, [sx * wb / 2, spread, 0], [sx * wt / 2, 0, h], rr, sections=6)
        for j in range(1, k):
            f = j / k
            hw = (wb + (wt - wb) * f) / 2
            b.box(rungs, [2 * hw, u(0.06, 0.12), 0.02], [0, -spread * (1 - f), f * h])
        b.box(rungs, [wt + 0.04, 0.15, 0.03], [0, 0, h + 0.015])
    else:  # a straight ladder leaning back
        lean = _rot("x", u(0.1, 0.3))
        for sx in (-1, 1):
            b.box(rails, [rr * 1.5, rr * 3, h], lean @ [sx * wb / 2, 0, h / 2], lean)
        for j in range(1, k):
            b.cyl(rungs, lean @ [-wb / 2, 0, j * h / k], lean @ [wb / 2, 0, j * h / k],
                  rr * 0.7, sections=6)


def _fan(b, rng):
    base, stem, head = 0, 1, 2
    u = rng.uniform
    h = u(0.8, 1.4) if rng.random() < 0.55 else u(0.25, 0.45)
    br = u(0.1, 0.25) * (1.0 if h > 0.6 else 0.7)
    if rng.random() < 0.6:
        b.ellipse_cyl(base, br, br, 0.03, [0, 0, 0.015])
    else:
        for a in (0.0, np.pi / 2):
            b.box(base, [2 * br, 0.04, 0.03], [0, 0, 0.015], _rot("z", a))
    b.cyl(stem, [0, 0, 0.03], [0, 0, h], u(0.012, 0.025), sections=8)
    rad = u(0.12, 0.25) * (1.0 if h > 0.6 else 0.7)
    aim = _rot("x", u(-0.1, 0.35))  # blades spin about the local y axis
    hub = np.array([0.0, 0.0, h + rad * 0.3])
    b.ellipsoid(head, [rad * 0.25, rad * 0.45, rad * 0.25], hub + aim @ [0, rad * 0.25, 0],
                aim, subdiv=1)
    n = int(rng.integers(3, 6))
    for a in np.arange(n) * 2 * np.pi / n + u(0, np.pi):
        spin = aim @ _rot("y", a)
        b.ellipsoid(head, [rad * 0.45, 0.008, rad * 0.18], hub + spin @ [rad * 0.5, -0.02, 0],
                    spin, subdiv=1)
    if rng.random() < 0.6:  # guard ring
        t = np.linspace(0, 2 * np.pi, 25)
        ring = np.stack([rad * np.cos(t), np.full(25, -0.04), rad * np.sin(t)], 1)
        b.tube(head, ring @ aim.T + hub, 0.006, sections=6)


_BUILDERS = {
    "airplane": _airplane,
    "bed": _bed,
    "bench": _bench,
    "bottle": _bottle,
    "car": _car,
    "chair": _chair,
    "lamp": _lamp,
    "mug": _mug,
    "shelf": _shelf,
    "sofa": _sofa,
    "table": _table,
    "vase": _vase,
    "stool": _stool,
    "desk": _desk,
    "cabinet": _cabinet,
    "cup": _cup,
    "bowl": _bowl,
    "jar": _jar,
    "truck": _truck,
    "bus": _bus,
    "monitor": _monitor,
    "ladder": _ladder,
    "fan": _fan,
}


def make_shape(
    category: str,
    rng: np.random.Generator,
    rotate_deg: float = 360.0,
    tilt_deg: float = 0.0,
) -> tuple[trimesh.Trimesh, np.ndarray]:
    """A random mesh of ``category`` and its per-face global part ids ``(F,)`` int64.

    Proportions and pose come from ``rng``: yaw uniform in ``±rotate_deg / 2`` about z, a
    tilt up to ``tilt_deg`` about a random horizontal axis, a mild anisotropic stretch and a
    scale. The mesh rests on z = 0, centred in x and y.
    """
    if category not in _BUILDERS:
        raise PointSSLError(f"unknown synthetic category {category!r}; choose from {CATEGORIES}")
    b = _Builder()
    _BUILDERS[category](b, rng)
    mesh, local = b.build()
    yaw = np.deg2rad(rotate_deg) * (rng.random() - 0.5)
    r = _rot("z", yaw)
    if tilt_deg > 0:
        axis = rng.uniform(0, 2 * np.pi)
        r = _rot("z", axis) @ _rot("x", np.deg2rad(tilt_deg) * rng.random()) @ _rot("z", -axis) @ r
    stretch = rng.uniform(0.85, 1.18, 3) * rng.uniform(0.8, 1.25)
    v = (mesh.vertices * stretch) @ r.T
    lo, hi = v.min(0), v.max(0)
    v -= [(lo[0] + hi[0]) / 2, (lo[1] + hi[1]) / 2, lo[2]]
    mesh = trimesh.Trimesh(v, mesh.faces, process=False, metadata=mesh.metadata)
    return mesh, np.asarray(CATEGORY_PARTS[category], dtype=np.int64)[local]
