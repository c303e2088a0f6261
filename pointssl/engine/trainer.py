"""The training loop every method shares: data order, checkpoints, exact resume, logs, DDP.

Run folder (written by rank 0 only)::

    config.yaml              resolved config (``config_to_save``), written at start
    checkpoints/last.pt      model+optimiser+scheduler+counters+RNG states (atomic)
    metrics.csv, tb/         one row / TensorBoard scalars per log step
    backbone.pt              exported at the end (completed or stopped by a budget)
    backbone_{M}min.pt       snapshot when the run's wall time first passes M minutes
    metrics.json             final summary (atomic)
"""

from __future__ import annotations

import logging
import math
import random
import signal
import statistics
import sys
import threading
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, default_collate

from pointssl.backbones import atomic_torch_save, save_backbone
from pointssl.engine import distributed as dist
from pointssl.engine.logging import (
    RunLogger,
    collapse_std,
    cpu_seconds,
    peak_rss_mib,
    write_json_atomic,
    write_yaml_atomic,
)
from pointssl.errors import PointSSLError

__all__ = ["Trainer", "ViewsDataset", "epoch_batches", "build_optimizer", "build_scheduler"]

log = logging.getLogger(__name__)

CKPT_FORMAT = "pointssl-trainer/1"
# Module attribute (not a direct time.monotonic call) so tests can drive the wall clock.
_clock = time.monotonic


# ----------------------------------------------------------------------------- data order


def _epoch_seed(seed: int, epoch: int) -> int:
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1, np.uint64)[0])


def epoch_batches(n: int, batch_size: int, seed: int, epoch: int, rank: int = 0,
                  world: int = 1) -> list[list[int]]:
    """This rank's batches of dataset indices for ``epoch`` (drop_last).

    One permutation from a generator seeded by (seed, epoch), cut to a multiple of ``world``;
    rank r takes ``perm[r::world]`` so every rank gets the same number of batches.
    """
    g = torch.Generator()
    g.manual_seed(_epoch_seed(seed, epoch))
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


def _worker_init(_worker_id: int) -> None:
    # Ctrl-C goes to the whole process group; workers ignore it so the main process can finish
    # its step and checkpoint instead of finding its loader dead.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


# ------------------------------------------------------------------------ optimiser, device


def _cfg(cfg, name, default=None):
    if isinstance(cfg, dict):
        return cfg.get(name, default)
    return getattr(cfg, name, default)


def build_optimizer(method: nn.Module, cfg) -> torch.optim.Optimizer:
    """AdamW / Adam / SGD from the method's OptimConfig fields.

    A method may define ``parameter_groups()`` (torch param-group dicts) to give heads their
    own lr or weight decay; by default every trainable parameter is in one group.
    """
    name = str(_cfg(cfg, "optimizer", "adamw")).lower()
    lr = float(_cfg(cfg, "lr", 1e-3))
    wd = float(_cfg(cfg, "weight_decay", 0.0))
    groups = method.parameter_groups() if hasattr(method, "parameter_groups") else None
    params = groups or [p for p in method.parameters() if p.requires_grad]
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=wd)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=wd)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, weight_decay=wd,
                               momentum=float(_cfg(cfg, "momentum", 0.9)))
    raise PointSSLError(f"unknown optimizer {name!r}; choose adamw, adam or sgd")


def build_scheduler(optimizer, cfg) -> torch.optim.lr_scheduler.StepLR:
    """StepLR stepped once per epoch; lr_step_epochs <= 0 means a constant lr."""
    step = int(_cfg(cfg, "lr_step_epochs", 0) or 0)
    gamma = float(_cfg(cfg, "lr_gamma", 1.0))
    if step <= 0:
        step, gamma = 1, 1.0
    return torch.optim.lr_scheduler.StepLR(optimizer, step_size=step, gamma=gamma)


def _resolve_device(device) -> torch.device:
    if device is None:
        if torch.cuda.is_available():
            return torch.device("cuda", dist.local_rank())
        return torch.device("cpu")
    dev = torch.device(device)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise PointSSLError("device 'cuda' requested but CUDA is not available")
        if dev.index is None:
            dev = torch.device("cuda", dist.local_rank())
    return dev


def _to_device(batch, device: torch.device):
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: _to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(_to_device(v, device) for v in batch)
    return batch


def _rng_state(device: torch.device) -> dict:
    st = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(),
          "python": random.getstate()}
    if device.type == "cuda":
        st["cuda"] = torch.cuda.get_rng_state(device)
    return st


def _set_rng_state(st: dict, device: torch.device) -> None:
    torch.set_rng_state(st["torch"])
    np.random.set_state(st["numpy"])
    random.setstate(st["python"])
    if device.type == "cuda" and "cuda" in st:
        torch.cuda.set_rng_state(st["cuda"], device)


def _seed_all(seed: int, rank: int) -> None:
    s = np.random.SeedSequence([seed, rank, 0x7EA1]).generate_state(2, np.uint32)
    torch.manual_seed(int(s[0]))
    np.random.seed(int(s[1]))
    random.seed(int(s[1]))


def _minutes_tag(m: float) -> str:
    return f"{m:g}"


class _GracefulInterrupt:
    """First Ctrl-C (or SIGTERM, as torchrun and schedulers send) sets ``requested``: the loop
    checkpoints at the end of the step, then raises KeyboardInterrupt (SIGINT) or
    SystemExit(143) (SIGTERM). A second signal raises KeyboardInterrupt at once.
    Installed only in the main thread, and for SIGTERM only over the default action."""

    def __init__(self):
        self.requested: int | None = None  # the signal number received
        self._prev: dict[int, object] = {}

    def __enter__(self):
        if threading.current_thread() is not threading.main_thread():
            return self
        for sig in (signal.SIGINT, signal.SIGTERM):
            prev = signal.getsignal(sig)
            if sig == signal.SIGTERM and prev not in (signal.SIG_DFL, None):
                continue
            self._prev[sig] = prev
            signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.requested is not None:
            raise KeyboardInterrupt
        self.requested = signum
        print(f"\n{signal.Signals(signum).name}: saving a checkpoint after this step "
              "(signal again to abort now)", file=sys.stderr, flush=True)

    def raise_for_signal(self):
        if self.requested == signal.SIGTERM:
            raise SystemExit(128 + signal.SIGTERM)
        raise KeyboardInterrupt

    def __exit__(self, *exc):
        for sig, prev in self._prev.items():
            if prev is None:  # installed outside Python: restore the usual default
                prev = signal.default_int_handler if sig == signal.SIGINT else signal.SIG_DFL
            signal.signal(sig, prev)
        return False


# ----------------------------------------------------------------------------------- trainer


class Trainer:
    """Train ``method`` on ``dataset`` into the run folder ``out_dir``; ``fit()`` returns metrics.

    ``batch_size`` is the global batch (each of W DDP ranks takes batch_size // W).
    ``max_minutes`` / ``max_steps`` budget the whole run, time before a resume included.
    ``resume=True`` continues from ``checkpoints/last.pt`` when present (else starts fresh);
    ``resume=False`` refuses a folder that already holds a checkpoint.
    """

    def __init__(self, method, dataset, out_dir, *, epochs: int | None = None,
                 batch_size: int | None = None, seed: int = 0, num_workers: int = 0,
                 ckpt_every_steps: int | None = 200, max_minutes: float | None = None,
                 snapshot_minutes=(), device=None, resume: bool = False, log_every: int = 10,
                 config_to_save: dict | None = None, progress: bool = True,
                 max_steps: int | None = None, budget_clock: str = "wall"):
        self.method = method
        self.dataset = dataset
        self.out_dir = Path(out_dir)
        self.epochs = int(epochs if epochs is not None else _cfg(method.cfg, "epochs", 1))
        self.batch_size = int(batch_size if batch_size is not None
                              else _cfg(method.cfg, "batch_size", 32))
        self.seed = int(seed)
        self.num_workers = int(num_workers)
        self.ckpt_every_steps = int(ckpt_every_steps or 0)
        self.max_minutes = None if max_minutes is None else float(max_minutes)
        if budget_clock not in ("wall", "cpu"):
            raise PointSSLError(f"budget clock must be 'wall' or 'cpu', not {budget_clock!r}")
        # "cpu": max_minutes and snapshots count process CPU time (all threads, all ranks),
        # which a busy shared machine does not inflate the way it inflates wall time
        self.budget_clock = budget_clock
        self.snapshot_minutes = sorted({float(m) for m in snapshot_minutes or ()})
        self.resume = bool(resume)
        self.log_every = max(1, int(log_every))
        self.config_to_save = config_to_save
        self.progress = progress
        self.max_steps = None if max_steps is None else int(max_steps)
        if self.epochs < 0 or self.batch_size < 1 or self.seed < 0 or self.num_workers < 0:
            raise PointSSLError("epochs >= 0, batch_size >= 1, seed >= 0 and num_workers >= 0 "
                                "are required")
        if self.max_minutes is not None and self.max_minutes < 0:
            raise PointSSLError("max_minutes must be >= 0")

        on_cpu = device is not None and torch.device(device).type == "cpu"
        self.distributed = dist.init_distributed("gloo" if on_cpu else None)
        self.rank, self.world = dist.rank(), dist.world_size()
        self.is_main = self.rank == 0
        self.device = _resolve_device(device)
        self.local_batch = self.batch_size // self.world
        if self.local_batch < 1:
            raise PointSSLError(f"batch size {self.batch_size} is smaller than the "
                                f"{self.world} processes")
        if self.batch_size % self.world:
            log.warning("batch size %d is not divisible by %d processes; using %d per process",
                        self.batch_size, self.world, self.local_batch)
        self.steps_per_epoch = (len(dataset) // self.world) // self.local_batch
        if self.steps_per_epoch == 0:
            raise PointSSLError(f"{len(dataset)} training shapes are fewer than one batch of "
                                f"{self.local_batch * self.world} (the last partial batch is "
                                "dropped); lower --batch-size")
        self.ckpt_path = self.out_dir / "checkpoints" / "last.pt"

    # ------------------------------------------------------------------ state and checkpoints

    def _signature(self) -> dict:
        return {"method": getattr(self.method, "name", "method"), "dataset_len": len(self.dataset),
                "batch_size": self.batch_size, "world_size": self.world, "seed": self.seed}

    def _wall(self) -> float:
        return self._wall_offset + (_clock() - self._t0)

    def _cpu(self) -> float:
        return cpu_seconds() - self._cpu0

    def _save_checkpoint(self, collective: bool = True) -> None:
        """Write last.pt. Collective in DDP (gathers every rank's RNG state and CPU time);
        ``collective=False`` is the emergency path where ranks may be out of step."""
        rng, cpu = _rng_state(self.device), self._cpu()
        if collective:
            rngs, cpus = dist.all_gather_object(rng), dist.all_gather_object(cpu)
        else:
            rngs, cpus = [rng], [cpu * self.world]
        if self.is_main:
            atomic_torch_save({
                "format": CKPT_FORMAT,
                "model": self.method.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "epoch": self.epoch,
                "step_in_epoch": self.step_in_epoch,
                "global_step": self.global_step,
                "rng": rngs,
                "wall_s": self._wall(),
                "cpu_s": self._cpu_offset + sum(cpus),
                "snapshots": self.snapshots,
                "throughputs": self.throughputs,
                "last_row": self.last_row,
                "signature": self._signature(),
            }, self.ckpt_path)
        self._saved_step = self.global_step

    def _load_checkpoint(self) -> dict:
        try:
            ck = torch.load(self.ckpt_path, map_location="cpu", weights_only=False)
        except Exception as e:  # noqa: BLE001 - any unpickling failure is a bad file
            raise PointSSLError(f"{self.ckpt_path}: unreadable checkpoint "
                                f"({type(e).__name__}: {e})") from None
        if not isinstance(ck, dict) or ck.get("format") != CKPT_FORMAT:
            raise PointSSLError(f"{self.ckpt_path}: not a pointssl trainer checkpoint")
        old, new = ck["signature"], self._signature()
        if old["method"] != new["method"]:
            raise PointSSLError(f"{self.ckpt_path} was written by method {old['method']!r}, "
                                f"not {new['method']!r}")
        changed = [k for k in ("dataset_len", "batch_size", "world_size", "seed")
                   if old[k] != new[k]]
        if changed:
            what = ", ".join(f"{k} {old[k]} -> {new[k]}" for k in changed)
            if ck["step_in_epoch"]:
                raise PointSSLError(f"cannot resume mid-epoch from {self.ckpt_path}: {what}")
            log.warning("resuming with %s: continuing, but not bit-identical to an "
                        "uninterrupted run", what)
        self.method.load_state_dict(ck["model"])
        self.optimizer.load_state_dict(ck["optimizer"])
        self.scheduler.load_state_dict(ck["scheduler"])
        if len(ck["rng"]) == self.world:
            self._pending_rng = ck["rng"][self.rank]
        else:
            log.warning("checkpoint holds RNG states for %d process(es), not %d; reseeding",
                        len(ck["rng"]), self.world)
        return ck

    # ------------------------------------------------------------------------------ helpers

    def _loader(self, epoch: int, skip: int) -> DataLoader:
        batches = epoch_batches(len(self.dataset), self.local_batch, self.seed, epoch,
                                self.rank, self.world)[skip:]
        keyed = [[(epoch, i) for i in b] for b in batches]
        # A private generator: the loader's base-seed draw must not consume the global torch
        # RNG, or a mid-epoch resume would see a different RNG stream than the original run.
        g = torch.Generator()
        g.manual_seed(_epoch_seed(self.seed, epoch))
        return DataLoader(self._views, batch_sampler=keyed, num_workers=self.num_workers,
                          collate_fn=default_collate, pin_memory=self.device.type == "cuda",
                          persistent_workers=False, generator=g,
                          worker_init_fn=_worker_init if self.num_workers else None)

    def _scalars(self, out: dict) -> dict[str, float]:
        """Logged scalars (all-reduced means over ranks); one host sync per log step."""
        vals: dict[str, torch.Tensor] = {}
        for k, v in out.items():
            if k == "embedding":
                continue
            if isinstance(v, torch.Tensor):
                if v.numel() == 1:
                    vals[k] = v.detach().float().reshape(())
            elif isinstance(v, (int, float)) and not isinstance(v, bool):
                vals[k] = torch.tensor(float(v), device=self.device)
        emb = out.get("embedding")
        if isinstance(emb, torch.Tensor):
            vals["collapse_std"] = collapse_std(emb)
        keys = sorted(vals)
        if not keys:
            return {}
        stacked = torch.stack([vals[k].to(self.device) for k in keys])
        return dict(zip(keys, dist.all_reduce_mean(stacked).tolist(), strict=True))

    def _should_stop(self, interrupt: _GracefulInterrupt) -> str | None:
        time_up = self.max_minutes is not None and self._budget_s() >= self.max_minutes * 60
        flags = torch.tensor([float(time_up), float(interrupt.requested is not None)])
        if self.distributed:
            # Every rank must leave the loop at the same step or collectives would hang.
            flags = dist.all_reduce_max(flags.to(self.device)).cpu()
        if flags[1] > 0:
            return "interrupted"
        if flags[0] > 0:
            return "max_minutes"
        if self.max_steps is not None and self.global_step >= self.max_steps:
            return "max_steps"
        return None

    def _epoch_float(self) -> float:
        return self.epoch + self.step_in_epoch / self.steps_per_epoch

    def _export(self, path: Path, **extra) -> None:
        save_backbone(path, self.method.backbone, method=getattr(self.method, "name", "method"),
                      epochs_done=round(self._epoch_float(), 6), steps=self.global_step,
                      wall_minutes=self._wall() / 60, cpu_minutes=self._cpu_total() / 60,
                      seed=self.seed, **extra)

    def _cpu_total(self) -> float:
        if self._cpu_final is not None:
            return self._cpu_final
        # Between collectives rank 0 estimates the others' CPU time by its own.
        return self._cpu_offset + self._cpu() * self.world

    def _budget_s(self) -> float:
        return self._cpu_total() if self.budget_clock == "cpu" else self._wall()

    def _check_snapshots(self) -> None:
        wall_min = self._wall() / 60
        budget_min = self._budget_s() / 60
        for m in self.snapshot_minutes:
            tag = _minutes_tag(m)
            if budget_min >= m and tag not in self.snapshots:
                name = f"backbone_{tag}min.pt"
                if self.is_main:
                    self._export(self.out_dir / name, snapshot_minutes=m)
                self.snapshots[tag] = {"file": name, "step": self.global_step,
                                       "epoch": round(self._epoch_float(), 6),
                                       "wall_minutes": round(wall_min, 4),
                                       "cpu_minutes": round(self._cpu_total() / 60, 4),
                                       "clock": self.budget_clock}

    # --------------------------------------------------------------------------------- fit

    def fit(self) -> dict:
        """Train until ``epochs`` are done or a budget stops the run; returns final metrics."""
        self._t0, self._cpu0 = _clock(), cpu_seconds()
        self._wall_offset, self._cpu_offset = 0.0, 0.0
        self.epoch = self.step_in_epoch = self.global_step = 0
        self.snapshots: dict[str, dict] = {}
        self.throughputs: list[float] = []
        self.last_row: dict = {}
        self._saved_step = -1
        self._pending_rng = None
        self._consistent = True
        self._cpu_final: float | None = None

        has_ckpt = self.ckpt_path.is_file()
        if has_ckpt and not self.resume:
            raise PointSSLError(f"{self.out_dir} already holds a run ({self.ckpt_path}); "
                                "resume it or choose another output folder")
        if self.is_main:
            self.ckpt_path.parent.mkdir(parents=True, exist_ok=True)
            if self.config_to_save is not None:
                write_yaml_atomic(self.out_dir / "config.yaml", self.config_to_save)

        method = self.method.to(self.device)
        method.train()
        if self.distributed and self.device.type == "cuda":
            nn.SyncBatchNorm.convert_sync_batchnorm(method)  # swaps child modules in place
        self.optimizer = build_optimizer(method, method.cfg)
        self.scheduler = build_scheduler(self.optimizer, method.cfg)

        resumed_from = None
        if self.resume and has_ckpt:
            ck = self._load_checkpoint()
            self.epoch, self.step_in_epoch = ck["epoch"], ck["step_in_epoch"]
            self.global_step = resumed_from = ck["global_step"]
            self._wall_offset, self._cpu_offset = ck["wall_s"], ck["cpu_s"]
            self.snapshots = dict(ck["snapshots"])
            self.throughputs = list(ck["throughputs"])
            self.last_row = dict(ck["last_row"])
            self._saved_step = self.global_step
            if self.is_main:
                log.info("resumed %s at epoch %d, step %d (global step %d)", self.ckpt_path,
                         self.epoch, self.step_in_epoch, self.global_step)

        if self.distributed:
            from torch.nn.parallel import DistributedDataParallel as DDP

            model = DDP(method, device_ids=[self.device.index] if self.device.type == "cuda"
                        else None,
                        find_unused_parameters=getattr(method, "ddp_find_unused_parameters",
                                                       False))
        else:
            model = method
        self._views = ViewsDataset(self.dataset, method.make_views, self.seed)
        self._logger = RunLogger(self.out_dir, enabled=self.is_main, resume_step=resumed_from)
        try:
            with _GracefulInterrupt() as interrupt:
                stop = self._train(model, interrupt)
        except KeyboardInterrupt:
            # Forward/backward/loading may be cut anywhere, but the weights only change inside
            # the optimiser-step window; outside it the state matches the step counters.
            if self._consistent and self._saved_step != self.global_step:
                self._save_checkpoint(collective=False)
                if self.is_main:
                    print(f"checkpoint saved at step {self.global_step}: {self.ckpt_path}",
                          file=sys.stderr)
            self._logger.close()
            raise
        except BaseException:
            self._logger.close()
            raise
        return self._finish(stop, resumed_from)

    def _train(self, model, interrupt: _GracefulInterrupt) -> str:
        self._consistent = True
        # RNG states are (re)set as late as possible: nothing between here and the first
        # forward may draw from them, in a fresh run and in a resumed one alike.
        if self._pending_rng is not None:
            _set_rng_state(self._pending_rng, self.device)
        else:
            _seed_all(self.seed + self.global_step, self.rank)
        if self.epoch >= self.epochs:
            return "completed"
        stop = self._should_stop(interrupt)
        if stop == "interrupted":
            interrupt.raise_for_signal()
        if stop is not None:
            return stop

        from tqdm import tqdm

        total = self.global_step + (self.epochs - self.epoch) * self.steps_per_epoch \
            - self.step_in_epoch
        bar = tqdm(total=total, initial=self.global_step, unit="step", dynamic_ncols=True,
                   desc=getattr(self.method, "name", "train"),
                   disable=not (self.progress and self.is_main and sys.stderr.isatty()))
        t_log, step_log = _clock(), self.global_step
        try:
            while stop is None:
                for batch in self._loader(self.epoch, self.step_in_epoch):
                    batch = _to_device(batch, self.device)
                    self.optimizer.zero_grad(set_to_none=True)
                    out = model(batch)
                    if not isinstance(out, dict) or "loss" not in out:
                        raise PointSSLError(f"{type(self.method).__name__}.forward must "
                                            "return a dict with a 'loss' entry")
                    out["loss"].backward()
                    lr = self.optimizer.param_groups[0]["lr"]
                    self._consistent = False
                    self.optimizer.step()
                    self.method.on_after_step()
                    self.global_step += 1
                    self.step_in_epoch += 1
                    epoch_end = self.step_in_epoch == self.steps_per_epoch
                    if epoch_end:
                        self.scheduler.step()
                        self.epoch += 1
                        self.step_in_epoch = 0
                    self._consistent = True
                    bar.update(1)

                    stop = self._should_stop(interrupt)
                    if stop is None and epoch_end and self.epoch >= self.epochs:
                        stop = "completed"
                    self._check_snapshots()
                    if self.global_step % self.log_every == 0 or stop is not None:
                        now = _clock()
                        steps = self.global_step - step_log
                        rate = (steps * self.local_batch * self.world / (now - t_log)
                                if now > t_log else float("nan"))
                        t_log, step_log = now, self.global_step
                        if math.isfinite(rate):
                            self.throughputs.append(rate)
                        row = {"step": self.global_step, "epoch": round(self._epoch_float(), 6),
                               "lr": lr, **self._scalars(out), "shapes_per_s": rate,
                               "wall_s": round(self._wall(), 3)}
                        self.last_row = row
                        self._logger.log(row)
                        bar.set_postfix(loss=f"{row['loss']:.4g}", shapes_s=f"{rate:.1f}")
                        if not math.isfinite(row["loss"]):
                            raise PointSSLError(
                                f"loss is {row['loss']} at step {self.global_step}; the last "
                                f"good checkpoint is {self.ckpt_path}")
                    if (epoch_end or stop is not None or (
                            self.ckpt_every_steps
                            and self.global_step % self.ckpt_every_steps == 0)):
                        self._save_checkpoint()
                    if stop is not None:
                        break
        finally:
            bar.close()
        if stop == "interrupted":
            if self.is_main:
                print(f"checkpoint saved at step {self.global_step}: {self.ckpt_path}",
                      file=sys.stderr)
            self._logger.close()
            interrupt.raise_for_signal()
        return stop

    def _finish(self, stop: str, resumed_from: int | None) -> dict:
        if self._saved_step != self.global_step:
            self._save_checkpoint()
        cpu_total = self._cpu_offset + sum(dist.all_gather_object(self._cpu()))
        self._cpu_final = cpu_total
        wall = self._wall()
        metrics = {
            "method": getattr(self.method, "name", "method"),
            "stop_reason": stop,
            "loss": self.last_row.get("loss"),
            "epochs": self.epochs,
            "epochs_done": round(self._epoch_float(), 6),
            "steps": self.global_step,
            "steps_per_epoch": self.steps_per_epoch,
            "batch_size": self.local_batch * self.world,
            "world_size": self.world,
            "device": str(self.device),
            "shapes_per_s": statistics.median(self.throughputs) if self.throughputs else None,
            "peak_rss_mib": peak_rss_mib(),
            "wall_minutes": wall / 60,
            "cpu_minutes": cpu_total / 60,
            "snapshots": self.snapshots,
            "resumed_from_step": resumed_from,
            "last": self.last_row,
        }
        if self.is_main:
            self._export(self.out_dir / "backbone.pt", stop_reason=stop)
            write_json_atomic(self.out_dir / "metrics.json", metrics)
        self._logger.close()
        dist.barrier()
        return metrics
