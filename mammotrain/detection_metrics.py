"""Detection metrics: mAP@.5, mAP@.25, recall@.25 and the mean best IoU per lesion.

mAP and recall come from torchmetrics' ``MeanAveragePrecision`` with its COCO backend
(pycocotools), one instance per IoU threshold (COCO's 101-point interpolated AP; recall =
``mar_100``, i.e. with every query's box). One class ("lesion"); a box's score is its
objectness probability; images without lesions take part (their boxes are false
positives). :func:`average_precision` is a plain NumPy twin of the same AP definition (the
tests cross-check it with the library); it also gives the patient-level bootstrap intervals
of the pooled values (:func:`detection_bootstrap_ci`): the matching is done once, each
resample only re-weights images.

Inputs (all pixel ``xyxy`` in one coordinate frame, e.g. the model input):
``pred_boxes`` per image float ``[Q, 4]``, ``pred_scores`` per image float ``[Q]``,
``gt_boxes`` per image float ``[T, 4]``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
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


#: COCO's cap on detections per image (``maxDets``)
MAX_DETS = 100


@dataclass(frozen=True)
class Matches:
    """Every detection of a set of images matched to its image's lesions at one IoU
    threshold, in COCO's global order (score descending, stable over image order):
    ``score`` float ``[D]``, ``tp`` bool ``[D]`` (true positive), ``image`` int ``[D]``
    (index of its image), ``n_gt`` int ``[I]`` (lesions per image)."""

    score: np.ndarray
    tp: np.ndarray
    image: np.ndarray
    n_gt: np.ndarray


def match_detections(pred_boxes: Sequence, pred_scores: Sequence, gt_boxes: Sequence,
                     iou: float) -> Matches:
    """COCO's matching at one IoU threshold: per image, its (at most :data:`MAX_DETS`)
    detections by score; each is a true positive when it matches a not yet matched lesion of
    its image with IoU >= ``iou`` (the best remaining one). A detection's match depends on
    its own image only, so a bootstrap can reuse it (:func:`ap_recall`)."""
    score, tp, image, n_gt = [], [], [], []
    for i, (p, s, g) in enumerate(zip(pred_boxes, pred_scores, gt_boxes)):
        p = np.asarray(p, np.float64).reshape(-1, 4)
        s = np.ravel(np.asarray(s, np.float64))
        g = np.asarray(g, np.float64).reshape(-1, 4)
        n_gt.append(len(g))
        order = np.argsort(-s, kind="stable")[:MAX_DETS]
        used = np.zeros(len(g), bool)
        for k in order:
            hit = False
            if len(g):
                ious = box_iou(p[k][None], g)[0]
                ious[used] = -1.0
                j = int(np.argmax(ious))
                if ious[j] >= iou:
                    used[j] = hit = True
            score.append(s[k])
            tp.append(hit)
            image.append(i)
    score_a = np.asarray(score, np.float64)
    order = np.argsort(-score_a, kind="stable")
    return Matches(score_a[order], np.asarray(tp, bool)[order],
                   np.asarray(image, np.int64)[order], np.asarray(n_gt, np.int64))


def ap_recall(m: Matches, weights: np.ndarray | None = None) -> tuple[float, float]:
    """(AP, recall) of :func:`match_detections`' output: COCO's 101-point interpolated AP
    (precision made monotone, read at recall 0, 0.01, ..., 1; 0 beyond the highest recall
    reached) and the highest recall reached. ``weights`` int ``[I]``: how often each image
    counts (a bootstrap resample; None = once). NaN without lesions."""
    w = np.ones(len(m.n_gt), np.int64) if weights is None else np.asarray(weights, np.int64)
    n_gt = float((w * m.n_gt).sum())
    if n_gt == 0:
        return float("nan"), float("nan")
    wd = w[m.image]
    keep = wd > 0
    wd = wd[keep]
    ctp = np.cumsum(m.tp[keep] * wd)   # a repeated image's detections: one weighted step
    if not len(ctp):
        return 0.0, 0.0
    recall = ctp / n_gt
    precision = np.maximum.accumulate((ctp / np.cumsum(wd))[::-1])[::-1]
    idx = np.searchsorted(recall, np.linspace(0, 1, 101), side="left")
    read = np.where(idx < len(precision), precision[np.minimum(idx, len(precision) - 1)], 0.0)
    return float(read.mean()), float(recall[-1])


def average_precision(pred_boxes: Sequence, pred_scores: Sequence, gt_boxes: Sequence,
                      iou: float) -> float:
    """COCO-style AP at one IoU threshold (NumPy twin of the library's value; the tests
    cross-check the two): :func:`match_detections` then :func:`ap_recall`. NaN without
    lesions."""
    return ap_recall(match_detections(pred_boxes, pred_scores, gt_boxes, iou))[0]


#: the pooled detection values given a confidence interval: name -> (IoU, AP or recall)
POOLED_DETECTION = {"map50": (0.5, 0), "map25": (0.25, 0), "recall25": (0.25, 1)}


def _boot_values(matches: dict[float, Matches], weights: np.ndarray) -> dict[str, float]:
    vals = {thr: ap_recall(m, weights) for thr, m in matches.items()}
    return {k: vals[thr][i] for k, (thr, i) in POOLED_DETECTION.items()}


def detection_bootstrap_ci(pred_boxes: Sequence, pred_scores: Sequence, gt_boxes: Sequence,
                           groups: Sequence, n_boot: int = 1000, seed: int = 0,
                           alpha: float = 0.05) -> dict[str, tuple[float, float]]:
    """Percentile ``1 - alpha`` intervals of mAP@.5, mAP@.25 and recall@.25
    (:data:`POOLED_DETECTION`) by a patient-level bootstrap (``groups [I]``: the patient of
    each image; every image of a drawn patient counts as often as it was drawn), on the
    NumPy twin of the COCO values. Resamples without lesions are skipped; (NaN, NaN) when
    more than half are."""
    from .metrics import _group_codes, _percentile_ci, _resample

    matches = {thr: match_detections(pred_boxes, pred_scores, gt_boxes, thr)
               for thr in {t for t, _ in POOLED_DETECTION.values()}}
    codes, g = _group_codes(groups)
    rng = np.random.default_rng(seed)
    samples: dict[str, list[float]] = {k: [] for k in POOLED_DETECTION}
    for _ in range(n_boot if g else 0):
        w = np.bincount(_resample(codes, g, rng), minlength=len(codes))
        for k, v in _boot_values(matches, w).items():
            samples[k].append(v)
    return {k: _percentile_ci(v, n_boot, alpha) for k, v in samples.items()}


def detection_paired_bootstrap(a: tuple[Sequence, Sequence, Sequence],
                               b: tuple[Sequence, Sequence, Sequence], groups: Sequence,
                               metric: str = "map25", n_boot: int = 2000, seed: int = 0,
                               alpha: float = 0.05) -> dict[str, float]:
    """Two detectors' predictions of the same images, ``a`` and ``b`` each (pred_boxes,
    pred_scores, gt_boxes) in the same image order: ``metric(b) - metric(a)`` (a key of
    :data:`POOLED_DETECTION`, NumPy twin values), its patient-level interval and the
    two-sided bootstrap p-value (:func:`mammotrain.metrics.paired_result`); both see the
    same resampled patients in each replicate."""
    from .metrics import _group_codes, _resample, paired_result

    thr, i = POOLED_DETECTION[metric]
    ma, mb = match_detections(*a, thr), match_detections(*b, thr)
    codes, g = _group_codes(groups)
    rng = np.random.default_rng(seed)
    d = []
    for _ in range(n_boot if g else 0):
        w = np.bincount(_resample(codes, g, rng), minlength=len(codes))
        d.append(ap_recall(mb, w)[i] - ap_recall(ma, w)[i])
    return paired_result(ap_recall(ma)[i], ap_recall(mb)[i], d, n_boot, alpha,
                         n=len(codes), groups=g)


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


def mean_box_baseline(rows: Sequence[dict]) -> float:
    """AP@0.5 of the mean-box baseline over prediction rows (``fold``, ``boxes``,
    ``box_scores``, ``gt_boxes``; pixel xyxy at the model input): each test image gets one
    box at the mean lesion box of the other folds' images (the training folds of its
    model), scored with the image's highest box score, so that only box placement differs
    from the detector's. NaN where undefined (no lesion; a single fold has no other folds to
    average)."""
    rows = list(rows)
    gts = [np.asarray(r["gt_boxes"], np.float64).reshape(-1, 4) for r in rows]
    folds = [r["fold"] for r in rows]
    base_boxes, base_scores = [], []
    for r, f in zip(rows, folds):
        train = [g for g, ff in zip(gts, folds) if ff != f and len(g)]
        if not train:
            return float("nan")
        base_boxes.append(np.concatenate(train).mean(0)[None])
        scores = np.ravel(np.asarray(r["box_scores"], np.float64))
        base_scores.append([float(scores.max()) if scores.size else 0.0])
    if not any(len(g) for g in gts):
        return float("nan")
    return average_precision(base_boxes, base_scores, gts, 0.5)
