"""mammotrain.tasks: the registry agrees with mammoprep.labels (the one label rule)."""

from __future__ import annotations

import pytest
import torch

from mammoprep.labels import TASKS, task_labels
from mammotrain.tasks import UnknownTaskError, get_task, task_names


def test_registry_matches_label_rules():
    assert set(task_names()) == set(TASKS)
    for name in task_names():
        spec = get_task(name)
        assert spec.num_classes == TASKS[name]
        assert spec.label_column == f"label_{name}"


@pytest.mark.parametrize("raw", [("malignant", "5", "C"), ("benign", "2", "A"),
                                 ("benign", "0", "B"), (None, "4", None), ("malignant", None, "D")])
def test_label_of_a_row_follows_task_labels(raw):
    pathology, birads, density = raw
    expected = task_labels(pathology, birads, density)
    row = {"pathology": pathology, "birads": birads, "density": density}
    with_cols = {**row, **{f"label_{k}": v for k, v in expected.items()}}
    for name in task_names():
        spec = get_task(name)
        assert spec.label(row) == expected[name]        # rule (no label columns)
        assert spec.label(with_cols) == expected[name]  # manifest column


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
