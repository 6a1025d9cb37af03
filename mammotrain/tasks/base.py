"""The Task interface: what the one trainer asks of a task.

A task is data (name, classes, label rule, metrics, paper defaults) plus the few things that
differ between a classifier and the detector: the model it builds, its training criterion,
the post-processing of the model's outputs into per-example predictions, its metrics, the
extra columns of its prediction table, its figures and its ONNX outputs. The number of
classes of a task is the label rule's (:data:`mammoprep.labels.TASKS`), never a copy.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Mapping, Sequence

import torch

from mammoprep.labels import TASKS as LABEL_TASKS
from mammoprep.labels import task_labels

from ..metrics import classification_metrics

BINARY_METRICS = ("acc", "auc", "precision", "recall", "f1", "specificity")
MULTICLASS_METRICS = ("acc", "auc", "precision", "recall", "f1", "specificity")
_METRIC_LABELS = {"acc": "ACC", "auc": "AUC", "precision": "Precision", "recall": "Recall",
                  "f1": "F1", "specificity": "Specificity", "map50": "mAP@.5",
                  "map25": "mAP@.25", "recall25": "R@.25", "miou": "mIoU"}
CLASSIFICATION_DEFAULTS = (("epochs", 100), ("size", 224), ("views", 2), ("schedule", "step"))


class UnknownTaskError(ValueError):
    """A task name that is not in the registry (the message lists the known ones)."""


@dataclass(frozen=True)
class Task:
    """One task (subclasses: :class:`~mammotrain.tasks.classification.ClassificationTask`,
    :class:`~mammotrain.tasks.detection.DetectionTask`).

    name: registry key.
    classes: class names, index = label value; as many as the label rule's classes.
    activation: 'softmax' (logits -> probabilities ``[B, K]``) or 'sigmoid' (one logit
        ``[B, 1]`` -> ``[B, 2]`` = ``[1 - p, p]``).
    metrics: metric names reported per fold (:mod:`mammotrain.metrics`,
        :mod:`mammotrain.detection_metrics`); for tasks with more than two classes AUC,
        precision, recall, F1 and specificity are macro averages.
    label_from: the label rule used (manifest column ``label_<label_from>``; default: name).
    views: the view modes the task supports (1 = single image, 2 = CC + MLO pair, 4 = CC +
        MLO of both breasts of a study, per-breast outputs).
    defaults: TrainConfig values of the task's paper where the user gives none
        (epochs, size, lr, patience, views, schedule: the lr schedule, a name of
        :data:`mammotrain.schedule.SCHEDULES`).

    Class attributes of a kind: ``kind`` ('classification' or 'detection'), ``loss``
    ('cross_entropy' or 'detr'), ``selects`` (the ``--select`` values it accepts),
    ``square_only`` (non-square inputs refused), ``draws_predictions`` (``predict`` draws a
    figure of its predictions), ``onnx_outputs`` (output names of the exported graph).
    """

    kind: ClassVar[str] = ""
    loss: ClassVar[str] = ""
    selects: ClassVar[tuple[str, ...]] = ("auc", "loss", "last")
    square_only: ClassVar[bool] = False
    draws_predictions: ClassVar[bool] = False
    onnx_outputs: ClassVar[tuple[str, ...]] = ()

    name: str
    classes: tuple[str, ...]
    description: str
    activation: str = "softmax"
    metrics: tuple[str, ...] = BINARY_METRICS
    label_from: str | None = None
    views: tuple[int, ...] = (1, 2, 4)
    defaults: tuple[tuple[str, Any], ...] = CLASSIFICATION_DEFAULTS

    def __post_init__(self) -> None:
        if self.label_rule not in LABEL_TASKS:
            raise ValueError(f"task {self.name}: no label rule {self.label_rule!r} in "
                             f"mammoprep.labels.TASKS ({', '.join(LABEL_TASKS)})")
        if len(self.classes) != self.num_classes:
            raise ValueError(f"task {self.name}: {len(self.classes)} class names for the "
                             f"{self.num_classes} classes of rule {self.label_rule}")

    # ------------------------------------------------------------------------ labels
    def default(self, name: str, fallback: Any = None) -> Any:
        return dict(self.defaults).get(name, fallback)

    @property
    def num_classes(self) -> int:
        """The label rule's class count (:data:`mammoprep.labels.TASKS`)."""
        return LABEL_TASKS[self.label_rule]

    @property
    def binary(self) -> bool:
        return self.num_classes == 2

    @property
    def label_rule(self) -> str:
        """Name of the rule in :func:`mammoprep.labels.task_labels` that gives the label."""
        return self.label_from or self.name

    @property
    def label_column(self) -> str:
        return f"label_{self.label_rule}"

    def metric_label(self, metric: str) -> str:
        """Column heading in reports: 'AUC' for binary tasks, 'macro-AUC' for multi-class."""
        base = _METRIC_LABELS[metric]
        if not self.binary and metric in ("auc", "f1", "precision", "recall", "specificity"):
            return f"macro-{base}"
        return base

    def label(self, row: Mapping[str, Any]) -> int | None:
        """Class index of a manifest row (``images.parquet``), None if excluded from the task.

        Uses the row's ``label_<task>`` column; rows without it (older manifests) go through
        :func:`mammoprep.labels.task_labels` on the raw pathology/BI-RADS/density columns.
        """
        if self.label_column in row:
            v = row[self.label_column]
        else:
            v = task_labels(row.get("pathology"), row.get("birads"),
                            row.get("density"))[self.label_rule]
        if v is None:
            return None
        v = int(v)
        if not 0 <= v < self.num_classes:
            raise ValueError(f"{self.label_column} = {v} for key {row.get('key')!r}: outside "
                             f"0..{self.num_classes - 1} ({', '.join(self.classes)})")
        return v

    # ------------------------------------------------------------------- model, loss
    def build_model(self, cfg) -> tuple[torch.nn.Module, list]:
        """The model of a resolved TrainConfig and the load reports of ``cfg.pretrained``."""
        raise NotImplementedError

    def make_criterion(self, size: int, det_lambda: float = 1.0):
        """The trainer's objective: ``(outputs, batch) -> {'loss': scalar, ...named parts}``.

        outputs: the model's output (logits ``[B, K]``, or the detector's dict); batch: the
        loader's batch (``label`` int64 ``[B]``, ``boxes`` pixel xyxy at ``size``)."""
        raise NotImplementedError

    def logits(self, outputs):
        """The image-level logits of a model's output (the detector returns a dict)."""
        return outputs["logits"] if isinstance(outputs, dict) else outputs

    def activate(self, logits, temperature: float = 1.0):
        """Logits ``[B, K]`` (softmax) or ``[B, 1]`` (sigmoid) -> probabilities ``[B, K]``
        (float32) of ``logits / temperature`` (temperature scaling,
        :mod:`mammotrain.calibration`; 1 = the model's own probabilities)."""
        logits = logits.float() / float(temperature)
        if self.activation == "softmax":
            return logits.softmax(dim=-1)
        if self.activation == "sigmoid":
            p = logits.sigmoid().reshape(-1, 1)
            return torch.cat([1.0 - p, p], dim=1)
        raise ValueError(f"task {self.name}: unknown activation {self.activation!r}")

    # --------------------------------------------------------------- post-processing
    def new_outputs(self) -> dict[str, list]:
        """Empty per-example lists the task adds to a prediction (:meth:`collect`)."""
        return {}

    def collect(self, acc: dict[str, list], outputs, batch: dict[str, Any], cfg,
                prep) -> None:
        """Append a batch's task-specific predictions to ``acc`` (of :meth:`new_outputs`)."""

    def compute_metrics(self, pred: dict[str, Any]) -> dict[str, float]:
        """Metrics of a prediction (``label``, ``probs`` and the task's own outputs)."""
        return classification_metrics(pred["label"], pred["probs"])

    def row_fields(self, pred: dict[str, Any], i: int) -> dict[str, Any]:
        """The task's columns of prediction row ``i`` (see :meth:`prediction_columns`)."""
        return {}

    def prediction_columns(self) -> list[tuple[str, Any]]:
        """(name, pyarrow type) of the task's extra ``predictions.parquet`` columns."""
        return []

    # ------------------------------------------------------------------------ figures
    def fold_figure(self, model, cfg, examples: Sequence, rows: dict[str, dict[str, Any]],
                    out: Path, device) -> None:
        """The figure of a few test examples of a fold, in fold folder ``out``."""

    def prediction_figure(self, cfg, examples: Sequence, rows: dict[str, dict[str, Any]],
                          path: Path, batch: dict[str, Any] | None = None) -> None:
        """The figure ``predict`` draws of its first predictions (none by default)."""

    # ------------------------------------------------------------------------- export
    def export_views(self, cfg) -> int:
        """Views of the exported graph's input ``[B, V, 1, H, W]``."""
        return cfg.views

    def onnx_forward(self, outputs, temperature: float = 1.0) -> tuple[torch.Tensor, ...]:
        """The model's output as the exported graph's outputs (:attr:`onnx_outputs`);
        probabilities of ``logits / temperature``."""
        raise NotImplementedError
