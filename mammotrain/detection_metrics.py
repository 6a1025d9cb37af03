"""Detection metrics: mAP@.5, mAP@.25, recall@.25 and the mean best IoU per lesion.

mAP and recall come from torchmetrics' ``MeanAveragePrecision`` with its COCO backend
(pycocotools), one instance per IoU threshold (COCO's 101-point interpolated AP; recall =
``mar_100``, i.e. with every query's box). One class ("lesion"); a box's score is its
objectness probability; images without lesions take part (their boxes are false
positives). :func:`average_precision` is a plain NumPy twin of the same AP definition, used
by the tests to cross-check the library on hand-computed cases.

Inputs (all pixel ``xyxy`` in one coordinate frame, e.g. the model input):
``pred_boxes`` per image float ``[Q, 4]``, ``pred_scores`` per image float ``[Q]``,
``gt_boxes`` per image float ``[T, 4]``.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
from torchmetrics.detection import MeanAveragePrecision

from mammoprep.geometry import box_iou

DETECTION_METRICS = ("map50", "map25", "recall25", "miou")


def mean_best_iou(pred_boxes: Sequence, gt_boxes: Sequence) -> float:
    """Mean over all true lesions of the highest IoU of any predicted box of the same image
    (0 when the image has no prediction); NaN when there is no lesion."""
    best = []
    for p, g in zip(pred_boxes, gt_boxes):
        g = np.asarray(g, np.float64).reshape(-1, 4)
        if len(g) == 0:
            continue
        p = np.asarray(p, np.float64).reshape(-1, 4)
        best.extend(box_iou(g, p).max(1) if len(p) else np.zeros(len(g)))
    return float(np.mean(best)) if best else float("nan")


def average_precision(pred_boxes: Sequence, pred_scores: Sequence, gt_boxes: Sequence,
                      iou: float) -> float:
    """COCO-style AP at one IoU threshold (NumPy twin of the library's value).

    Detections of all images sorted by score (stable); each is a true positive when it
    matches a not yet matched lesion of its image with IoU >= ``iou`` (the best remaining
    one); precision is made monotone and read at the 101 recall points 0, 0.01, ..., 1
    (0 beyond the highest recall reached). NaN without lesions.
    """
    dets = []
    for i, (p, s) in enumerate(zip(pred_boxes, pred_scores)):
        for box, score in zip(np.asarray(p, np.float64).reshape(-1, 4), np.ravel(s)):
            dets.append((-float(score), i, box))
    n_gt = sum(len(np.asarray(g).reshape(-1, 4)) for g in gt_boxes)
    if n_gt == 0:
        return float("nan")
    dets.sort(key=lambda d: d[0])
    used = [np.zeros(len(np.asarray(g).reshape(-1, 4)), bool) for g in gt_boxes]
    tp = np.zeros(len(dets))
    for k, (_, i, box) in enumerate(dets):
        g = np.asarray(gt_boxes[i], np.float64).reshape(-1, 4)
        if len(g) == 0:
            continue
        ious = box_iou(box[None], g)[0]
        ious[used[i]] = -1.0
        j = int(np.argmax(ious))
        if ious[j] >= iou:
            used[i][j] = True
            tp[k] = 1
    ctp = np.cumsum(tp)
    recall = ctp / n_gt
    precision = ctp / np.arange(1, len(dets) + 1)
    precision = np.maximum.accumulate(precision[::-1])[::-1] if len(dets) else precision
    points = np.linspace(0, 1, 101)
    out = np.zeros(101)
    for k, r in enumerate(points):
        idx = np.searchsorted(recall, r, side="left")
        out[k] = precision[idx] if idx < len(precision) else 0.0
    return float(out.mean())


def detection_metrics(pred_boxes: Sequence, pred_scores: Sequence, gt_boxes: Sequence
                      ) -> dict[str, float]:
    """{'map50', 'map25', 'recall25', 'miou'} (fractions; NaN without any lesion) computed
    with torchmetrics (COCO backend) and :func:`mean_best_iou`."""
    def as_t(x, shape):
        return torch.as_tensor(np.asarray(x, np.float32).reshape(shape))

    preds = [{"boxes": as_t(p, (-1, 4)), "scores": as_t(s, (-1,)),
              "labels": torch.zeros(len(np.ravel(s)), dtype=torch.int64)}
             for p, s in zip(pred_boxes, pred_scores)]
    target = [{"boxes": as_t(g, (-1, 4)),
               "labels": torch.zeros(len(np.asarray(g).reshape(-1, 4)), dtype=torch.int64)}
              for g in gt_boxes]
    out = {"map50": float("nan"), "map25": float("nan"), "recall25": float("nan"),
           "miou": mean_best_iou(pred_boxes, gt_boxes)}
    if not any(len(t["boxes"]) for t in target):
        return out
    for thr, keys in ((0.5, ("map50", None)), (0.25, ("map25", "recall25"))):
        m = MeanAveragePrecision(box_format="xyxy", iou_type="bbox", iou_thresholds=[thr],
                                 backend="pycocotools")
        m.update(preds, target)
        res = m.compute()
        out[keys[0]] = _finite(res["map"])
        if keys[1]:
            out[keys[1]] = _finite(res["mar_100"])
    return out


def _finite(v) -> float:
    v = float(v)
    return v if math.isfinite(v) and v >= 0 else float("nan")


def pooled_detection(rows: Sequence[dict]) -> dict[str, float]:
    """Pooled out-of-fold detection figures from prediction rows (``fold``, ``boxes``,
    ``box_scores``, ``gt_boxes``; pixel xyxy at the model input): ``map50``, ``map25``,
    ``recall25`` of every test fold's boxes together, and ``map50_baseline``: the same AP@0.5
    when each test image gets one box at the mean lesion box of the other folds' images (the
    training folds of its model), scored with the image's highest box score, so that only
    box placement differs from the detector's. NaN where undefined (no lesion; a single fold
    has no other folds to average)."""
    rows = list(rows)
    out = detection_metrics([r["boxes"] for r in rows], [r["box_scores"] for r in rows],
                            [r["gt_boxes"] for r in rows])
    del out["miou"]
    out["map50_baseline"] = float("nan")
    gts = [np.asarray(r["gt_boxes"], np.float64).reshape(-1, 4) for r in rows]
    folds = [r["fold"] for r in rows]
    base_boxes, base_scores = [], []
    for r, f in zip(rows, folds):
        train = [g for g, ff in zip(gts, folds) if ff != f and len(g)]
        if not train:
            return out
        base_boxes.append(np.concatenate(train).mean(0)[None])
        scores = np.ravel(np.asarray(r["box_scores"], np.float64))
        base_scores.append([float(scores.max()) if scores.size else 0.0])
    if any(len(g) for g in gts):
        out["map50_baseline"] = average_precision(base_boxes, base_scores, gts, 0.5)
    return out
