"""Splits that cannot leak: the check every protocol runs, and a seeded stratified hold-out.

A cloud's identity is its file after resolving links (same device and inode, so symlinks
and hard links count), the h5 row it is stored in (``CloudSet.origins``), or, where neither
exists, its source name (synthetic ids; the placeholder ``#i`` names of in-memory sets are
positions, not identities, and are skipped). Identical points on both sides (copies) warn.
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
import warnings

import numpy as np

from pointssl.data.formats import DataWarning
from pointssl.errors import PointSSLError

_PLACEHOLDER = re.compile(r"#\d+")  # CloudSet's default sources: positions, not identities


def _identity(src, origin):
    """The key naming one cloud's data: its stored row, its file (device, inode: links
    count), or its source name; None for a placeholder name."""
    if origin is not None:
        return ("row", str(origin))
    if src is None or _PLACEHOLDER.fullmatch(str(src)):
        return None
    try:
        st = os.stat(src)  # follows symlinks
    except (OSError, ValueError):
        return ("name", str(src))
    return ("file", st.st_dev, st.st_ino) if stat.S_ISREG(st.st_mode) else ("name", str(src))


def _identities(ds) -> list:
    origins = getattr(ds, "origins", None) or [None] * len(ds)
    return [_identity(s, o) for s, o in zip(ds.sources, origins, strict=True)]


def _digest(points) -> bytes:
    p = np.ascontiguousarray(np.asarray(points)[:, :3], dtype=np.float32)
    return hashlib.blake2b(p.tobytes() + repr(p.shape).encode(), digest_size=16).digest()


def check_disjoint(train, test, what: str = "protocol") -> None:
    """Refuse (PointSSLError) when one source file or stored row is in both ``train`` and
    ``test``; warn (DataWarning, one line naming up to 3 pairs) when identical clouds sit on
    both sides under different names."""
    seen = {}
    for i, key in enumerate(_identities(train)):
        if key is not None:
            seen.setdefault(key, i)
    shared = [(seen[k], j, k) for j, k in enumerate(_identities(test)) if k in seen]
    if shared:
        i, j, key = shared[0]
        a, b = str(train.sources[i]), str(test.sources[j])
        first = key[1] if key[0] == "row" else a + ("" if a == b else f" (in test as {b})")
        raise PointSSLError(
            f"{what}: {len(shared)} test cloud(s) are also in train (same file or h5 row), "
            f"first {first}; a protocol never tests on its training data"
        )
    digests = {}
    for i in range(len(train)):
        digests.setdefault(_digest(train.points[i]), i)
    same = [(digests[d], j) for j in range(len(test))
            if (d := _digest(test.points[j])) in digests]
    if same:
        pairs = ", ".join(f"{train.sources[i]} = {test.sources[j]}" for i, j in same[:3])
        warnings.warn(
            f"{what}: {len(same)} test cloud(s) identical to training clouds ({pairs}"
            f"{', ...' if len(same) > 3 else ''})",
            DataWarning,
            stacklevel=2,
        )


def holdout_split(dataset, fraction: float, seed: int = 0):
    """``(train, test)``: a seeded hold-out of ``fraction`` of each class (unlabelled -1
    clouds are one group), rounding per class and keeping at least one cloud of every class
    in train. Both sets record ``split_info = {"holdout": fraction, "seed": seed}``."""
    fraction = float(fraction)
    if not 0.0 < fraction < 1.0:
        raise PointSSLError(f"--holdout must be a fraction between 0 and 1, got {fraction}")
    labels = np.asarray(dataset.labels)
    rng = np.random.default_rng(seed)
    test = []
    for c in np.unique(labels):  # sorted: the draw order is fixed
        idx = np.flatnonzero(labels == c)
        k = min(int(np.floor(fraction * len(idx) + 0.5)), len(idx) - 1)
        test.extend(rng.permutation(idx)[:k].tolist())
    if not test:
        raise PointSSLError(f"holdout {fraction} of {len(labels)} clouds leaves no test cloud "
                            "(every class keeps at least one training cloud)")
    is_test = np.zeros(len(labels), dtype=bool)
    is_test[test] = True
    info = {"holdout": fraction, "seed": int(seed)}
    tr, te = dataset.subset(np.flatnonzero(~is_test)), dataset.subset(np.flatnonzero(is_test))
    tr.split_info, te.split_info = dict(info), dict(info)
    return tr, te
