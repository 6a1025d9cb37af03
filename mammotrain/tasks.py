"""Tasks as data: one :class:`TaskSpec` per task, read by the one trainer.

The label rule of every task lives in :func:`mammoprep.labels.task_labels` (the shards'
``label_<task>`` columns are written with it); a spec names the manifest column and falls
back to that rule when a manifest lacks the column. Adding a task = registering a spec.

Classification tasks (``kind='classification'``) are trained as ``num_classes``-way softmax
classifiers with cross-entropy, binary tasks included (two logits); the score of a binary task
is the probability of class 1. The ``detection`` task (``kind='detection'``) is the
multi-task DETR (:mod:`mammotrain.detr`): the diagnosis label as image-level target (one
logit, sigmoid focal loss; reported as the two probabilities ``[1 - p, p]``) plus the lesion
boxes of the shard JSON; single-view only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from mammoprep.labels import TASKS as LABEL_TASKS
from mammoprep.labels import task_labels

BINARY_METRICS = ("acc", "auc", "precision", "recall", "f1", "specificity")
MULTICLASS_METRICS = ("acc", "auc", "precision", "recall", "f1", "specificity")
DETECTION_TASK_METRICS = ("acc", "auc", "recall", "specificity", "f1",
                          "map50", "map25", "recall25", "miou")
_METRIC_LABELS = {"acc": "ACC", "auc": "AUC", "precision": "Precision", "recall": "Recall",
                  "f1": "F1", "specificity": "Specificity", "map50": "mAP@.5",
                  "map25": "mAP@.25", "recall25": "R@.25", "miou": "mIoU"}


class UnknownTaskError(ValueError):
    """A task name that is not in the registry (the message lists the known ones)."""


@dataclass(frozen=True)
class TaskSpec:
    """One task.

    name: registry key.
    classes: class names, index = label value.
    kind: 'classification' (:class:`~mammotrain.models.MultiViewClassifier`) or 'detection'
        (:class:`~mammotrain.detr.MultiTaskDETR`).
    loss: 'cross_entropy' (logits ``[B, K]``, integer targets ``[B]``) or 'detr' (focal loss
        of the image logit + matched box losses, :class:`~mammotrain.detr_loss.DetrCriterion`).
    activation: 'softmax' (logits -> probabilities ``[B, K]``) or 'sigmoid' (one logit
        ``[B, 1]`` -> ``[B, 2]`` = ``[1 - p, p]``).
    metrics: metric names reported per fold (:mod:`mammotrain.metrics`,
        :mod:`mammotrain.detection_metrics`); for tasks with more than two classes AUC,
        precision, recall, F1 and specificity are macro averages.
    label_from: the label rule used (manifest column ``label_<label_from>``; default: name).
    views: the view modes the task supports (1 = single image, 2 = CC + MLO pair).
    defaults: TrainConfig values of the task's paper where the user gives none
        (epochs, size, lr, patience, views, schedule: the lr schedule, a name of
        :data:`mammotrain.train.SCHEDULES`).
    """

    name: str
    classes: tuple[str, ...]
    description: str
    loss: str = "cross_entropy"
    activation: str = "softmax"
    metrics: tuple[str, ...] = BINARY_METRICS
    kind: str = "classification"
    label_from: str | None = None
    views: tuple[int, ...] = (1, 2)
    defaults: tuple[tuple[str, Any], ...] = (("epochs", 100), ("size", 224), ("views", 2),
                                             ("schedule", "step"))

    def default(self, name: str, fallback: Any = None) -> Any:
        return dict(self.defaults).get(name, fallback)

    @property
    def detection(self) -> bool:
        return self.kind == "detection"

    @property
    def num_classes(self) -> int:
        return len(self.classes)

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
        """Column heading in reports: 'AUC' for binary tasks, 'macro-AUC' for multi-class,
        'Sensitivity' for the detector's recall (the paper's name)."""
        if self.detection and metric == "recall":
            return "Sensitivity"
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

    def make_loss(self, weight=None):
        """The training criterion: ``(logits [B, K], target int64 [B]) -> scalar``."""
        import torch.nn as nn

        if self.loss == "cross_entropy":
            return nn.CrossEntropyLoss(weight=weight)
        raise ValueError(f"task {self.name}: no plain loss for {self.loss!r}; "
                         "use make_criterion")

    def make_criterion(self, size: int, det_lambda: float = 1.0):
        """The trainer's objective: ``(outputs, batch) -> {'loss': scalar, ...named parts}``.

        outputs: the model's output (logits ``[B, K]``, or the detector's dict); batch: the
        loader's batch (``label`` int64 ``[B]``, ``boxes`` pixel xyxy at ``size``)."""
        if self.loss == "detr":
            from .detr_loss import DetrCriterion, LossWeights

            crit = DetrCriterion(LossWeights(det=det_lambda))
            return lambda out, batch: crit(out, batch, size)
        ce = self.make_loss()
        return lambda out, batch: {"loss": ce(out.float(), batch["label"].to(out.device))}

    def logits(self, outputs):
        """The image-level logits of a model's output (the detector returns a dict)."""
        return outputs["logits"] if isinstance(outputs, dict) else outputs

    def activate(self, logits):
        """Logits ``[B, K]`` (softmax) or ``[B, 1]`` (sigmoid) -> probabilities ``[B, K]``
        (float32)."""
        if self.activation == "softmax":
            return logits.float().softmax(dim=-1)
        if self.activation == "sigmoid":
            import torch

            p = logits.float().sigmoid().reshape(-1, 1)
            return torch.cat([1.0 - p, p], dim=1)
        raise ValueError(f"task {self.name}: unknown activation {self.activation!r}")


_REGISTRY: dict[str, TaskSpec] = {}


def register_task(spec: TaskSpec) -> TaskSpec:
    """Add a task to the registry (its name must be new)."""
    if spec.name in _REGISTRY:
        raise ValueError(f"task {spec.name!r} is already registered")
    _REGISTRY[spec.name] = spec
    return spec


def task_names() -> list[str]:
    return list(_REGISTRY)


def get_task(name: str) -> TaskSpec:
    """The spec of ``name``; raises :class:`UnknownTaskError` naming the known tasks."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UnknownTaskError(f"unknown task {name!r}; known tasks: "
                               f"{', '.join(_REGISTRY)}") from None


for _spec in (
    TaskSpec("diagnosis", ("benign", "malignant"),
             "benign vs malignant; the label source's rule (BI-RADS 0 excluded)"),
    TaskSpec("birads2", ("BI-RADS 1-3", "BI-RADS 4-6"), "BI-RADS 1-3 vs 4-6; BI-RADS 0 excluded"),
    TaskSpec("birads3", ("BI-RADS 1-2", "BI-RADS 3-4", "BI-RADS 5-6"),
             "BI-RADS 1-2 / 3-4 / 5-6; BI-RADS 0 excluded", metrics=MULTICLASS_METRICS),
    TaskSpec("density", ("A", "B", "C", "D"), "ACR density A-D; BI-RADS 0 included",
             metrics=MULTICLASS_METRICS),
    TaskSpec("detection", ("benign", "malignant"),
             "multi-task DETR: image-level malignancy (diagnosis rule) + lesion boxes",
             loss="detr", activation="sigmoid", metrics=DETECTION_TASK_METRICS,
             kind="detection", label_from="diagnosis", views=(1,),
             defaults=(("epochs", 400), ("size", 512), ("views", 1), ("lr", 1e-4),
                       ("patience", 150), ("schedule", "constant"))),
):
    register_task(_spec)

# the label rules (mammoprep.labels.TASKS) and the registry must agree on the classes
for _name, _spec in _REGISTRY.items():
    if LABEL_TASKS.get(_spec.label_rule) != _spec.num_classes:
        raise RuntimeError(f"task {_name}: {_spec.num_classes} classes here, "
                           f"{LABEL_TASKS.get(_spec.label_rule)} in mammoprep.labels.TASKS")
