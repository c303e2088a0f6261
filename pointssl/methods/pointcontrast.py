"""PointContrast (Xie et al., ECCV 2020): dense contrast between two partial views of a scene.

Algorithm 1: for a pair of views x1, x2 (world-aligned, from ``pointssl data pairs``) and
their matches M, sample independent rigid transforms T1, T2, compute per-point features
f1 = NN(T1(x1)), f2 = NN(T2(x2)) and minimise a contrastive loss on the matched points
(``loss="infonce"`` PointInfoNCE, or ``"hardest"`` hardest-contrastive; Sec. 3.4).

Transforms (the appendix / the release's ``sample_random_trans``): each view centred on its
mean, rotated about a random axis by an angle uniform in +-``rotation_deg`` / 2 (360: any
rotation) and scaled by U[``scale_min``, ``scale_max``] with probability 0.95, T1 and T2
drawn independently. Matches are row indices, so they survive the transforms, and the backbone
returns one feature per input row, so they survive its voxelisation too.

Head: the release's network ends with a 1x1 convolution to 32 channels (Res16UNet34C
``out_channels=32``); that last layer is :attr:`head` here (``out_dim``), so the exported
backbone is the network up to it, as fine-tuning reuses it. ``head=False`` contrasts the
backbone's point features directly.

Items without a second view (an object or whole-scene dataset) get the "holistic scene"
variant of Sec. 4.6: both views are the same cloud (at most ``max_points`` points each) with
independent transforms and identity matches.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from pointssl.errors import PointSSLError
from pointssl.losses.pointcontrast import HardestContrastive, PointInfoNCE
from pointssl.methods.base import METHODS, Method, OptimConfig, collate_point_batches


@dataclass
class PointContrastConfig(OptimConfig):
    # optimiser: the paper states none of it; the authors' release (facebookresearch/
    # PointContrast, pretrain/pointcontrast/config/defaults.yaml, checked) has SGD, lr 0.1,
    # momentum 0.8, weight decay 1e-4, ExpLR x0.99 every lr_update_freq iterations (1,000 in
    # the defaults, 250 in its launch scripts)
    optimizer: str = "sgd"
    lr: float = 0.1
    momentum: float = 0.8
    weight_decay: float = 1e-4
    lr_step_epochs: int = 1  # release: exponential decay 0.99 per "epoch" of 1k iterations
    lr_gamma: float = 0.99
    batch_size: int = 8  # release: 32 pairs over 8 GPUs; 8 here for one CPU
    epochs: int = 20
    loss: str = "infonce"  # Sec. 3.4: infonce (PointInfoNCE) | hardest (hardest-contrastive)
    temperature: float = 0.4  # PointInfoNCE tau (release: nceT 0.4)
    num_pairs: int = 4096  # Sec. 3.4: 4,096 sampled matches (PointInfoNCE)
    pos_margin: float = 0.1  # Sec. 3.4: m_p
    neg_margin: float = 1.4  # Sec. 3.4: m_n
    hardest_pairs: int = 1024  # FCGF / release: num_pos_per_batch
    hn_samples: int = 256  # FCGF / release: num_hn_samples_per_batch
    rotation_deg: float = 360.0  # release: rotation_range 360
    scale_min: float = 0.8  # release: min_scale (its use_random_scale defaults to False;
    scale_max: float = 1.2  # release: max_scale   set both to 1 for the release's default)
    head: bool = True  # the release's final 1x1 conv (out_channels) as the method's head
    out_dim: int = 32  # Sec. 3 / release: 32-d point features
    use_colors: bool = False  # give the views' colours to a backbone with in_dim 6
    max_points: int = 40000  # per view (a seeded subset beyond); keeps CPU steps bounded


def random_rotation(rng: np.random.Generator, degrees: float) -> np.ndarray:
    """Rotation about a uniformly random axis by an angle in +-degrees / 2 (Rodrigues)."""
    axis = rng.normal(size=3)
    axis /= np.linalg.norm(axis)
    t = np.deg2rad(degrees) * (rng.random() - 0.5)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(t) * k + (1 - np.cos(t)) * (k @ k)


def random_rigid(xyz: np.ndarray, rng, cfg: PointContrastConfig):
    """T(x) = s R (x - mean); returns (transformed float32, (s, R, mean))."""
    r = random_rotation(rng, cfg.rotation_deg)
    s = rng.uniform(cfg.scale_min, cfg.scale_max) if rng.random() < 0.95 else 1.0
    mean = xyz.mean(0)
    return (s * (xyz - mean) @ r.T).astype(np.float32), (s, r, mean)


@METHODS.register("pointcontrast")
class PointContrast(Method):
    name = "pointcontrast"
    config_class = PointContrastConfig

    def __init__(self, backbone, cfg: PointContrastConfig | None = None):
        cfg = cfg or PointContrastConfig()
        super().__init__(backbone, cfg)
        if cfg.loss == "infonce":
            self.criterion = PointInfoNCE(cfg.temperature, cfg.num_pairs)
        elif cfg.loss == "hardest":
            self.criterion = HardestContrastive(cfg.pos_margin, cfg.neg_margin,
                                                cfg.hardest_pairs, cfg.hn_samples)
        else:
            raise PointSSLError(f"pointcontrast loss {cfg.loss!r}: infonce or hardest")
        self.head = nn.Linear(backbone.point_dim, cfg.out_dim) if cfg.head else None

    @classmethod
    def test_config(cls) -> dict:
        return {"num_pairs": 64, "hardest_pairs": 32, "hn_samples": 16, "out_dim": 8}

    def make_views(self, sample: dict, rng: np.random.Generator) -> dict[str, np.ndarray]:
        cfg = self.cfg
        if "xyz2" in sample:
            x1, x2 = np.asarray(sample["xyz1"]), np.asarray(sample["xyz2"])
            c1, c2 = sample.get("colors1"), sample.get("colors2")
            m = np.asarray(sample["matches"], dtype=np.int64).reshape(-1, 2)
        else:  # holistic-scene variant (Sec. 4.6): one cloud, identity matches
            x1 = x2 = np.asarray(sample["points"])[:, :3]
            c1 = c2 = sample.get("colors")
            m = np.repeat(np.arange(len(x1))[:, None], 2, 1)
        keep1 = self._cap(len(x1), rng)
        keep2 = self._cap(len(x2), rng) if "xyz2" in sample else keep1
        m = _remap(m, keep1, len(x1), keep2, len(x2))
        x1, x2 = x1[keep1], x2[keep2]
        if len(m) == 0:
            raise PointSSLError(f"pair {sample.get('index', '?')}: no matched points left")
        v1, _ = random_rigid(np.asarray(x1, np.float64), rng, cfg)  # T1
        v2, _ = random_rigid(np.asarray(x2, np.float64), rng, cfg)  # T2, independent
        # the loss's pair / negative sampling draws from this: a batch always gives the same
        # loss (exact resume, evaluation of a loaded method)
        out = {"view1": v1, "view2": v2, "matches": m,
               "seed": np.int64(rng.integers(2**62))}
        if cfg.use_colors:
            if c1 is None or np.asarray(c1).shape[-1] < 3:
                raise PointSSLError("use_colors: the pairs carry no colours")
            out["view1"] = np.hstack([v1, np.asarray(c1, np.float32)[keep1] - 0.5])
            out["view2"] = np.hstack([v2, np.asarray(c2, np.float32)[keep2] - 0.5])
        return out

    def _cap(self, n: int, rng) -> np.ndarray:
        if n <= self.cfg.max_points:
            return np.arange(n)
        return np.sort(rng.choice(n, self.cfg.max_points, replace=False))

    def collate(self, samples: list[dict]) -> dict:
        """Views packed into PointBatches; matches shifted to rows of the packed views."""
        out = collate_point_batches([{k: v for k, v in s.items() if k != "matches"}
                                     for s in samples], ["view1", "view2"])
        o1, o2 = out["view1"].offset, out["view2"].offset
        out["matches"] = torch.cat([torch.from_numpy(s["matches"]) +
                                    torch.tensor([int(o1[b]), int(o2[b])])
                                    for b, s in enumerate(samples)])
        return out

    def point_features(self, view) -> tuple[torch.Tensor, torch.Tensor | None]:
        out = self.backbone(view)
        f = out.point_feat
        f = f.reshape(-1, f.shape[-1])
        return (self.head(f) if self.head is not None else f), out.aux_loss

    def forward(self, batch: dict) -> dict[str, torch.Tensor]:
        m = batch["matches"]
        if not isinstance(m, torch.Tensor):  # a default-collated dense batch
            raise PointSSLError("pointcontrast needs its own collate (matches per pair)")
        f1, aux1 = self.point_features(batch["view1"])
        f2, aux2 = self.point_features(batch["view2"])
        seed = int(batch["seed"].sum()) % (2**62) if "seed" in batch else 0
        res = self.criterion(f1, f2, m.to(f1.device), torch.Generator().manual_seed(seed))
        out = dict(res)
        with torch.no_grad():
            z = torch.nn.functional.normalize(f1[m[:, 0]], dim=1)
            # collapse watch: spread of the matched features (0 when they collapse to a point)
            out["feat_std"] = z.std(0).mean() * z.shape[1] ** 0.5
            out["embedding"] = z[:256]
        if aux1 is not None:
            out["loss"] = out["loss"] + (aux1 + aux2) / 2
        return out


def _remap(m: np.ndarray, keep1, n1, keep2, n2) -> np.ndarray:
    """Matches after keeping rows ``keep1`` / ``keep2`` of the views (dropped rows' matches
    go)."""
    if len(keep1) == n1 and len(keep2) == n2:
        return m
    new1 = np.full(n1, -1)
    new1[keep1] = np.arange(len(keep1))
    new2 = np.full(n2, -1)
    new2[keep2] = np.arange(len(keep2))
    a, b = new1[m[:, 0]], new2[m[:, 1]]
    ok = (a >= 0) & (b >= 0)
    return np.stack([a[ok], b[ok]], 1)
