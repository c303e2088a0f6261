"""Supervised fine-tuning protocols: shape classification with label fractions and part
segmentation, in the three regimes of MID-Net (Sec. 4.1):

- ``fix``: pre-trained backbone frozen (eval mode, BN statistics untouched); only the head
  trains, on features the backbone computes once per shape.
- ``finetune``: pre-trained backbone and a fresh head, all trained.
- ``scratch``: the same architecture with random weights, all trained ("NoPre").

A regime (:class:`Regime`) says what trains and how the backbone starts; a task
(:class:`ClassificationTask`, :class:`PartSegTask`) says what a batch, the head, the loss
and the metrics are. One loop (:meth:`Protocol.fit`) trains any pair.

Frozen features (``fix``, every task): each channel of every feature the head reads from
the frozen backbone — the global feature, and for part segmentation the per-point features
too — is standardised, ``(f - mean) / std``, with the mean and (population) standard
deviation of that channel over the labelled training features (over all their points for
per-point features; std clamped at 1e-6); the same map is applied to validation and test
features. Frozen features can be tiny in scale, and the head's first BatchNorm (running
variance starting at 1) then needs far more steps than a small label fraction gives before
its eval-mode statistics fit, leaving test predictions constant. The standardised global
feature is then (``fix_features="whiten"``, the default) multiplied by the shrunk whitening
map of :func:`shrunk_whitening` (fitted on the same training features, shrinkage 1 + C / n):
features of a partly collapsed pre-training can put most of their variance in a few
directions (MID-Net after 2 epochs on ModelNet40: 86% in one, effective rank 1.8 vs 69 at
random init), and the head, under Adam and dropout, then could not fit the class
information left in the rest (train accuracy 51% where a linear SVM on the same features
reaches 73-76% test). Chosen on a validation split carved from ModelNet40 train (7,874 /
1,969; the head alone on cached features, 100 epochs, 200 at 1%): MID features 62.5% ->
79.9% (100% labels), 40.0 -> 61.0 (10%), 26.7 -> 35.4 (1%); random-init twin 77.6 -> 77.9,
59.8 -> 59.2, 34.6 -> 32.3. A shrinkage of C / n alone whitened healthy features too far
(twin 77.6 -> 76.1 at 100%). ``"standardise"`` keeps the plain map. Per-point
features are only standardised. ``finetune`` and ``scratch`` feed the backbone's raw
outputs (it trains, its own BN sets their scale).

Choices (the papers leave them to supplements; kept fixed across regimes so that only the
initialisation differs): Adam, weight decay 1e-4, cosine decay from ``lr`` to ``lr / 100``
per step; augmentation in ``finetune``/``scratch`` is the DGCNN/PointNet++ recipe:
anisotropic scale U[2/3, 3/2] per axis, shift U[-0.2, 0.2] and jitter N(0, 0.01) clipped at
0.05 (``augment=False`` turns it off). For part segmentation the default (on) was checked on
a validation split carved from the synthetic train split (scratch PointNet, train shapes 0-47
of each class, validated on 48-63, instance mIoU, seeds 0/1): 3 epochs 47.3/48.1 with vs
49.7/48.5 without; 8 epochs 57.2/58.1 with vs 56.6/55.1 without, so it stays on for the
longer schedules the protocol runs. ``fix`` trains on fixed, un-augmented features. The
reported test numbers are those of the LAST epoch; with ``val_fraction > 0``
(classification) a validation split is carved from the labelled subset and the epoch with
the best validation accuracy is reported additionally under ``"selected"``. The test set
never chooses anything.

Label fractions are stratified, seeded and nested (see :func:`stratified_fraction`).
"""

from __future__ import annotations

import contextlib
import copy
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from pointssl.backbones import load_backbone, random_backbone
from pointssl.data.views import subsample_indices
from pointssl.errors import PointSSLError
from pointssl.evaluate.features import global_only
from pointssl.evaluate.metrics import classification_metrics, partseg_metrics, restricted_argmax
from pointssl.evaluate.splits import check_disjoint
from pointssl.heads import ClassificationHead, SegmentationHead
from pointssl.structures import BackboneOutput
from pointssl.utils import resolve_device

TASKS = ("cls", "partseg")
CLS_FRACTIONS = (0.01, 0.02, 0.05, 0.1, 0.2, 1.0)  # MID-Net Tables 2 and 4
PARTSEG_FRACTIONS = (0.01, 0.05, 1.0)  # MID-Net Table 6
# Frozen per-point features above this size are recomputed per batch instead of cached.
_PRECOMPUTE_BYTES = 1 << 30
# Shapes per head-only pass over cached features (no backbone cost, so larger than a batch).
_HEAD_CHUNK = 256


# ----------------------------------------------------------------------------- label subsets


def parse_fraction(value) -> float:
    """'5%' -> 0.05, '0.05' -> 0.05, 1 -> 1.0. A bare number must lie in (0, 1]."""
    text = str(value).strip()
    try:
        f = float(text[:-1]) / 100 if text.endswith("%") else float(text)
    except ValueError:
        raise PointSSLError(f"label fraction {value!r} is not a number like 0.05 or 5%") from None
    if not 0 < f <= 1:
        raise PointSSLError(f"label fraction {value!r} must be in (0, 1] (0.05 or 5% for 5%)")
    return f


def stratified_fraction(labels, fraction: float, seed: int = 0) -> np.ndarray:
    """Sorted indices of a seeded, stratified ``fraction`` of the labelled items.

    Class c with n_c items keeps max(1, round(fraction * n_c)) of them, the first ones of a
    per-class permutation that depends only on ``seed``: every class is present, and for
    one seed the subsets are nested (the 1% subset lies inside the 5% subset).
    Items labelled -1 are never picked.
    """
    labels = np.asarray(labels).reshape(-1)
    if not 0 < fraction <= 1:
        raise PointSSLError(f"label fraction must be in (0, 1], got {fraction}")
    rng = np.random.default_rng(seed)
    keep = []
    for c in np.unique(labels[labels >= 0]):
        idx = np.flatnonzero(labels == c)
        k = max(1, math.floor(fraction * len(idx) + 0.5))
        keep.append(idx[rng.permutation(len(idx))[:k]])
    if not keep:
        raise PointSSLError("no labelled items to draw a fraction from")
    return np.sort(np.concatenate(keep))


def _carve_val(labels: np.ndarray, val_fraction: float, seed: int):
    """Split positions 0..len-1 into (train, val), stratified; classes with one item stay
    in train."""
    rng = np.random.default_rng(seed + 7919)
    tr, va = [], []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)[rng.permutation(np.count_nonzero(labels == c))]
        k = min(len(idx) - 1, max(1, math.floor(val_fraction * len(idx) + 0.5)))
        va.append(idx[:k])
        tr.append(idx[k:])
    return np.sort(np.concatenate(tr)), np.sort(np.concatenate(va))


# ----------------------------------------------------------------------------- regimes


@dataclass(frozen=True)
class Regime:
    """How a regime starts and what it trains."""

    name: str
    pretrained: bool  # start from the given weights; False: a fresh random twin
    trains_backbone: bool  # False: frozen, features computed once, only the head trains

    def prepare(self, backbone, seed: int):
        """A copy of ``backbone`` (the caller's module is never modified; frozen when the
        regime does not train it), or a fresh random instance of its architecture."""
        if not self.pretrained:
            # A derived seed: a stand-in "pre-trained" model built after
            # torch.manual_seed(seed) must not coincide with the scratch initialisation.
            return random_backbone(backbone.name, seed + 7_368_787, **backbone.config)
        bb = copy.deepcopy(backbone)
        if not self.trains_backbone:
            bb.eval()
            bb.requires_grad_(False)
        return bb

    @property
    def precomputes(self) -> bool:
        """Features come from a frozen backbone, so they are computed once per shape."""
        return not self.trains_backbone

    def augments(self, augment: bool) -> bool:
        """Augmentation applies only where the backbone sees fresh inputs while training."""
        return augment and self.trains_backbone


# How ``fix`` maps the frozen global feature before the head (module docstring).
FIX_FEATURES = ("whiten", "standardise")

REGIMES = {r.name: r for r in (Regime("fix", pretrained=True, trains_backbone=False),
                               Regime("finetune", pretrained=True, trains_backbone=True),
                               Regime("scratch", pretrained=False, trains_backbone=True))}
MODES = tuple(REGIMES)


def get_regime(mode: str) -> Regime:
    if mode not in REGIMES:
        raise PointSSLError(f"unknown fine-tuning mode {mode!r}; choose one of {MODES}")
    return REGIMES[mode]


# ----------------------------------------------------------------------------- frozen features


class FeatureScaler:
    """``(f - mean) / std`` per channel (last axis), statistics from training features; then,
    when fitted with ``whiten=True``, times the shrunk whitening map of :func:`shrunk_whitening`."""

    def __init__(self, mean: torch.Tensor, std: torch.Tensor,
                 whiten: torch.Tensor | None = None):
        self.mean, self.std, self.whiten = mean, std, whiten

    @classmethod
    def fit(cls, feats: torch.Tensor, whiten: bool = False) -> FeatureScaler:
        """From all training features (..., C) at once."""
        flat = feats.reshape(-1, feats.shape[-1])
        s = cls(flat.mean(0), flat.std(0, unbiased=False).clamp_min(1e-6))
        if whiten:
            s.whiten = shrunk_whitening(s(flat))
        return s

    @classmethod
    def fit_moments(cls, total: torch.Tensor, total_sq: torch.Tensor, count: int,
                    dtype) -> FeatureScaler:
        """From float64 sums of f and f^2 over ``count`` rows (when the features do not
        fit in memory)."""
        mean = total / count
        std = (total_sq / count - mean**2).clamp_min(0).sqrt()
        return cls(mean.to(dtype), std.to(dtype).clamp_min(1e-6))

    def __call__(self, f: torch.Tensor) -> torch.Tensor:
        z = (f - self.mean) / self.std
        return z if self.whiten is None else z @ self.whiten


def shrunk_whitening(z: torch.Tensor) -> torch.Tensor:
    """Symmetric (C, C) map ``V diag(sqrt((1 + lam) / (ev + lam))) V^T`` of centred rows
    ``z`` (n, C) with covariance ``V diag(ev) V^T`` and shrinkage ``lam = 1 + C / n``.

    Directions of variance ``ev`` leave with ``ev (1 + lam) / (ev + lam)``: a dominant one is
    brought down to ~1 + lam, a unit one stays 1, and as n shrinks (lam grows) the map tends
    to the identity, i.e. to plain standardisation, so directions a small labelled set
    cannot estimate are left alone. Invertible, so the head's first (linear) layer sees the
    same information and can represent the same functions; only the optimiser's
    conditioning changes."""
    n, c = z.shape
    zd = z.double()
    ev, v = torch.linalg.eigh(zd.T @ zd / n)
    lam = 1 + c / n
    return ((v * ((1 + lam) / (ev.clamp_min(0) + lam)).sqrt()) @ v.T).to(z.dtype)


class _Model:
    """Backbone + head as a regime sees them: ``features`` is what the head reads."""

    def __init__(self, bb, head, regime: Regime):
        self.bb, self.head, self.regime = bb, head, regime
        self.frozen = regime.precomputes
        self.scale_global = self.scale_point = None  # set by Protocol for frozen backbones
        self.cached: dict[str, torch.Tensor] = {}  # frozen eval-set features, by name

    def params(self) -> list:
        head = list(self.head.parameters())
        return head if self.frozen else list(self.bb.parameters()) + head

    def train(self) -> None:
        if not self.frozen:
            self.bb.train()
        self.head.train()

    def eval(self) -> None:
        self.bb.eval()
        self.head.eval()

    def features(self, x: torch.Tensor) -> BackboneOutput:
        if not self.frozen:
            return self.bb(x)
        with torch.no_grad():
            return self.standardise(self.bb(x))

    def standardise(self, out) -> BackboneOutput:
        pf = out.point_feat if self.scale_point is None else self.scale_point(out.point_feat)
        return BackboneOutput(self.scale_global(out.global_feat), pf,
                              getattr(out, "offset", None))


# ----------------------------------------------------------------------------- inputs


def _in_dim(backbone) -> int:
    return int(backbone.config.get("in_dim", 3))


def _check_inputs(backbone, *sets) -> None:
    d = _in_dim(backbone)
    if d not in (3, 6):
        raise PointSSLError(f"fine-tuning feeds xyz or xyz+normals; backbone wants in_dim={d}")
    if d == 6 and any(s.normals is None for s in sets):
        raise PointSSLError("this backbone takes normals (in_dim=6) but the data has none")


def _cloud(ds, i: int, d: int) -> np.ndarray:
    p = ds.points[i][:, :3]
    return np.concatenate([p, ds.normals[i][:, :3]], axis=1) if d == 6 else p


def _gather(ds, idx, k: int | None, d: int, rng, with_parts: bool = False):
    """Stack clouds ``idx`` to (B, k, d) float32 (and (B, k) parts) with fresh samples."""
    xs, ps = [], []
    for i in idx:
        c = _cloud(ds, int(i), d)
        s = subsample_indices(len(c), k, rng)
        xs.append(c[s])
        if with_parts:
            ps.append(ds.parts[int(i)][s])
    x = torch.from_numpy(np.stack(xs).astype(np.float32))
    return (x, torch.from_numpy(np.stack(ps).astype(np.int64))) if with_parts else x


def _augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Anisotropic scale + shift + clipped jitter on xyz; normals follow the scaling."""
    b = x.shape[0]
    scale = torch.empty(b, 1, 3).uniform_(2 / 3, 3 / 2, generator=gen)
    shift = torch.empty(b, 1, 3).uniform_(-0.2, 0.2, generator=gen)
    noise = (0.01 * torch.randn(x.shape[:2] + (3,), generator=gen)).clamp_(-0.05, 0.05)
    xyz = x[..., :3] * scale + shift + noise
    if x.shape[-1] == 3:
        return xyz
    # A normal transforms with the inverse transpose of the (diagonal) scaling.
    nrm = F.normalize(x[..., 3:6] / scale, dim=-1)
    return torch.cat([xyz, nrm], dim=-1)


def _batches(n: int, batch_size: int, rng: np.random.Generator) -> list[np.ndarray]:
    perm = rng.permutation(n)
    out = [perm[s:s + batch_size] for s in range(0, n, batch_size)]
    # BatchNorm cannot train on a batch of one; that one item waits for the next epoch.
    return [b for b in out if len(b) > 1]


# ----------------------------------------------------------------------------- tasks


class ClassificationTask:
    """Shape classification: global feature -> ClassificationHead -> cross-entropy;
    accuracy and class-mean accuracy."""

    name = "cls"
    per_point = False

    def __init__(self, train, test, *, num_points: int = 1024, val_fraction: float = 0.0):
        self.train, self.test = train, test
        self.num_points, self.val_fraction = num_points, val_fraction
        # the head's size comes from training data only: a test class it cannot know is an
        # error, not a silently larger (differently initialised) classifier
        self.num_classes = train.num_classes
        unknown = sorted({int(c) for c in test.labels if c >= self.num_classes})
        if unknown:
            names = [test.class_names[c] if c < len(test.class_names or []) else str(c)
                     for c in unknown]
            raise PointSSLError(f"test classes {', '.join(names)} are not among the "
                                f"{self.num_classes} training classes")

    def split(self, labeled: np.ndarray, seed: int):
        """(train items, validation items) of the labelled subset."""
        if self.val_fraction <= 0:
            return labeled, np.array([], dtype=np.int64)
        pos_tr, pos_va = _carve_val(self.train.labels[labeled], self.val_fraction, seed)
        return labeled[pos_tr], labeled[pos_va]

    def split_sizes(self, tr_idx, va_idx) -> dict:
        return {"n_train": int(len(tr_idx)), "n_val": int(len(va_idx))}

    def make_head(self, bb) -> nn.Module:
        return ClassificationHead(bb.global_dim, self.num_classes)

    def sample(self, items, d: int, rng):
        """Inputs (B, k, d) and targets of training items, freshly sampled."""
        x = _gather(self.train, items, self.num_points, d, rng)
        return x, torch.from_numpy(self.train.labels[items])

    def loss(self, head, out, category, target) -> torch.Tensor:
        return F.cross_entropy(head(out.global_feat), target)

    @torch.no_grad()
    def predict(self, model: _Model, ds, items, seed: int, batch_size: int, key: str):
        """Predicted classes of ``items`` of ``ds`` (one fixed seeded sample per shape)."""
        model.eval()
        dev = next(model.head.parameters()).device
        if model.frozen and key in model.cached:
            g = model.cached[key]
        else:
            x = _gather(ds, items, self.num_points, _in_dim(model.bb), np.random.default_rng(seed))
            chunks = [x[s:s + batch_size].to(dev) for s in range(0, len(x), batch_size)]
            if not model.frozen:
                return torch.cat([model.head(model.features(c).global_feat).argmax(1)
                                  for c in chunks])
            with global_only(model.bb):
                g = model.cached[key] = torch.cat([model.features(c).global_feat
                                                   for c in chunks])
        return torch.cat([model.head(g[s:s + _HEAD_CHUNK]).argmax(1)
                          for s in range(0, len(g), _HEAD_CHUNK)])

    def val_accuracy(self, model: _Model, va_idx, seed: int, batch_size: int) -> float:
        pred = self.predict(model, self.train, va_idx, seed + 2, batch_size, "val")
        return float((pred.cpu().numpy() == self.train.labels[va_idx]).mean())

    def evaluate(self, model: _Model, seed: int, batch_size: int) -> dict:
        pred = self.predict(model, self.test, np.arange(len(self.test)), seed + 1, batch_size,
                            "test")
        return classification_metrics(pred.cpu().numpy(), self.test.labels)

    def settings(self) -> dict:
        return {"num_points": self.num_points}


def default_category_parts(train) -> dict[int, list[int]]:
    """Category index -> global part ids: the ShapeNetPart or synthetic table when the class
    names match one, else the part ids seen per category in ``train`` (pass the full split)."""
    names = list(train.class_names or [])
    if names:
        from pointssl.data.datasets.shapenetpart import CATEGORY_PARTS

        tables = [CATEGORY_PARTS]
        try:
            from pointssl.data.synthetic import CATEGORY_PARTS as SYNTHETIC_PARTS

            tables.append(SYNTHETIC_PARTS)
        except ImportError:  # pragma: no cover - synthetic data is optional here
            pass
        for table in tables:
            if all(n in table for n in names):
                return {i: list(table[n]) for i, n in enumerate(names)}
    if train.parts is None:
        raise PointSSLError("part segmentation needs per-point part labels in the data")
    seen: dict[int, set] = {}
    for lab, p in zip(train.labels, train.parts):
        seen.setdefault(int(lab), set()).update(np.unique(p).tolist())
    return {c: sorted(s) for c, s in seen.items()}


class PartSegTask:
    """Part segmentation: [point feature, global feature, category one-hot] ->
    SegmentationHead -> cross-entropy over all parts (as PointNet/DGCNN); predictions are
    restricted to the shape category's parts; ShapeNetPart mIoUs."""

    name = "partseg"
    per_point = True

    def __init__(self, train, test, *, num_points: int = 2048, test_points: int | None = None,
                 category_parts: Mapping[int, list[int]] | None = None):
        if train.parts is None or test.parts is None:
            raise PointSSLError("part segmentation needs per-point part labels in train and "
                                "test")
        self.train, self.test = train, test
        self.num_points, self.test_points = num_points, test_points
        self.cat_parts = {int(k): list(v) for k, v in
                          (category_parts or default_category_parts(train)).items()}
        missing = sorted(set(np.unique(test.labels).tolist()) - set(self.cat_parts))
        if missing:
            raise PointSSLError(f"test categories {missing} have no part list")
        self.num_parts = max(max(v) for v in self.cat_parts.values()) + 1
        self.num_cats = max(len(train.class_names or []), max(self.cat_parts) + 1)
        for name, ds in (("train", train), ("test", test)):
            hi = max(int(p.max()) for p in ds.parts)
            if hi >= self.num_parts:
                raise PointSSLError(f"{name} has part id {hi} but the part table stops at "
                                    f"{self.num_parts - 1}")

    def split(self, labeled: np.ndarray, seed: int):
        return labeled, np.array([], dtype=np.int64)

    def split_sizes(self, tr_idx, va_idx) -> dict:
        return {}

    def make_head(self, bb) -> nn.Module:
        # the paper's segmentation network for this backbone (PointNet-seg / DGCNN-seg)
        return SegmentationHead.for_backbone(bb, self.num_parts, num_categories=self.num_cats)

    def sample(self, items, d: int, rng):
        return _gather(self.train, items, self.num_points, d, rng, with_parts=True)

    def loss(self, head, out, category, target) -> torch.Tensor:
        logits = head(out.point_feat, out.global_feat, category, getattr(out, "offset", None))
        return F.cross_entropy(logits.reshape(-1, self.num_parts), target.reshape(-1))

    @torch.no_grad()
    def evaluate(self, model: _Model, seed: int, batch_size: int) -> dict:
        """Category-restricted predictions per test shape; equal-size shapes are batched."""
        model.eval()
        test, d = self.test, _in_dim(model.bb)
        dev = next(model.head.parameters()).device
        rng = np.random.default_rng(seed + 1)
        sel = [subsample_indices(len(p), self.test_points, rng) for p in test.points]
        by_size: dict[int, list[int]] = {}
        for i, s in enumerate(sel):
            by_size.setdefault(len(s), []).append(i)
        preds: list = [None] * len(test)
        for group in by_size.values():
            for s in range(0, len(group), batch_size):
                chunk = group[s:s + batch_size]
                x = torch.from_numpy(np.stack([_cloud(test, i, d)[sel[i]] for i in chunk])
                                     .astype(np.float32)).to(dev)
                out = model.features(x)
                logits = model.head(out.point_feat, out.global_feat,
                                    torch.from_numpy(test.labels[chunk]).to(dev))
                for j, i in enumerate(chunk):
                    preds[i] = restricted_argmax(logits[j],
                                                 self.cat_parts[int(test.labels[i])]).cpu()
        targets = [test.parts[i][s] for i, s in enumerate(sel)]
        return partseg_metrics([p.numpy() for p in preds], targets, test.labels,
                               self.cat_parts, test.class_names or None)

    def settings(self) -> dict:
        return {"num_points": self.num_points, "test_points": self.test_points}


# ----------------------------------------------------------------------------- the protocol


class Protocol:
    """One task x one regime x one label fraction: prepare, train (one loop), report."""

    def __init__(self, task, regime: Regime, *, epochs: int = 100, batch_size: int = 32,
                 lr: float = 1e-3, seed: int = 0, min_steps: int = 0, augment: bool = True,
                 fix_features: str = "whiten", device=None, log=print):
        if fix_features not in FIX_FEATURES:
            raise PointSSLError(f"fix_features {fix_features!r}: choose one of "
                                f"{', '.join(FIX_FEATURES)}")
        self.task, self.regime, self.fix_features = task, regime, fix_features
        self.epochs, self.batch_size, self.lr, self.seed = epochs, batch_size, lr, seed
        self.min_steps, self.augment, self.log = min_steps, augment, log
        self.device = resolve_device(device)

    def run(self, backbone, fraction, return_model: bool = False):
        t0 = time.perf_counter()
        task, seed, dev = self.task, self.seed, self.device
        fraction = parse_fraction(fraction)
        check_disjoint(task.train, task.test, f"finetune {task.name}")
        _check_inputs(backbone, task.train, task.test)
        torch.manual_seed(seed)
        self.rng = np.random.default_rng(seed)
        self.gen = torch.Generator().manual_seed(seed)
        labeled = stratified_fraction(task.train.labels, fraction, seed)
        self.tr_idx, self.va_idx = task.split(labeled, seed)
        bb = self.regime.prepare(backbone, seed).to(dev)
        model = self.model = _Model(bb, task.make_head(bb).to(dev), self.regime)
        self.cache = self._freeze() if self.regime.precomputes else None
        ran, selected = self.fit()
        result = {"task": task.name, "mode": self.regime.name, "fraction": fraction,
                  "n_labeled": int(len(labeled)), **task.split_sizes(self.tr_idx, self.va_idx)}
        result.update(n_test=len(task.test), backbone=backbone.name,
                      **task.evaluate(model, seed, self.batch_size))
        if selected is not None:
            result["selected"] = selected
        if self.regime.precomputes:
            result["fix_features"] = self.fix_features
        result.update(epochs=ran, **task.settings(),
                      augment=self.regime.augments(self.augment), batch_size=self.batch_size,
                      lr=self.lr, seed=seed, seconds=round(time.perf_counter() - t0, 2))
        return (result, (bb, model.head)) if return_model else result

    def _freeze(self):
        """Frozen features of the labelled training shapes (one fixed sample each), fit the
        standardisation on them; returns (features, categories, targets) when they fit in
        memory, else None (then each batch recomputes them)."""
        task, model, bs, dev = self.task, self.model, self.batch_size, self.device
        items = self.tr_idx
        rng = np.random.default_rng(self.seed + 3)
        cache = not task.per_point or \
            len(items) * task.num_points * (model.bb.point_dim + 1) * 4 <= _PRECOMPUTE_BYTES
        gf, pf, ys = [], [], []
        moments = [0.0, 0.0, 0]
        with torch.no_grad():
            for s in range(0, len(items), bs):
                x, y = task.sample(items[s:s + bs], _in_dim(model.bb), rng)
                with global_only(model.bb) if not task.per_point else contextlib.nullcontext():
                    out = model.bb(x.to(dev))
                gf.append(out.global_feat)
                if cache:
                    ys.append(y)
                    if task.per_point:
                        pf.append(out.point_feat)
                else:
                    p = out.point_feat.reshape(-1, out.point_feat.shape[-1]).double()
                    moments = [moments[0] + p.sum(0), moments[1] + (p * p).sum(0),
                               moments[2] + len(p)]
        gf = torch.cat(gf)
        model.scale_global = FeatureScaler.fit(gf, whiten=self.fix_features == "whiten")
        if task.per_point:
            model.scale_point = (FeatureScaler.fit(torch.cat(pf)) if cache else
                                 FeatureScaler.fit_moments(*moments, dtype=gf.dtype))
        if not cache:
            return None
        out = model.standardise(BackboneOutput(gf, torch.cat(pf) if pf else None))
        cats = torch.from_numpy(task.train.labels[items]).to(dev)
        return out, cats, torch.cat(ys).to(dev)

    def _batch_loss(self, idx: np.ndarray) -> torch.Tensor:
        task, model = self.task, self.model
        if self.cache is not None:
            out, cats, target = self.cache
            pf = out.point_feat[idx] if out.point_feat is not None else None
            return task.loss(model.head, BackboneOutput(out.global_feat[idx], pf), cats[idx],
                             target[idx])
        items = self.tr_idx[idx]
        x, target = task.sample(items, _in_dim(model.bb), self.rng)
        if self.regime.augments(self.augment):
            x = _augment(x, self.gen)
        cats = torch.from_numpy(task.train.labels[items]).to(self.device)
        out = model.features(x.to(self.device))
        loss = task.loss(model.head, out, cats, target.to(self.device))
        # PointNet's feature-transform regulariser (Qi et al. Eq. 2) when the backbone trains
        return loss if out.aux_loss is None else loss + out.aux_loss

    def fit(self):
        """Adam + per-step cosine decay over the training items. Returns (epochs run,
        the validation-selected epoch's test metrics or None)."""
        n, bs, model = len(self.tr_idx), self.batch_size, self.model
        if n < 2:
            raise PointSSLError(f"fine-tuning needs at least 2 labelled training shapes, "
                                f"got {n}")
        spe = len(_batches(n, bs, np.random.default_rng(0)))
        epochs = max(int(self.epochs), math.ceil(self.min_steps / spe) if self.min_steps else 0)
        if epochs < 1:
            raise PointSSLError(f"epochs must be >= 1, got {epochs}")
        opt = torch.optim.Adam(model.params(), lr=self.lr, weight_decay=1e-4)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs * spe,
                                                           eta_min=self.lr / 100)
        modules = nn.ModuleList([model.bb, model.head])
        best = {"val": -1.0, "epoch": 0, "state": None}
        for ep in range(epochs):
            model.train()
            total, count = 0.0, 0
            for idx in _batches(n, bs, self.rng):
                loss = self._batch_loss(idx)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                total += loss.item() * len(idx)
                count += len(idx)
            msg = f"epoch {ep + 1}/{epochs} loss {total / max(count, 1):.4f}"
            if len(self.va_idx):
                acc = self.task.val_accuracy(model, self.va_idx, self.seed, bs)
                if acc > best["val"]:  # earliest best wins ties: fewer epochs, same evidence
                    best.update(val=acc, epoch=ep + 1, state=_clone(modules.state_dict()))
                msg += f" val_acc {acc:.4f}"
            if self.log is not None:
                self.log(msg)
        if best["state"] is None:
            return epochs, None
        last = _clone(modules.state_dict())
        modules.load_state_dict(best["state"])
        sel = self.task.evaluate(model, self.seed, bs)
        modules.load_state_dict(last)
        return epochs, {"epoch": best["epoch"], "val_accuracy": best["val"], **sel}


def _clone(state: dict) -> dict:
    return {k: v.detach().clone() for k, v in state.items()}


# ----------------------------------------------------------------------------- entry points


def finetune_classification(backbone, train, test, mode: str = "finetune",
                            fraction: float = 1.0, *, epochs: int = 100, batch_size: int = 32,
                            lr: float = 1e-3, seed: int = 0, num_points: int = 1024,
                            min_steps: int = 0, val_fraction: float = 0.0, augment: bool = True,
                            fix_features: str = "whiten", device=None, log=print,
                            return_model: bool = False):
    """Train a classifier on a stratified ``fraction`` of ``train``; test on all of ``test``.

    min_steps lengthens training (more epochs) so that tiny fractions still get that many
    optimiser steps; the epochs actually run are reported. Returns a dict with task, mode,
    fraction, n_labeled, accuracy, class_mean_accuracy (last epoch), epochs, seconds (and
    ``selected`` when val_fraction > 0); with return_model, ``(dict, (backbone, head))``.
    """
    regime = get_regime(mode)
    task = ClassificationTask(train, test, num_points=num_points, val_fraction=val_fraction)
    return Protocol(task, regime, epochs=epochs, batch_size=batch_size, lr=lr, seed=seed,
                    min_steps=min_steps, augment=augment, fix_features=fix_features,
                    device=device, log=log).run(backbone, fraction, return_model)


def finetune_partseg(backbone, train, test, mode: str = "finetune", fraction: float = 1.0, *,
                     epochs: int = 100, batch_size: int = 16, lr: float = 1e-3, seed: int = 0,
                     num_points: int = 2048, test_points: int | None = None,
                     min_steps: int = 0, category_parts: Mapping[int, list[int]] | None = None,
                     augment: bool = True, fix_features: str = "whiten", device=None, log=print,
                     return_model: bool = False):
    """Part segmentation on a stratified ``fraction`` of ``train``, tested on ``test``.

    Training samples ``num_points`` per shape; testing uses every point of each test shape
    (``test_points=None``) or a fixed seeded sample. Predictions are restricted to the
    shape category's parts; the loss is cross-entropy over all parts, as PointNet/DGCNN do.
    Returns task, mode, fraction, n_labeled, accuracy, instance_miou, class_miou,
    per_category, epochs, seconds (last epoch's numbers).
    """
    regime = get_regime(mode)
    task = PartSegTask(train, test, num_points=num_points, test_points=test_points,
                       category_parts=category_parts)
    return Protocol(task, regime, epochs=epochs, batch_size=batch_size, lr=lr, seed=seed,
                    min_steps=min_steps, augment=augment, fix_features=fix_features,
                    device=device, log=log).run(backbone, fraction, return_model)


def run_finetune(
    task: str,
    mode: str,
    fraction,
    *,
    train,
    test,
    checkpoint=None,
    backbone_name: str | None = None,
    backbone_config: dict | None = None,
    random_init: bool = False,
    **kw,
) -> dict:
    """Load ``checkpoint`` (a ``backbone.pt``) or, for ``scratch`` without one, build
    ``backbone_name`` with ``backbone_config``; then run the task's protocol with ``kw``
    (epochs, batch_size, lr, seed, num_points, device, log, ...).

    ``random_init`` runs ``fix``/``finetune`` from a seeded random backbone instead of a
    checkpoint: the random-init twin of the same protocol (for ``finetune`` it equals
    ``scratch`` up to the initialisation seed)."""
    if task not in TASKS:
        raise PointSSLError(f"unknown fine-tuning task {task!r}; choose one of {TASKS}")
    bb, meta = starting_backbone(mode, checkpoint, backbone_name, backbone_config,
                                 random_init, kw.get("seed", 0))
    fn = finetune_classification if task == "cls" else finetune_partseg
    result = fn(bb, train, test, mode, fraction, **kw)
    record_start(result[0] if isinstance(result, tuple) else result, mode, checkpoint,
                 random_init, meta)
    return result


def starting_backbone(mode: str, checkpoint, backbone_name: str | None,
                      backbone_config: dict | None, random_init: bool, seed: int):
    """(backbone, checkpoint meta) a fine-tuning regime starts from: the checkpoint's, or a
    seeded random-init ``backbone_name`` for ``scratch`` and the random-init twins."""
    get_regime(mode)
    if random_init and checkpoint is not None:
        raise PointSSLError("random_init and a checkpoint exclude each other")
    if checkpoint is not None:
        bb, meta = load_backbone(checkpoint)
        if backbone_name and backbone_name != bb.name:
            raise PointSSLError(f"{checkpoint}: holds a {bb.name} backbone, not {backbone_name}")
        return bb, meta
    if mode == "scratch" or random_init:
        if not backbone_name:
            raise PointSSLError(f"{mode} without --checkpoint needs --backbone to know the "
                                "architecture")
        return random_backbone(backbone_name, seed, **(backbone_config or {})), {}
    raise PointSSLError(f"mode '{mode}' starts from pre-trained weights: pass --checkpoint "
                        "(or --random-init for the random-init baseline)")


def record_start(out: dict, mode: str, checkpoint, random_init: bool, meta: dict) -> None:
    """Write where the run started (checkpoint path, random init, the checkpoint's plain
    metadata) into the result ``out``."""
    out["checkpoint"] = None if checkpoint is None else str(checkpoint)
    out["random_init"] = bool(random_init or mode == "scratch")
    plain = {k: v for k, v in meta.items() if isinstance(v, (str, int, float, bool, type(None)))}
    if plain:
        out["checkpoint_meta"] = plain
