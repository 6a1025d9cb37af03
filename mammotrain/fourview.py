"""Exam-level four-view model (``--views 4``): CC and MLO of both breasts of one study.

Planning (:func:`plan_exams`), from the same shards as single- and two-view (a shard sample
is one breast of one study, key ``STUDY_L`` / ``STUDY_R``)::

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

Model (:class:`FourViewClassifier`): the four images ``[B, 4, 1, H, W]`` (left CC, left MLO,
right CC, right MLO) go through the shared backbone (``--independent``: one backbone for CC
and one for MLO, shared by the sides) to features ``[B, 4, F]``; per side the CC and MLO
features are concatenated (``[B, 2, 2F]``), the other side's (zeros where that side is
missing) appended as context (``[B, 2, 4F]``), and one head shared by both sides gives
logits ``[B, 2, K]`` (left, right). Evaluation rows are per breast (uid = the breast's key,
as in two-view), so four-view results sit beside single- and two-view results.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import replace
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn as nn

from .data import VIEWS, Example, Labeller, PlanReport, plan_examples
from .models import MultiViewClassifier

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


def side_present(x: torch.Tensor) -> torch.Tensor:
    """Exam images ``[B, 4, 1, H, W]`` -> bool ``[B, 2]`` (left, right): a side is present
    unless both its images are all zero (how the loader feeds a missing side)."""
    return x.detach().flatten(2).amax(2).reshape(x.shape[0], 2, 2).amax(2) > 0


class FourViewClassifier(MultiViewClassifier):
    """``x`` float ``[B, 4, 1, H, W]`` in [0, 1] (slots :data:`SLOTS`: left CC, left MLO,
    right CC, right MLO; a missing side all zeros) -> logits float ``[B, 2, K]`` (left,
    right breast).

    shared: one backbone for the four images (default) or one for the CC and one for the
    MLO images (both sides); context: each side's head input also holds the other side's
    features (``[B, 2, 4F]``, zeros where the other side is missing), else only its own
    (``[B, 2, 2F]``). The head (hidden/dropout as :class:`MultiViewClassifier`) is shared
    by the sides."""

    def __init__(self, backbone: str, num_classes: int, shared: bool = True,
                 in_chans: int = 3, img_size: int | None = None, hidden: int = 128,
                 dropout: float = 0.3, global_pool: str | None = None,
                 pretrained: str | Path | None = None, context: bool = True):
        super().__init__(backbone, num_classes, 2, shared, in_chans, img_size, hidden,
                         dropout, global_pool, pretrained)
        self.views, self.context = 4, bool(context)
        width = (2 if self.context else 1) * 2 * self.feature_dim
        self.head = nn.Sequential(nn.Linear(width, hidden), nn.ReLU(inplace=True),
                                  nn.Dropout(dropout), nn.Linear(hidden, num_classes))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, 4, 1, H, W]`` -> per-image features ``[B, 4, F]`` (slot order kept)."""
        if x.ndim != 5 or x.shape[1] != 4:
            raise ValueError(f"expected exam input [B, 4, 1, H, W] (left CC, left MLO, right "
                             f"CC, right MLO), got {tuple(x.shape)}")
        b = x.shape[0]
        if self.shared:
            return self.embed(0, x.flatten(0, 1)).reshape(b, 4, -1)
        cc = self.embed(0, x[:, 0::2].flatten(0, 1)).reshape(b, 2, -1)
        mlo = self.embed(1, x[:, 1::2].flatten(0, 1)).reshape(b, 2, -1)
        return torch.stack([cc, mlo], 2).reshape(b, 4, -1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        sides = self.forward_features(x).reshape(b, 2, -1)  # [B, 2, 2F]
        if self.context:
            other = sides.flip(1) * side_present(x).flip(1)[..., None].to(sides.dtype)
            sides = torch.cat([sides, other], dim=2)  # [B, 2, 4F]
        return self.head(sides)


def breast_rows(logits: torch.Tensor, batch: dict[str, Any], keep_unlabelled: bool
                ) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """Exam outputs -> one row per imaged breast: (logits ``[N, K]``, labels int64 ``[N]``,
    breast uids). ``logits`` ``[B, 2, K]``; ``batch['label']`` ``[B, 2]`` (-1 = none) and
    ``batch['sides']`` (B lists of 2 uids, '' = missing side) as the loader gives them.
    Missing sides are dropped, unlabelled ones too unless ``keep_unlabelled``."""
    labels = batch["label"]
    idx = [(i, s) for i, pair in enumerate(batch["sides"]) for s in range(2)
           if pair[s] and (keep_unlabelled or int(labels[i, s]) >= 0)]
    ii = torch.tensor([i for i, _ in idx], dtype=torch.long)
    ss = torch.tensor([s for _, s in idx], dtype=torch.long)
    return (logits[ii.to(logits.device), ss.to(logits.device)], labels[ii, ss],
            [batch["sides"][i][s] for i, s in idx])
