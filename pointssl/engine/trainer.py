"""The training loop every method shares: data order, checkpoints, exact resume, logs, DDP.

Run folder (written by rank 0 only)::

    config.yaml              resolved config (``config_to_save``), written at start
    checkpoints/last.pt      the TrainState (model, optimiser, schedule, counters, RNG states,
                             clocks) + method and backbone names and configs (atomic)
    metrics.csv, tb/         one row / TensorBoard scalars per log step
    backbone.pt              exported at the end (completed or stopped by a budget); one
                             ``<name>.pt`` per network the method exports
    backbone_{M}min.pt       snapshot when the run's budget clock first passes M minutes
    metrics.json             final summary (atomic)
"""

from __future__ import annotations

import logging
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader

from pointssl.backbones import save_backbone
from pointssl.engine import distributed as dist
from pointssl.engine.data import (
    ViewsDataset,
    auto_workers,
    epoch_batches,
    epoch_seed,
    to_device,
    worker_init,
    workers_option,
)
from pointssl.engine.hooks import Hook, default_hooks
from pointssl.engine.logging import cpu_seconds, peak_rss_mib
from pointssl.engine.optim import build_optimizer, build_scheduler, cfg_value
from pointssl.engine.signals import GracefulInterrupt
from pointssl.engine.state import TrainState, capture_rng, restore_rng, seed_all
from pointssl.errors import PointSSLError
from pointssl.utils import resolve_device, write_json_atomic, write_yaml_atomic

__all__ = ["Trainer", "TrainState", "ViewsDataset", "epoch_batches", "build_optimizer",
           "build_scheduler"]

log = logging.getLogger(__name__)

PRECISIONS = ("fp32", "bf16")

# Module attribute (not a direct time.monotonic call) so tests can drive the wall clock.
_clock = time.monotonic


class _Clocks:
    """Wall and CPU time of the whole run: what earlier processes spent (from the checkpoint)
    plus this process since ``fit`` began. Between collectives rank 0 estimates the other
    ranks' CPU time by its own; ``cpu_final`` is the gathered total at the end."""

    def __init__(self, wall_offset: float, cpu_offset: float, world: int):
        self.wall_offset, self.cpu_offset, self.world = wall_offset, cpu_offset, world
        self.t0, self.cpu0 = _clock(), cpu_seconds()
        self.cpu_final: float | None = None

    @staticmethod
    def now() -> float:
        return _clock()

    def wall(self) -> float:
        return self.wall_offset + (_clock() - self.t0)

    def cpu(self) -> float:
        """This process's CPU seconds since ``fit`` began."""
        return cpu_seconds() - self.cpu0

    def cpu_total(self) -> float:
        if self.cpu_final is not None:
            return self.cpu_final
        return self.cpu_offset + self.cpu() * self.world


class Trainer:
    """Train ``method`` on ``dataset`` into the run folder ``out_dir``; ``fit()`` returns metrics.

    ``batch_size`` is the global batch (each of W DDP ranks takes batch_size // W).
    ``max_minutes`` / ``max_steps`` budget the whole run, time before a resume included.
    ``resume=True`` continues from ``checkpoints/last.pt`` when present (else starts fresh);
    ``resume=False`` refuses a folder that already holds a checkpoint. ``hooks``: extra
    :class:`~pointssl.engine.hooks.Hook` objects, run after the standard ones.
    ``precision="bf16"`` runs each forward under bf16 autocast (bf16 matmuls; weights,
    gradients, optimiser state and the losses that need it stay fp32).
    ``num_workers``: DataLoader workers per process, ``"auto"`` =
    :func:`~pointssl.engine.data.auto_workers` (none on the CPU); the views depend only on
    (seed, epoch, index), so the count never changes what is trained.

    The run state (``self.state``, a :class:`TrainState`) exists from construction: a
    resumed trainer holds the checkpoint's counters, weights and history before ``fit``.
    """

    def __init__(self, method, dataset, out_dir, *, epochs: int | None = None,
                 batch_size: int | None = None, seed: int = 0, num_workers: int | str = "auto",
                 ckpt_every_steps: int | None = 200, max_minutes: float | None = None,
                 snapshot_minutes=(), device=None, resume: bool = False, log_every: int = 10,
                 config_to_save: dict | None = None, progress: bool = True,
                 max_steps: int | None = None, budget_clock: str = "wall",
                 hooks: list[Hook] | tuple = (), precision: str = "fp32"):
        self.method = method
        self.dataset = dataset
        self.out_dir = Path(out_dir)
        self.epochs = int(epochs if epochs is not None else cfg_value(method.cfg, "epochs", 1))
        self.batch_size = int(batch_size if batch_size is not None
                              else cfg_value(method.cfg, "batch_size", 32))
        self.seed = int(seed)
        num_workers = workers_option(num_workers)
        self.max_minutes = None if max_minutes is None else float(max_minutes)
        if budget_clock not in ("wall", "cpu"):
            raise PointSSLError(f"budget clock must be 'wall' or 'cpu', not {budget_clock!r}")
        # "cpu": max_minutes and snapshots count process CPU time (all threads, all ranks),
        # which a busy shared machine does not inflate the way it inflates wall time
        self.budget_clock = budget_clock
        if precision not in PRECISIONS:
            raise PointSSLError(f"precision must be one of {', '.join(PRECISIONS)}, "
                                f"not {precision!r}")
        self.precision = precision  # "bf16": the forward under bf16 autocast
        self.config_to_save = config_to_save
        self.max_steps = None if max_steps is None else int(max_steps)
        if self.epochs < 0 or self.batch_size < 1 or self.seed < 0:
            raise PointSSLError("epochs >= 0, batch_size >= 1 and seed >= 0 are required")
        if self.max_minutes is not None and self.max_minutes < 0:
            raise PointSSLError("max_minutes must be >= 0")
        self.hooks = [*default_hooks(log_every=log_every, progress=progress,
                                     snapshot_minutes=snapshot_minutes,
                                     ckpt_every_steps=ckpt_every_steps), *hooks]

        on_cpu = device is not None and torch.device(device).type == "cpu"
        self.distributed = dist.init_distributed("gloo" if on_cpu else None)
        self.rank, self.world = dist.rank(), dist.world_size()
        self.is_main = self.rank == 0
        self.device = resolve_device(device)
        self.num_workers = auto_workers(self.device, self.world) if num_workers == "auto" \
            else num_workers
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
        has_ckpt = self.ckpt_path.is_file()
        if has_ckpt and not resume:
            raise PointSSLError(f"{self.out_dir} already holds a run ({self.ckpt_path}); "
                                "resume it or choose another output folder")

        method.bind_data(len(dataset))
        method.to(self.device)
        method.train()
        if self.distributed and self.device.type == "cuda":
            nn.SyncBatchNorm.convert_sync_batchnorm(method)  # swaps child modules in place
        optimizer = build_optimizer(method, method.cfg)
        self.state = TrainState(method, optimizer, build_scheduler(optimizer, method.cfg),
                                self._signature())
        # transient, per process: not part of the checkpoint
        self.resumed_from: int | None = None
        self._pending_rng: dict | None = None
        self._saved_step = -1
        self._consistent = True
        self.stop: str | None = None
        self.epoch_end = False
        self.lr = float("nan")
        self.clock: _Clocks | None = None
        if resume and has_ckpt:
            self._restore()

    # ------------------------------------------------------------------ state and checkpoints

    def _signature(self) -> dict:
        return {"method": getattr(self.method, "name", "method"), "dataset_len": len(self.dataset),
                "batch_size": self.batch_size, "world_size": self.world, "seed": self.seed}

    def _restore(self) -> None:
        ck = TrainState.read(self.ckpt_path)
        old, new = ck["signature"], self.state.signature
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
        self.state.load_state_dict(ck)
        if len(self.state.rng) == self.world:
            self._pending_rng = self.state.rng[self.rank]
        else:
            log.warning("checkpoint holds RNG states for %d process(es), not %d; reseeding",
                        len(self.state.rng), self.world)
        self.resumed_from = self._saved_step = self.state.global_step
        if self.is_main:
            log.info("resumed %s at epoch %d, step %d (global step %d)", self.ckpt_path,
                     self.state.epoch, self.state.step_in_epoch, self.state.global_step)

    def save_checkpoint(self, collective: bool = True) -> None:
        """Write last.pt. Collective in DDP (gathers every rank's RNG state and CPU time);
        ``collective=False`` is the emergency path where ranks may be out of step."""
        st, rng, cpu = self.state, capture_rng(self.device), self.clock.cpu()
        if collective:
            rngs, cpus = dist.all_gather_object(rng), dist.all_gather_object(cpu)
        else:
            rngs, cpus = [rng], [cpu * self.world]
        st.rng, st.wall_s = rngs, self.clock.wall()
        st.cpu_s = self.clock.cpu_offset + sum(cpus)
        if self.is_main:
            st.save(self.ckpt_path)
        self._saved_step = st.global_step

    def export(self, suffix: str = "", **extra) -> list[str]:
        """Write ``<name><suffix>.pt`` for every network the method exports (rank 0); returns
        the file names, ``backbone`` first."""
        st = self.state
        meta = dict(method=getattr(self.method, "name", "method"),
                    epochs_done=round(self.epoch_float(), 6), steps=st.global_step,
                    wall_minutes=self.clock.wall() / 60,
                    cpu_minutes=self.clock.cpu_total() / 60, seed=self.seed, **extra)
        nets = self.method.exports()
        names = sorted(nets, key=lambda n: n != "backbone")
        if self.is_main:
            for n in names:
                save_backbone(self.out_dir / f"{n}{suffix}.pt", nets[n], **meta)
        return [f"{n}{suffix}.pt" for n in names]

    # ------------------------------------------------------------------------------ helpers

    def epoch_float(self) -> float:
        return self.state.epoch + self.state.step_in_epoch / self.steps_per_epoch

    def budget_s(self) -> float:
        return self.clock.cpu_total() if self.budget_clock == "cpu" else self.clock.wall()

    def _loader(self, epoch: int, skip: int) -> DataLoader:
        batches = epoch_batches(len(self.dataset), self.local_batch, self.seed, epoch,
                                self.rank, self.world)[skip:]
        keyed = [[(epoch, i) for i in b] for b in batches]
        # A private generator: the loader's base-seed draw must not consume the global torch
        # RNG, or a mid-epoch resume would see a different RNG stream than the original run.
        g = torch.Generator()
        g.manual_seed(epoch_seed(self.seed, epoch))
        return DataLoader(self._views, batch_sampler=keyed, num_workers=self.num_workers,
                          collate_fn=self.method.collate, pin_memory=self.device.type == "cuda",
                          persistent_workers=False, generator=g,
                          worker_init_fn=worker_init if self.num_workers else None)

    def _should_stop(self, interrupt: GracefulInterrupt) -> str | None:
        time_up = self.max_minutes is not None and self.budget_s() >= self.max_minutes * 60
        flags = torch.tensor([float(time_up), float(interrupt.requested is not None)])
        if self.distributed:
            # Every rank must leave the loop at the same step or collectives would hang.
            flags = dist.all_reduce_max(flags.to(self.device)).cpu()
        if flags[1] > 0:
            return "interrupted"
        if flags[0] > 0:
            return "max_minutes"
        if self.max_steps is not None and self.state.global_step >= self.max_steps:
            return "max_steps"
        return None

    # --------------------------------------------------------------------------------- fit

    def fit(self) -> dict:
        """Train until ``epochs`` are done or a budget stops the run; returns final metrics."""
        self.clock = _Clocks(self.state.wall_s, self.state.cpu_s, self.world)
        if self.is_main:
            self.ckpt_path.parent.mkdir(parents=True, exist_ok=True)
            if self.config_to_save is not None:
                write_yaml_atomic(self.out_dir / "config.yaml", self.config_to_save)
        if self.distributed:
            from torch.nn.parallel import DistributedDataParallel as DDP

            model = DDP(self.method, device_ids=[self.device.index]
                        if self.device.type == "cuda" else None,
                        find_unused_parameters=getattr(self.method, "ddp_find_unused_parameters",
                                                       False))
        else:
            model = self.method
        self._views = ViewsDataset(self.dataset, self.method.make_views, self.seed)
        try:
            for h in self.hooks:
                h.open(self)
            with GracefulInterrupt() as interrupt:
                stop = self._train(model, interrupt)
            return self._finish(stop)
        except KeyboardInterrupt:
            # Forward/backward/loading may be cut anywhere, but the weights only change inside
            # the optimiser-step window; outside it the state matches the step counters.
            if self._consistent and self._saved_step != self.state.global_step:
                self.save_checkpoint(collective=False)
                if self.is_main:
                    print(f"checkpoint saved at step {self.state.global_step}: "
                          f"{self.ckpt_path}", file=sys.stderr)
            raise
        finally:
            for h in self.hooks:
                h.close(self)

    def _train(self, model, interrupt: GracefulInterrupt) -> str:
        st = self.state
        # RNG states are (re)set as late as possible: nothing between here and the first
        # forward may draw from them, in a fresh run and in a resumed one alike.
        if self._pending_rng is not None:
            restore_rng(self._pending_rng, self.device)
        else:
            seed_all(self.seed + st.global_step, self.rank)
        if st.epoch >= self.epochs:
            return "completed"
        stop = self._should_stop(interrupt)
        if stop == "interrupted":
            interrupt.raise_for_signal()
        if stop is not None:
            return stop
        for h in self.hooks:
            h.on_start(self)
        while stop is None:
            for batch in self._loader(st.epoch, st.step_in_epoch):
                out = self._step(model, batch)
                stop = self._should_stop(interrupt)
                if stop is None and self.epoch_end and st.epoch >= self.epochs:
                    stop = "completed"
                self.stop = stop
                for h in self.hooks:
                    h.after_step(self, out)
                if stop is not None:
                    break
        if stop == "interrupted":
            if self.is_main:
                print(f"checkpoint saved at step {st.global_step}: {self.ckpt_path}",
                      file=sys.stderr)
            interrupt.raise_for_signal()
        return stop

    def _step(self, model, batch) -> dict:
        """One optimiser step; the counters move with the weights."""
        st = self.state
        batch = to_device(batch, self.device)
        st.optimizer.zero_grad(set_to_none=True)
        with torch.autocast(self.device.type, dtype=torch.bfloat16,
                            enabled=self.precision == "bf16"):
            out = model(batch)
        if not isinstance(out, dict) or "loss" not in out:
            raise PointSSLError(f"{type(self.method).__name__}.forward must return a dict "
                                "with a 'loss' entry")
        out["loss"].backward()
        self.lr = st.optimizer.param_groups[0]["lr"]
        self._consistent = False
        st.optimizer.step()
        self.method.on_after_step()
        st.global_step += 1
        st.step_in_epoch += 1
        self.epoch_end = st.step_in_epoch == self.steps_per_epoch
        if self.epoch_end:
            st.scheduler.step()
            st.epoch += 1
            st.step_in_epoch = 0
        self._consistent = True
        return out

    def _finish(self, stop: str) -> dict:
        st = self.state
        if self._saved_step != st.global_step:
            self.save_checkpoint()
        self.clock.cpu_final = self.clock.cpu_offset + sum(
            dist.all_gather_object(self.clock.cpu()))
        metrics = {
            "method": getattr(self.method, "name", "method"),
            "stop_reason": stop,
            "loss": st.last_row.get("loss"),
            "epochs": self.epochs,
            "epochs_done": round(self.epoch_float(), 6),
            "steps": st.global_step,
            "steps_per_epoch": self.steps_per_epoch,
            "batch_size": self.local_batch * self.world,
            "world_size": self.world,
            "device": str(self.device),
            "precision": self.precision,
            "shapes_per_s": statistics.median(st.throughputs) if st.throughputs else None,
            "peak_rss_mib": peak_rss_mib(),
            "peak_gpu_mib": (torch.cuda.max_memory_allocated(self.device) / 2**20
                             if self.device.type == "cuda" else None),
            "wall_minutes": self.clock.wall() / 60,
            "cpu_minutes": self.clock.cpu_final / 60,
            "snapshots": st.snapshots,
            "resumed_from_step": self.resumed_from,
            "last": st.last_row,
        }
        self.export(stop_reason=stop)
        if self.is_main:
            write_json_atomic(self.out_dir / "metrics.json", metrics)
        for h in self.hooks:
            h.close(self)
        dist.barrier()
        return metrics
