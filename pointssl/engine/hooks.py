"""What happens around a training step, one small class each: snapshots, logging (with the
throughput and the progress bar), the NaN stop and checkpoint timing.

A hook sees the trainer: ``trainer.state`` (TrainState), ``trainer.stop`` (None or the reason
the run ends after this step), ``trainer.epoch_end`` and ``trainer.lr`` (the lr of this step).
The trainer calls them in list order; every rank calls every hook (some are collective).
"""

from __future__ import annotations

import math
import sys

import torch

from pointssl.engine import distributed as dist
from pointssl.engine.logging import RunLogger, collapse_std
from pointssl.errors import PointSSLError

__all__ = ["Hook", "Snapshots", "Logging", "NanStop", "Checkpoints", "default_hooks"]


class Hook:
    def open(self, trainer) -> None:
        """When ``fit`` begins (files may be opened; nothing is trained yet)."""

    def on_start(self, trainer) -> None:
        """Right before the first step of this process."""

    def after_step(self, trainer, out: dict) -> None:
        """After each optimiser step; ``out`` is the method's output dict."""

    def close(self, trainer) -> None:
        """When ``fit`` returns or raises (idempotent)."""


def _minutes_tag(m: float) -> str:
    return f"{m:g}"


class Snapshots(Hook):
    """Export the networks as ``<name>_{M}min.pt`` when the run's budget clock first passes
    each of ``minutes``; ``state.snapshots`` records when."""

    def __init__(self, minutes=()):
        self.minutes = sorted({float(m) for m in minutes or ()})

    def after_step(self, trainer, out) -> None:
        st, clock = trainer.state, trainer.clock
        wall_min, budget_min = clock.wall() / 60, trainer.budget_s() / 60
        for m in self.minutes:
            tag = _minutes_tag(m)
            if budget_min >= m and tag not in st.snapshots:
                files = trainer.export(f"_{tag}min", snapshot_minutes=m)
                entry = {"file": files[0], "step": st.global_step,
                         "epoch": round(trainer.epoch_float(), 6),
                         "wall_minutes": round(wall_min, 4),
                         "cpu_minutes": round(clock.cpu_total() / 60, 4),
                         "clock": trainer.budget_clock}
                if len(files) > 1:
                    entry["files"] = files
                st.snapshots[tag] = entry


class Logging(Hook):
    """Every ``every`` steps (and at the last): a row of all-reduced scalars, lr, throughput
    and wall time to ``metrics.csv`` + TensorBoard (rank 0) and the progress bar."""

    def __init__(self, every: int = 10, progress: bool = True):
        self.every = max(1, int(every))
        self.progress = progress
        self.logger: RunLogger | None = None
        self.bar = None

    def open(self, trainer) -> None:
        self.logger = RunLogger(trainer.out_dir, enabled=trainer.is_main,
                                resume_step=trainer.resumed_from)

    def on_start(self, trainer) -> None:
        from tqdm import tqdm

        st = trainer.state
        total = st.global_step + (trainer.epochs - st.epoch) * trainer.steps_per_epoch \
            - st.step_in_epoch
        self.bar = tqdm(total=total, initial=st.global_step, unit="step", dynamic_ncols=True,
                        desc=getattr(trainer.method, "name", "train"),
                        disable=not (self.progress and trainer.is_main and sys.stderr.isatty()))
        self.t_log, self.step_log = trainer.clock.now(), st.global_step

    def after_step(self, trainer, out) -> None:
        st = trainer.state
        self.bar.update(1)
        if st.global_step % self.every and trainer.stop is None:
            return
        now = trainer.clock.now()
        steps = st.global_step - self.step_log
        rate = (steps * trainer.local_batch * trainer.world / (now - self.t_log)
                if now > self.t_log else float("nan"))
        self.t_log, self.step_log = now, st.global_step
        if math.isfinite(rate):
            st.throughputs.append(rate)
        row = {"step": st.global_step, "epoch": round(trainer.epoch_float(), 6),
               "lr": trainer.lr, **scalars(out, trainer.device), "shapes_per_s": rate,
               "wall_s": round(trainer.clock.wall(), 3)}
        st.last_row = row
        self.logger.log(row)
        self.bar.set_postfix(loss=f"{row['loss']:.4g}", shapes_s=f"{rate:.1f}")

    def close(self, trainer) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        if self.logger is not None:
            self.logger.close()


class NanStop(Hook):
    """Stop with a one-line error when a logged loss is not finite, before that step's weights
    reach a checkpoint (the loss is all-reduced, so every rank stops at the same step)."""

    def after_step(self, trainer, out) -> None:
        row = trainer.state.last_row
        if row.get("step") == trainer.state.global_step and not math.isfinite(row["loss"]):
            raise PointSSLError(f"loss is {row['loss']} at step {row['step']}; the last good "
                                f"checkpoint is {trainer.ckpt_path}")


class Checkpoints(Hook):
    """``checkpoints/last.pt`` at each epoch end, every ``every`` steps and when the run stops."""

    def __init__(self, every: int | None = 200):
        self.every = int(every or 0)

    def after_step(self, trainer, out) -> None:
        step = trainer.state.global_step
        if trainer.epoch_end or trainer.stop is not None or (
                self.every and step % self.every == 0):
            trainer.save_checkpoint()


def scalars(out: dict, device: torch.device) -> dict[str, float]:
    """Logged scalars (all-reduced means over ranks); one host sync per log step."""
    vals: dict[str, torch.Tensor] = {}
    for k, v in out.items():
        if k == "embedding":
            continue
        if isinstance(v, torch.Tensor):
            if v.numel() == 1:
                vals[k] = v.detach().float().reshape(())
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            vals[k] = torch.tensor(float(v), device=device)
    emb = out.get("embedding")
    if isinstance(emb, torch.Tensor):
        vals["collapse_std"] = collapse_std(emb)
    keys = sorted(vals)
    if not keys:
        return {}
    stacked = torch.stack([vals[k].to(device) for k in keys])
    return dict(zip(keys, dist.all_reduce_mean(stacked).tolist(), strict=True))


def default_hooks(*, log_every: int, progress: bool, snapshot_minutes, ckpt_every_steps):
    """The standard order: snapshot, log, NaN stop (before the checkpoint), checkpoint."""
    return [Snapshots(snapshot_minutes), Logging(log_every, progress), NanStop(),
            Checkpoints(ckpt_every_steps)]
