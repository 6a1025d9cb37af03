"""Two-view / single-view examples planned from mammoprep shards, and their splits.

Plan from the manifest (here), stream from the tars (:mod:`mammotrain.stream`, with the
preprocessing of :mod:`mammotrain.preprocess`)::

    images.parquet --plan_examples--> [Example] --split_examples--> train / val / test
    shard tars --webdataset--> select (this rank's examples) --> shuffle (raw bytes, seeded)
               --> decode 16-bit PNG --> preprocess (resize, flip, normalise) --> collate
               --> EpochLoader: exactly `steps` batches of `batch_size` per epoch and rank

* An :class:`Example` is one breast (two-view: CC and MLO of the same breast) or one stored
  image (single-view). Its label comes from the task spec (the manifest's ``label_<task>``
  column, the rule of :func:`mammoprep.labels.task_labels`); examples whose label is null,
  breasts with one view in two-view mode and images without a fold are excluded, and every
  exclusion is counted (:class:`PlanReport`).
* Splits are patient-grouped: test = the test fold; validation = a stratified fraction of
  the *training folds'* patients (models are selected on it, never on the test fold).
* Distributed: shards, not examples, are split across ranks (and within a rank across
  DataLoader workers) with near-equal example counts from the manifest, so each shard is
  read once per epoch in all; a training rank's share is cut or repeated to ``ceil(N /
  world)`` examples (same steps on every rank), an evaluating rank keeps exactly its shards'
  examples (:meth:`ShardStream.epoch_plan`). The
  epoch length (steps) comes from the manifest counts, not from the stream, and
  :class:`EpochLoader` yields exactly that many batches on every rank (no DDP hang from
  uneven shards, workers or a skipped corrupt sample).
* Reading shards in other code: :func:`decode_png16` (``KEY.cc.png`` bytes -> ``uint16
  [H, W]``, every bit kept) and :func:`require_16bit` (raises on an image some other decoder
  clipped to 8 bits, e.g. webdataset's ``.decode("l")``); the README's snippets use both.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Iterable, Protocol, Sequence

import numpy as np
import pyarrow.parquet as pq

from mammoprep.io.png import decode_png16  # re-exported: the 16-bit-safe shard PNG decoder

from .splits import SPLITS, official_folds, split_text

VIEWS = ("cc", "mlo")

#: ``--views``: 1 = one image, 2 = CC + MLO of a breast, 4 = CC + MLO of both breasts of a
#: study (:mod:`mammotrain.exams`)
VIEW_MODES = (1, 2, 4)

REQUIRED_COLUMNS = ("key", "shard", "view", "patient", "fold")


class Labeller(Protocol):
    """What planning needs of a task (:class:`mammotrain.tasks.Task`): its name and the
    class of a manifest row (None = not in the task)."""

    name: str

    def label(self, row: dict[str, Any]) -> int | None: ...


class DataError(ValueError):
    """A problem with the shard folder or its manifests (the message names the file)."""


def require_16bit(px: Any, value_bits: int | None = None, name: str = "image") -> np.ndarray:
    """``px`` as ``uint16 [H, W]``, or ValueError when it was decoded to 8 bits.

    Shard PNGs are 16-bit; readers that decode them as 8-bit images (webdataset's
    ``.decode("l")``/``"rgb"``, timm's wds reader, ``PIL.Image.convert("L")``) clip or
    rescale every value. Refused: anything not ``uint16`` (uint8 arrays, PIL 'L' images,
    floats), and, given the sample JSON's ``value_bits`` (> 8), an image whose maximum is
    at most 255. Use :func:`decode_png16` on the raw bytes."""
    arr = np.asarray(px)
    hint = ("shard PNGs are 16-bit: decode the raw bytes with mammotrain.data.decode_png16 "
            "(webdataset: no .decode('l') / 'rgb' for the .png entries)")
    if arr.dtype != np.uint16 or arr.ndim != 2:
        raise ValueError(f"{name}: got {arr.dtype} {list(arr.shape)}, expected uint16 "
                         f"[H, W]; {hint}")
    if value_bits is not None and int(value_bits) > 8 and arr.size and int(arr.max()) <= 255:
        raise ValueError(f"{name}: maximum {int(arr.max())} for {value_bits}-bit values, "
                         f"decoded to 8 bits; {hint}")
    return arr


# --------------------------------------------------------------------------- manifest

def read_manifest(shards: str | Path) -> list[dict[str, Any]]:
    """Rows of ``SHARDS/images.parquet`` (one per stored image) as dicts."""
    path = Path(shards) / "images.parquet"
    if not path.exists():
        raise DataError(f"{path}: manifest not found; is {shards} a folder written by "
                        "`mammoprep shard`?")
    table = pq.read_table(path)
    missing = [c for c in REQUIRED_COLUMNS if c not in table.column_names]
    if missing:
        raise DataError(f"{path}: columns {missing} missing (have {table.column_names})")
    return table.to_pylist()


def folds_in(rows: Iterable[dict[str, Any]]) -> list[int]:
    """Sorted distinct non-null folds of manifest rows."""
    return sorted({int(r["fold"]) for r in rows if r.get("fold") is not None})


@dataclass(frozen=True)
class Example:
    """One example: a breast (two-view, ``views = ('cc', 'mlo')``) or one image
    (single-view, ``views = ('cc',)`` or ``('mlo',)``). ``uid`` is the key (two-view) or
    ``KEY.VIEW`` (single-view). ``sop_uid_hashes``: the manifest's ``sop_uid_hash`` of each
    view (same order as ``views``), to find the source files. ``split``: the publisher's
    official split ('train' / 'test' / None; two-view: where both views agree).

    Four-view (an exam, :func:`mammotrain.exams.plan_exams`): ``views`` = (cc, mlo, cc,
    mlo) of the left then the right breast, ``sides`` = the two breasts as two-view examples
    (label -1: no label, masked from loss and metrics; None: side not imaged with both
    views), ``label`` = the highest breast label (stratification, balanced sampling),
    ``shard`` the shard of its first breast (:attr:`shards`: every shard it reads)."""

    uid: str
    key: str
    views: tuple[str, ...]
    label: int
    patient: str
    fold: int | None
    shard: str
    energy: str | None = None
    manufacturer: str | None = None
    sop_uid_hashes: tuple[str | None, ...] = ()
    split: str | None = None
    sides: tuple["Example | None", ...] = ()

    @property
    def shards(self) -> tuple[str, ...]:
        """Every shard holding an image of the example (its own first)."""
        extra = [s.shard for s in self.sides if s is not None and s.shard != self.shard]
        return tuple(dict.fromkeys([self.shard, *extra]))


def breast_index(examples: Iterable[Example]) -> dict[str, Example]:
    """uid -> example of the prediction rows: the examples themselves, and for four-view
    exams their breasts (the rows are per breast, uid = the breast's key)."""
    out: dict[str, Example] = {}
    for e in examples:
        if e.sides:
            out.update({s.uid: s for s in e.sides if s is not None})
        else:
            out[e.uid] = e
    return out


@dataclass
class PlanReport:
    """What :func:`plan_examples` kept and why it dropped the rest.

    unit: 'breast' (two-view) or 'image' (single-view); excluded counts are in that unit:
    ``label_null`` (label null for the task), ``one_view`` (two-view: a breast with only CC
    or only MLO), ``no_fold`` (no fold assigned), ``label_conflict`` (CC and MLO rows disagree),
    ``one_view_labelled`` (two-view: only one view has a label, e.g. a LUMINA density given
    for one view; that image is used in single-view mode only).
    Four-view: unit 'exam'; ``masked`` counts the breasts of kept exams that are not in
    the loss: ``side_missing`` (not imaged with CC and MLO) and ``side_unlabelled``
    (:func:`mammotrain.exams.plan_exams`); ``class_counts`` are of labelled breasts.
    split: 'kfold' or 'official' (:func:`mammotrain.splits.official_folds`, which also counts
    ``no_split`` / ``train_of_test_patient`` and the ``patients_in_both`` parts).
    """

    task: str
    views: int
    unit: str
    images: int
    candidates: int
    examples: int
    excluded: dict[str, int] = field(default_factory=dict)
    class_counts: dict[int, int] = field(default_factory=dict)
    split_by: str = "fold"
    fold_names: dict[int, str] = field(default_factory=dict)
    split: str = "kfold"
    patients_in_both: int = 0
    masked: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["class_counts"] = {str(k): v for k, v in sorted(self.class_counts.items())}
        d["fold_names"] = {str(k): v for k, v in sorted(self.fold_names.items())}
        return d

    def describe(self) -> str:
        ex = ", ".join(f"{k} {v}" for k, v in sorted(self.excluded.items()) if v) or "none"
        official = split_text(self.to_dict())
        masked = ", ".join(f"{k} {v}" for k, v in sorted(self.masked.items()) if v)
        return (f"{self.task} {self.views}-view: {self.examples} {self.unit}s of "
                f"{self.candidates} ({self.images} images); excluded: {ex}; "
                + (f"breasts masked: {masked}; " if masked else "") + "classes "
                f"{dict(sorted(self.class_counts.items()))}"
                + (f"; {official}" if official else ""))


def plan_examples(rows: Sequence[dict[str, Any]], task: Labeller, views: int,
                  unlabeled: bool = False, need_fold: bool = True
                  ) -> tuple[list[Example], PlanReport]:
    """Manifest rows -> examples of ``task`` in ``views``-view mode (1, 2 or 4), sorted by uid.

    unlabeled: keep examples without a label (label -1) or fold (inference on new images:
    ``mammotrain predict``) instead of excluding them. need_fold False: keep examples
    without a fold (``--split official`` does not use the folds). Four-view: the exams of
    :func:`mammotrain.exams.plan_exams`."""
    if views not in VIEW_MODES:
        raise ValueError(f"views must be 1, 2 or 4, got {views!r}")
    if views == 4:
        from .exams import plan_exams  # noqa: PLC0415 - it builds on this module

        return plan_exams(rows, task, unlabeled=unlabeled, need_fold=need_fold)
    by_key: dict[str, dict[str, dict]] = defaultdict(dict)
    for r in rows:
        by_key[r["key"]][str(r["view"]).lower()] = r
    excluded: Counter = Counter()
    out: list[Example] = []

    def make(uid, key, vs, label, r):
        splits = {by_key[key][v].get("split") for v in vs} - {None}
        return Example(uid, key, vs, label, r["patient"],
                       None if r.get("fold") is None else int(r["fold"]), r["shard"],
                       r.get("energy"), r.get("manufacturer"),
                       tuple(by_key[key][v].get("sop_uid_hash") for v in vs),
                       splits.pop() if len(splits) == 1 else None)

    for key in sorted(by_key):
        per_view = by_key[key]
        if views == 1:
            for v in sorted(per_view):
                r = per_view[v]
                label = task.label(r)
                if unlabeled:
                    out.append(make(f"{key}.{v}", key, (v,), -1 if label is None else label, r))
                elif label is None:
                    excluded["label_null"] += 1
                elif need_fold and r.get("fold") is None:
                    excluded["no_fold"] += 1
                else:
                    out.append(make(f"{key}.{v}", key, (v,), label, r))
            continue
        labels = {v: task.label(r) for v, r in per_view.items()}
        first = per_view[sorted(per_view)[0]]
        if unlabeled and all(v in per_view for v in VIEWS):
            lab = labels[VIEWS[0]]
            out.append(make(key, key, VIEWS, -1 if lab is None else lab, first))
        elif unlabeled:
            excluded["one_view"] += 1
        elif all(lab is None for lab in labels.values()):
            excluded["label_null"] += 1
        elif None in labels.values() and len(set(labels.values()) - {None}) == 1:
            excluded["one_view_labelled"] += 1
        elif len({lab for lab in labels.values()}) > 1:
            excluded["label_conflict"] += 1
        elif not all(v in per_view for v in VIEWS):
            excluded["one_view"] += 1
        elif need_fold and first.get("fold") is None:
            excluded["no_fold"] += 1
        else:
            out.append(make(key, key, VIEWS, labels[VIEWS[0]], first))
    candidates = len(by_key) if views == 2 else len(rows)
    report = PlanReport(task.name, views, "breast" if views == 2 else "image", len(rows),
                        candidates, len(out), dict(excluded),
                        dict(Counter(e.label for e in out)))
    return out, report


#: ``--split-by``: what a test fold is. 'fold': the manifest's patient-level folds;
#: 'vendor' / 'energy': one test fold per manufacturer / energy class (leave one out).
SPLIT_BY = {"fold": None, "vendor": "manufacturer", "energy": "energy"}


def regroup_folds(examples: Sequence[Example], plan: PlanReport, by: str,
                  split: str = "kfold") -> list[Example]:
    """Examples with ``fold`` = the index of their group under ``by`` (:data:`SPLIT_BY`;
    groups sorted by name), for leave-one-vendor-out (or -energy-out) evaluation; ``plan``
    gains ``split_by`` and ``fold_names`` (index -> group) and counts the examples without
    a group (no manufacturer; energy ``unknown``) as excluded (``no_vendor`` /
    ``no_energy``). 'fold' returns them unchanged. ``split`` 'official' (with ``by``
    'fold' only): the publisher's train/test split as one test fold
    (:func:`mammotrain.splits.official_folds`)."""
    if by not in SPLIT_BY:
        raise ValueError(f"split_by must be one of {', '.join(SPLIT_BY)}, got {by!r}")
    if split not in SPLITS or (split == "official" and by != "fold"):
        raise ValueError(f"split must be one of {', '.join(SPLITS)} (official with "
                         f"split_by 'fold' only), got split {split!r}, split_by {by!r}")
    plan.split_by = by
    if split == "official":
        return official_folds(examples, plan)
    column = SPLIT_BY[by]
    if column is None:
        return list(examples)

    def group(e: Example) -> str | None:  # mammoprep writes '' / 'unknown' for none
        v = getattr(e, column)
        return None if v in (None, "") or (by == "energy" and v == "unknown") else str(v)

    groups = [group(e) for e in examples]
    names = sorted({g for g in groups if g is not None})
    index = {n: i for i, n in enumerate(names)}
    kept = [replace(e, fold=index[g]) for e, g in zip(examples, groups) if g is not None]
    if len(kept) < len(examples):
        plan.excluded[f"no_{by}"] = len(examples) - len(kept)
        plan.examples = len(kept)
        plan.class_counts = dict(Counter(e.label for e in kept))
    plan.fold_names = dict(enumerate(names))
    return kept


@dataclass
class Split:
    """Patient-disjoint train / val / test examples for one test fold."""

    test_fold: int
    train: list[Example]
    val: list[Example]
    test: list[Example]

    def describe(self) -> str:
        def part(xs):
            c = Counter(e.label for e in xs)
            what = "classes"
            if any(e.sides for e in xs):  # four-view: exams, classes of labelled breasts
                c = Counter(b.label for e in xs for b in e.sides if b is not None
                            and b.label >= 0)
                what = "breast classes"
            return (f"{len(xs)} ({len({e.patient for e in xs})} patients, {what} "
                    f"{dict(sorted(c.items()))})")
        return (f"fold {self.test_fold}: train {part(self.train)}, val {part(self.val)}, "
                f"test {part(self.test)}")

    def counts(self) -> dict[str, int]:
        return {"train": len(self.train), "val": len(self.val), "test": len(self.test)}


def split_examples(examples: Sequence[Example], test_fold: int, val_fraction: float = 0.2,
                   seed: int = 0) -> Split:
    """Test = ``fold == test_fold``; validation = ``val_fraction`` of the other folds'
    patients, drawn per stratum (a patient's highest label) with ``(seed, test_fold)``;
    train = the rest. No patient is in two parts: a test patient's examples in other folds
    (possible when folds are vendors, :func:`regroup_folds`) are used nowhere."""
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    test = [e for e in examples if e.fold == test_fold]
    test_patients = {e.patient for e in test}
    pool = [e for e in examples if e.fold != test_fold and e.patient not in test_patients]
    strata: dict[int, set[str]] = defaultdict(set)
    top: dict[str, int] = {}
    for e in pool:
        top[e.patient] = max(top.get(e.patient, -1), e.label)
    for p, lab in top.items():
        strata[lab].add(p)
    rng = np.random.default_rng([seed, test_fold, 7])
    val_patients: set[str] = set()
    for lab in sorted(strata):
        ps = sorted(strata[lab])
        rng.shuffle(ps)
        n = int(round(val_fraction * len(ps)))
        if n == 0 and val_fraction > 0 and len(ps) >= 3:
            n = 1
        val_patients.update(ps[:n])
    train = [e for e in pool if e.patient not in val_patients]
    val = [e for e in pool if e.patient in val_patients]
    return Split(test_fold, train, val, test)
