"""``check_root``: validate every data file under a folder, one DataError per bad file."""

from __future__ import annotations

from pathlib import Path

from pointssl.data.formats.files import data_files, is_name_list, is_side_file
from pointssl.data.formats.h5 import read_h5
from pointssl.data.formats.read import READ_EXTS, read_cloud
from pointssl.errors import DataError

CHECK_EXTS = READ_EXTS + (".h5", ".hdf5")


def check_root(root) -> tuple[int, list[DataError]]:
    """Validate every data file under ``root`` (or the one file ``root``).

    Returns ``(files checked, errors)``: one DataError per bad file, unknown extensions
    included. Hidden files, JSON/markdown side files and .txt name lists (split lists,
    shape names) are skipped. Raises DataError when root does not exist.
    """
    root = Path(root)
    if not root.exists():
        raise DataError(root, "no such file or folder")
    if root.is_file():
        files, other = ([root], []) if root.suffix.lower() in CHECK_EXTS else ([], [root])
    else:
        files, other = data_files(root, CHECK_EXTS)
    errors = [
        DataError(
            f, f"unknown extension '{f.suffix or f.name}' (supported: {' '.join(CHECK_EXTS)})"
        )
        for f in other
        if not is_side_file(f)
    ]
    checked = len(errors)
    for f in files:
        ext = f.suffix.lower()
        if ext == ".txt" and is_name_list(f):
            continue
        checked += 1
        try:
            if ext in (".h5", ".hdf5"):
                read_h5(f)
            else:
                read_cloud(f, num_points=64)
        except DataError as e:
            errors.append(e)
    return checked, errors
