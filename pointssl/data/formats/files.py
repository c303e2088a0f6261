"""Which files under a folder are data: hidden entries and side files (lists, notes) are not."""

from __future__ import annotations

import itertools
import os
import re
from pathlib import Path

# Files that live beside data in the standard layouts and are not data themselves.
SIDE_EXTS = (".json", ".md", ".rst", ".yaml", ".yml", ".log", ".cfg", ".ini")
SIDE_NAMES = re.compile(
    r"(.*_files|.*shape_names|filelist|modelnet\d+_(train|test|val)|(train|test|val)(_split)?)"
    r"\.txt$|(readme|license|licence)(\..*)?$",
    re.IGNORECASE,
)


def data_files(root: Path, exts) -> tuple[list[Path], list[Path]]:
    """(files with one of ``exts``, other files) under root, skipping hidden entries.

    Linked folders are followed (``train -> /disk/train`` is common; a test folder linked to
    the train folder must be seen to be refused); a link back to a folder above ends there."""
    found, other = [], []
    above = {os.fspath(root): frozenset()}  # real paths of each folder's ancestors
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        chain = above.pop(dirpath, frozenset()) | {os.path.realpath(dirpath)}
        keep = []
        for d in sorted(dirnames):
            sub = os.path.join(dirpath, d)
            if not d.startswith(".") and os.path.realpath(sub) not in chain:
                above[sub] = chain
                keep.append(d)
        dirnames[:] = keep
        for name in sorted(filenames):
            if name.startswith("."):
                continue
            p = Path(dirpath) / name
            (found if p.suffix.lower() in exts else other).append(p)
    return found, other


def is_side_file(path: Path) -> bool:
    return path.suffix.lower() in SIDE_EXTS or bool(SIDE_NAMES.fullmatch(path.name))


def is_name_list(path: Path) -> bool:
    """A .txt of names (split lists, shape names) rather than a cloud of numbers."""
    if SIDE_NAMES.fullmatch(path.name):
        return True
    try:
        with open(path, errors="replace") as fh:
            lines = [ln.strip() for ln in itertools.islice(fh, 50) if ln.strip()]
    except OSError:
        return False
    if not lines or any(len(re.split(r"[\s,]+", ln)) != 1 for ln in lines):
        return False

    def is_number(tok):
        try:
            float(tok)
            return True
        except ValueError:
            return False

    return not all(is_number(ln) for ln in lines)
