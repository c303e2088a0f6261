"""TrainState: the run state, which is exactly what ``checkpoints/last.pt`` saves and restores.

The checkpoint holds only tensors and plain data (RNG states included), so it loads with
``weights_only=True`` (``pointssl.utils.load_checkpoint``), and it names the method and the
backbone with their configs, so ``pointssl.methods.load_method`` rebuilds any method from it.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from pointssl.methods.base import method_spec
from pointssl.utils import atomic_torch_save, load_checkpoint

__all__ = ["TrainState", "CKPT_FORMAT", "capture_rng", "restore_rng", "seed_all"]

CKPT_FORMAT = "pointssl-trainer/2"


@dataclass
class TrainState:
    """Model, optimiser, schedule, counters, every rank's RNG state, clocks and run history.

    ``wall_s`` / ``cpu_s`` / ``rng`` are the values at the last save (or as restored); the
    trainer refreshes them right before each save.
    """

    method: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    signature: dict
    epoch: int = 0
    step_in_epoch: int = 0
    global_step: int = 0
    rng: list[dict] = field(default_factory=list)  # one entry per DDP rank
    wall_s: float = 0.0  # wall time of the whole run (earlier processes included)
    cpu_s: float = 0.0  # CPU time of the whole run, all ranks
    snapshots: dict[str, dict] = field(default_factory=dict)
    throughputs: list[float] = field(default_factory=list)
    last_row: dict = field(default_factory=dict)

    def state_dict(self) -> dict:
        return {
            "format": CKPT_FORMAT,
            **method_spec(self.method),
            "model": self.method.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "epoch": self.epoch,
            "step_in_epoch": self.step_in_epoch,
            "global_step": self.global_step,
            "rng": self.rng,
            "wall_s": self.wall_s,
            "cpu_s": self.cpu_s,
            "snapshots": self.snapshots,
            "throughputs": self.throughputs,
            "last_row": self.last_row,
            "signature": self.signature,
        }

    def load_state_dict(self, ck: dict) -> None:
        """Restore everything but ``signature`` (the caller compares the two first)."""
        self.method.load_state_dict(ck["model"])
        self.optimizer.load_state_dict(ck["optimizer"])
        self.scheduler.load_state_dict(ck["scheduler"])
        self.epoch, self.step_in_epoch = int(ck["epoch"]), int(ck["step_in_epoch"])
        self.global_step = int(ck["global_step"])
        self.rng = list(ck["rng"])
        self.wall_s, self.cpu_s = float(ck["wall_s"]), float(ck["cpu_s"])
        self.snapshots = dict(ck["snapshots"])
        self.throughputs = list(ck["throughputs"])
        self.last_row = dict(ck["last_row"])

    def save(self, path) -> None:
        atomic_torch_save(self.state_dict(), path)

    @staticmethod
    def read(path) -> dict:
        return load_checkpoint(path, fmt=CKPT_FORMAT)


# ------------------------------------------------------------------------------ RNG states
# numpy's and Python's states become tensors, ints and lists: no pickled numpy objects.


def capture_rng(device: torch.device) -> dict:
    kind, keys, pos, has_gauss, gauss = np.random.get_state(legacy=True)
    version, py_state, py_gauss = random.getstate()
    st = {"torch": torch.get_rng_state(),
          "numpy": {"kind": str(kind), "keys": torch.from_numpy(keys.astype(np.int64)),
                    "pos": int(pos), "has_gauss": int(has_gauss), "gauss": float(gauss)},
          "python": {"version": int(version), "state": list(py_state), "gauss": py_gauss}}
    if device.type == "cuda":
        st["cuda"] = torch.cuda.get_rng_state(device)
    return st


def restore_rng(st: dict, device: torch.device) -> None:
    torch.set_rng_state(st["torch"])
    n = st["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"],
                         n["has_gauss"], n["gauss"]))
    p = st["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss"]))
    if device.type == "cuda" and "cuda" in st:
        torch.cuda.set_rng_state(st["cuda"], device)


def seed_all(seed: int, rank: int) -> None:
    s = np.random.SeedSequence([seed, rank, 0x7EA1]).generate_state(2, np.uint32)
    torch.manual_seed(int(s[0]))
    np.random.seed(int(s[1]))
    random.seed(int(s[1]))
