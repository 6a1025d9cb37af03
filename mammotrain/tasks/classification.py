"""Classification tasks: ``num_classes``-way softmax classifiers trained with cross-entropy
(binary tasks included: two logits; the score of a binary task is the probability of class
1), on one image or a CC + MLO pair (:class:`~mammotrain.models.MultiViewClassifier`)."""

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
        return build_model(cfg.backbone, self.num_classes, cfg.views, cfg.shared, cfg.in_chans,
                           cfg.size, cfg.pretrained, cfg.hidden, cfg.dropout, cfg.global_pool)

    def make_loss(self, weight=None):
        """The training criterion: ``(logits [B, K], target int64 [B]) -> scalar``."""
        return nn.CrossEntropyLoss(weight=weight)

    def make_criterion(self, size: int, det_lambda: float = 1.0):
        ce = self.make_loss()
        return lambda out, batch: {"loss": ce(out.float(), batch["label"].to(out.device))}

    def fold_figure(self, model, cfg, examples: Sequence, rows: dict[str, dict[str, Any]],
                    out: Path, device) -> None:
        """``gradcam.png``: the inputs and their Grad-CAM overlays."""
        plot_gradcam(model, cfg, examples, out / "gradcam.png", device, self.classes)

    def onnx_forward(self, outputs, temperature: float = 1.0) -> tuple[torch.Tensor, ...]:
        return outputs, torch.softmax(outputs / float(temperature), dim=-1)
