"""Four-view exams (``--views 4``) planned from the shard manifest: CC and MLO of both
breasts of one study, with the two-view pairing's rules per breast. The model is
:mod:`mammotrain.fourview`.

A shard sample is one breast of one study (key ``STUDY_L`` / ``STUDY_R``)::

    images.parquet --two-view rule per breast--> breasts (CC + MLO, label or none)
                   --group by (patient, study)--> exams: (left breast, right breast)

* A breast is *imaged* when it has CC and MLO, exactly the two-view pairing's rule: a breast
  with one view is not paired there (excluded, ``one_view``) and is a **missing side**
  here. A missing side (one view, or the breast not imaged at all) is fed as zero images
  and masked: no loss, no prediction row, no context for the other side.
* A breast's label is the two-view label; a breast the two-view rule excludes for its
  label (null, conflicting views, one view labelled) is **unlabelled**: its images are used
  (as the other side's context), its output is masked from the loss and from the metrics.
* An exam is kept when at least one breast is labelled (training) or imaged (``predict``);
  excluded exams are counted per reason (``no_breast``, ``label_null``, ``no_fold``).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import replace
from typing import Any, Sequence

from .data import VIEWS, Example, Labeller, PlanReport, plan_examples

SIDES = ("L", "R")
#: the four input slots of an exam: (side, view)
SLOTS = tuple((s, v) for s in SIDES for v in VIEWS)


def _identity(rows: Sequence[dict[str, Any]]) -> dict[str, tuple[str, str, str]]:
    """key -> (patient, study, laterality L/R/''); study defaults to the patient (as
    mammoprep writes it), laterality to the key's ``_L`` / ``_R`` suffix."""
    out: dict[str, tuple[str, str, str]] = {}
    for r in rows:
        if r["key"] in out:
            continue
        lat = str(r.get("laterality") or r["key"].rsplit("_", 1)[-1]).upper()
        out[r["key"]] = (str(r["patient"]), str(r.get("study") or r["patient"]),
                         lat if lat in SIDES else "")
    return out


def _exam(uid: str, sides: list[Example | None]) -> Example:
    present = [s for s in sides if s is not None]
    first = present[0]
    splits = {s.split for s in present}
    hashes = tuple(h for s in sides for h in (s.sop_uid_hashes if s else (None, None)))
    return Example(uid, uid, VIEWS * 2, max(s.label for s in present), first.patient,
                   first.fold, first.shard, first.energy, first.manufacturer, hashes,
                   splits.pop() if len(splits) == 1 else None, tuple(sides))


def plan_exams(rows: Sequence[dict[str, Any]], task: Labeller, unlabeled: bool = False,
               need_fold: bool = True) -> tuple[list[Example], PlanReport]:
    """Manifest rows -> four-view exams of ``task`` sorted by uid (the study pseudonym), and
    the plan report (unit 'exam'; ``masked``: breasts of kept exams outside the loss).

    unlabeled / need_fold: as :func:`mammotrain.data.plan_examples` (``predict``: every
    exam with an imaged breast, unlabelled breasts kept with label -1)."""
    labelled, _ = plan_examples(rows, task, 2, need_fold=False)
    imaged, _ = plan_examples(rows, task, 2, unlabeled=True, need_fold=False)
    label_of = {e.uid: e.label for e in labelled}
    breasts = {e.uid: e for e in imaged}
    exams: dict[tuple[str, str], dict[str, str]] = defaultdict(dict)
    excluded: Counter = Counter()
    masked: Counter = Counter()
    for key, (patient, study, lat) in sorted(_identity(rows).items()):
        if lat:
            exams[(patient, study)][lat] = key
        else:
            masked["no_laterality"] += 1
    studies = Counter(study for _, study in exams)
    out: list[Example] = []
    for (patient, study), keys in sorted(exams.items()):
        sides: list[Example | None] = []
        miss: Counter = Counter()
        for lat in SIDES:
            b = breasts.get(keys.get(lat, ""))
            if b is None:
                sides.append(None)
                miss["side_missing"] += 1
                continue
            sides.append(replace(b, label=label_of.get(b.uid, -1)))
            miss["side_unlabelled"] += b.uid not in label_of
        present = [s for s in sides if s is not None]
        if not present:
            excluded["no_breast"] += 1
        elif not unlabeled and all(s.label < 0 for s in present):
            excluded["label_null"] += 1
        elif need_fold and not unlabeled and present[0].fold is None:
            excluded["no_fold"] += 1
        else:
            uid = study if studies[study] == 1 else f"{study}_{patient}"
            out.append(_exam(uid, sides))
            masked.update(miss)
    counts = Counter(s.label for e in out for s in e.sides if s is not None and s.label >= 0)
    report = PlanReport(task.name, 4, "exam", len(rows), len(exams), len(out),
                        dict(excluded), dict(counts), masked=dict(masked))
    return sorted(out, key=lambda e: e.uid), report
