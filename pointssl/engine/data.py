"""Worker-independent data order: which shapes a rank sees in an epoch, and their views."""

from __future__ import annotations

import os
import signal

import numpy as np
import torch
from torch.utils.data import Dataset

from pointssl.errors import PointSSLError
from pointssl.structures import PointBatch

__all__ = ["epoch_seed", "epoch_batches", "ViewsDataset", "to_device", "worker_init",
           "workers_option", "auto_workers"]


def epoch_seed(seed: int, epoch: int) -> int:
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1, np.uint64)[0])


def epoch_batches(n: int, batch_size: int, seed: int, epoch: int, rank: int = 0,
                  world: int = 1) -> list[list[int]]:
    """This rank's batches of dataset indices for ``epoch`` (drop_last).

    One permutation from a generator seeded by (seed, epoch), cut to a multiple of ``world``;
    rank r takes ``perm[r::world]`` so every rank gets the same number of batches.
    """
    g = torch.Generator()
    g.manual_seed(epoch_seed(seed, epoch))
    perm = torch.randperm(n, generator=g)
    perm = perm[: n - n % world][rank::world].tolist()
    return [perm[k * batch_size:(k + 1) * batch_size] for k in range(len(perm) // batch_size)]


class ViewsDataset(Dataset):
    """Maps the key ``(epoch, i)`` to ``make_views(dataset[i], default_rng([seed, epoch, i]))``.

    The epoch travels inside the key, so views depend on (seed, epoch, index) only, whatever
    the worker count or scheduling. ``"index"`` is added to the views unless already present.
    """

    def __init__(self, dataset, make_views, seed: int):
        self.dataset = dataset
        self.make_views = make_views
        self.seed = seed

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key):
        epoch, i = key
        views = self.make_views(self.dataset[i], np.random.default_rng([self.seed, epoch, i]))
        if not isinstance(views, dict):
            raise PointSSLError(f"make_views must return a dict of arrays, got {type(views)}")
        views = dict(views)
        views.setdefault("index", np.int64(i))
        return views


def workers_option(value) -> int | str:
    """A DataLoader worker count as given (``"auto"`` or an integer >= 0, also as text)."""
    if value == "auto":
        return value
    if isinstance(value, bool) or not str(value).isdigit():
        raise PointSSLError(f"num_workers must be 'auto' or an integer >= 0, not {value!r}")
    return int(value)


def auto_workers(device: torch.device, world: int = 1) -> int:
    """DataLoader workers per process for ``num_workers="auto"``.

    CPU: none. Every method's views cost 1-2% of its step on the 2-core box
    (``benchmarks/bench_loader.py``), so a worker has nothing to hide and takes a core from
    the step. GPU: a step is 10-100x shorter (ConClu-PointNet ~11 ms per batch of 32 on an
    H200, its views ~9 ms on one core), so the views would set the pace: up to 4 workers
    from the cores left after one per process."""
    if torch.device(device).type == "cpu":
        return 0
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") \
        else os.cpu_count() or 1
    return max(0, min(4, cores // max(1, world) - 1))


def worker_init(_worker_id: int) -> None:
    # Ctrl-C goes to the whole process group; workers ignore it so the main process can finish
    # its step and checkpoint instead of finding its loader dead.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def to_device(batch, device: torch.device):
    """Tensors and PointBatches (inside dicts, lists, tuples) moved to ``device``."""
    if isinstance(batch, (torch.Tensor, PointBatch)):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(to_device(v, device) for v in batch)
    return batch
