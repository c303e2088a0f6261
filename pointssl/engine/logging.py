"""Run-folder logs (metrics.csv + TensorBoard), resource usage and the collapse monitor."""

from __future__ import annotations

import csv
import math
import sys
import time
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F

from pointssl.utils import write_text_atomic

__all__ = ["RunLogger", "collapse_std", "cpu_seconds", "peak_rss_mib"]


def collapse_std(embedding: torch.Tensor) -> torch.Tensor:
    """SimSiam's collapse monitor: std over the batch of L2-normalised embeddings, averaged over
    dims, times sqrt(D). About 1 for healthy (isotropic) outputs, 0 for a collapsed constant.
    """
    z = embedding.detach().float().flatten(1)
    if z.shape[0] < 2:
        return torch.tensor(float("nan"), device=z.device)
    z = F.normalize(z, dim=1)
    return z.std(dim=0).mean() * math.sqrt(z.shape[1])


def cpu_seconds() -> float:
    """CPU time of this process plus its finished children (DataLoader workers exit each epoch)."""
    t = time.process_time()
    try:
        import resource

        ch = resource.getrusage(resource.RUSAGE_CHILDREN)
        t += ch.ru_utime + ch.ru_stime
    except ImportError:  # pragma: no cover - Windows
        pass
    return t


def peak_rss_mib() -> float | None:
    """Peak resident memory of this process in MiB (None where the OS does not say)."""
    try:
        import resource
    except ImportError:  # pragma: no cover - Windows
        return None
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports KiB, macOS bytes.
    return r / (1024 * 1024) if sys.platform == "darwin" else r / 1024


def _read_rows_upto(path: Path, max_step: int) -> tuple[list[str] | None, list[dict]]:
    """Header and the well-formed rows with step <= max_step (drops a crash's partial line)."""
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        fields = reader.fieldnames
        rows = []
        for row in reader:
            try:
                step = int(float(row.get("step") or "nan"))
            except ValueError:
                continue
            if None in row or any(v is None for v in row.values()):
                continue  # short or overlong line: written by a crashed process
            if step <= max_step:
                rows.append(row)
    return fields, rows


class RunLogger:
    """``metrics.csv`` (one flushed row per log step) plus TensorBoard scalars under ``tb/``.

    Inactive (every call a no-op) when ``enabled`` is False, i.e. on non-main DDP ranks.
    ``resume_step``: keep CSV rows up to that global step, drop later ones (they are redone),
    and tell TensorBoard to hide its events from later steps.
    """

    def __init__(self, out_dir, *, enabled: bool = True, resume_step: int | None = None,
                 tensorboard: bool = True):
        self.enabled = enabled
        self._fh = None
        self._writer = None
        self._fields: list[str] | None = None
        if not enabled:
            return
        out_dir = Path(out_dir)
        self.csv_path = out_dir / "metrics.csv"
        if resume_step is not None and self.csv_path.is_file():
            fields, rows = _read_rows_upto(self.csv_path, resume_step)
            if fields:
                self._fields = list(fields)
                buf = _StringRows(self._fields)
                for r in rows:
                    buf.write(r)
                write_text_atomic(self.csv_path, buf.text())
                self._fh = open(self.csv_path, "a", newline="", encoding="utf-8")  # noqa: SIM115
        elif self.csv_path.exists():
            self.csv_path.unlink()  # a fresh run owns the folder's log
        if tensorboard:
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # pragma: no cover - tensorboard is a dependency
                warnings.warn("tensorboard is not installed; logging to metrics.csv only",
                              stacklevel=2)
            else:
                # purge_step hides events a crashed run logged after its last checkpoint.
                self._writer = SummaryWriter(str(out_dir / "tb"),
                                             purge_step=(resume_step or 0) + 1)

    def log(self, row: dict) -> None:
        """Append one row (its keys fix the CSV columns on the first call) and flush it."""
        if not self.enabled:
            return
        if self._fh is None:
            self._fields = list(row)
            self._fh = open(self.csv_path, "w", newline="", encoding="utf-8")  # noqa: SIM115
            csv.writer(self._fh).writerow(self._fields)
        w = csv.DictWriter(self._fh, fieldnames=self._fields, extrasaction="ignore", restval="")
        w.writerow({k: _fmt(v) for k, v in row.items()})
        self._fh.flush()
        if self._writer is not None:
            step = int(row["step"])
            for k, v in row.items():
                if k != "step" and isinstance(v, (int, float)) and math.isfinite(v):
                    self._writer.add_scalar(f"train/{k}", v, step)
            self._writer.flush()

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def _fmt(v):
    return f"{v:.6g}" if isinstance(v, float) else v


class _StringRows:
    def __init__(self, fields):
        import io

        self._buf = io.StringIO()
        self._w = csv.DictWriter(self._buf, fieldnames=fields, extrasaction="ignore", restval="")
        self._w.writeheader()

    def write(self, row):
        self._w.writerow(row)

    def text(self) -> str:
        return self._buf.getvalue()
