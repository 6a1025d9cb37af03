"""mammotrain.tasks: the registry agrees with mammoprep.labels (the one label rule)."""

from __future__ import annotations

import pytest
import torch

from mammoprep.labels import TASKS, task_labels
from mammotrain.tasks import UnknownTaskError, get_task, task_names


def test_registry_matches_label_rules():
    classification = {n for n in task_names() if get_task(n).kind == "classification"}
    assert classification == set(TASKS)
    for name in task_names():
        spec = get_task(name)
        assert spec.num_classes == TASKS[spec.label_rule]
        assert spec.label_column == f"label_{spec.label_rule}"
    det = get_task("detection")
    assert det.detection and det.label_rule == "diagnosis" and det.views == (1,)
    assert det.default("size") == 512 and det.default("patience") == 150


@pytest.mark.parametrize("raw", [("malignant", "5", "C"), ("benign", "2", "A"),
                                 ("benign", "0", "B"), (None, "4", None), ("malignant", None, "D")])
def test_label_of_a_row_follows_task_labels(raw):
    pathology, birads, density = raw
    expected = task_labels(pathology, birads, density)
    row = {"pathology": pathology, "birads": birads, "density": density}
    with_cols = {**row, **{f"label_{k}": v for k, v in expected.items()}}
    for name in task_names():
        spec = get_task(name)
        assert spec.label(row) == expected[spec.label_rule]        # rule (no label columns)
        assert spec.label(with_cols) == expected[spec.label_rule]  # manifest column


def test_bad_label_and_unknown_task():
    with pytest.raises(ValueError, match="label_density = 7"):
        get_task("density").label({"key": "k", "label_density": 7})
    with pytest.raises(UnknownTaskError, match="known tasks: diagnosis"):
        get_task("cancer")


def test_loss_activation_and_names():
    spec = get_task("birads3")
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.0, 0.0, 0.0]])
    p = spec.activate(logits)
    assert p.shape == (2, 3) and torch.allclose(p.sum(1), torch.ones(2))
    loss = spec.make_loss()(logits, torch.tensor([0, 2]))
    assert loss.ndim == 0 and loss > 0
    assert spec.metric_label("auc") == "macro-AUC" and spec.metric_label("f1") == "macro-F1"
    assert get_task("diagnosis").metric_label("auc") == "AUC"
    det = get_task("detection")
    p = det.activate(torch.tensor([[0.0], [2.0]]))
    assert p.shape == (2, 2) and torch.allclose(p[:, 1], torch.sigmoid(torch.tensor([0.0, 2.0])))
    assert det.metric_label("recall") == "Sensitivity" and det.metric_label("map25") == "mAP@.25"
