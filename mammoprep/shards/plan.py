"""The shard plan: a header-only scan of every file, images grouped into samples (one breast
of one study) with their identity and labels, duplicates resolved, patients assigned to
folds. Pure data: nothing here decodes pixels or writes files."""

from __future__ import annotations

from collections import Counter, defaultdict
from concurrent.futures import Executor
from pathlib import Path
from typing import Any, Callable

from ..batch import Job, Runner
from ..errors import MammoprepError, display_path
from ..identity import pseudonym
from ..io.dicom import safe_read
from ..io.header import read_header
from ..io.mammogram import mammogram_evidence, not_mammogram_error
from ..labels import LabelError, LabelRow
from ..labels._common import TASKS as LABEL_TASKS, unmatched
from .schema import STORED_VIEWS

def _scan_one(job: Job) -> dict[str, Any]:
    """Header-only read of one file -> {'path', 'meta'} or {'path', 'error'}. A header that
    shows something other than a mammogram (a CR chest, a CT: steps 3-6 of
    :mod:`mammoprep.io.mammogram`, which no label table overrides) is a ``not_mammogram``
    error; a header without breast evidence is left to the label table (planning)."""
    path = job.src
    try:
        meta = read_header(path, salt=job.salt)
        other = not_mammogram_error(meta, path, "the shards", named_by_table=True)
        if other is not None:
            raise other
        return {"path": path, "meta": meta}
    except MammoprepError as err:
        return {"path": path, "error": err.as_dict()}
    except Exception as exc:  # noqa: BLE001 - one bad header must not end the scan
        return {"path": path, "error": {"error": "header_failed",
                                        "message": f"{path}: {type(exc).__name__}: {exc}"}}


def scan(paths: list[str], salt: bytes, executor: Runner | Executor | None,
         progress: Callable[[int], None] | None = None) -> list[dict[str, Any]]:
    """Header-only scan of every file (parallel when an executor is given)."""
    runner = Runner.of(executor)
    return list(runner.map(_scan_one, [Job(p, salt=salt) for p in paths],
                           chunksize=32 if runner.local_pool else 1, progress=progress))


def reject_row(path: str, reason: str, message: str, stage: str) -> dict[str, str]:
    # display_path: escaped, so non-UTF-8 or newline names stay one field
    return {"path": display_path(path), "reason": reason, "message": display_path(message),
            "stage": stage}


#: Fields where the label table wins over the DICOM header; disagreements are counted.
OVERRIDDEN = ("laterality", "view", "study")


def image_identity(lab, meta: dict[str, Any], salt: bytes) -> dict[str, str | None]:
    """Patient and study (pseudonyms), laterality and view (upper case; '' when absent) of
    one image: the label table's (``lab``, a :class:`mammoprep.labels.LabelRow`) where it
    gives them, else the header's (``meta`` from :func:`mammoprep.io.dicom.read_header`).
    A study missing from both is the patient's. The one precedence for ``shard``
    (:func:`plan_samples`) and ``mammotrain predict --dicom``."""
    patient = pseudonym(lab.patient, salt) if lab.patient else meta.get("patient_hash")
    study = (pseudonym(lab.study, salt) if lab.study else None) or meta.get("study_hash")
    return {"patient": patient, "study": study or patient,
            "laterality": lab.laterality or meta.get("laterality"),
            "view": (lab.view or meta.get("view") or "").upper()}


def plan_samples(scanned: list[dict[str, Any]], labels, salt: bytes,
                 conflicts: dict[str, Any] | None = None, skipped: Counter | None = None
                 ) -> tuple[list[dict[str, Any]], list[dict[str, str]], list[str]]:
    """Group scanned images into samples (one breast of one study, CC and/or MLO).

    Precedence: laterality, view, patient and study come from the label table where it gives
    them, else from the header ((0020,0062)/(0020,0060), (0018,5101)/View Code Sequence,
    (0010,0020), (0020,000D)); a header without View Position works when the table gives the
    view. ``conflicts`` (optional, filled in): for laterality and view, the number of
    images where table and header both have a value and they differ (the table's is used);
    for study, the number of images the table groups into studies differently from
    (0020,000D) (a table study spanning several header studies, or a header study split
    across table studies: the identifiers themselves live in different namespaces, e.g.
    EMBED's accession numbers); plus ``examples`` (a few ``path: ...`` lines).
    ``skipped`` (optional, filled in): images of a view shards do not store (AT, ML, LM,
    XCCL, ...) per view; they are left out without being rejects. An image without any view
    is a reject (``view_not_stored``).

    Labels are per image: each view holds ``labels`` (raw pathology / BI-RADS / density) and
    ``tasks`` (class index per task under the label source's rules, None = excluded).

    Returns (samples sorted by key, rejects, label keys that matched no image).
    """
    rejects: list[dict[str, str]] = []
    groups: dict[str, dict[str, Any]] = {}
    matched: set[str] = set()
    counts: Counter = Counter()
    examples: list[str] = []
    claims: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    studies: list[tuple[str, str, str, str]] = []  # path, table id, its pseudonym, header
    for item in scanned:
        path = item["path"]
        if "error" in item:
            rejects.append(reject_row(path, item["error"]["error"], item["error"]["message"],
                                      "scan"))
            continue
        meta = item["meta"]
        lab = labels.lookup(Path(path)) if labels is not None else None
        named = lab is not None
        if named:
            matched.add(labels.match_key(Path(path)))
        lab = lab or LabelRow()
        boxes = check_boxes(lab, meta, path, labels)
        _count_conflicts(path, lab, meta, counts, examples)
        who = image_identity(lab, meta, salt)
        lat, view, patient, study = who["laterality"], who["view"], who["patient"], who["study"]
        if lab.study and meta.get("study_hash"):  # ``study`` is then the table's, pseudonymised
            studies.append((path, lab.study, study, meta["study_hash"]))
        why = _unstorable(path, lat, view, patient)
        if why == "skip":  # a view we do not store: not a failure
            if skipped is not None:
                skipped[view] += 1
            continue
        if why is not None:
            rejects.append(why)
            continue
        key = f"{study}_{lat}"
        groups.setdefault(key, {"key": key, "patient": patient, "study": study,
                                "laterality": lat, "views": {}, "labels": None})
        tasks = labels.tasks(lab) if labels is not None else {t: None for t in LABEL_TASKS}
        claims[(key, view.lower())].append({"path": path, "meta": meta, "boxes": boxes,
                                            "boxes_frame": lab.boxes_frame,
                                            "labels": lab.raw(), "tasks": tasks,
                                            "split": lab.split,
                                            "evidence": _evidence(meta, named)})
    samples = _samples(groups, claims, rejects, salt)
    unmatched_keys = unmatched(labels, matched) if labels is not None else []
    if conflicts is not None:
        counts["study"] = study_grouping_conflicts(studies, examples)
        conflicts.update({f: counts.get(f, 0) for f in OVERRIDDEN}, examples=examples)
    return samples, rejects, unmatched_keys


def _count_conflicts(path: str, lab, meta: dict[str, Any], counts: Counter,
                     examples: list[str]) -> None:
    """Count (and give up to five examples of) a laterality or view on which the label
    table and the header both have a value and differ."""
    header_view = (meta.get("view") or "").upper() or None
    for name, table_v, header_v in (("laterality", lab.laterality, meta.get("laterality")),
                                    ("view", lab.view, header_view)):
        if table_v and header_v and table_v != header_v:
            counts[name] += 1
            if len(examples) < 5:
                examples.append(f"{path}: {name} table {table_v!r}, header {header_v!r}")


def _unstorable(path: str, lat, view, patient) -> dict[str, str] | str | None:
    """Why an image cannot go into a sample: its reject row (no laterality, no view, no
    patient), ``"skip"`` for a view shards do not store (not a failure), None if it can."""
    if lat not in ("L", "R"):
        return reject_row(path, "no_laterality", f"{path}: laterality is {lat!r} in "
                          "(0020,0062)/(0020,0060) and the labels; need L or R", "plan")
    if view and view not in STORED_VIEWS:
        return "skip"
    if not view:
        return reject_row(path, "view_not_stored", f"{path}: view 'absent' in (0018,5101)/"
                          "View Code Sequence and the labels; shards store CC and MLO (a "
                          "label table can give the view)", "plan")
    if not patient:
        return reject_row(path, "no_patient", f"{path}: no (0010,0020) PatientID and no "
                          "patient in the labels; cannot group folds by patient", "plan")
    return None


def _samples(groups: dict[str, dict[str, Any]], claims: dict, rejects: list,
             salt: bytes) -> list[dict[str, Any]]:
    """The samples sorted by key: one image per view (:func:`pick_duplicate` keeps one of
    several, the others are ``duplicate_view`` rejects), sample-level labels
    (:func:`merge_view_labels`) and official split."""
    for (key, v), entries in sorted(claims.items()):
        kept, dropped = pick_duplicate(entries, salt) if len(entries) > 1 else (entries[0], [])
        groups[key]["views"][v] = kept
        for entry, why in dropped:
            rejects.append(reject_row(entry["path"], "duplicate_view",
                                      f"{entry['path']}: a second {v.upper()} of the same "
                                      f"breast and study as {kept['path']}; kept that one "
                                      f"({why})", "plan"))
    samples = [groups[k] for k in sorted(groups)]
    for s in samples:
        s["labels"], s["tasks"] = merge_view_labels(s["views"])
        splits = {v.get("split") for v in s["views"].values()} - {None}
        s["split"] = splits.pop() if len(splits) == 1 else None
    return samples


def _evidence(meta: dict[str, Any], named_by_table: bool) -> str | None:
    """What makes a stored file a mammogram: the header's evidence where it has some, else
    the label table that names it (:func:`mammoprep.io.mammogram.mammogram_evidence`)."""
    if meta.get("mammogram") or not named_by_table:
        return meta.get("mammogram_evidence")

    return mammogram_evidence(meta, named_by_table=True)[1]


def study_grouping_conflicts(studies: list[tuple[str, str, str, str]],
                             examples: list[str]) -> int:
    """Images whose table study groups them differently from (0020,000D):
    ``studies`` is ``(path, table study, its pseudonym, header study hash)`` per image that
    has both; an image counts when its table study spans several header studies or its
    header study spans several table studies. Up to 5 lines are added to ``examples``."""
    headers: dict[str, set] = defaultdict(set)
    tables: dict[str, set] = defaultdict(set)
    for _, _, t, h in studies:
        headers[t].add(h)
        tables[h].add(t)
    n = 0
    for path, shown, t, h in studies:
        merged, split = len(headers[t]) > 1, len(tables[h]) > 1
        if merged or split:
            n += 1
            if len(examples) < 5:
                examples.append(
                    f"{path}: study table {shown!r} " + (
                        f"spans {len(headers[t])} (0020,000D) studies" if merged else
                        f"shares its (0020,000D) study with {len(tables[h]) - 1} other "
                        "table study(ies)"))
    return n


#: Box coordinates may exceed the image by this much (pixels; annotation tools round).
BOX_TOLERANCE = 1.0


def check_boxes(lab, meta: dict[str, Any], path: str, table=None) -> list:
    """The boxes of ``lab`` that lie inside the image the header describes ((0028,0010)
    Rows x (0028,0011) Columns, original pixels, :data:`BOX_TOLERANCE`); a box outside
    (it used to be clipped to an empty [0, 0, 0, 0]) is left out and counted in
    ``table.dropped`` (column ``boxes``), or, without a table or with a strict one
    (``--strict-labels``), a LabelError naming the label row, the box and the image size."""
    rows, cols = meta.get("rows"), meta.get("columns")
    if not lab.boxes or not rows or not cols:
        return lab.boxes
    t = BOX_TOLERANCE
    kept = []
    for b in lab.boxes:
        x0, y0, x1, y1 = b
        if x0 < -t or y0 < -t or x1 > cols + t or y1 > rows + t:
            if table is not None and not table.strict:
                table.drop("boxes", lab.source_row or "?", b,
                           f"outside the {cols}x{rows} image")
                continue
            raise LabelError(lab.source_row or path, "a box lies outside its image",
                             tag="column boxes", value=b,
                             hint=f"{display_path(path)} is {cols} pixels wide and {rows} "
                                  "high ((0028,0011) Columns, (0028,0010) Rows); boxes are "
                                  "[xmin, ymin, xmax, ymax] in its original pixels")
        kept.append(b)
    return kept


def pick_duplicate(entries: list[dict[str, Any]], salt: bytes
                   ) -> tuple[dict[str, Any], list[tuple[dict[str, Any], str]]]:
    """Of several files claiming one view of one breast, keep the first (in path order)
    that decodes and passes :func:`~mammoprep.io.dicom.read_dicom`'s checks (a truncated
    ``.bak`` copy listed first does not win). Returns (kept, [(dropped, why), ...])."""
    entries = sorted(entries, key=lambda e: e["path"])
    errors: dict[str, str] = {}
    kept = None
    for e in entries:
        _, err = safe_read(e["path"], salt=salt)
        if err is None:
            kept = e
            break
        errors[e["path"]] = err.kind
    if kept is None:  # none decodes: keep the first, its own error is reported when written
        kept = entries[0]

    def why(e) -> str:
        if kept["path"] in errors:
            return "no copy decodes"
        if e["path"] in errors:
            return f"this copy is rejected: {errors[e['path']]}"
        return "the first copy in path order that decodes is kept"

    return kept, [(e, why(e)) for e in entries if e is not kept]


def merge_view_labels(views: dict[str, dict[str, Any]]
                      ) -> tuple[dict[str, Any], dict[str, int | None]]:
    """Sample-level labels from per-view ones: a raw value where the views that have one
    agree (else None); a task label only where every view has the same one (the two-view
    label: a breast with one labelled view has none, its labelled view keeps its own)."""
    raw: dict[str, Any] = {}
    for f in ("pathology", "birads", "density"):
        vals = {v["labels"][f] for v in views.values() if v["labels"][f] is not None}
        raw[f] = vals.pop() if len(vals) == 1 else None
    tasks: dict[str, int | None] = {}
    for t in LABEL_TASKS:
        vals = {v["tasks"][t] for v in views.values()}
        tasks[t] = vals.pop() if len(vals) == 1 else None
    return raw, tasks


def assign_folds(samples: list[dict[str, Any]], k: int, seed: int,
                 warnings: list[str] | None = None) -> dict[str, int]:
    """Patient-level stratified group k-fold: patient -> fold. No patient is in two folds.

    Stratified on the patient's pathology (malignant if any image is, else benign, else
    unknown), seeded. Returns {} when k < 2. When a class has fewer patients than folds the
    split is a seeded group-only (unstratified) split, and a message is added to
    ``warnings``; so is a fold count reduced to the number of patients.
    """
    if k < 2:
        return {}
    import numpy as np
    from sklearn.model_selection import StratifiedGroupKFold

    warnings = warnings if warnings is not None else []
    patients = sorted({s["patient"] for s in samples})
    status = {}
    for s in samples:
        for v in s["views"].values():
            p = (v.get("labels") or {}).get("pathology")
            rank = {"malignant": 2, "benign": 1}.get(p, 0)
            status[s["patient"]] = max(status.get(s["patient"], 0), rank)
    k_eff = min(k, len(patients))
    if k_eff < k:
        warnings.append(f"folds: {k} requested but only {len(patients)} patient(s); using "
                        f"{max(k_eff, 1)}")
    if k_eff < 2:
        return {p: 0 for p in patients}
    y = np.array([status[p] for p in patients])
    # one row per patient: grouping is then trivial and stratification exact
    counts = Counter(y.tolist())
    if min(counts.values()) < k_eff:  # too few of a class to stratify: group-only split
        names = {2: "malignant", 1: "benign", 0: "no pathology"}
        per_class = ", ".join(f"{names[c]} {n}" for c, n in sorted(counts.items()))
        warnings.append("folds are NOT stratified: too few patients of a class for "
                        f"{k_eff} folds ({per_class}); patients were dealt out at random "
                        "(seeded)")
        rng = np.random.default_rng(seed)
        order = rng.permutation(len(patients))
        return {patients[i]: int(j % k_eff) for j, i in enumerate(order)}
    splitter = StratifiedGroupKFold(n_splits=k_eff, shuffle=True, random_state=seed)
    fold = {}
    for f, (_, test) in enumerate(splitter.split(np.zeros(len(patients)), y,
                                                 groups=np.arange(len(patients)))):
        for i in test:
            fold[patients[i]] = f
    return fold
