"""MID: multiresolution instance discrimination (Wang et al., MID-Net, Sec. 3, Algorithm 1).

Every training shape is its own class (its dataset index, Sec. 3.1) and every one of its K
K-means patches a point-level class. A shape's augmented copy is classified against N unit
memory vectors (Eq. 2) and each of its points against the shape's K patch vectors (Eqs. 4-5),
both at temperature 0.1. The shape feature of Eq. 2 is a linear head on the backbone's global
feature (the release's 128-d ``fc2`` on its pooled ``fc1``): the protocols read the global
feature under it, as the release's linear classifier and fine-tuning read ``fc1``. The
memories are not trained by gradient: after each optimiser step the rows of the batch's shapes
move halfway (momentum 0.5) to the current shape feature and patch-mean features and are
re-normalised (Eqs. 6-7).

The memories are frozen parameters of this module (N x C_shape and N x K x C_point, the
release's ``trainable=False`` variables): checkpointed and resumed with the weights, never seen
by the optimiser, ignored by DDP, and kept equal on every rank by gathering the batch's
features from all ranks before the update. N is ``num_instances``, or with 0 the largest shape
index seen so far + 1 (the training set's size after the first few steps of a shuffled
epoch); rows start near zero (the release's Xavier init) from a seeded generator, each row
depending on its index only. Any backbone with per-point features works (Sec. 5.1 trains
PointNet++).

Hyper-parameters the paper defers to its supplement are the authors' TensorFlow release's
(microsoft/O-CNN, ``tensorflow/script/configs/mid_hrnet_d6.yaml``, ``run_mid.py``,
``mid_loss.py``, ``ocnn.py``), cited beside each field.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as tdist
from torch import nn
from torch.utils.data import default_collate

from pointssl.backbones.base import Backbone
from pointssl.data.views.patches import kmeans_patches
from pointssl.data.views.samplers import subsample_indices
from pointssl.data.views.transforms import AXES, normalize_unit_sphere, pca_normals
from pointssl.errors import DataError, PointSSLError
from pointssl.losses.mid import (
    PatchInstanceLoss,
    ShapeInstanceLoss,
    momentum_update,
    patch_means,
)
from pointssl.methods.base import METHODS, Method, OptimConfig
from pointssl.structures import PointBatch

__all__ = ["MIDConfig", "MID", "random_rotation"]

_PREP_VERSION = "1"  # bump when the K-means or the normal estimate changes
_XAVIER_BOUND = float(np.sqrt(6.0 / (57449 + 128)))  # the release's N x 128 shape memory


@dataclass
class MIDConfig(OptimConfig):
    optimizer: str = "sgd"  # release ocnn.py build_solver: MomentumOptimizer(lr, 0.9)
    lr: float = 0.03  # release mid_hrnet_d6.yaml SOLVER.learning_rate
    weight_decay: float = 5e-4  # release LOSS.weight_decay (L2 on the weights)
    momentum: float = 0.9  # release: SGD momentum 0.9
    # release: 800k iterations, lr x0.1 at 400k and 600k (step_size (400000, 200000)); with
    # 32 shapes per step over ShapeNet's 57,449 that is ~445 epochs, the first decay at ~223
    # (a per-epoch StepLR cannot also place the second decay at ~334)
    lr_step_epochs: int = 223
    lr_gamma: float = 0.1  # release SOLVER.gamma default
    batch_size: int = 32  # release DATA.train.batch_size
    epochs: int = 445
    # s_i of Eq. 2: a linear layer (with bias) on the backbone's global feature, to 128-d:
    # the release's fc2 (network_hrnet.py cls_header, mid_hrnet_d6.yaml nouts 128,64). Its
    # downstream protocols read the feature under it (fc1), as ours read the backbone's
    # global feature; 0 = no head (Eq. 2 on the backbone's global feature itself)
    shape_dim: int = 128
    loss: str = "both"  # Eq. 5 = both; "shape" / "point": Table 8's Shape-Loss / Point-Loss
    shape_weight: float = 1.0  # release LOSS.weights (1.0, 1.0)
    point_weight: float = 1.0
    tau_shape: float = 0.1  # Eq. 2: tau_s = 0.1 (release LOSS.sigma)
    tau_point: float = 0.1  # Eqs. 3-4: tau_p = 0.1
    shape_momentum: float = 0.5  # Eq. 6: lambda_s = 0.5
    point_momentum: float = 0.5  # Eq. 7: lambda_p = 0.5
    num_patches: int = 100  # Sec. 3.1: K_i = 100 K-means patches
    # Sec. 3.1: rotation about the upright axis for aligned data ("up", full circle); "so3":
    # arbitrary 3D rotation (Sec. 4.5, registration; the release's angle (180, 180, 180));
    # "none": no rotation
    rotation: str = "up"
    up_axis: str = "auto"  # "auto": the dataset's up axis (z when unknown); x | y | z
    translate: float = 0.25  # Sec. 3.1: translation in [-0.25, 0.25] per axis
    scale_low: float = 0.75  # Sec. 3.1: per-axis scale in [0.75, 1.25]
    scale_high: float = 1.25
    num_points: int = 0  # points per view; 0 = every point of the shape (not stated)
    normal_k: int = 16  # not stated: neighbours of the PCA normals (Sec. 3.1)
    num_instances: int = 0  # N of Eq. 2; 0 = the training set size (or, outside the
    # trainer, grow to the largest shape index seen + 1)
    memory_dtype: str = "fp32"  # "fp16" halves the N x K x C patch memory for large N
    # the memories' start (the paper does not say): "xavier" = the release's Xavier-uniform
    # rows (mid_loss.py), near zero (bound sqrt(6 / (57,449 + 128)) ~ 0.01 for its N), so an
    # unvisited row adds a neutral exp(~0) to Eq. 2's sum and the first update (Eq. 6) all but
    # copies the feature; "unit" = random unit vectors (Wu et al. 2018)
    memory_init: str = "xavier"
    memory_seed: int = 0  # seeds the rows the memories start from
    # where K-means patches and PCA normals are cached, once per shape: "auto" = the pointssl
    # cache folder (mid/), "" = this process's memory only, else a folder
    prep_cache: str = "auto"


def random_rotation(rng: np.random.Generator) -> np.ndarray:
    """A uniformly random 3x3 rotation (QR of a Gaussian matrix, signs fixed)."""
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q


def _rotation_about(axis: int, angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    i, j = [a for a in range(3) if a != axis]
    r = np.eye(3)
    r[i, i], r[i, j], r[j, i], r[j, j] = c, -s, s, c
    return r


def _dist_world() -> int:
    return tdist.get_world_size() if tdist.is_available() and tdist.is_initialized() else 1


@METHODS.register("mid")
class MID(Method):
    """Any backbone with per-point features + the MID loss (Eq. 5) + momentum memories."""

    name = "mid"
    config_class = MIDConfig

    def __init__(self, backbone: Backbone, cfg: MIDConfig | None = None):
        cfg = cfg or MIDConfig()
        super().__init__(backbone, cfg)
        if cfg.loss not in ("both", "shape", "point"):
            raise PointSSLError(f"mid loss {cfg.loss!r}: both, shape or point")
        if cfg.rotation not in ("up", "so3", "none"):
            raise PointSSLError(f"mid rotation {cfg.rotation!r}: up, so3 or none")
        if cfg.up_axis not in ("auto", *AXES):
            raise PointSSLError(f"mid up_axis {cfg.up_axis!r}: auto, x, y or z")
        if cfg.memory_init not in ("xavier", "unit"):
            raise PointSSLError(f"mid memory_init {cfg.memory_init!r}: xavier or unit")
        if cfg.memory_dtype not in ("fp32", "fp16"):
            raise PointSSLError(f"mid memory_dtype {cfg.memory_dtype!r}: fp32 or fp16")
        if cfg.num_patches < 1 or cfg.num_instances < 0:
            raise PointSSLError("mid num_patches >= 1 and num_instances >= 0 are required")
        if not getattr(backbone, "point_dim", 0):
            raise PointSSLError(f"mid needs per-point features; backbone {backbone.name!r} "
                                "has none")
        self.use_shape = cfg.loss in ("both", "shape")
        self.use_point = cfg.loss in ("both", "point")
        dt = torch.float16 if cfg.memory_dtype == "fp16" else torch.float32
        k = int(cfg.num_patches)
        if cfg.shape_dim < 0:
            raise PointSSLError(f"mid shape_dim {cfg.shape_dim}: >= 0")
        self.shape_dim = int(cfg.shape_dim) or int(backbone.global_dim)
        self.shape_head = (nn.Linear(backbone.global_dim, self.shape_dim)
                           if cfg.shape_dim and self.use_shape else nn.Identity())
        # the linear classifiers' weights s~ (Eq. 2) and v~ (Eq. 4): frozen parameters (the
        # release's trainable=False variables), moved by momentum only, never by the optimiser
        self.shape_memory = _frozen(torch.zeros(0, self.shape_dim, dtype=dt))
        self.patch_memory = _frozen(torch.zeros(0, k, backbone.point_dim, dtype=dt))
        # the memories are updated identically on every rank (on_after_step gathers the
        # batch): DDP must not overwrite them with rank 0's copy at every forward
        self._ddp_params_and_buffers_to_ignore = ["shape_memory", "patch_memory"]
        self.shape_loss = ShapeInstanceLoss(cfg.tau_shape)
        self.point_loss = PatchInstanceLoss(cfg.tau_point)
        self._pending: tuple | None = None
        self._prep: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self._sized = False  # memories hold every training index (no per-step check)
        if cfg.num_instances:
            self.grow(int(cfg.num_instances))
            self._sized = True

    @classmethod
    def test_config(cls) -> dict:
        return {"num_patches": 4, "prep_cache": ""}

    # ------------------------------------------------------------------ memories
    @property
    def num_instances(self) -> int:
        return max(len(self.shape_memory), len(self.patch_memory))

    def _rows(self, kind: str, lo: int, hi: int, shape: tuple, device) -> torch.Tensor:
        """Rows lo..hi of a memory's random start: row r comes from block r // 1024,
        drawn from a generator seeded by (memory_seed, kind, block), whatever the order in
        which rows are first needed."""
        out, block = [], 1024
        for b in range(lo // block, (hi - 1) // block + 1):
            seed = np.random.SeedSequence([int(self.cfg.memory_seed), 0x51D, int(kind == "patch"),
                                           b]).generate_state(1, np.uint64)[0]
            g = torch.Generator().manual_seed(int(seed) & (2**63 - 1))
            if self.cfg.memory_init == "unit":
                rows = torch.nn.functional.normalize(
                    torch.randn((block, *shape), generator=g), dim=-1)
            else:
                rows = (torch.rand((block, *shape), generator=g) * 2 - 1) * _XAVIER_BOUND
            a, z = max(lo, b * block) - b * block, min(hi, (b + 1) * block) - b * block
            out.append(rows[a:z])
        return torch.cat(out).to(device)

    @torch.no_grad()
    def grow(self, n: int) -> None:
        """Make room for shape indices < n (new rows: seeded, see ``memory_init``)."""
        for name, on in (("shape_memory", self.use_shape), ("patch_memory", self.use_point)):
            mem = getattr(self, name)
            if not on or len(mem) >= n:
                continue
            new = self._rows(name[:5], len(mem), n, tuple(mem.shape[1:]), mem.device)
            setattr(self, name, _frozen(torch.cat([mem.detach(), new.to(mem.dtype)])))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # a checkpoint's memories may be larger than this fresh module's: take their size
        for name in ("shape_memory", "patch_memory"):
            t = state_dict.get(prefix + name)
            if t is not None and tuple(t.shape) != tuple(getattr(self, name).shape):
                cur = getattr(self, name)
                setattr(self, name, _frozen(torch.empty(t.shape, dtype=cur.dtype,
                                                        device=cur.device)))
                self._sized = False  # an older, smaller memory: check indices again
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def bind_data(self, num_shapes: int) -> None:
        """Size the memories for the whole training set once (N of Eq. 2), so a step never
        asks the device for its largest index (a host-device sync)."""
        self.grow(max(int(self.cfg.num_instances), int(num_shapes)))
        self._sized = True

    def _ensure_rows(self, index: torch.Tensor) -> None:
        if self._sized:
            return
        top = index.max().reshape(1).long() if len(index) else torch.zeros(1, dtype=torch.long)
        if _dist_world() > 1:  # every rank grows to the same size
            tdist.all_reduce(top, op=tdist.ReduceOp.MAX)
        self.grow(int(top.item()) + 1)

    # ------------------------------------------------------------------ views
    def up_axis(self, sample: dict) -> str:
        if self.cfg.up_axis != "auto":
            return self.cfg.up_axis
        up = sample.get("up_axis") or "z"
        if up not in AXES:
            raise DataError(f"sample {sample.get('index', '?')}",
                            f"up_axis {up!r}: expected x, y or z")
        return up

    def prepare(self, points: np.ndarray, normals: np.ndarray | None
                ) -> tuple[np.ndarray, np.ndarray]:
        """(patch ids (N,), unit normals (N, 3)) of a shape, computed once and cached: the
        K-means patches of Sec. 3.1 and, when the data has none, PCA normals."""
        cfg = self.cfg
        h = hashlib.sha1(np.ascontiguousarray(points, dtype=np.float32).tobytes())
        h.update(f"{_PREP_VERSION}|{cfg.num_patches}|{cfg.normal_k}|{normals is None}".encode())
        key = h.hexdigest()
        hit = self._prep.get(key)
        if hit is None:
            folder = self._cache_folder()
            entry = None if folder is None else folder / f"{key[:24]}.npz"
            if entry is not None and entry.exists():
                try:
                    with np.load(entry, allow_pickle=False) as f:
                        hit = (f["patch"].astype(np.int64), f["normals"].astype(np.float32))
                except (OSError, ValueError, KeyError):
                    hit = None
            if hit is None or len(hit[0]) != len(points):
                patch = kmeans_patches(points, cfg.num_patches)
                nrm = (pca_normals(points, cfg.normal_k) if normals is None
                       else np.zeros((len(points), 0), np.float32))
                hit = (patch, nrm)
                if entry is not None:
                    from pointssl.utils import atomic_savez

                    try:
                        folder.mkdir(parents=True, exist_ok=True)
                        atomic_savez(entry, patch=patch.astype(np.int16),
                                     normals=nrm.astype(np.float16))
                    except OSError:
                        pass  # a read-only cache folder: keep the in-memory copy only
            self._prep[key] = (hit[0].astype(np.int16), hit[1].astype(np.float16))
        patch, nrm = self._prep[key]
        return patch.astype(np.int64), (normals if normals is not None
                                        else nrm.astype(np.float32))

    def _cache_folder(self) -> Path | None:
        c = str(self.cfg.prep_cache or "")
        if not c:
            return None
        if c == "auto":
            from pointssl.utils import cache_dir

            return cache_dir("mid")
        return Path(c)

    def augment(self, rng: np.random.Generator, up: str) -> tuple[np.ndarray, np.ndarray,
                                                                   np.ndarray]:
        """(R, s, t) of Sec. 3.1: x -> s * (R x) + t."""
        cfg = self.cfg
        if cfg.rotation == "so3":
            r = random_rotation(rng)
        elif cfg.rotation == "up":
            r = _rotation_about(AXES[up], rng.uniform(0.0, 2 * np.pi))
        else:
            r = np.eye(3)
        s = rng.uniform(cfg.scale_low, cfg.scale_high, size=3)
        t = rng.uniform(-cfg.translate, cfg.translate, size=3)
        return r, s, t

    def make_views(self, sample: dict, rng: np.random.Generator) -> dict[str, np.ndarray]:
        pts = np.asarray(sample["points"])
        if pts.ndim != 2 or pts.shape[0] == 0 or pts.shape[1] < 3:
            raise DataError(f"sample {sample.get('index', '?')}",
                            f"expected a non-empty (N, 3) point array, got shape {pts.shape}")
        xyz = np.ascontiguousarray(pts[:, :3], dtype=np.float32)
        given = sample.get("normals")
        given = None if given is None else np.asarray(given, dtype=np.float32)[:, :3]
        patch, normals = self.prepare(xyz, given)
        idx = subsample_indices(len(xyz), self.cfg.num_points or None, rng)
        xyz, normals, patch = normalize_unit_sphere(xyz[idx]), normals[idx], patch[idx]
        r, s, t = self.augment(rng, self.up_axis(sample))
        p = (xyz @ r.T) * s + t
        # normals of the scaled surface: the inverse-transpose of diag(s) R
        n = (normals @ r.T) / s
        n = n / np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-12)
        return {"points": np.concatenate([p, n], axis=1).astype(np.float32),
                "patch": patch.astype(np.int64)}

    def collate(self, samples: list[dict]) -> dict:
        if len({len(s["points"]) for s in samples}) == 1:
            return default_collate(samples)
        rest = default_collate([{k: v for k, v in s.items() if k not in ("points", "patch")}
                                for s in samples])
        rest["points"] = PointBatch.from_list([s["points"] for s in samples])
        rest["patch"] = torch.from_numpy(np.concatenate([s["patch"] for s in samples]))
        return rest

    # ------------------------------------------------------------------ training
    def forward(self, batch: dict) -> dict[str, torch.Tensor]:
        points = batch["points"]
        out = self.backbone(points)
        if "index" in batch:
            index = batch["index"].long().reshape(-1).to(out.global_feat.device)
        else:  # views made outside the trainer: shapes 0..B-1
            index = torch.arange(len(out.global_feat), device=out.global_feat.device)
        pf = out.point_feat
        if pf.ndim == 3:
            b, n = pf.shape[:2]
            offset = torch.arange(b + 1, device=pf.device) * n
            pf = pf.reshape(b * n, -1)
        else:
            offset = out.offset
        patch = batch["patch"].reshape(-1).long()
        self._ensure_rows(index)
        res: dict[str, torch.Tensor] = {"embedding": out.global_feat.detach()}
        loss = out.global_feat.new_zeros(())
        shape_feat = self.shape_head(out.global_feat) if self.use_shape else None
        if self.use_shape:
            ls = self.shape_loss(shape_feat, self.shape_memory, index)
            loss = loss + self.cfg.shape_weight * ls["loss"]
            res["shape_loss"], res["shape_acc"] = ls["loss"].detach(), ls["accuracy"]
        if self.use_point:
            lp = self.point_loss(pf, self.patch_memory[index], patch, offset)
            loss = loss + self.cfg.point_weight * lp["loss"]
            res["point_loss"], res["point_acc"] = lp["loss"].detach(), lp["accuracy"]
        if out.aux_loss is not None:  # the backbone's own regulariser (PointNet's L_reg)
            loss = loss + out.aux_loss
            res["reg"] = out.aux_loss.detach()
        res["loss"] = loss
        if self.training:
            means = mask = None
            if self.use_point:
                means, mask = patch_means(pf, patch, offset, self.cfg.num_patches)
            self._pending = (index, None if shape_feat is None else shape_feat.detach().float(),
                             means, mask)
        return res

    @torch.no_grad()
    def on_after_step(self) -> None:
        """Eqs. 6-7 (Algorithm 1, line 6), with the features of the step just taken."""
        if self._pending is None:
            return
        index, shape_feat, means, mask = self._pending
        self._pending = None
        if _dist_world() > 1:
            index = _gather(index)
            if shape_feat is not None:
                shape_feat = _gather(shape_feat)
            if means is not None:
                means, mask = _gather(means), _gather(mask)
        if self.use_shape:
            momentum_update(self.shape_memory, index, shape_feat, self.cfg.shape_momentum)
        if self.use_point:
            momentum_update(self.patch_memory, index, means, self.cfg.point_momentum, mask)


def _frozen(t: torch.Tensor) -> nn.Parameter:
    return nn.Parameter(t, requires_grad=False)


def _gather(t: torch.Tensor) -> torch.Tensor:
    parts = [torch.empty_like(t) for _ in range(_dist_world())]
    tdist.all_gather(parts, t.contiguous())
    return torch.cat(parts)
