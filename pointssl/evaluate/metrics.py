"""Classification and part-segmentation metrics as the ShapeNetPart literature computes them.

Part segmentation follows PointNet's evaluation script (Qi et al. 2017, used unchanged by
DGCNN, ConClu and MID-Net): predictions are restricted to the parts of the shape's
category, a shape's IoU is the mean over its category's parts (a part absent from both
prediction and ground truth counts as IoU 1), instance mIoU averages shapes and class mIoU
averages the per-category means.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch


def classification_metrics(pred, target) -> dict:
    """Overall accuracy and class-mean accuracy (mean per-class recall over classes present
    in ``target``)."""
    pred = np.asarray(pred).reshape(-1)
    target = np.asarray(target).reshape(-1)
    if pred.shape != target.shape or len(target) == 0:
        raise ValueError(f"need equal, non-empty pred/target, got {pred.shape}, {target.shape}")
    classes = np.unique(target)
    recalls = [float(np.mean(pred[target == c] == c)) for c in classes]
    return {"accuracy": float(np.mean(pred == target)),
            "class_mean_accuracy": float(np.mean(recalls))}


def restricted_argmax(logits, part_ids):
    """Argmax over the last axis restricted to ``part_ids``; returns global part ids.

    Works on numpy arrays and torch tensors of shape (..., num_parts).
    """
    if isinstance(logits, torch.Tensor):
        ids = torch.as_tensor(np.asarray(part_ids), dtype=torch.long, device=logits.device)
        return ids[logits.index_select(-1, ids).argmax(-1)]
    ids = np.asarray(part_ids, dtype=np.int64)
    return ids[np.asarray(logits)[..., ids].argmax(-1)]


def shape_iou(pred, target, part_ids) -> float:
    """Mean IoU over ``part_ids`` for one shape; a part absent in both counts as 1."""
    pred = np.asarray(pred).reshape(-1)
    target = np.asarray(target).reshape(-1)
    if pred.shape != target.shape:
        raise ValueError(f"pred has {pred.size} points but target has {target.size}")
    ious = []
    for p in part_ids:
        inp, int_ = pred == p, target == p
        union = np.count_nonzero(inp | int_)
        ious.append(1.0 if union == 0 else np.count_nonzero(inp & int_) / union)
    return float(np.mean(ious))


def partseg_metrics(
    preds: Sequence[np.ndarray],
    targets: Sequence[np.ndarray],
    categories,
    category_parts: Mapping[int, Sequence[int]],
    category_names: Sequence[str] | None = None,
) -> dict:
    """Overall point accuracy, instance mIoU, class mIoU and per-category mIoU.

    preds/targets: per-shape (N_i,) global part ids; categories: (M,) category index of each
    shape; category_parts: category index -> its global part ids. Class mIoU averages over
    the categories present in ``categories``.
    """
    categories = np.asarray(categories, dtype=np.int64).reshape(-1)
    if not (len(preds) == len(targets) == len(categories)) or len(categories) == 0:
        raise ValueError(f"got {len(preds)} predictions, {len(targets)} targets and "
                         f"{len(categories)} categories; need equal, non-zero counts")
    correct = total = 0
    ious = np.empty(len(categories))
    for i, (p, t, c) in enumerate(zip(preds, targets, categories)):
        p, t = np.asarray(p).reshape(-1), np.asarray(t).reshape(-1)
        ious[i] = shape_iou(p, t, category_parts[int(c)])
        correct += int(np.count_nonzero(p == t))
        total += t.size
    per_cat, counts = {}, {}
    for c in np.unique(categories):
        name = category_names[c] if category_names is not None else str(int(c))
        per_cat[name] = float(ious[categories == c].mean())
        counts[name] = int(np.count_nonzero(categories == c))
    return {
        "accuracy": correct / max(total, 1),
        "instance_miou": float(ious.mean()),
        "class_miou": float(np.mean(list(per_cat.values()))),
        "per_category": per_cat,
        "per_category_count": counts,
    }
