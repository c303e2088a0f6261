"""A tiny deterministic method + data for trainer tests (shared with the torchrun worker)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pointssl.backbones.base import Backbone, BackboneOutput
from pointssl.data.datasets import CloudSet
from pointssl.data.views import random_indices
from pointssl.methods.base import Method, OptimConfig, collate_point_batches
from pointssl.structures import PointBatch

N_POINTS = 16


class TinyBackbone(Backbone):
    name = "tiny"

    def __init__(self, dim: int = 8):
        super().__init__(dim=dim)
        self.global_dim = self.point_dim = dim
        self.fc1 = nn.Linear(3, 16)
        self.bn = nn.BatchNorm1d(16)  # buffers (running stats) must survive resume too
        self.fc2 = nn.Linear(16, dim)

    def forward_dense(self, points):
        b, n, _ = points.shape
        h = F.relu(self.bn(self.fc1(points).reshape(b * n, -1))).reshape(b, n, -1)
        f = self.fc2(h)
        return BackboneOutput(f.max(dim=1).values, f)


class TinyMethod(Method):
    """Two jittered/rotated views, an MSE between them, torch and numpy global randomness in
    forward (so RNG restore matters) and an EMA buffer updated in ``on_after_step``."""

    name = "tiny"

    def __init__(self, cfg: OptimConfig | None = None):
        super().__init__(TinyBackbone(), cfg or OptimConfig(lr=1e-2, lr_step_epochs=1,
                                                            lr_gamma=0.5, batch_size=4, epochs=2))
        self.head = nn.Linear(8, 8)
        self.register_buffer("ema", torch.zeros(16))
        self.calls = 0
        self.hook = None  # test hook: hook(method, calls) runs at the start of each forward
        self.nan_at: int | None = None  # test switch: the loss of that call is NaN
        self.seen: list[int] = []

    def make_views(self, sample, rng):
        pts = sample["points"]
        idx = random_indices(len(pts), N_POINTS, rng)
        a = pts[idx] + rng.normal(0, 0.02, (N_POINTS, 3))
        t = rng.uniform(0, 2 * np.pi)
        rot = np.array([[np.cos(t), -np.sin(t), 0], [np.sin(t), np.cos(t), 0], [0, 0, 1]])
        return {"a": a.astype(np.float32), "b": (pts[idx] @ rot.T).astype(np.float32)}

    def forward(self, batch):
        self.calls += 1
        if self.hook is not None:
            self.hook(self, self.calls)
        self.seen.extend(batch["index"].tolist())
        za = self.head(self.backbone(batch["a"]).global_feat)
        zb = self.backbone(batch["b"]).global_feat
        noise = torch.randn(za.shape) * 0.01 + float(np.random.rand()) * 0.01
        loss = ((za + noise - zb) ** 2).mean()
        if self.calls == self.nan_at:
            loss = loss * float("nan")
        return {"loss": loss, "cos": F.cosine_similarity(za, zb).mean().detach(),
                "embedding": za}

    def on_after_step(self):
        with torch.no_grad():
            self.ema.mul_(0.9).add_(0.1 * self.backbone.fc1.bias)


class TwoNetMethod(TinyMethod):
    """TinyMethod that also trains and exports a second network, ``target``."""

    def __init__(self, cfg: OptimConfig | None = None):
        super().__init__(cfg)
        self.target = TinyBackbone()

    def forward(self, batch):
        out = super().forward(batch)
        out["loss"] = out["loss"] + self.target(batch["b"]).global_feat.pow(2).mean()
        return out

    def exports(self):
        return {"backbone": self.backbone, "target": self.target}


class VarSizeMethod(TinyMethod):
    """Views of 8..16 points (a different size per shape), packed into a PointBatch."""

    def make_views(self, sample, rng):
        pts = sample["points"]
        k = int(rng.integers(8, N_POINTS + 1))
        return {"a": pts[random_indices(len(pts), k, rng)].astype(np.float32)}

    def collate(self, samples):
        return collate_point_batches(samples, ["a"])

    def forward(self, batch):
        self.calls += 1
        assert isinstance(batch["a"], PointBatch)
        self.sizes = batch["a"].sizes.tolist()
        self.seen.extend(batch["index"].tolist())
        g = self.backbone(batch["a"]).global_feat
        return {"loss": (self.head(g) - 1).pow(2).mean()}


def tiny_data(n: int = 22, seed: int = 0) -> CloudSet:
    rng = np.random.default_rng(seed)
    return CloudSet(points=[rng.normal(size=(24, 3)).astype(np.float32) for _ in range(n)],
                    labels=np.zeros(n, dtype=np.int64))


def make_method(seed: int = 0, cls=TinyMethod, **cfg) -> TinyMethod:
    torch.manual_seed(seed)
    base = dict(lr=1e-2, lr_step_epochs=1, lr_gamma=0.5, batch_size=4, epochs=2)
    return cls(OptimConfig(**{**base, **cfg}))
