"""PCL's PCD clouds: ascii, binary and binary_compressed (LZF), with normals and rgb."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pointssl.data.formats.validate import Cloud, one_line
from pointssl.errors import DataError

_PCD_TYPES = {
    ("F", 4): "<f4",
    ("F", 8): "<f8",
    ("I", 1): "i1",
    ("I", 2): "<i2",
    ("I", 4): "<i4",
    ("I", 8): "<i8",
    ("U", 1): "u1",
    ("U", 2): "<u2",
    ("U", 4): "<u4",
    ("U", 8): "<u8",
}


def lzf_decompress(data: bytes, out_len: int) -> bytes:
    """LZF, as PCL's ``binary_compressed`` PCD files use it (no tiny library exists)."""
    out = bytearray(out_len)
    i = o = 0
    n = len(data)
    while i < n:
        ctrl = data[i]
        i += 1
        if ctrl < 32:  # literal run of ctrl + 1 bytes
            length = ctrl + 1
            if i + length > n or o + length > out_len:
                raise ValueError("LZF literal run past the end")
            out[o : o + length] = data[i : i + length]
            i += length
            o += length
            continue
        length = ctrl >> 5
        if length == 7:
            if i >= n:
                raise ValueError("LZF stream ends inside a back reference")
            length += data[i]
            i += 1
        if i >= n:
            raise ValueError("LZF stream ends inside a back reference")
        ref = o - ((ctrl & 0x1F) << 8) - data[i] - 1
        i += 1
        length += 2
        if ref < 0 or o + length > out_len:
            raise ValueError("LZF back reference out of range")
        if ref + length <= o:
            out[o : o + length] = out[ref : ref + length]
            o += length
        else:  # overlapping copy repeats a short pattern byte by byte
            for _ in range(length):
                out[o] = out[ref]
                o += 1
                ref += 1
    if o != out_len:
        raise ValueError(f"LZF data decompresses to {o} bytes, header says {out_len}")
    return bytes(out)


def _rgb(values: np.ndarray, typ: str) -> np.ndarray:
    """PCL packs r, g, b as 0x00RRGGBB into a uint32, or into the bits of a float32."""
    if typ == "F":  # ascii rows were parsed as float64: back to float32, then its bits
        u = np.ascontiguousarray(values, dtype="<f4").view("<u4")
    else:
        u = np.asarray(values).astype("<u4")
    rgb = np.stack([(u >> 16) & 255, (u >> 8) & 255, u & 255], axis=1)
    return (rgb / 255.0).astype(np.float32)


def read_pcd(path: Path) -> Cloud:
    raw = path.read_bytes()
    header: dict[str, list[str]] = {}
    pos = 0
    while True:
        end = raw.find(b"\n", pos)
        if end < 0:
            raise DataError(path, "truncated PCD header: no DATA line")
        line = raw[pos:end].decode("ascii", "replace").strip()
        pos = end + 1
        if not line or line.startswith("#"):
            continue
        key, *vals = line.split()
        header[key.upper()] = vals
        if key.upper() == "DATA":
            break
    try:
        fields = header["FIELDS"]
        sizes = [int(s) for s in header.get("SIZE", ["4"] * len(fields))]
        types = [t.upper() for t in header.get("TYPE", ["F"] * len(fields))]
        counts = [int(c) for c in header.get("COUNT", ["1"] * len(fields))]
        width = int(header.get("WIDTH", ["0"])[0])
        height = int(header.get("HEIGHT", ["1"])[0])
        points_n = int(header["POINTS"][0]) if "POINTS" in header else width * height
        mode = header["DATA"][0].lower()
    except (KeyError, IndexError, ValueError) as e:
        raise DataError(path, f"bad PCD header ({one_line(e)})") from None
    if not len(fields) == len(sizes) == len(types) == len(counts):
        raise DataError(path, "bad PCD header: FIELDS, SIZE, TYPE and COUNT differ in length")
    if width * height != points_n:
        raise DataError(
            path, f"PCD header POINTS {points_n} disagrees with WIDTH*HEIGHT {width}*{height}"
        )
    if not {"x", "y", "z"} <= set(fields):
        raise DataError(path, f"PCD has no x, y, z fields (FIELDS {' '.join(fields)})")
    names = [f if f != "_" else f"_pad{i}" for i, f in enumerate(fields)]
    try:
        dtype = np.dtype(
            [
                (nm, _PCD_TYPES[(t, s)], (c,)) if c > 1 else (nm, _PCD_TYPES[(t, s)])
                for nm, t, s, c in zip(names, types, sizes, counts, strict=True)
            ]
        )
    except (KeyError, ValueError):
        raise DataError(path, f"unsupported PCD field types {types} / sizes {sizes}") from None
    body = raw[pos:]
    if mode == "ascii":
        rows = [ln for ln in body.decode("ascii", "replace").splitlines() if ln.strip()]
        if len(rows) != points_n:
            raise DataError(
                path,
                f"PCD header says POINTS {points_n} but the data has "
                f"{len(rows)} rows (truncated or wrong count)",
            )
        try:
            table = np.array([r.split() for r in rows], dtype=np.float64)
        except ValueError as e:
            raise DataError(path, f"malformed PCD ascii data ({one_line(e)})") from None
        if table.ndim != 2 or table.shape[1] != sum(counts):
            raise DataError(path, f"PCD rows do not have {sum(counts)} values each")
        offsets = np.cumsum([0] + counts)
        col = {f: table[:, offsets[i]] for i, f in enumerate(fields)}
    elif mode in ("binary", "binary_compressed"):
        need = points_n * dtype.itemsize
        if mode == "binary_compressed":
            if len(body) < 8:
                raise DataError(path, "truncated binary_compressed PCD data")
            csize, usize = np.frombuffer(body[:8], "<u4")
            if 8 + int(csize) > len(body):
                raise DataError(
                    path,
                    f"truncated: compressed PCD data needs {csize} bytes, file has {len(body) - 8}",
                )
            if usize != need:
                raise DataError(
                    path,
                    f"PCD header says POINTS {points_n} ({need} bytes) but "
                    f"the compressed data holds {usize} bytes",
                )
            try:
                body = lzf_decompress(body[8 : 8 + int(csize)], int(usize))
            except ValueError as e:
                raise DataError(path, f"corrupt compressed PCD data ({e})") from None
            # compressed PCD stores each field contiguously (column-major)
            col, off = {}, 0
            for f, t, s, c in zip(fields, types, sizes, counts, strict=True):
                arr = np.frombuffer(body, _PCD_TYPES[(t, s)], points_n * c, off)
                col[f] = arr.reshape(points_n, c)[:, 0]
                off += points_n * c * s
        else:
            if len(body) < need or len(body) >= need + dtype.itemsize:
                held = len(body) // dtype.itemsize
                raise DataError(
                    path,
                    f"PCD header says POINTS {points_n} but the binary data "
                    f"holds {held} points (truncated or wrong count)",
                )
            rec = np.frombuffer(body, dtype, points_n)
            col = {
                f: (rec[nm] if rec[nm].ndim == 1 else rec[nm][:, 0])
                for nm, f in zip(names, fields, strict=True)
            }
    else:
        raise DataError(path, f"unknown PCD DATA mode '{mode}'")
    xyz = np.stack([col["x"], col["y"], col["z"]], axis=1)
    normals = colors = None
    if {"normal_x", "normal_y", "normal_z"} <= set(fields):
        normals = np.stack([col["normal_x"], col["normal_y"], col["normal_z"]], axis=1)
    key = next((k for k in ("rgb", "rgba") if k in col), None)
    if key is not None and sizes[fields.index(key)] == 4:
        colors = _rgb(col[key], types[fields.index(key)])
    return Cloud(xyz, normals, colors)
