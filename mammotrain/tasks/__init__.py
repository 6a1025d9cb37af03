"""Tasks as data: one :class:`~mammotrain.tasks.base.Task` per task in one registry
(:class:`mammoprep.registry.Registry`), read by the one trainer.

The label rule of every task lives in :func:`mammoprep.labels.task_labels` (the shards'
``label_<task>`` columns are written with it) and its class count in
:data:`mammoprep.labels.TASKS`: every rule there is a classification task here
(:mod:`~mammotrain.tasks.classification`); the ``detection`` task
(:mod:`~mammotrain.tasks.detection`) reuses the diagnosis rule. Adding a task = registering
a :class:`Task`.
"""

from __future__ import annotations

import torch

from mammoprep.labels import TASKS as LABEL_TASKS
from mammoprep.registry import Registry

from .base import BINARY_METRICS, MULTICLASS_METRICS, Task, UnknownTaskError
from .classification import ClassificationTask
from .detection import DetectionTask

__all__ = ["Task", "ClassificationTask", "DetectionTask", "UnknownTaskError", "TASKS",
           "register_task", "get_task", "task_names", "build_task_model"]

TASKS: Registry[Task] = Registry(
    "task", unknown=lambda name, known: UnknownTaskError(
        f"unknown task {name!r}; known tasks: {', '.join(known)}"))


def register_task(task: Task) -> Task:
    """Add a task to the registry (its name must be new)."""
    return TASKS.register(task.name, task)


def task_names() -> list[str]:
    return TASKS.names()


def get_task(name: str) -> Task:
    """The task ``name``; raises :class:`UnknownTaskError` naming the known tasks."""
    return TASKS.get(name)


def build_task_model(cfg) -> tuple[torch.nn.Module, list]:
    """The model of a resolved TrainConfig (its task's :meth:`Task.build_model`) and the
    load reports of ``cfg.pretrained``."""
    return get_task(cfg.task).build_model(cfg)


#: label rule -> (class names, description) of the classification tasks
CLASSIFICATION = {
    "diagnosis": (("benign", "malignant"),
                  "benign vs malignant; the label source's rule (BI-RADS 0 excluded)"),
    "birads2": (("BI-RADS 1-3", "BI-RADS 4-6"), "BI-RADS 1-3 vs 4-6; BI-RADS 0 excluded"),
    "birads3": (("BI-RADS 1-2", "BI-RADS 3-4", "BI-RADS 5-6"),
                "BI-RADS 1-2 / 3-4 / 5-6; BI-RADS 0 excluded"),
    "density": (("A", "B", "C", "D"), "ACR density A-D; BI-RADS 0 included"),
}

for _rule, _n in LABEL_TASKS.items():
    _classes, _description = CLASSIFICATION[_rule]
    register_task(ClassificationTask(_rule, _classes, _description,
                                     metrics=BINARY_METRICS if _n == 2 else MULTICLASS_METRICS))
register_task(DetectionTask("detection", CLASSIFICATION["diagnosis"][0],
                            "multi-task DETR: image-level malignancy (diagnosis rule) + "
                            "lesion boxes", label_from="diagnosis"))
