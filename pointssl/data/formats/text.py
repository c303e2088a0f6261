"""Text clouds (.xyz, .txt): one point per row, space or comma separated, ``#`` comments."""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np

from pointssl.data.formats.validate import Cloud, one_line, split_columns
from pointssl.errors import DataError


def read_text(path: Path) -> Cloud:
    try:
        text = path.read_text()
    except UnicodeDecodeError:
        raise DataError(path, "not a text file (binary content in a text cloud)") from None
    rows = (ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#"))
    first = next(rows, "")
    delimiter = "," if "," in first else None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "input contained no data": reported below
            arr = np.loadtxt(io.StringIO(text), delimiter=delimiter, ndmin=2, dtype=np.float64)
    except ValueError as e:
        # numpy appends advice about `usecols` that does not apply to a cloud file
        raise DataError(path, f"malformed text cloud: {one_line(e).split(';')[0]}") from None
    if arr.size == 0:
        raise DataError(path, "empty cloud: no points")
    return split_columns(path, arr)
