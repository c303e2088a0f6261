"""Training engine: the loop, checkpoints and exact resume, run-folder logs, DDP helpers."""

from pointssl.engine.trainer import Trainer

__all__ = ["Trainer"]
