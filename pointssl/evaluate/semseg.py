"""Scene semantic segmentation (PointContrast Sec. 4.2-4.3): a per-point linear head on a
backbone's point features, in three regimes (those of :mod:`pointssl.evaluate.finetune`):

- ``fix``: the pre-trained backbone frozen (eval mode); only the linear head trains, on
  per-point features computed once per labelled training scene and standardised per channel
  with their training mean / std (the linear probe by which scene pre-training is compared);
- ``finetune``: pre-trained backbone + fresh linear head, all trained;
- ``scratch``: the same architecture from a seeded random init, all trained.

Label fractions are taken *by scene* (1%, 10%, 100% of the training scenes; at least one),
seeded and nested (the 1% scenes are among the 10%). Points labelled -1 are ignored in the
loss and the metrics. Metrics over every point of every test scene: mIoU and mAcc over the
classes present in the test ground truth, overall accuracy, per-class IoU. Last-epoch
numbers; the test set chooses nothing. ``baseline=True`` runs the identical protocol on the
seeded random-init twin of the backbone (``fix`` / ``finetune``) and reports it beside.

Choices (kept equal across regimes, so only the initialisation differs): Adam, weight decay
1e-4, cosine decay from ``lr`` to ``lr / 100``; ``fix`` trains on shuffled chunks of
``point_batch`` labelled points per step, ``finetune`` / ``scratch`` on ``batch_size`` scenes
per step, each cut to at most ``num_points`` points and augmented (rotation about z, scale
U[0.9, 1.1], jitter N(0, 0.005)).
"""

from __future__ import annotations

import math
import time

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from pointssl.backbones import random_backbone
from pointssl.errors import PointSSLError
from pointssl.evaluate.finetune import (
    FeatureScaler,
    get_regime,
    parse_fraction,
    record_start,
    starting_backbone,
)
from pointssl.evaluate.splits import check_disjoint
from pointssl.structures import PointBatch
from pointssl.utils import resolve_device

__all__ = ["SEMSEG_FRACTIONS", "scene_fraction", "confusion_matrix", "semseg_metrics",
           "finetune_semseg", "run_semseg"]

SEMSEG_FRACTIONS = (0.01, 0.1, 1.0)


def scene_fraction(n: int, fraction: float, seed: int = 0) -> np.ndarray:
    """Sorted indices of ``max(1, round(fraction * n))`` training scenes: a prefix of one
    seeded permutation, so smaller fractions are subsets of larger ones."""
    if not 0 < fraction <= 1:
        raise PointSSLError(f"label fraction must be in (0, 1], got {fraction}")
    k = max(1, math.floor(fraction * n + 0.5))
    return np.sort(np.random.default_rng(seed + 104729).permutation(n)[:k])


def confusion_matrix(pred, target, num_classes: int) -> np.ndarray:
    pred, target = np.asarray(pred).reshape(-1), np.asarray(target).reshape(-1)
    ok = (target >= 0) & (target < num_classes)
    return np.bincount(target[ok] * num_classes + pred[ok],
                       minlength=num_classes ** 2).reshape(num_classes, num_classes)


def semseg_metrics(conf: np.ndarray, class_names: list[str] | None = None) -> dict:
    """mIoU / mAcc over the classes present in the ground truth (rows of ``conf``)."""
    conf = np.asarray(conf, dtype=np.float64)
    gt, pr, tp = conf.sum(1), conf.sum(0), np.diag(conf)
    present = gt > 0
    iou = tp / np.maximum(gt + pr - tp, 1)
    acc = tp / np.maximum(gt, 1)
    names = class_names or [str(c) for c in range(len(conf))]
    return {"miou": float(iou[present].mean()) if present.any() else 0.0,
            "macc": float(acc[present].mean()) if present.any() else 0.0,
            "accuracy": float(tp.sum() / max(conf.sum(), 1)),
            "per_class_iou": {names[c]: float(iou[c]) for c in np.flatnonzero(present)}}


def _in_dim(bb) -> int:
    return int(getattr(bb, "in_dim", bb.config.get("in_dim", 3)))


def _scene(ds, i: int, d: int, rng=None, num_points: int | None = None):
    """(points (N, d) float32, labels (N,)) of scene i; colours (centred) as features 4-6."""
    p = np.asarray(ds.points[i], dtype=np.float32)[:, :3]
    y = np.asarray(ds.semantic[i], dtype=np.int64)
    if d > 3:
        if ds.colors is None:
            raise PointSSLError(f"the backbone takes {d} input channels but the scenes carry "
                                "no colours")
        p = np.hstack([p, np.asarray(ds.colors[i], dtype=np.float32)[:, :d - 3] - 0.5])
    if num_points is not None and len(p) > num_points:
        keep = rng.choice(len(p), num_points, replace=False)
        p, y = p[keep], y[keep]
    return p, y


def _augment(p: np.ndarray, rng) -> np.ndarray:
    t = rng.uniform(0, 2 * np.pi)
    r = np.array([[np.cos(t), -np.sin(t), 0], [np.sin(t), np.cos(t), 0], [0, 0, 1]])
    out = p.copy()
    out[:, :3] = (p[:, :3] @ r.T) * rng.uniform(0.9, 1.1) + rng.normal(0, 0.005, (len(p), 3))
    return out.astype(np.float32)


def _point_feats(bb, clouds: list[np.ndarray], dev) -> list[torch.Tensor]:
    out = bb(PointBatch.from_list([torch.from_numpy(c) for c in clouds]).to(dev))
    return out.per_cloud()


def finetune_semseg(backbone, train, test, mode: str = "fix", fraction: float = 1.0, *,
                    epochs: int = 20, batch_size: int = 2, point_batch: int = 8192,
                    lr: float = 1e-3, seed: int = 0, num_points: int | None = 20000,
                    augment: bool = True, device=None, log=print, baseline: bool = False
                    ) -> dict:
    """Train a per-point linear head (and, except in ``fix``, the backbone) on a seeded
    ``fraction`` of the training scenes; test on every point of every test scene."""
    t0 = time.perf_counter()
    regime = get_regime(mode)
    fraction = parse_fraction(fraction)
    if train.semantic is None or test.semantic is None:
        raise PointSSLError("semantic segmentation needs per-point semantic labels")
    check_disjoint(train, test, "semseg")
    names = list(train.class_names)
    if not names or names != list(test.class_names):
        raise PointSSLError("train and test must name the same semantic classes")
    dev = resolve_device(device)
    labeled = scene_fraction(len(train), fraction, seed)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    bb = regime.prepare(backbone, seed).to(dev)
    d = _in_dim(bb)
    head = nn.Linear(bb.point_dim, len(names)).to(dev)
    params = list(head.parameters()) + ([] if not regime.trains_backbone else
                                        list(bb.parameters()))
    opt = torch.optim.Adam(params, lr=lr, weight_decay=1e-4)
    scaler = None
    if not regime.trains_backbone:
        bb.eval()
        feats, ys = [], []
        with torch.no_grad():
            for i in labeled:
                p, y = _scene(train, int(i), d)
                feats.append(_point_feats(bb, [p], dev)[0])
                ys.append(torch.from_numpy(y))
        x, y = torch.cat(feats), torch.cat(ys).to(dev)
        keep = y >= 0
        x, y = x[keep], y[keep]
        if len(y) == 0:
            raise PointSSLError("the labelled training scenes have no labelled points")
        scaler = FeatureScaler.fit(x)
        x = scaler(x)
        steps_per_epoch = max(1, math.ceil(len(y) / point_batch))
    else:
        steps_per_epoch = max(1, math.ceil(len(labeled) / batch_size))
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs * steps_per_epoch,
                                                       eta_min=lr / 100)
    for ep in range(epochs):
        total, count = 0.0, 0
        if scaler is not None:
            head.train()
            perm = torch.from_numpy(rng.permutation(len(y))).to(dev)
            chunks = [perm[s:s + point_batch] for s in range(0, len(y), point_batch)]
            for idx in chunks:
                loss = F.cross_entropy(head(x[idx]), y[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                total, count = total + loss.item() * len(idx), count + len(idx)
        else:
            bb.train()
            head.train()
            order = rng.permutation(labeled)
            for s in range(0, len(order), batch_size):
                got = [_scene(train, int(i), d, rng, num_points) for i in order[s:s + batch_size]]
                clouds = [_augment(p, rng) if augment else p for p, _ in got]
                target = torch.from_numpy(np.concatenate([t for _, t in got])).to(dev)
                out = bb(PointBatch.from_list([torch.from_numpy(c) for c in clouds]).to(dev))
                loss = F.cross_entropy(head(out.point_feat), target, ignore_index=-1)
                if out.aux_loss is not None:
                    loss = loss + out.aux_loss
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                total, count = total + loss.item(), count + 1
        if log is not None:
            log(f"semseg {mode} epoch {ep + 1}/{epochs} loss {total / max(count, 1):.4f}")
    bb.eval()
    head.eval()
    conf = np.zeros((len(names), len(names)), dtype=np.int64)
    with torch.no_grad():
        for i in range(len(test)):
            p, yt = _scene(test, i, d)
            f = _point_feats(bb, [p], dev)[0]
            if scaler is not None:
                f = scaler(f)
            conf += confusion_matrix(head(f).argmax(1).cpu().numpy(), yt, len(names))
    res = {"task": "semseg", "mode": mode, "fraction": fraction,
           "n_labeled_scenes": int(len(labeled)), "n_train_scenes": len(train),
           "n_test_scenes": len(test), "backbone": backbone.name, **semseg_metrics(conf, names),
           "epochs": epochs, "lr": lr, "batch_size": batch_size, "num_points": num_points,
           "augment": bool(augment and regime.trains_backbone), "seed": seed,
           "seconds": round(time.perf_counter() - t0, 2)}
    if baseline and regime.pretrained:
        twin = random_backbone(backbone.name, seed, **backbone.config)
        base = finetune_semseg(twin, train, test, mode, fraction, epochs=epochs,
                               batch_size=batch_size, point_batch=point_batch, lr=lr, seed=seed,
                               num_points=num_points, augment=augment, device=device, log=log)
        res["random_init_baseline"] = {k: base[k] for k in ("miou", "macc", "accuracy",
                                                           "per_class_iou", "seconds")}
    return res


def run_semseg(mode: str, fraction, *, train, test, checkpoint=None,
               backbone_name: str | None = None, backbone_config: dict | None = None,
               random_init: bool = False, baseline: bool | None = None, **kw) -> dict:
    """The CLI's entry: a ``backbone.pt`` (``checkpoint``) or a seeded random-init
    ``backbone_name`` (``scratch``, or ``random_init``). With a checkpoint and ``fix`` /
    ``finetune`` the random-init twin runs too (``baseline``, default on)."""
    bb, meta = starting_backbone(mode, checkpoint, backbone_name, backbone_config,
                                 random_init, kw.get("seed", 0))
    if baseline is None:
        baseline = checkpoint is not None and mode != "scratch"
    res = finetune_semseg(bb, train, test, mode, fraction, baseline=baseline, **kw)
    record_start(res, mode, checkpoint, random_init, meta)
    return res
