import numpy as np
import pytest
import torch

from pointssl.evaluate.metrics import (
    classification_metrics,
    partseg_metrics,
    restricted_argmax,
    shape_iou,
)

# Category 0 owns parts {0, 1}; category 1 owns parts {2, 3, 4}.
PARTS = {0: [0, 1], 1: [2, 3, 4]}


def test_perfect_prediction_scores_one():
    t = [np.array([0, 1, 1, 0]), np.array([2, 3, 4, 4])]
    m = partseg_metrics(t, t, [0, 1], PARTS, ["mug", "lamp"])
    assert m["accuracy"] == 1.0 and m["instance_miou"] == 1.0 and m["class_miou"] == 1.0
    assert m["per_category"] == {"mug": 1.0, "lamp": 1.0}


def test_part_absent_in_both_counts_as_one():
    # Part 4 appears in neither: IoUs are (1, 1, 1), not (1, 1, 0) or (1, 1) averaged.
    assert shape_iou([2, 2, 3], [2, 2, 3], [2, 3, 4]) == 1.0
    # Part 4 predicted but absent in the truth counts 0 for that part.
    assert shape_iou([2, 4, 3], [2, 2, 3], [2, 3, 4]) == pytest.approx((0.5 + 1 + 0) / 3)


def test_instance_vs_class_miou_hand_computed():
    preds = [np.array([0, 1, 1, 1]), np.array([2, 2, 3, 3]), np.array([2, 2, 4, 4])]
    truth = [np.array([0, 0, 1, 1]), np.array([2, 2, 3, 3]), np.array([2, 3, 4, 4])]
    cats = [0, 1, 1]
    m = partseg_metrics(preds, truth, cats, PARTS, ["mug", "lamp"])
    a = (1 / 2 + 2 / 3) / 2  # shape A: part 0 IoU 1/2, part 1 IoU 2/3
    b = 1.0  # shape B: parts 2, 3 exact, part 4 absent in both
    c = (1 / 2 + 0 + 1) / 3  # shape C: part 2 1/2, part 3 missed, part 4 exact
    assert m["instance_miou"] == pytest.approx((a + b + c) / 3)  # 25/36
    assert m["class_miou"] == pytest.approx((a + (b + c) / 2) / 2)  # 2/3
    assert m["instance_miou"] != pytest.approx(m["class_miou"])
    assert m["accuracy"] == pytest.approx(10 / 12)
    assert m["per_category"]["lamp"] == pytest.approx(0.75)
    assert m["per_category_count"] == {"mug": 1, "lamp": 2}


def test_restricted_argmax_ignores_other_categories_parts():
    logits = np.array([[0.1, 0.2, 9.0, 0.5, 0.3],  # global best is part 2 (wrong category)
                       [5.0, 0.1, 0.0, 0.0, 0.7]])
    assert restricted_argmax(logits, [0, 1]).tolist() == [1, 0]
    assert restricted_argmax(logits, [3, 4]).tolist() == [3, 4]
    out = restricted_argmax(torch.from_numpy(logits), [0, 1])
    assert isinstance(out, torch.Tensor) and out.tolist() == [1, 0]


def test_classification_metrics_class_mean():
    assert classification_metrics([0, 0, 0, 1], [0, 0, 0, 1]) == {
        "accuracy": 1.0, "class_mean_accuracy": 1.0}
    m = classification_metrics([0, 0, 0, 0], [0, 0, 0, 1])
    assert m["accuracy"] == 0.75 and m["class_mean_accuracy"] == 0.5


def test_mismatched_lengths_raise():
    with pytest.raises(ValueError):
        partseg_metrics([np.zeros(3)], [np.zeros(3), np.zeros(3)], [0, 0], PARTS)
    with pytest.raises(ValueError):
        shape_iou([0, 1], [0, 1, 1], [0, 1])
