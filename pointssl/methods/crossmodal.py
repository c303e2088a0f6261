"""Cross-modal 2D-3D self-supervision (cross-view + cross-modality correspondences): an image
encoder F_img (ResNet-18), the point backbone F_p and a correspondence head F_f trained
together, with no labels (Sections 3.2-3.3, Algorithm 1 of the cross-modal 2D-3D paper).

One sample (Sec. 3.3): the points p of an object, two of its rendered views img1, img2 and a
view img3 of another object; F_f says for each (img_j, p) whether they show the same object
(y = 1, 1, 0, Eq. 2) and, with ``cross_view``, a triplet loss pulls F_img(img1) towards
F_img(img2) and away from F_img(img3) (Eq. 1): L = L_triplet + β L_cross (Eq. 3).

Views come from ``pointssl data render`` (``render_dir``: V cached renders per shape, two
drawn per sample, as the paper draws two of its V = 180), else are rendered on the fly from
the sample's mesh or, for point-only data, its points as splats (random cameras every time;
slow on a CPU). ``make_views`` sees one shape at a time, so each sample also carries a third
view of its own object, and the batch hands it to the next sample as that sample's img3 (a
different object: batches are random permutations of the shapes).

F_f's input (``head_norm``, not stated in the paper): each modality's feature is batch-
standardised before the concatenation. Fed raw, the image half is a large constant plus a
small image-dependent part (ReLU + average pool, shrunk further by the triplet loss, whose
gradient on F_img measured 70-250x the cross-modality one) and F_f stays at the 2:1 label
prior.

The paper's point encoder is DGCNN with EdgeConv 64, 64, 64, 128 and a 512-d per-point FC
before the max-pool: ``--backbone dgcnn --set channels=64,64,64,128 --set emb_dim=512``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from pointssl.backbones.resnet import ResNet18, images_to_input
from pointssl.data.render import RenderCache, RenderConfig, render_item, render_key
from pointssl.data.views.transforms import AXES, Compose, Jitter, RandomSample, RotateUp
from pointssl.errors import DataError, PointSSLError
from pointssl.heads import CorrespondenceHead
from pointssl.losses.crossmodal import CrossModalityLoss, TripletLoss
from pointssl.methods.base import METHODS, Method, OptimConfig

# the paper's DGCNN (Sec. 3.2), as backbone options for `--set`
PAPER_DGCNN = {"channels": (64, 64, 64, 128), "emb_dim": 512}


@dataclass
class CrossModalConfig(OptimConfig):
    optimizer: str = "sgd"  # Sec. 4.1: SGD
    lr: float = 1e-3  # Sec. 4.1
    momentum: float = 0.9  # Sec. 4.1
    weight_decay: float = 5e-4  # Sec. 4.1
    # Sec. 4.1: lr x0.1 every 40k iterations, 120k iterations at batch 32; on ModelNet40's
    # 9,843 training shapes (307 steps an epoch) that is every 130 epochs, 390 epochs
    lr_step_epochs: int = 130
    lr_gamma: float = 0.1
    batch_size: int = 32  # Sec. 4.1
    epochs: int = 390
    num_points: int = 2048  # Sec. 3.1: 2,048 points per object
    up_axis: str = "auto"  # rotation axis: the dataset's (z when unknown), or x | y | z
    rotate_degrees: float = 180.0  # Sec. 4.1: rotated in [0, 2π) about the up axis
    jitter_sigma: float = 0.02  # Sec. 4.1: N(0, 0.02²) per coordinate, no clip stated
    hflip_p: float = 0.5  # Sec. 4.1: horizontal flip with probability 0.5
    # Sec. 4.1 "randomly cropped", size not stated: pad by this fraction of the side with
    # background, crop back to the side (a random translation; eval images stay whole)
    crop_pad: float = 0.125
    margin: float = 1.0  # Eq. 1's α: not stated (on squared distances of 512-d features)
    beta: float = 1.0  # Eq. 3's β: not stated
    cross_view: bool = True  # False: CM only (Table 2's F-CM rows); True: CM + CV
    # F_f's input: not stated in the paper (features "concatenated"). "bn" standardises each
    # modality's feature over the batch first, "none" feeds them raw (CorrespondenceHead).
    # Measured (ModelNet40 train carved 2,000 / 400 val, 150 steps, batch 16, lr 1e-3):
    # cross-modality accuracy on val pairs 0.500 raw (F_f at the label prior) vs 0.760 "bn"
    head_norm: str = "bn"
    render_dir: str = ""  # `pointssl data render` output; "" = render on the fly
    image_size: int = 224  # on-the-fly renders (cached renders keep their own size)
    image_widths: tuple = (64, 128, 256, 512)  # Sec. 3.2: ResNet-18 stages


@METHODS.register("crossmodal")
class CrossModal(Method):
    name = "crossmodal"
    config_class = CrossModalConfig

    def __init__(self, backbone, cfg: CrossModalConfig | None = None):
        cfg = cfg or CrossModalConfig()
        super().__init__(backbone, cfg)
        if cfg.up_axis not in ("auto", *AXES):
            raise PointSSLError(f"crossmodal up_axis {cfg.up_axis!r}: expected auto, x, y or z")
        if not 0 <= cfg.crop_pad < 1 or not 0 <= cfg.hflip_p <= 1:
            raise PointSSLError("crossmodal needs 0 <= crop_pad < 1 and 0 <= hflip_p <= 1")
        self.image_encoder = ResNet18(in_channels=1, widths=tuple(cfg.image_widths))
        self.head = CorrespondenceHead(self.image_encoder.global_dim, backbone.global_dim,
                                       input_norm=cfg.head_norm)
        self.triplet = TripletLoss(cfg.margin)
        self.cross = CrossModalityLoss()
        self.register_buffer("pair_labels", torch.tensor([1, 1, 0]), persistent=False)
        sample = RandomSample(cfg.num_points)  # the dataset's surface sample stands in for FPS
        jitter = Jitter(cfg.jitter_sigma, np.inf)
        self.augments = {a: Compose(sample, RotateUp(cfg.rotate_degrees, a), jitter)
                         for a in AXES}
        self._cache = RenderCache(cfg.render_dir) if cfg.render_dir else None

    @classmethod
    def test_config(cls) -> dict:
        return {"num_points": 32, "image_size": 16, "image_widths": (4, 4, 8, 8)}

    # ------------------------------------------------------------------ views
    def up_axis(self, sample: dict) -> str:
        if self.cfg.up_axis != "auto":
            return self.cfg.up_axis
        up = sample.get("up_axis") or "z"
        if up not in AXES:
            raise DataError(f"sample {sample.get('index', '?')}", f"up_axis {up!r}")
        return up

    def views_of(self, sample: dict, rng: np.random.Generator) -> np.ndarray:
        """(V, H, W) uint8 views of the sample's object: its cached renders, or three fresh
        ones from random cameras."""
        if self._cache is not None:
            return self._cache.load(render_key(sample))
        cfg = RenderConfig(views=3, size=self.cfg.image_size)
        try:
            return render_item(sample, cfg, rng=rng)[0]
        except ValueError as e:
            raise DataError(f"sample {sample.get('index', '?')}", f"cannot render: {e}") \
                from None

    def augment_image(self, img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Random crop (pad with background, crop back: a translation) + horizontal flip."""
        h, w = img.shape
        pad = int(round(self.cfg.crop_pad * max(h, w)))
        if pad:
            big = np.zeros((h + 2 * pad, w + 2 * pad), img.dtype)
            big[pad:pad + h, pad:pad + w] = img
            y, x = rng.integers(0, 2 * pad + 1, size=2)
            img = big[y:y + h, x:x + w]
        if rng.random() < self.cfg.hflip_p:
            img = img[:, ::-1]
        return np.ascontiguousarray(img)

    def make_views(self, sample: dict, rng: np.random.Generator) -> dict[str, np.ndarray]:
        pts = np.asarray(sample["points"][:, :3], dtype=np.float32)
        views = self.views_of(sample, rng)
        v = len(views)
        pick = rng.choice(v, size=3, replace=v < 3)  # img1, img2 (distinct when V >= 2)
        if v == 2:
            pick[:2] = rng.permutation(2)
        imgs = [self.augment_image(views[i], rng)[None] for i in pick]
        return {"points": self.augments[self.up_axis(sample)](pts, rng),
                "img1": imgs[0], "img2": imgs[1], "img_other": imgs[2]}

    # ------------------------------------------------------------------ training
    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        b = len(batch["img1"])
        if b < 2:
            raise PointSSLError("crossmodal needs batches of >= 2 shapes (img3 is a view of "
                                "another shape in the batch)")
        # img3 of sample i is the extra view of sample i + 1: another object (Sec. 3.3)
        img3 = torch.roll(batch["img_other"], shifts=-1, dims=0)
        images = images_to_input(torch.cat([batch["img1"], batch["img2"], img3]))
        fi = self.image_encoder(images)  # (3B, 512)
        out_p = self.backbone(batch["points"])
        fp = out_p.global_feat  # (B, 512)
        logits = self.head(fi, fp.repeat(3, 1)).view(3, b, 2).transpose(0, 1)  # (B, 3, 2)
        l_cross = self.cross(logits, self.pair_labels)
        fi1, fi2, fi3 = fi.view(3, b, -1).unbind(0)
        l_trip = self.triplet(fi1, fi2, fi3)
        loss = self.cfg.beta * l_cross + (l_trip if self.cfg.cross_view else 0.0)  # Eq. 3
        with torch.no_grad():
            acc = (logits.argmax(-1) == self.pair_labels).float().mean()
            d_pos = (fi1 - fi2).norm(dim=1).mean()
            d_neg = (fi1 - fi3).norm(dim=1).mean()
        out = {"loss": loss, "cross": l_cross.detach(), "triplet": l_trip.detach(),
               "cm_acc": acc, "d_pos": d_pos, "d_neg": d_neg, "embedding": fp.detach()}
        if out_p.aux_loss is not None:
            out["loss"] = out["loss"] + out_p.aux_loss
            out["reg"] = out_p.aux_loss.detach()
        return out

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        # a checkpoint written before ``head_norm`` existed holds a raw F_f (no norm
        # buffers) and a config without the field (so it reads as the new default): rebuild
        # F_f raw to match the weights it was trained with
        if (self.cfg.head_norm != "none" and "head.fc1.weight" in state_dict
                and not any(k.startswith("head.norm_") for k in state_dict)):
            self.cfg.head_norm = "none"
            fc1 = self.head.fc1
            self.head = CorrespondenceHead(self.image_encoder.global_dim,
                                           self.backbone.global_dim, hidden=fc1.out_features,
                                           input_norm="none").to(fc1.weight.device)
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    def exports(self):
        return {"backbone": self.backbone, "image_encoder": self.image_encoder}
