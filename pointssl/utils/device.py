"""Device choice: from the caller, else CUDA (this process's local rank) when available."""

from __future__ import annotations

import os

import torch

from pointssl.errors import PointSSLError


def _local_rank() -> int:
    try:
        return int(os.environ.get("LOCAL_RANK", 0))
    except ValueError:
        return 0


def resolve_device(device=None) -> torch.device:
    """``None`` -> ``cuda:LOCAL_RANK`` when CUDA is available, else CPU. An explicit
    ``'cuda'`` without CUDA is an error, not a silent fall back to CPU."""
    if device is None:
        return torch.device("cuda", _local_rank()) if torch.cuda.is_available() \
            else torch.device("cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise PointSSLError(f"unknown device {device!r} (use cpu, cuda or cuda:N)") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise PointSSLError(f"device {device!r} requested but CUDA is not available")
        if dev.index is None:
            dev = torch.device("cuda", _local_rank())
    return dev
