"""ConClu: contrasting (SimSiam) + clustering (Sinkhorn prototypes) — Mei et al."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from pointssl.data.views import HalfSpaceCrop
from pointssl.data.views.transforms import AXES, Compose, Jitter, RandomSample, RotateUp
from pointssl.errors import DataError, PointSSLError
from pointssl.heads import PredictionHead, ProjectionHead
from pointssl.losses.clustering import SwappedClustering
from pointssl.losses.contrastive import SymmetricNegativeCosine
from pointssl.methods.base import METHODS, Method, OptimConfig


@dataclass
class ConCluConfig(OptimConfig):
    optimizer: str = "adamw"  # Sec. 3.1: AdamW
    lr: float = 1e-3  # Sec. 3.1
    weight_decay: float = 1e-2  # not stated; AdamW's default
    lr_step_epochs: int = 20  # Sec. 3.1: decayed by 0.7 every 20 epochs
    lr_gamma: float = 0.7
    batch_size: int = 128  # Sec. 3.2 (Sec. 3.1 says 32)
    epochs: int = 200  # Sec. 3.1
    num_points: int = 2048  # Sec. 3.2: 2,048 points per view
    crop_keep: float = 0.85  # Sec. 3.1: half-space crop keeps ~85%
    rotate_degrees: float = 5.0  # Sec. 3.1: ±5° about the vertical axis
    # the "vertical axis" of Sec. 3.1 is the data's: "auto" = the dataset's up axis
    # (sample["up_axis"]), z when it is unknown; "x" | "y" | "z" overrides
    up_axis: str = "auto"
    jitter_sigma: float = 0.01  # Sec. 3.1: N(0, 0.01)
    jitter_clip: float = 0.025  # Sec. 3.1
    proj_hidden: int = 1024  # Sec. 3.2: projector g, 3 FC + BN, hidden 1024
    proj_dim: int = 256  # Sec. 3.2: output 256
    pred_hidden: int = 512  # Sec. 3.2: predictor q 512 -> 256
    num_prototypes: int = 32  # Sec. 3.2: J = 32
    tau: float = 0.01  # Eq. 5
    # Eq. 6's entropic weight is not stated. SwAV's 0.05 on cos (= 0.1 on 2-2cos) left the codes
    # within 0.1 nat of uniform for 47 epochs (a dead term); at 0.01 they are sharp and use
    # every prototype (training-loss diagnostics, closing note of issue 9). The authors'
    # release solves its transport at 1e-3 with >= 20 iterations.
    sinkhorn_eps: float = 0.01
    sinkhorn_iters: int = 10
    orth_weight: float = 1.0  # Eq. 9
    clustering: bool = True  # False = contrasting only (Table 3 ablation)


@METHODS.register("conclu")
class ConClu(Method):
    name = "conclu"
    config_class = ConCluConfig

    def __init__(self, backbone, cfg: ConCluConfig | None = None):
        cfg = cfg or ConCluConfig()
        super().__init__(backbone, cfg)
        self.g = ProjectionHead(backbone.global_dim, cfg.proj_hidden, cfg.proj_dim)  # Sec. 3.2
        self.q = PredictionHead(cfg.proj_dim, cfg.pred_hidden)
        self.contrast = SymmetricNegativeCosine()
        self.cluster = SwappedClustering(cfg.proj_dim, cfg.num_prototypes, cfg.tau,
                                         cfg.sinkhorn_eps, cfg.sinkhorn_iters, cfg.orth_weight)
        if cfg.up_axis not in ("auto", *AXES):
            raise PointSSLError(f"conclu up_axis {cfg.up_axis!r}: expected auto, x, y or z")
        # Sec. 3.1 order: crop, then sample (without replacement while the crop has enough
        # points), then rotate about the up axis, then jitter; one recipe per up axis.
        crop, sample = HalfSpaceCrop(cfg.crop_keep), RandomSample(cfg.num_points)
        jitter = Jitter(cfg.jitter_sigma, cfg.jitter_clip)
        self.augments = {a: Compose(crop, sample, RotateUp(cfg.rotate_degrees, a), jitter)
                         for a in AXES}

    @classmethod
    def test_config(cls) -> dict:
        return {"num_points": 32, "proj_hidden": 32, "proj_dim": 16, "pred_hidden": 8,
                "num_prototypes": 4}

    def up_axis(self, sample: dict) -> str:
        """The axis ConClu rotates about for ``sample``: the config's, or with "auto" the
        dataset's (``sample["up_axis"]``), else z."""
        if self.cfg.up_axis != "auto":
            return self.cfg.up_axis
        up = sample.get("up_axis")
        if up is None:
            return "z"
        if up not in AXES:
            raise DataError(f"sample {sample.get('index', '?')}",
                            f"up_axis {up!r}: expected x, y or z")
        return up

    def make_views(self, sample: dict, rng: np.random.Generator) -> dict[str, np.ndarray]:
        pts = np.asarray(sample["points"][:, :3], dtype=np.float32)
        augment = self.augments[self.up_axis(sample)]
        return {"view_a": augment(pts, rng), "view_b": augment(pts, rng)}

    def branch(self, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(q, z) for one view: z = g(ρ(f(P))), q = q(z) (Eq. 1)."""
        return self._branch(points)[:2]

    def _branch(self, points: torch.Tensor):
        """(q, z, aux): aux is the backbone's regulariser for this view (None without one)."""
        out = self.backbone(points)
        z = self.g(out.global_feat)
        return self.q(z), z, out.aux_loss

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        q_a, z_a, aux_a = self._branch(batch["view_a"])
        q_b, z_b, aux_b = self._branch(batch["view_b"])
        con = self.contrast(q_a, z_a, q_b, z_b)
        out = {"con": con, "embedding": z_a.detach()}
        if self.cfg.clustering:
            out.update(self.cluster(q_a, z_a, q_b, z_b))
            out["loss"] = con + out["clu"]  # Eq. 10
        else:
            out["loss"] = con
        if aux_a is not None:
            # PointNet's L_reg on both views: the mean, as for one batch holding all 2B clouds
            reg = (aux_a + aux_b) / 2
            out["loss"] = out["loss"] + reg
            out["reg"] = reg.detach()
        return out
