"""mammotrain.tasks: the registry agrees with mammoprep.labels (the one label rule)."""

from __future__ import annotations

import pytest
import torch

from mammoprep.labels import TASKS
from mammotrain.tasks import UnknownTaskError, get_task, task_names


def test_registry_matches_label_rules():
    classification = {n for n in task_names() if get_task(n).kind == "classification"}
    assert classification == set(TASKS)
    for name in task_names():
        spec = get_task(name)
        assert spec.num_classes == TASKS[spec.label_rule]
        assert spec.label_column == f"label_{spec.label_rule}"
    det = get_task("detection")
    assert det.kind == "detection" and det.label_rule == "diagnosis" and det.views == (1,)
    assert det.default("size") == 512 and det.default("patience") == 150


# (pathology, birads, density) -> hand-written classes per rule of the generic table
# (`mammoprep shard --help`): diagnosis (benign 0 / malignant 1 from the pathology; BI-RADS 0
# excluded, a missing BI-RADS is not), birads2 (1-3 / 4-6), birads3 (1-2 / 3-4 /
# 5-6), density (A-D; BI-RADS 0 kept)
LABEL_TABLE = [
    (("malignant", "5", "C"), {"diagnosis": 1, "birads2": 1, "birads3": 2, "density": 2}),
    (("benign", "2", "A"), {"diagnosis": 0, "birads2": 0, "birads3": 0, "density": 0}),
    (("benign", "3", "D"), {"diagnosis": 0, "birads2": 0, "birads3": 1, "density": 3}),
    (("benign", "0", "B"), {"diagnosis": None, "birads2": None, "birads3": None, "density": 1}),
    ((None, "4", None), {"diagnosis": None, "birads2": 1, "birads3": 1, "density": None}),
    (("malignant", None, "D"), {"diagnosis": 1, "birads2": None, "birads3": None,
                                "density": 3}),
]


@pytest.mark.parametrize("raw,expected", LABEL_TABLE)
def test_label_of_a_row_follows_the_documented_rules(raw, expected):
    pathology, birads, density = raw
    row = {"pathology": pathology, "birads": birads, "density": density}
    with_cols = {**row, **{f"label_{k}": v for k, v in expected.items()}}
    for name in task_names():
        spec = get_task(name)
        assert spec.label(row) == expected[spec.label_rule], name      # rule (no columns)
        assert spec.label(with_cols) == expected[spec.label_rule], name  # manifest column
    # the manifest column wins over the raw values (it is what shard wrote)
    flipped = {**row, "label_density": 0}
    assert get_task("density").label(flipped) == 0


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
