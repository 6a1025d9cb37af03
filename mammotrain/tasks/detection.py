"""The detection task: the multi-task DETR (:mod:`mammotrain.detr`), the diagnosis label as
image-level target (one logit, sigmoid focal loss; reported as the two probabilities
``[1 - p, p]``) plus the lesion boxes of the shard JSON; single-view only. Predictions add
per example the boxes at the model input (best first), their objectness, the true boxes
and the boxes in the original DICOM's pixels; metrics add mAP, recall and mIoU."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Sequence

import numpy as np
import pyarrow as pa
import torch

from mammoprep.geometry import Transform

from ..detection_metrics import detection_metrics
from ..detr import DetrConfig, build_detector
from ..detr_loss import DetrCriterion, LossWeights, cxcywh_to_xyxy
from ..figures import plot_detections
from ..preprocess import Preprocess
from .base import Task

DETECTION_TASK_METRICS = ("acc", "auc", "recall", "specificity", "f1",
                          "map50", "map25", "recall25", "miou")
DETECTION_DEFAULTS = (("epochs", 400), ("size", 512), ("views", 1), ("lr", 1e-4),
                      ("patience", 150), ("schedule", "constant"))


def to_original(prep: Preprocess, boxes: np.ndarray, transform: dict) -> np.ndarray | None:
    """Model-input xyxy boxes of an unflipped example -> original DICOM pixels, clipped."""
    if "crop_xyxy" not in transform:
        return None
    t = Transform.from_dict(transform)
    b = t.invert(prep.to_stored(boxes, tuple(transform["stored_size"])))
    h, w = t.original_size
    b[:, [0, 2]] = np.clip(b[:, [0, 2]], 0, w)
    b[:, [1, 3]] = np.clip(b[:, [1, 3]], 0, h)
    return b


@dataclass(frozen=True)
class DetectionTask(Task):
    """Malignancy + lesion boxes (multi-task DETR)."""

    kind: ClassVar[str] = "detection"
    loss: ClassVar[str] = "detr"
    selects: ClassVar[tuple[str, ...]] = ("auc", "loss", "last", "map25")
    square_only: ClassVar[bool] = True
    draws_predictions: ClassVar[bool] = True
    onnx_outputs: ClassVar[tuple[str, ...]] = ("logits", "boxes", "objectness")

    activation: str = "sigmoid"
    metrics: tuple[str, ...] = DETECTION_TASK_METRICS
    views: tuple[int, ...] = (1,)
    defaults: tuple[tuple[str, Any], ...] = DETECTION_DEFAULTS

    def metric_label(self, metric: str) -> str:
        """'Sensitivity' for the detector's recall (the paper's name)."""
        if metric == "recall":
            return "Sensitivity"
        return super().metric_label(metric)

    def build_model(self, cfg) -> tuple[torch.nn.Module, list]:
        return build_detector(cfg.backbone, cfg.in_chans, cfg.size, cfg.pretrained,
                              DetrConfig(queries=cfg.queries, layers=cfg.dec_layers))

    def make_criterion(self, size: int, det_lambda: float = 1.0):
        crit = DetrCriterion(LossWeights(det=det_lambda))
        return lambda out, batch: crit(out, batch, size)

    def new_outputs(self) -> dict[str, list]:
        return {"boxes": [], "box_scores": [], "gt_boxes": [], "boxes_original": []}

    def collect(self, acc: dict[str, list], outputs, batch: dict[str, Any], cfg,
                prep) -> None:
        """boxes float ``[Q, 4]`` (pixel xyxy at the model input), box_scores ``[Q]``
        (objectness probabilities), gt_boxes ``[T, 4]`` (the loader's boxes, same frame),
        boxes_original ``[Q, 4]`` (through the shard JSON's transform; None without one)."""
        boxes = (cxcywh_to_xyxy(outputs["pred_boxes"].float()) * cfg.size).cpu().numpy()
        scores = outputs["pred_obj"].float().sigmoid().cpu().numpy()
        acc["boxes"].extend(boxes)
        acc["box_scores"].extend(scores)
        acc["gt_boxes"].extend(np.asarray(b[0], np.float32).reshape(-1, 4)
                               for b in batch["boxes"])
        acc["boxes_original"].extend(to_original(prep, b, tr[0])
                                     for b, tr in zip(boxes, batch["transforms"]))

    def compute_metrics(self, pred: dict[str, Any]) -> dict[str, float]:
        m = super().compute_metrics(pred)
        m.update(detection_metrics(pred["boxes"], pred["box_scores"], pred["gt_boxes"]))
        return m

    def row_fields(self, pred: dict[str, Any], i: int) -> dict[str, Any]:
        order = np.argsort(-pred["box_scores"][i], kind="stable")
        orig = pred["boxes_original"][i]
        return {"boxes": pred["boxes"][i][order].round(2).tolist(),
                "box_scores": pred["box_scores"][i][order].tolist(),
                "gt_boxes": np.asarray(pred["gt_boxes"][i]).round(2).tolist(),
                "boxes_original": None if orig is None else orig[order].round(1).tolist()}

    def prediction_columns(self) -> list[tuple[str, Any]]:
        return [("boxes", pa.list_(pa.list_(pa.float32()))),
                ("box_scores", pa.list_(pa.float32())),
                ("gt_boxes", pa.list_(pa.list_(pa.float32()))),
                ("boxes_original", pa.list_(pa.list_(pa.float32())))]

    def fold_figure(self, model, cfg, examples: Sequence, rows: dict[str, dict[str, Any]],
                    out: Path, device) -> None:
        """``detections.png``: predicted vs true boxes."""
        plot_detections(cfg, examples, rows, out / "detections.png")

    def prediction_figure(self, cfg, examples: Sequence, rows: dict[str, dict[str, Any]],
                          path: Path, batch: dict[str, Any] | None = None) -> None:
        plot_detections(cfg, examples, rows, path, batch=batch)

    def export_views(self, cfg) -> int:
        return 1

    def onnx_forward(self, outputs, temperature: float = 1.0) -> tuple[torch.Tensor, ...]:
        return outputs["logits"], outputs["pred_boxes"], outputs["pred_obj"]
