"""Classification tasks: ``num_classes``-way softmax classifiers trained with cross-entropy
(binary tasks included: two logits; the score of a binary task is the probability of class
1), on one image or a CC + MLO pair (:class:`~mammotrain.models.MultiViewClassifier`), or
per breast on a four-view exam (:class:`~mammotrain.fourview.FourViewClassifier`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Sequence

import torch
import torch.nn as nn

from ..figures import plot_gradcam
from ..models import build_model
from .base import Task


@dataclass(frozen=True)
class ClassificationTask(Task):
    """A classification task (diagnosis, BI-RADS, density)."""

    kind: ClassVar[str] = "classification"
    loss: ClassVar[str] = "cross_entropy"
    onnx_outputs: ClassVar[tuple[str, ...]] = ("logits", "probs")

    def build_model(self, cfg) -> tuple[torch.nn.Module, list]:
        if cfg.views == 4:  # exam-level: both breasts, per-breast logits [B, 2, K]
            from ..fourview import FourViewClassifier

            model = FourViewClassifier(cfg.backbone, self.num_classes, cfg.shared,
                                       cfg.in_chans, cfg.size, cfg.hidden, cfg.dropout,
                                       cfg.global_pool, cfg.pretrained)
            return model, list(model.load_reports)
        return build_model(cfg.backbone, self.num_classes, cfg.views, cfg.shared, cfg.in_chans,
                           cfg.size, cfg.pretrained, cfg.hidden, cfg.dropout, cfg.global_pool)

    def make_loss(self, weight=None):
        """The training criterion: ``(logits [B, K], target int64 [B]) -> scalar``."""
        return nn.CrossEntropyLoss(weight=weight)

    def make_criterion(self, size: int, det_lambda: float = 1.0):
        """Cross-entropy of logits ``[B, K]`` against ``label`` ``[B]``, or of four-view
        logits ``[B, 2, K]`` against ``label`` ``[B, 2]``: breasts labelled -1 (no label,
        missing side) are masked out (mean over the labelled ones; 0 when none is)."""
        ce = nn.CrossEntropyLoss(ignore_index=-1)

        def criterion(out, batch):
            target = batch["label"].to(out.device).reshape(-1)
            logits = out.float().reshape(target.shape[0], -1)
            if not bool((target >= 0).any()):
                return {"loss": logits.sum() * 0.0}
            return {"loss": ce(logits, target)}
        return criterion

    def fold_figure(self, model, cfg, examples: Sequence, rows: dict[str, dict[str, Any]],
                    out: Path, device) -> None:
        """``gradcam.png``: the inputs and their Grad-CAM overlays."""
        plot_gradcam(model, cfg, examples, out / "gradcam.png", device, self.classes)

    def onnx_forward(self, outputs, temperature: float = 1.0) -> tuple[torch.Tensor, ...]:
        return outputs, torch.softmax(outputs / float(temperature), dim=-1)
