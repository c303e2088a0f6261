"""Training engine: the loop, its hooks, the TrainState (= the checkpoint), run-folder logs,
DDP helpers."""

from pointssl.engine.hooks import Hook
from pointssl.engine.state import TrainState
from pointssl.engine.trainer import Trainer

__all__ = ["Trainer", "TrainState", "Hook"]
