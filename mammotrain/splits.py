"""The publisher's official train/test split as an evaluation mode (``--split official``).

Some archives publish a split (CBIS-DDSM's Training/Test tables, VinDr-Mammo's ``split``
column; a generic label table's ``split`` column); ``mammoprep shard`` writes it to the
manifest's ``split`` column (``train``, ``test`` or null). :func:`official_folds` turns it
into one test fold that :func:`mammotrain.data.split_examples` handles like any other::

    split 'test'  -> fold OFFICIAL_TEST_FOLD (0): the test set, evaluated once
    split 'train' -> fold 1: training; validation = a fraction of its patients
    split null    -> excluded, counted as ``no_split``

A patient with examples in both parts (CBIS-DDSM and VinDr have none; a user's table might)
keeps its test examples; its training examples are dropped, counted as ``train_of_test_patient``
(the patients in :attr:`mammotrain.data.PlanReport.patients_in_both`), so no test patient
is trained or selected on.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from typing import TYPE_CHECKING, Sequence

if TYPE_CHECKING:
    from .data import Example, PlanReport

#: ``--split``: 'kfold' (the manifest's patient-level folds, or ``--split-by`` groups) or
#: 'official' (the publisher's train/test split: one test fold)
SPLITS = ("kfold", "official")
OFFICIAL_TEST_FOLD = 0
OFFICIAL_TRAIN_FOLD = 1
_PARTS = {"train": "train", "training": "train", "test": "test"}

NO_SPLIT_HINT = ("shard with a label source that publishes one (cbis-ddsm:, vindr:, or a "
                 "csv: table with a split column), or use the default patient-level k-fold "
                 "(leave out --split official)")


def official_part(value: str | None) -> str | None:
    """The manifest's ``split`` value -> 'train', 'test' or None (null / empty)."""
    if value is None or str(value).strip() == "":
        return None
    part = _PARTS.get(str(value).strip().lower())
    if part is None:
        raise ValueError(f"split value {value!r} is neither train nor test")
    return part


def official_folds(examples: Sequence["Example"], plan: "PlanReport") -> list["Example"]:
    """Examples of the official split with ``fold`` = 0 (test part) or 1 (train part).

    ``plan`` (filled in): ``split`` 'official', ``fold_names`` ``{0: 'test'}``, excluded
    ``no_split`` (no official split) and ``train_of_test_patient`` (training examples of a
    patient who also has test examples: dropped), ``patients_in_both``, and the examples /
    class counts of what is kept. Raises ValueError when no example has a split (naming
    what to do) or when one part is empty."""
    parts = [official_part(e.split) for e in examples]
    if all(p is None for p in parts):
        raise ValueError(f"--split official: none of the {len(examples)} {plan.unit}s has an "
                         f"official split (manifest column split empty or absent); "
                         f"{NO_SPLIT_HINT}")
    test_patients = {e.patient for e, p in zip(examples, parts) if p == "test"}
    both = {e.patient for e, p in zip(examples, parts) if p == "train"} & test_patients
    kept, excluded = [], Counter()
    for e, p in zip(examples, parts):
        if p is None:
            excluded["no_split"] += 1
        elif p == "train" and e.patient in both:
            excluded["train_of_test_patient"] += 1
        else:
            fold = OFFICIAL_TEST_FOLD if p == "test" else OFFICIAL_TRAIN_FOLD
            kept.append(replace(e, fold=fold))
    counts = Counter(e.fold for e in kept)
    if not counts[OFFICIAL_TEST_FOLD] or not counts[OFFICIAL_TRAIN_FOLD]:
        empty = "test" if not counts[OFFICIAL_TEST_FOLD] else "train"
        raise ValueError(f"--split official: the official {empty} part has no {plan.unit} "
                         f"of task {plan.task} ({counts[OFFICIAL_TEST_FOLD]} test, "
                         f"{counts[OFFICIAL_TRAIN_FOLD]} train, {excluded['no_split']} "
                         f"without a split); {NO_SPLIT_HINT}")
    plan.split = "official"
    plan.fold_names = {OFFICIAL_TEST_FOLD: "test"}
    plan.patients_in_both = len(both)
    plan.excluded.update({k: v for k, v in excluded.items() if v})
    plan.examples = len(kept)
    plan.class_counts = dict(Counter(e.label for e in kept))
    return kept


def split_text(plan: dict, label: bool = True) -> str:
    """What a run's test set was (``plan``: :meth:`PlanReport.to_dict`), for logs and
    reports, starting 'official split: ' unless ``label`` is False; '' for k-fold runs."""
    if plan.get("split") != "official":
        return ""
    text = ("official split: " if label else "") + (
        "trained on the publisher's train part, tested once on its test part")
    n = int(plan.get("patients_in_both") or 0)
    if n:
        dropped = (plan.get("excluded") or {}).get("train_of_test_patient", 0)
        text += (f"; {n} patient{'s' if n > 1 else ''} in both parts: {dropped} training "
                 f"{plan.get('unit', 'example')}{'s' if dropped != 1 else ''} dropped")
    return text
