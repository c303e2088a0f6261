"""Reading checkpoints without executing code from them.

Every ``.pt`` file pointssl writes holds only tensors, numbers, strings, lists and dicts, so
it loads with ``torch.load(weights_only=True)``: a file a user hands us can never run code.
"""

from __future__ import annotations

from pathlib import Path

import torch

from pointssl.errors import PointSSLError


def load_checkpoint(path, fmt: str | tuple[str, ...] | None = None, map_location="cpu") -> dict:
    """The dict stored at ``path``. ``fmt``: the ``"format"`` tag(s) it must carry.

    Every problem is one PointSSLError line naming the file: missing, unreadable, holding
    objects other than tensors and plain data, or of another format."""
    path = Path(path)
    if not path.is_file():
        raise PointSSLError(f"{path}: checkpoint not found")
    try:
        blob = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # noqa: BLE001 - any failure to unpack the file is a bad file
        msg = " ".join(str(e).split())
        why = ("holds objects other than tensors and plain data (refused: loading them could "
               "run code; only if you trust its source, convert it once: load it with full "
               "unpickling in your own code and torch.save just its tensors, numbers and "
               "strings)") if "weights_only" in msg or "Unsupported global" in msg \
            else f"not a readable checkpoint ({type(e).__name__})"
        raise PointSSLError(f"{path}: {why}") from None
    if not isinstance(blob, dict):
        raise PointSSLError(f"{path}: not a pointssl checkpoint (no dict inside)")
    if fmt is not None:
        fmts = (fmt,) if isinstance(fmt, str) else tuple(fmt)
        if blob.get("format") not in fmts:
            raise PointSSLError(f"{path}: not a {' or '.join(fmts)} file "
                                f"(format tag {blob.get('format')!r})")
    return blob
