"""Tasks as data: one :class:`TaskSpec` per task, read by the one trainer.

The label rule of every task lives in :func:`mammoprep.labels.task_labels` (the shards'
``label_<task>`` columns are written with it); a spec names the manifest column and falls
back to that rule when a manifest lacks the column. Adding a task = registering a spec.

Every task is trained as a ``num_classes``-way softmax classifier with cross-entropy, binary
tasks included (two logits); the score of a binary task is the probability of class 1.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from mammoprep.labels import TASKS as LABEL_TASKS
from mammoprep.labels import task_labels

BINARY_METRICS = ("acc", "auc", "precision", "recall", "f1", "specificity")
MULTICLASS_METRICS = ("acc", "auc", "precision", "recall", "f1", "specificity")


class UnknownTaskError(ValueError):
    """A task name that is not in the registry (the message lists the known ones)."""


@dataclass(frozen=True)
class TaskSpec:
    """One classification task.

    name: registry key (also the ``label_<name>`` manifest column).
    classes: class names, index = label value.
    loss: 'cross_entropy' (logits ``[B, K]``, integer targets ``[B]``).
    activation: 'softmax' (logits -> probabilities ``[B, K]``).
    metrics: metric names reported per fold (see :mod:`mammotrain.metrics`); for tasks with
        more than two classes AUC, precision, recall, F1 and specificity are macro averages.
    """

    name: str
    classes: tuple[str, ...]
    description: str
    loss: str = "cross_entropy"
    activation: str = "softmax"
    metrics: tuple[str, ...] = BINARY_METRICS

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def binary(self) -> bool:
        return self.num_classes == 2

    @property
    def label_column(self) -> str:
        return f"label_{self.name}"

    def metric_label(self, metric: str) -> str:
        """Column heading in reports: 'AUC' for binary tasks, 'macro-AUC' for multi-class."""
        base = {"acc": "ACC", "auc": "AUC", "precision": "Precision", "recall": "Recall",
                "f1": "F1", "specificity": "Specificity"}[metric]
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
            v = task_labels(row.get("pathology"), row.get("birads"), row.get("density"))[self.name]
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
        raise ValueError(f"task {self.name}: unknown loss {self.loss!r}")

    def activate(self, logits):
        """Logits ``[B, K]`` -> probabilities ``[B, K]`` (float32)."""
        if self.activation == "softmax":
            return logits.float().softmax(dim=-1)
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
             "benign vs malignant; BI-RADS 0 excluded; malignant patients: malignant breast only"),
    TaskSpec("birads2", ("BI-RADS 1-3", "BI-RADS 4-6"), "BI-RADS 1-3 vs 4-6; BI-RADS 0 excluded"),
    TaskSpec("birads3", ("BI-RADS 1-2", "BI-RADS 3-4", "BI-RADS 5-6"),
             "BI-RADS 1-2 / 3-4 / 5-6; BI-RADS 0 excluded", metrics=MULTICLASS_METRICS),
    TaskSpec("density", ("A", "B", "C", "D"), "ACR density A-D; BI-RADS 0 included",
             metrics=MULTICLASS_METRICS),
):
    register_task(_spec)

# the label rules (mammoprep.labels.TASKS) and the registry must agree on the classes
for _name, _spec in _REGISTRY.items():
    if LABEL_TASKS.get(_name) != _spec.num_classes:
        raise RuntimeError(f"task {_name}: {_spec.num_classes} classes here, "
                           f"{LABEL_TASKS.get(_name)} in mammoprep.labels.TASKS")
