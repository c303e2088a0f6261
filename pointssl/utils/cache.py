"""The cache folder: ``$POINTSSL_CACHE``, else ``$XDG_CACHE_HOME/pointssl``, else
``~/.cache/pointssl``."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir(*sub: str) -> Path:
    """The cache root, or the sub-folder ``sub`` of it (not created here)."""
    if os.environ.get("POINTSSL_CACHE"):
        base = Path(os.environ["POINTSSL_CACHE"])
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "pointssl"
    return base.joinpath(*sub)
