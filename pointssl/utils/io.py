"""The one home for file writes: atomic (temp file in the target folder, then rename) and
strict JSON (NaN and Inf become null, which JSON can hold)."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

__all__ = ["atomic_path", "write_text_atomic", "write_json_atomic", "write_yaml_atomic",
           "atomic_savez", "atomic_torch_save", "plain", "dumps_json"]


@contextmanager
def atomic_path(path, suffix: str = ""):
    """Yield a temp path beside ``path``; rename it onto ``path`` only if the block succeeds.

    ``suffix`` keeps an extension some writers insist on (``np.savez`` appends ``.npz``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp" + suffix)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def plain(obj):
    """Configs and metrics as JSON/YAML-safe builtins (dataclasses, tuples, Paths, numpy and
    0-d tensors); non-finite floats become None, since strict JSON has no NaN/Inf."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        obj = dataclasses.asdict(obj)
    if isinstance(obj, dict):
        return {str(k): plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set)):
        return [plain(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, np.ndarray) and obj.ndim > 0:
        return [plain(v) for v in obj.tolist()]
    if isinstance(obj, (np.generic, torch.Tensor)) and getattr(obj, "ndim", 0) == 0:
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    return str(obj)


def dumps_json(obj, indent: int | None = None) -> str:
    """Strict JSON text of ``plain(obj)`` (never ``NaN``)."""
    return json.dumps(plain(obj), indent=indent, allow_nan=False)


def write_text_atomic(path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json_atomic(path, obj) -> None:
    write_text_atomic(path, dumps_json(obj, indent=2) + "\n")


def write_yaml_atomic(path, obj) -> None:
    import yaml

    write_text_atomic(path, yaml.safe_dump(plain(obj), sort_keys=False))


def atomic_savez(path, **arrays) -> None:
    with atomic_path(path, suffix=".npz") as tmp:
        np.savez(tmp, **arrays)


def atomic_torch_save(obj, path) -> None:
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)
