"""Optimiser and learning-rate schedule from a method config's OptimConfig fields."""

from __future__ import annotations

import torch
from torch import nn

from pointssl.errors import PointSSLError

__all__ = ["build_optimizer", "build_scheduler", "cfg_value"]


def cfg_value(cfg, name, default=None):
    if isinstance(cfg, dict):
        return cfg.get(name, default)
    return getattr(cfg, name, default)


def build_optimizer(method: nn.Module, cfg) -> torch.optim.Optimizer:
    """AdamW / Adam / SGD from the method's OptimConfig fields.

    A method may define ``parameter_groups()`` (torch param-group dicts) to give heads their
    own lr or weight decay; by default every trainable parameter is in one group.
    """
    name = str(cfg_value(cfg, "optimizer", "adamw")).lower()
    lr = float(cfg_value(cfg, "lr", 1e-3))
    wd = float(cfg_value(cfg, "weight_decay", 0.0))
    groups = method.parameter_groups() if hasattr(method, "parameter_groups") else None
    params = groups or [p for p in method.parameters() if p.requires_grad]
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=wd)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=wd)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, weight_decay=wd,
                               momentum=float(cfg_value(cfg, "momentum", 0.9)))
    raise PointSSLError(f"unknown optimizer {name!r}; choose adamw, adam or sgd")


def build_scheduler(optimizer, cfg) -> torch.optim.lr_scheduler.StepLR:
    """StepLR stepped once per epoch; lr_step_epochs <= 0 means a constant lr."""
    step = int(cfg_value(cfg, "lr_step_epochs", 0) or 0)
    gamma = float(cfg_value(cfg, "lr_gamma", 1.0))
    if step <= 0:
        step, gamma = 1, 1.0
    return torch.optim.lr_scheduler.StepLR(optimizer, step_size=step, gamma=gamma)
