"""Supervised fine-tuning protocols: shape classification with label fractions and part
segmentation, in the three regimes of MID-Net (Sec. 4.1):

- ``fix``: pre-trained backbone frozen (eval mode, BN statistics untouched); only the head
  trains, on features computed once.
- ``finetune``: pre-trained backbone and a fresh head, all trained.
- ``scratch``: the same architecture with random weights, all trained ("NoPre").

Choices (the papers leave them to supplements; kept fixed across regimes so that only the
initialisation differs): Adam, weight decay 1e-4, cosine decay from ``lr`` to ``lr / 100``
per step; augmentation in ``finetune``/``scratch`` is the DGCNN/PointNet++ recipe:
anisotropic scale U[2/3, 3/2] per axis, shift U[-0.2, 0.2] and jitter N(0, 0.01) clipped at
0.05 (``augment=False`` turns it off). ``fix`` trains on fixed, un-augmented features. The
reported test numbers are those of the LAST epoch; with ``val_fraction > 0``
(classification) a validation split is carved from the labelled subset and the epoch with
the best validation accuracy is reported additionally under ``"selected"``. The test set
never chooses anything.

Label fractions are stratified, seeded and nested (see :func:`stratified_fraction`).
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Mapping

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from pointssl.backbones import load_backbone, random_backbone
from pointssl.backbones.base import Backbone
from pointssl.backbones.pointnet import PointwiseMLP
from pointssl.data.dataset import CloudSet
from pointssl.errors import PointSSLError
from pointssl.evaluate.metrics import classification_metrics, partseg_metrics, restricted_argmax

MODES = ("fix", "finetune", "scratch")
TASKS = ("cls", "partseg")
CLS_FRACTIONS = (0.01, 0.02, 0.05, 0.1, 0.2, 1.0)  # MID-Net Tables 2 and 4
PARTSEG_FRACTIONS = (0.01, 0.05, 1.0)  # MID-Net Table 6
# Frozen per-point features above this size are recomputed per batch instead of cached.
_PRECOMPUTE_BYTES = 1 << 30


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


# ----------------------------------------------------------------------------- heads


class ClsHead(nn.Module):
    """PointNet/DGCNN classification head: FC 512-256-K with BN, ReLU and dropout 0.5."""

    def __init__(self, c_in: int, num_classes: int, dropout: float = 0.5):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(c_in, 512, bias=False), nn.BatchNorm1d(512), nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(512, 256, bias=False), nn.BatchNorm1d(256), nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(256, num_classes),
        )

    def forward(self, g: torch.Tensor) -> torch.Tensor:
        return self.net(g)


class SegHead(nn.Module):
    """Per-point head: two FC layers (256, 128; BN + ReLU, dropout 0.5 between) then a
    linear classifier, on [point feature, global feature, category one-hot].

    The first layer is one Linear on that concatenation, computed as W_p x_i + W_c ctx so
    the per-shape context is multiplied once per shape rather than once per point.
    """

    def __init__(self, point_dim: int, global_dim: int, num_categories: int, num_parts: int,
                 dropout: float = 0.5):
        super().__init__()
        self.num_categories = num_categories
        self.lin_point = nn.Linear(point_dim, 256, bias=False)
        self.lin_ctx = nn.Linear(global_dim + num_categories, 256, bias=False)
        self.bn1 = nn.BatchNorm1d(256)
        self.drop = nn.Dropout(dropout)
        self.fc2 = PointwiseMLP(256, 128)
        self.out = nn.Linear(128, num_parts)

    def forward(self, point_feat, global_feat, category) -> torch.Tensor:
        b, n, _ = point_feat.shape
        onehot = F.one_hot(category, self.num_categories).to(point_feat.dtype)
        ctx = self.lin_ctx(torch.cat([global_feat, onehot], dim=-1)).unsqueeze(1)
        x = (self.lin_point(point_feat) + ctx).reshape(b * n, -1)
        x = F.relu(self.bn1(x)).reshape(b, n, -1)
        return self.out(self.fc2(self.drop(x)))


# ----------------------------------------------------------------------------- shared helpers


def _device(device) -> torch.device:
    return torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))


def _prepare_backbone(backbone: Backbone, mode: str, seed: int) -> Backbone:
    """A copy for fix/finetune (the caller's module is never modified), a fresh random
    instance of the same architecture for scratch."""
    if mode not in MODES:
        raise PointSSLError(f"unknown fine-tuning mode {mode!r}; choose one of {MODES}")
    if mode == "scratch":
        # A derived seed: a stand-in "pre-trained" model built after torch.manual_seed(seed)
        # must not coincide with the scratch initialisation.
        return random_backbone(backbone.name, seed + 7_368_787, **backbone.config)
    bb = copy.deepcopy(backbone)
    if mode == "fix":
        bb.eval()
        bb.requires_grad_(False)
    return bb


def _in_dim(backbone: Backbone) -> int:
    return int(backbone.config.get("in_dim", 3))


def _check_inputs(backbone: Backbone, *sets: CloudSet) -> None:
    d = _in_dim(backbone)
    if d not in (3, 6):
        raise PointSSLError(f"fine-tuning feeds xyz or xyz+normals; backbone wants in_dim={d}")
    if d == 6 and any(s.normals is None for s in sets):
        raise PointSSLError("this backbone takes normals (in_dim=6) but the data has none")


def _cloud(ds: CloudSet, i: int, d: int) -> np.ndarray:
    p = ds.points[i][:, :3]
    return np.concatenate([p, ds.normals[i][:, :3]], axis=1) if d == 6 else p


def _sample_idx(n: int, k: int | None, rng: np.random.Generator) -> np.ndarray:
    if k is None or k == n:
        return np.arange(n)
    return rng.choice(n, k, replace=n < k)


def _gather(ds: CloudSet, idx, k: int | None, d: int, rng, with_parts: bool = False):
    """Stack clouds ``idx`` to (B, k, d) float32 (and (B, k) parts) with fresh samples."""
    xs, ps = [], []
    for i in idx:
        c = _cloud(ds, int(i), d)
        s = _sample_idx(len(c), k, rng)
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


def _fit(params, n_train: int, *, epochs: int, batch_size: int, lr: float, min_steps: int,
         rng: np.random.Generator, step: Callable, set_train: Callable,
         end_epoch: Callable | None, log) -> int:
    """Adam + per-step cosine decay; ``step(idx) -> loss``. Returns the epochs run."""
    if n_train < 2:
        raise PointSSLError(f"fine-tuning needs at least 2 labelled training shapes, "
                            f"got {n_train}")
    spe = len(_batches(n_train, batch_size, np.random.default_rng(0)))
    epochs = max(int(epochs), math.ceil(min_steps / spe) if min_steps else 0)
    if epochs < 1:
        raise PointSSLError(f"epochs must be >= 1, got {epochs}")
    opt = torch.optim.Adam(params, lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs * spe, eta_min=lr / 100)
    for ep in range(epochs):
        set_train()
        total, count = 0.0, 0
        for idx in _batches(n_train, batch_size, rng):
            loss = step(idx)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(idx)
            count += len(idx)
        msg = f"epoch {ep + 1}/{epochs} loss {total / max(count, 1):.4f}"
        extra = end_epoch(ep) if end_epoch is not None else None
        if log is not None:
            log(msg + (f" {extra}" if extra else ""))
    return epochs


# ----------------------------------------------------------------------------- classification


@torch.no_grad()
def _global_features(backbone, x: torch.Tensor, batch_size: int, device) -> torch.Tensor:
    backbone.eval()
    return torch.cat([backbone(x[s:s + batch_size].to(device)).global_feat
                      for s in range(0, len(x), batch_size)])


def _fixed_stack(ds: CloudSet, idx, k, d, seed: int) -> torch.Tensor:
    return _gather(ds, idx, k, d, np.random.default_rng(seed))


def finetune_classification(
    backbone: Backbone,
    train: CloudSet,
    test: CloudSet,
    mode: str = "finetune",
    fraction: float = 1.0,
    *,
    epochs: int = 100,
    batch_size: int = 32,
    lr: float = 1e-3,
    seed: int = 0,
    num_points: int = 1024,
    min_steps: int = 0,
    val_fraction: float = 0.0,
    augment: bool = True,
    device=None,
    log=print,
    return_model: bool = False,
):
    """Train a classifier on a stratified ``fraction`` of ``train``; test on all of ``test``.

    min_steps lengthens training (more epochs) so that tiny fractions still get that many
    optimiser steps; the epochs actually run are reported. Returns a dict with task, mode,
    fraction, n_labeled, accuracy, class_mean_accuracy (last epoch), epochs, seconds (and
    ``selected`` when val_fraction > 0); with return_model, ``(dict, (backbone, head))``.
    """
    t0 = time.perf_counter()
    fraction = parse_fraction(fraction)
    dev = _device(device)
    _check_inputs(backbone, train, test)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    gen = torch.Generator().manual_seed(seed)
    d = _in_dim(backbone)
    labeled = stratified_fraction(train.labels, fraction, seed)
    tr_idx, va_idx = labeled, np.array([], dtype=np.int64)
    if val_fraction > 0:
        pos_tr, pos_va = _carve_val(train.labels[labeled], val_fraction, seed)
        tr_idx, va_idx = labeled[pos_tr], labeled[pos_va]
    num_classes = max(train.num_classes, int(test.labels.max()) + 1)
    bb = _prepare_backbone(backbone, mode, seed).to(dev)
    head = ClsHead(bb.global_dim, num_classes).to(dev)
    y_tr = torch.from_numpy(train.labels[tr_idx]).to(dev)
    x_te = _fixed_stack(test, range(len(test)), num_points, d, seed + 1)
    x_va = _fixed_stack(train, va_idx, num_points, d, seed + 2) if len(va_idx) else None

    if mode == "fix":
        f_tr = _global_features(bb, _fixed_stack(train, tr_idx, num_points, d, seed + 3),
                                batch_size, dev)
        # Standardise with training statistics: frozen features can be tiny in scale, and
        # the head's BN running variance (starting at 1) then needs far more steps than a
        # small label fraction gives to converge, leaving eval-mode predictions constant.
        mu, sd = f_tr.mean(0), f_tr.std(0, unbiased=False).clamp_min(1e-6)
        f_tr = (f_tr - mu) / sd
        f_te = (_global_features(bb, x_te, batch_size, dev) - mu) / sd
        f_va = (_global_features(bb, x_va, batch_size, dev) - mu) / sd if x_va is not None else None
        params = list(head.parameters())

        def set_train():
            head.train()

        def step(idx):
            return F.cross_entropy(head(f_tr[idx]), y_tr[idx])

        @torch.no_grad()
        def predict(f):
            head.eval()
            return torch.cat([head(f[s:s + 256]).argmax(1) for s in range(0, len(f), 256)])

        def predict_test():
            return predict(f_te)

        def predict_val():
            return predict(f_va)
    else:
        params = list(bb.parameters()) + list(head.parameters())

        def set_train():
            bb.train()
            head.train()

        def step(idx):
            x = _gather(train, tr_idx[idx], num_points, d, rng)
            x = (_augment(x, gen) if augment else x).to(dev)
            return F.cross_entropy(head(bb(x).global_feat), y_tr[idx])

        @torch.no_grad()
        def predict(x):
            bb.eval()
            head.eval()
            return torch.cat([head(bb(x[s:s + batch_size].to(dev)).global_feat).argmax(1)
                              for s in range(0, len(x), batch_size)])

        def predict_test():
            return predict(x_te)

        def predict_val():
            return predict(x_va)

    best = {"val": -1.0, "epoch": 0, "state": None}
    modules = nn.ModuleList([bb, head])

    def end_epoch(ep):
        if not len(va_idx):
            return None
        acc = float((predict_val().cpu().numpy() == train.labels[va_idx]).mean())
        if acc > best["val"]:  # earliest best wins ties: fewer epochs, same evidence
            best.update(val=acc, epoch=ep + 1,
                        state={k: v.detach().clone() for k, v in modules.state_dict().items()})
        return f"val_acc {acc:.4f}"

    ran = _fit(params, len(tr_idx), epochs=epochs, batch_size=batch_size, lr=lr,
               min_steps=min_steps, rng=rng, step=step, set_train=set_train,
               end_epoch=end_epoch, log=log)
    result = {"task": "cls", "mode": mode, "fraction": fraction, "n_labeled": int(len(labeled)),
              "n_train": int(len(tr_idx)), "n_val": int(len(va_idx)), "n_test": len(test),
              "backbone": backbone.name,
              **classification_metrics(predict_test().cpu().numpy(), test.labels)}
    if best["state"] is not None:
        last = {k: v.detach().clone() for k, v in modules.state_dict().items()}
        modules.load_state_dict(best["state"])
        sel = classification_metrics(predict_test().cpu().numpy(), test.labels)
        result["selected"] = {"epoch": best["epoch"], "val_accuracy": best["val"], **sel}
        modules.load_state_dict(last)
    result.update(epochs=ran, num_points=num_points, augment=augment and mode != "fix",
                  batch_size=batch_size, lr=lr, seed=seed,
                  seconds=round(time.perf_counter() - t0, 2))
    return (result, (bb, head)) if return_model else result


# ----------------------------------------------------------------------------- part segmentation


def default_category_parts(train: CloudSet) -> dict[int, list[int]]:
    """Category index -> global part ids: the ShapeNetPart or synthetic table when the class
    names match one, else the part ids seen per category in ``train`` (pass the full split)."""
    names = list(train.class_names or [])
    if names:
        from pointssl.data import shapenetpart

        tables = [shapenetpart.CATEGORY_PARTS]
        try:
            from pointssl.data import synthetic

            tables.append(synthetic.CATEGORY_PARTS)
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


def finetune_partseg(
    backbone: Backbone,
    train: CloudSet,
    test: CloudSet,
    mode: str = "finetune",
    fraction: float = 1.0,
    *,
    epochs: int = 100,
    batch_size: int = 16,
    lr: float = 1e-3,
    seed: int = 0,
    num_points: int = 2048,
    test_points: int | None = None,
    min_steps: int = 0,
    category_parts: Mapping[int, list[int]] | None = None,
    augment: bool = True,
    device=None,
    log=print,
    return_model: bool = False,
):
    """Part segmentation on a stratified ``fraction`` of ``train``, tested on ``test``.

    Training samples ``num_points`` per shape; testing uses every point of each test shape
    (``test_points=None``) or a fixed seeded sample. Predictions are restricted to the
    shape category's parts; the loss is cross-entropy over all parts, as PointNet/DGCNN do.
    Returns task, mode, fraction, n_labeled, accuracy, instance_miou, class_miou,
    per_category, epochs, seconds (last epoch's numbers).
    """
    t0 = time.perf_counter()
    fraction = parse_fraction(fraction)
    if train.parts is None or test.parts is None:
        raise PointSSLError("part segmentation needs per-point part labels in train and test")
    dev = _device(device)
    _check_inputs(backbone, train, test)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    gen = torch.Generator().manual_seed(seed)
    d = _in_dim(backbone)
    cat_parts = {int(k): list(v) for k, v in
                 (category_parts or default_category_parts(train)).items()}
    missing = sorted(set(np.unique(test.labels).tolist()) - set(cat_parts))
    if missing:
        raise PointSSLError(f"test categories {missing} have no part list")
    num_parts = max(max(v) for v in cat_parts.values()) + 1
    num_cats = max(len(train.class_names or []), max(cat_parts) + 1)
    for name, ds in (("train", train), ("test", test)):
        hi = max(int(p.max()) for p in ds.parts)
        if hi >= num_parts:
            raise PointSSLError(f"{name} has part id {hi} but the part table stops at "
                                f"{num_parts - 1}")

    labeled = stratified_fraction(train.labels, fraction, seed)
    bb = _prepare_backbone(backbone, mode, seed).to(dev)
    head = SegHead(bb.point_dim, bb.global_dim, num_cats, num_parts).to(dev)
    cats_tr = torch.from_numpy(train.labels[labeled]).to(dev)

    cache = None
    if mode == "fix":
        n = len(labeled) * num_points * (bb.point_dim + 1)
        if n * 4 <= _PRECOMPUTE_BYTES:
            x, y = _gather(train, labeled, num_points, d, np.random.default_rng(seed + 3), True)
            pf, gf = [], []
            with torch.no_grad():
                for s in range(0, len(x), batch_size):
                    out = bb(x[s:s + batch_size].to(dev))
                    pf.append(out.point_feat)
                    gf.append(out.global_feat)
            cache = (torch.cat(pf), torch.cat(gf), y.to(dev))
        params = list(head.parameters())

        def set_train():
            head.train()
    else:
        params = list(bb.parameters()) + list(head.parameters())

        def set_train():
            bb.train()
            head.train()

    def step(idx):
        if cache is not None:
            pf, gf, y = cache[0][idx], cache[1][idx], cache[2][idx]
        else:
            x, y = _gather(train, labeled[idx], num_points, d, rng, True)
            if mode != "fix" and augment:
                x = _augment(x, gen)
            with torch.set_grad_enabled(mode != "fix"):
                out = bb(x.to(dev))
            pf, gf, y = out.point_feat, out.global_feat, y.to(dev)
        logits = head(pf, gf, cats_tr[idx])
        return F.cross_entropy(logits.reshape(-1, num_parts), y.reshape(-1))

    ran = _fit(params, len(labeled), epochs=epochs, batch_size=batch_size, lr=lr,
               min_steps=min_steps, rng=rng, step=step, set_train=set_train, end_epoch=None,
               log=log)
    preds, targets = _predict_partseg(bb, head, test, cat_parts, test_points, batch_size, d,
                                      dev, seed + 1)
    m = partseg_metrics(preds, targets, test.labels, cat_parts,
                        test.class_names or None)
    result = {"task": "partseg", "mode": mode, "fraction": fraction,
              "n_labeled": int(len(labeled)), "n_test": len(test), "backbone": backbone.name,
              **m, "epochs": ran, "num_points": num_points, "test_points": test_points,
              "augment": augment and mode != "fix", "batch_size": batch_size, "lr": lr,
              "seed": seed, "seconds": round(time.perf_counter() - t0, 2)}
    return (result, (bb, head)) if return_model else result


@torch.no_grad()
def _predict_partseg(bb, head, test, cat_parts, test_points, batch_size, d, dev, seed):
    """Category-restricted predictions per test shape; equal-size shapes are batched."""
    bb.eval()
    head.eval()
    rng = np.random.default_rng(seed)
    sel = [_sample_idx(len(p), test_points, rng) for p in test.points]
    by_size: dict[int, list[int]] = {}
    for i, s in enumerate(sel):
        by_size.setdefault(len(s), []).append(i)
    preds: list = [None] * len(test)
    for group in by_size.values():
        for s in range(0, len(group), batch_size):
            chunk = group[s:s + batch_size]
            x = torch.from_numpy(np.stack([_cloud(test, i, d)[sel[i]] for i in chunk])
                                 .astype(np.float32)).to(dev)
            cats = torch.from_numpy(test.labels[chunk]).to(dev)
            out = bb(x)
            logits = head(out.point_feat, out.global_feat, cats)
            for j, i in enumerate(chunk):
                preds[i] = restricted_argmax(logits[j], cat_parts[int(test.labels[i])]).cpu()
    return [p.numpy() for p in preds], [test.parts[i][s] for i, s in enumerate(sel)]


# ----------------------------------------------------------------------------- dispatcher


def run_finetune(
    task: str,
    mode: str,
    fraction,
    *,
    train: CloudSet,
    test: CloudSet,
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
    if mode not in MODES:
        raise PointSSLError(f"unknown fine-tuning mode {mode!r}; choose one of {MODES}")
    meta = {}
    if random_init and checkpoint is not None:
        raise PointSSLError("random_init and a checkpoint exclude each other")
    if checkpoint is not None:
        bb, meta = load_backbone(checkpoint)
        if backbone_name and backbone_name != bb.name:
            raise PointSSLError(f"{checkpoint}: holds a {bb.name} backbone, not {backbone_name}")
    elif mode == "scratch" or random_init:
        if not backbone_name:
            raise PointSSLError(f"{mode} without --checkpoint needs --backbone to know the "
                                "architecture")
        bb = random_backbone(backbone_name, kw.get("seed", 0), **(backbone_config or {}))
    else:
        raise PointSSLError(f"mode '{mode}' starts from pre-trained weights: pass --checkpoint "
                            "(or --random-init for the random-init baseline)")
    fn = finetune_classification if task == "cls" else finetune_partseg
    result = fn(bb, train, test, mode, fraction, **kw)
    out = result[0] if isinstance(result, tuple) else result
    out["checkpoint"] = None if checkpoint is None else str(checkpoint)
    out["random_init"] = bool(random_init or mode == "scratch")
    plain = {k: v for k, v in meta.items() if isinstance(v, (str, int, float, bool, type(None)))}
    if plain:
        out["checkpoint_meta"] = plain
    return result
