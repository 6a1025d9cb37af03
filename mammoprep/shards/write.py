"""WebDataset shards + Parquet manifests from a DICOM archive.

Plan (header-only scan -> samples -> folds -> shards), then one task per shard, each a pure
function of its slice of the plan, run on a process pool or any ``concurrent.futures``
executor (Dask). A shard is written under a temporary name and renamed when complete; its
result (manifest rows) goes to ``.parts/NAME.json`` last, so a rerun skips finished shards
and gives byte-identical output.

Layout of one sample (one breast of one study), keys without dots::

    KEY.cc.png, KEY.mlo.png   16-bit grayscale, harmonised, text removed, cropped, resized
    KEY.json                  labels (raw + task forms), boxes per view in stored pixels,
                              transforms, vendor, energy, harmonised flag, schema version
    KEY.cls                   the diagnosis class as ASCII text ("0" benign, "1" malignant),
                              only where the diagnosis task defines one
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
from collections import Counter, defaultdict
from concurrent.futures import Executor
from dataclasses import asdict, dataclass, field, is_dataclass, replace
from pathlib import Path
from typing import Any, Callable, Iterable

from .. import __version__
from ..atomic import atomic_write, output_lock, remove_temporaries, write_error
from ..errors import MammoprepError, display_path
from ..labels._common import TASKS as LABEL_TASKS, unmatched
from ..pipeline import PrepConfig

SCHEMA_VERSION = 1
STORED_VIEWS = ("CC", "MLO")
TAR_MTIME = 946684800  # 2000-01-01T00:00:00Z: fixed, so shards are byte-reproducible
PARTS = ".parts"


@dataclass(frozen=True)
class ShardConfig:
    """Everything that determines the shard bytes (written to ``config.json``)."""

    prep: PrepConfig = field(default_factory=lambda: PrepConfig(size=1024))
    labels: str | None = None
    samples_per_shard: int = 64
    folds: int = 5
    seed: int = 0
    png_level: int = 1
    salt_fingerprint: str = ""
    #: content digests (filled in by :func:`build_shards`): sha256 of the reference's
    #: bytes, salted HMAC of the parsed label table; a changed file is another config
    reference_sha256: str = ""
    labels_digest: str = ""

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["prep"] = self.prep.to_dict()
        return d

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:16]


# ---------------------------------------------------------------------------- planning

def _scan_one(args: tuple[str, bytes]) -> dict[str, Any]:
    """Header-only read of one file -> {'path', 'meta'} or {'path', 'error'}. A header that
    shows something other than a mammogram (a CR chest, a CT: steps 3-6 of
    :mod:`mammoprep.io.mammogram`, which no label table overrides) is a ``not_mammogram``
    error; a header without breast evidence is left to the label table (planning)."""
    from ..io.dicom import read_header
    from ..io.mammogram import not_mammogram_error

    path, salt = args
    try:
        meta = read_header(path, salt=salt)
        other = not_mammogram_error(meta, path, "the shards", named_by_table=True)
        if other is not None:
            raise other
        return {"path": path, "meta": meta}
    except MammoprepError as err:
        return {"path": path, "error": err.as_dict()}
    except Exception as exc:  # noqa: BLE001 - one bad header must not end the scan
        return {"path": path, "error": {"error": "header_failed",
                                        "message": f"{path}: {type(exc).__name__}: {exc}"}}


def scan(paths: list[str], salt: bytes, executor: Executor | None,
         progress: Callable[[int], None] | None = None) -> list[dict[str, Any]]:
    """Header-only scan of every file (parallel when an executor is given)."""
    jobs = [(p, salt) for p in paths]
    it = executor.map(_scan_one, jobs, chunksize=32) if isinstance(
        executor, _ProcessPool) else (executor.map(_scan_one, jobs) if executor else
                                      map(_scan_one, jobs))
    out = []
    for r in it:
        out.append(r)
        if progress:
            progress(1)
    return out


def _reject(path: str, reason: str, message: str, stage: str) -> dict[str, str]:
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
    from ..identity import pseudonym

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
    from ..labels import LabelRow

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
            rejects.append(_reject(path, item["error"]["error"], item["error"]["message"],
                                   "scan"))
            continue
        meta = item["meta"]
        lab = labels.lookup(Path(path)) if labels is not None else None
        named = lab is not None
        if named:
            matched.add(labels.match_key(Path(path)))
        lab = lab or LabelRow()
        boxes = check_boxes(lab, meta, path, labels)
        header_view = (meta.get("view") or "").upper() or None
        for name, table_v, header_v in (("laterality", lab.laterality, meta.get("laterality")),
                                        ("view", lab.view, header_view)):
            if table_v and header_v and table_v != header_v:
                counts[name] += 1
                if len(examples) < 5:
                    examples.append(f"{path}: {name} table {table_v!r}, header {header_v!r}")
        who = image_identity(lab, meta, salt)
        lat, view, patient, study = who["laterality"], who["view"], who["patient"], who["study"]
        if lab.study and meta.get("study_hash"):  # ``study`` is then the table's, pseudonymised
            studies.append((path, lab.study, study, meta["study_hash"]))
        if lat not in ("L", "R"):
            rejects.append(_reject(path, "no_laterality", f"{path}: laterality is "
                                   f"{lat!r} in (0020,0062)/(0020,0060) and the labels; "
                                   "need L or R", "plan"))
            continue
        if view and view not in STORED_VIEWS:  # a view we do not store: not a failure
            if skipped is not None:
                skipped[view] += 1
            continue
        if not view:
            rejects.append(_reject(path, "view_not_stored", f"{path}: view 'absent'"
                                   " in (0018,5101)/View Code Sequence and the labels; shards "
                                   "store CC and MLO (a label table can give the view)",
                                   "plan"))
            continue
        if not patient:
            rejects.append(_reject(path, "no_patient", f"{path}: no (0010,0020) PatientID and "
                                   "no patient in the labels; cannot group folds by patient",
                                   "plan"))
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
    for (key, v), entries in sorted(claims.items()):
        kept, dropped = pick_duplicate(entries, salt) if len(entries) > 1 else (entries[0], [])
        groups[key]["views"][v] = kept
        for entry, why in dropped:
            rejects.append(_reject(entry["path"], "duplicate_view",
                                   f"{entry['path']}: a second {v.upper()} of the same breast "
                                   f"and study as {kept['path']}; kept that one ({why})",
                                   "plan"))
    samples = [groups[k] for k in sorted(groups)]
    for s in samples:
        s["labels"], s["tasks"] = merge_view_labels(s["views"])
        splits = {v.get("split") for v in s["views"].values()} - {None}
        s["split"] = splits.pop() if len(splits) == 1 else None
    unmatched_keys = unmatched(labels, matched) if labels is not None else []
    if conflicts is not None:
        counts["study"] = study_grouping_conflicts(studies, examples)
        conflicts.update({f: counts.get(f, 0) for f in OVERRIDDEN}, examples=examples)
    return samples, rejects, unmatched_keys


def _evidence(meta: dict[str, Any], named_by_table: bool) -> str | None:
    """What makes a stored file a mammogram: the header's evidence where it has some, else
    the label table that names it (:func:`mammoprep.io.mammogram.mammogram_evidence`)."""
    if meta.get("mammogram") or not named_by_table:
        return meta.get("mammogram_evidence")
    from ..io.mammogram import mammogram_evidence

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
    from ..labels import LabelError

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
    from ..io.dicom import safe_read

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


def shard_name(i: int) -> str:
    return f"shard-{i:06d}.tar"


# ------------------------------------------------------------------------ one shard task

@dataclass(frozen=True)
class ShardTask:
    """Input of :func:`write_shard`: a pure function of this (and the files it names)."""

    index: int
    samples: tuple
    out_dir: str
    config: ShardConfig
    salt: bytes


def value_bits(meta: dict[str, Any]) -> int | None:
    """Bit depth ``b`` of a stored image's values (they lie in ``0..2^b - 1``; readers divide
    by ``2^b - 1``): the reference's depth for harmonised images, else the decoded values'
    (``value_bits``: a Modality LUT, Rescale or VOI can reach above ``2^BitsStored - 1``),
    else (0028,0101) Bits Stored."""
    if meta.get("harmonized") and meta.get("reference_bits"):
        return int(meta["reference_bits"])
    v = meta.get("value_bits") or meta.get("bits_stored")
    return int(v) if v is not None else None


def _sample_entries(sample: dict[str, Any], prep, cfg: ShardConfig, salt: bytes, fold: int | None
                    ) -> tuple[dict[str, bytes], list[dict], list[dict]]:
    """Preprocess the views of one sample -> (tar entries, image rows, rejects)."""
    from ..geometry import label_boxes
    from ..pipeline import crop_and_resize, original_bbox, preprocess, stored_pixel_spacing
    from ..segmentation.foreground import qc_fields
    from ..io.png import encode_png16

    entries: dict[str, bytes] = {}
    rows, rejects = [], []
    views_json: dict[str, Any] = {}
    key = sample["key"]
    raw, tasks = sample["labels"], sample["tasks"]  # sample level: merge_view_labels
    for v in sorted(sample["views"]):
        item = sample["views"][v]
        try:
            rec = preprocess(item["path"], prep, salt=salt)
            rec, t = crop_and_resize(rec, cfg.prep.size, cfg.prep.crop)
        except MammoprepError as err:
            rejects.append(_reject(item["path"], err.kind, str(err), "write"))
            continue
        except Exception as exc:  # noqa: BLE001 - one bad image must not lose the shard
            rejects.append(_reject(item["path"], "preprocess_failed",
                                   f"{item['path']}: {type(exc).__name__}: {exc}", "write"))
            continue
        m = rec.meta
        bbox = original_bbox(m)  # original pixel units, also after a reduced decode
        reduction = int(m.get("decode_reduction") or 0)
        original_boxes = label_boxes(item["boxes"], item.get("boxes_frame"), m,
                                     t.original_size[1], sample["laterality"])
        boxes = t.apply(original_boxes).round(2).tolist() if original_boxes else []
        entries[f"{key}.{v}.png"] = encode_png16(rec.pixels, cfg.png_level)
        views_json[v] = {
            "boxes": boxes, "boxes_original": original_boxes, "transform": t.to_dict(),
            "sop_uid_hash": m.get("sop_uid_hash"), "manufacturer": m.get("manufacturer"),
            "model": m.get("model"), "energy": m.get("energy"),
            "harmonized": m.get("harmonized"), "bits": m.get("bits_stored"),
            "value_bits": value_bits(m),
            **qc_fields(m), "breast_bbox": bbox,
            "decode_reduction": reduction,
            "stored_pixel_spacing_mm": stored_pixel_spacing(m, t),
            "inverted": m.get("inverted"),
            "presentation_intent": m.get("presentation_intent"),
            "labels": {"raw": item["labels"], **item["tasks"]},
            "split": item.get("split"),
            "mammogram_evidence": item.get("evidence"),
        }
        rows.append({
            "key": key, "view": v, "laterality": sample["laterality"],
            "patient": sample["patient"], "study": sample["study"],
            **item["labels"],  # per image: raw values and task labels of this view
            **{f"label_{k}": val for k, val in item["tasks"].items()},
            "boxes": boxes, "boxes_original": [list(map(float, b)) for b in original_boxes],
            "manufacturer": m.get("manufacturer"), "model": m.get("model"), "kvp": m.get("kvp"),
            "energy": m.get("energy"), "bits_stored": m.get("bits_stored"),
            "value_bits": value_bits(m),
            "photometric": m.get("photometric"), "transfer_syntax": m.get("transfer_syntax"),
            "presentation_intent": m.get("presentation_intent"),
            "original_rows": t.original_size[0], "original_cols": t.original_size[1],
            "stored_rows": t.stored_size[0], "stored_cols": t.stored_size[1],
            **qc_fields(m),
            "breast_bbox": [int(x) for x in (bbox or [])], "decode_reduction": reduction,
            "harmonized": bool(m.get("harmonized")), "inverted": bool(m.get("inverted")),
            "sop_uid_hash": m.get("sop_uid_hash"), "fold": fold,
            "split": item.get("split"), "mammogram_evidence": item.get("evidence"),
        })
    if views_json:
        first = views_json[sorted(views_json)[0]]
        doc = {
            "schema": SCHEMA_VERSION, "key": key, "patient": sample["patient"],
            "study": sample["study"], "laterality": sample["laterality"],
            "views": sorted(views_json), "fold": fold, "split": sample.get("split"),
            "labels": {"raw": raw, **tasks},  # two-view labels; per view in images[v]
            "boxes": {v: d["boxes"] for v, d in views_json.items()},
            "transform": {v: d["transform"] for v, d in views_json.items()},
            "images": views_json,
            "manufacturer": first["manufacturer"], "model": first["model"],
            "energy": first["energy"],
            "harmonized": all(d["harmonized"] for d in views_json.values()),
            "bits": first["bits"], "value_bits": first["value_bits"],
        }
        entries[f"{key}.json"] = json.dumps(doc, sort_keys=True).encode()
        if tasks.get("diagnosis") is not None:  # webdataset's class entry: "0" benign, "1" malignant
            entries[f"{key}.cls"] = str(int(tasks["diagnosis"])).encode()
    return entries, rows, rejects


def tar_bytes(entries: dict[str, bytes]) -> bytes:
    """A reproducible tar: sorted names, fixed mtime/owner/mode, USTAR format."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name in sorted(entries):
            data = entries[name]
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(data), TAR_MTIME, 0o644
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def task_digest(task: ShardTask) -> str:
    """What a shard's bytes depend on besides the config: its samples (paths, header
    metadata, labels, boxes, folds). A part finished for other inputs is not reused."""
    blob = json.dumps([task.index, list(task.samples)], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def write_shard(task: ShardTask) -> dict[str, Any]:
    """Write one shard (atomically) and then its part file; return the part."""
    from ..pipeline import prepared

    out = Path(task.out_dir)
    name = shard_name(task.index)
    prep = prepared(task.config.prep, task.salt)  # once per worker process
    entries: dict[str, bytes] = {}
    images, rejects = [], []
    for sample in task.samples:
        e, r, rej = _sample_entries(sample, prep, task.config, task.salt, sample.get("fold"))
        entries.update(e)
        for row in r:
            row["shard"] = name
        images.extend(r)
        rejects.extend(rej)
    n_samples = sum(1 for k in entries if k.endswith(".json"))
    part = {"shard": name, "samples": n_samples, "images": images, "rejects": rejects,
            "config_digest": task.config.digest(), "task_digest": task_digest(task)}
    if n_samples:
        data = tar_bytes(entries)
        atomic_write(out / name, data)
        part["bytes"] = len(data)
        part["sha256"] = hashlib.sha256(data).hexdigest()
    _atomic_json(out / PARTS / (name + ".json"), part)
    return part


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _atomic_json(path: Path, obj: Any) -> None:
    atomic_write(path, json.dumps(obj, sort_keys=True).encode())


def finished_part(out: Path, index: int, digest: str,
                  task: str | None = None) -> dict[str, Any] | None:
    """The part of a shard finished by an earlier run with the same config (and, when
    ``task`` is given, the same :func:`task_digest`) whose tar is there at its recorded
    size, else None (an unreadable part file counts as absent)."""
    p = out / PARTS / (shard_name(index) + ".json")
    try:
        part = json.loads(p.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(part, dict) or part.get("config_digest") != digest:
        return None
    if task is not None and part.get("task_digest") != task:
        return None
    if part.get("samples"):
        tar = out / str(part.get("shard"))
        if not tar.is_file() or tar.stat().st_size != part.get("bytes"):
            return None
    return part


# ---------------------------------------------------------------------------- manifests

def write_manifests(out: Path, parts: list[dict[str, Any]], plan_rejects: list[dict[str, str]],
                    cfg: ShardConfig, extra: dict[str, Any],
                    label_report: dict[str, Any] | None = None,
                    warnings: list[str] | None = None) -> dict[str, Any]:
    """images.parquet, shards.parquet, rejects.parquet and config.json; returns a summary.

    label_report: what the label source did (:func:`label_summary` adds the labelled images
    per task and a warning for every task without one); warnings: messages without
    identifiers (e.g. an unstratified fold split), kept in the summary and config.json."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    images = sorted((r for p in parts for r in p["images"]), key=lambda r: (r["key"], r["view"]))
    rejects = sorted(plan_rejects + [r for p in parts for r in p["rejects"]],
                     key=lambda r: r["path"])
    shards = [{"shard": p["shard"], "samples": p["samples"], "images": len(p["images"]),
               "bytes": p.get("bytes", 0), "sha256": p.get("sha256", "")}
              for p in sorted(parts, key=lambda p: p["shard"]) if p["samples"]]
    config = {"mammoprep_version": __version__, "schema": SCHEMA_VERSION,
              "config": cfg.to_dict(), "config_digest": cfg.digest(), **extra}
    meta = {b"mammoprep": json.dumps(config, sort_keys=True).encode()}

    digests: dict[str, str] = {}

    def write(name, rows, schema):  # atomically; its sha256 goes to config.json
        table = pa.Table.from_pylist(rows, schema=schema) if rows else schema.empty_table()
        table = table.replace_schema_metadata(meta)
        buf = io.BytesIO()
        pq.write_table(table, buf)
        data = buf.getvalue()
        atomic_write(out / name, data)
        digests[name] = hashlib.sha256(data).hexdigest()

    images_schema, shards_schema, rejects_schema = manifest_schemas()
    write("images.parquet", images, images_schema)
    write("shards.parquet", shards, shards_schema)
    write("rejects.parquet", rejects, rejects_schema)
    summary = {
        "samples": sum(s["samples"] for s in shards), "images": len(images),
        "shards": len(shards), "rejected": len(rejects),
        "per_vendor": dict(sorted(Counter(r["manufacturer"] or "?" for r in images).items())),
        "per_energy": dict(sorted(Counter(r["energy"] or "?" for r in images).items())),
        "harmonized": sum(bool(r["harmonized"]) for r in images),
        "suspect_kept": sum(r.get("qc") == "suspect" for r in images),
        "rejects_by_reason": dict(sorted(Counter(r["reason"] for r in rejects).items())),
        "warnings": list(warnings or []),
    }
    if label_report is not None:
        summary["labels"] = label_summary(images, label_report, summary["warnings"])
    doc = {**config, "manifests_sha256": digests, "summary": summary}
    atomic_write(out / "config.json", json.dumps(doc, indent=2, sort_keys=True).encode())
    return summary


def label_summary(images: list[dict[str, Any]], report: dict[str, Any],
                  warnings: list[str]) -> dict[str, Any]:
    """``report`` plus ``labelled_images`` (task -> images with a label); appends a warning
    to ``warnings`` for every task that ended up with no labelled image."""
    labelled = {t: sum(r.get(f"label_{t}") is not None for r in images) for t in LABEL_TASKS}
    for t, n in labelled.items():
        if not n:
            warnings.append(f"task {t}: no labelled image ({report.get('source')} labels; "
                            f"rules: {report.get('rules')})")
    return {**report, "labelled_images": labelled}


def manifest_schemas():
    """pyarrow schemas of images.parquet, shards.parquet, rejects.parquet (manifests/SCHEMA.md)."""
    import pyarrow as pa

    box = pa.list_(pa.list_(pa.float64()))
    images = pa.schema([
        ("key", pa.string()), ("shard", pa.string()), ("view", pa.string()),
        ("laterality", pa.string()), ("patient", pa.string()), ("study", pa.string()),
        ("pathology", pa.string()), ("birads", pa.string()), ("density", pa.string()),
        ("label_diagnosis", pa.int8()), ("label_birads2", pa.int8()),
        ("label_birads3", pa.int8()), ("label_density", pa.int8()),
        ("boxes", box), ("boxes_original", box),
        ("manufacturer", pa.string()), ("model", pa.string()), ("kvp", pa.float64()),
        ("energy", pa.string()), ("bits_stored", pa.int16()), ("value_bits", pa.int16()),
        ("photometric", pa.string()),
        ("transfer_syntax", pa.string()), ("presentation_intent", pa.string()),
        ("original_rows", pa.int32()), ("original_cols", pa.int32()),
        ("stored_rows", pa.int32()), ("stored_cols", pa.int32()),
        ("removed_fraction", pa.float64()), ("breast_fraction", pa.float64()),
        ("chest_wall", pa.string()), ("threshold", pa.int32()),
        ("background_level", pa.float64()), ("qc", pa.string()), ("qc_reason", pa.string()),
        ("breast_bbox", pa.list_(pa.int32())),
        ("decode_reduction", pa.int8()),
        ("harmonized", pa.bool_()), ("inverted", pa.bool_()), ("sop_uid_hash", pa.string()),
        ("fold", pa.int8()), ("split", pa.string()), ("mammogram_evidence", pa.string()),
    ])
    shards = pa.schema([("shard", pa.string()), ("samples", pa.int32()), ("images", pa.int32()),
                        ("bytes", pa.int64()), ("sha256", pa.string())])
    rejects = pa.schema([("path", pa.string()), ("reason", pa.string()),
                         ("message", pa.string()), ("stage", pa.string())])
    return images, shards, rejects


# ------------------------------------------------------------------------------- driver

class _ProcessPool:
    """Marker base so :func:`scan` can use chunked map on local pools."""


def local_executor(jobs: int):
    """A spawn-based process pool (Numba threads limited to 1 per worker)."""
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    class Pool(ProcessPoolExecutor, _ProcessPool):
        pass

    return Pool(max_workers=jobs, mp_context=mp.get_context("spawn"),
                initializer=_worker_init)


def _worker_init() -> None:
    """One Numba thread per worker process. The environment variable only counts before
    Numba is imported: changing it afterwards makes Numba's first compilation in this
    process fail ("Cannot set NUMBA_NUM_THREADS to a different value once the threads have
    been launched"), so it is only set when Numba is not loaded yet; ``set_num_threads``
    caps the threads either way."""
    import sys

    if "numba" not in sys.modules:
        os.environ.setdefault("NUMBA_NUM_THREADS", "1")
    try:
        from ..runtime import prepare_process

        prepare_process(1)  # also: image-sized blocks reused, no BLAS probe at start-up
    except Exception:  # noqa: BLE001
        pass


def build_shards(inputs: Iterable[str], out_dir: str | Path, cfg: ShardConfig, salt: bytes,
                 executor: Executor | None = None, progress=None, log=print,
                 overwrite: bool = False, table=None, strict_labels: bool = False
                 ) -> dict[str, Any]:
    """Plan and write shards and manifests. Returns the summary (see write_manifests).

    ``table``: ``cfg.labels`` already loaded by the caller (with the input folders as
    roots), so that it is not read again (a CBIS-DDSM table opens every ROI mask).
    ``strict_labels``: a label value no legend has stops the run before anything is written
    (default: that value is dropped and counted, :attr:`mammoprep.labels.LabelTable.dropped`).

    ``progress(kind, n, total)`` is called as files are scanned and images are written.
    Holds ``OUT/.lock`` (a concurrent run on OUT gets FolderLockedError). Resumes what an
    earlier run with the same config (options, reference and label contents) finished;
    refuses a folder holding shards of another config unless ``overwrite``, which first
    deletes this command's outputs in OUT (nothing else). Shards the plan no longer has are
    removed at the end. Every file is written atomically; a full disk or a permission
    problem is a WriteError naming the file, and the next run resumes.
    """
    out = Path(out_dir)
    with output_lock(out, "shard"):  # a second run on OUT stops here with a message
        return _build_locked(inputs, out, cfg, salt, executor, progress, log, overwrite,
                             table, strict_labels)


def _build_locked(inputs, out: Path, cfg: ShardConfig, salt: bytes, executor, progress, log,
                  overwrite: bool, table=None, strict_labels: bool = False) -> dict[str, Any]:
    from ..io.dicom import iter_dicom_paths
    from ..labels import load_labels

    if overwrite:
        remove_outputs(out)
    inputs = [str(p) for p in inputs]
    labels = None
    if cfg.labels:
        labels = table if table is not None else load_labels(
            cfg.labels, roots=[p for p in inputs if Path(p).is_dir()], strict=strict_labels)
    cfg = replace(cfg, reference_sha256=cfg.reference_sha256 or content_digest(
                      cfg.prep.reference),
                  labels_digest=cfg.labels_digest or labels_digest(labels, salt))
    check_existing(out, cfg, log)
    paths = [str(p) for p in iter_dicom_paths(inputs)]
    auxiliary = [p for p in paths if labels is not None and labels.is_auxiliary(p)]
    aux = set(auxiliary)
    paths = [p for p in paths if p not in aux]  # ROI masks, crops, C-views: not stored
    if not paths:
        raise MammoprepError(None, "no DICOM files found", tag="IN", value=list(map(str, inputs)))
    if progress:
        progress("scan", 0, len(paths))
    scanned = scan(paths, salt, executor, (lambda n: progress("scan", n, len(paths)))
                   if progress else None)
    conflicts: dict[str, Any] = {}
    skipped_views: Counter = Counter()
    samples, plan_rejects, unmatched_labels = plan_samples(scanned, labels, salt, conflicts,
                                                           skipped_views)
    warnings: list[str] = []
    folds = assign_folds(samples, cfg.folds, cfg.seed, warnings)
    for s in samples:
        s["fold"] = folds.get(s["patient"])
    n = cfg.samples_per_shard
    tasks = [ShardTask(i, tuple(samples[i * n:(i + 1) * n]), str(out), cfg, salt)
             for i in range((len(samples) + n - 1) // n)]
    total_images = sum(len(s["views"]) for s in samples)
    parts, todo = [], []
    for t in tasks:
        done = finished_part(out, t.index, cfg.digest(), task_digest(t))
        (parts.append(done) if done else todo.append(t))
    if progress:
        progress("write", 0, total_images)
        skipped = sum(len(s["views"]) for t in tasks if t not in todo for s in t.samples)
        if skipped:
            progress("write", skipped, total_images)
    results = executor.map(write_shard, todo) if executor else map(write_shard, todo)
    for t, part in zip(todo, results):
        parts.append(part)
        if progress:
            progress("write", sum(len(s["views"]) for s in t.samples), total_images)
    extra = {"inputs": len(paths), "unmatched_labels": len(unmatched_labels),
             "patients": len({s["patient"] for s in samples}), "folds": cfg.folds,
             "skipped_views": dict(sorted(skipped_views.items()))}
    report = None
    if labels is not None:
        examples = conflicts.pop("examples", [])
        report = {"source": labels.kind, "rules": labels.rules.description,
                  "conflicts": conflicts, "unmatched_rows": len(unmatched_labels),
                  "source_warnings": len(labels.warnings), "skipped_files": len(auxiliary),
                  "dropped_values": labels.dropped,
                  "splits": dict(sorted(Counter(s["split"] or "none" for s in samples).items()))}
    summary = write_manifests(out, parts, plan_rejects, cfg, extra, report, warnings)
    remove_stale(out, {shard_name(t.index) for t in tasks})
    for w in summary["warnings"]:
        log(f"warning: {w}")
    summary["unmatched_labels"] = unmatched_labels
    summary["skipped_views"] = extra["skipped_views"]
    if labels is not None:  # with paths and source ids: shown, not written to the manifests
        summary["label_details"] = {"conflict_examples": examples,
                                    "source_warnings": list(labels.warnings)}
    return summary


# ------------------------------------------------------------------ existing outputs

MANIFESTS = ("images.parquet", "shards.parquet", "rejects.parquet")


def content_digest(path: str | None) -> str:
    """sha256 of a file's bytes, or of a folder's regular files (relative path and bytes,
    in sorted order); "" for None or a missing path."""
    if not path or not Path(path).exists():
        return ""
    root = Path(path)
    if root.is_file():
        return _sha256(root)
    h = hashlib.sha256()
    for f in sorted(p for p in root.rglob("*") if p.is_file()):
        h.update(f"{f.relative_to(root).as_posix()}\0{_sha256(f)}\n".encode(
            "utf-8", "surrogateescape"))
    return h.hexdigest()


def labels_digest(labels, salt: bytes) -> str:
    """Salted HMAC-SHA256 of a parsed label table (every row, auxiliary files), so that
    an edited table is another config; salted because rows hold patient ids."""
    import hmac

    if labels is None:
        return ""

    def plain(o):
        return asdict(o) if is_dataclass(o) else sorted(o) if isinstance(o, set) else str(o)

    parts = [labels.kind, labels.by_path, labels.by_tail, labels.by_stem,
             sorted(labels.auxiliary)]
    if labels.auxiliary_stems:  # only then: earlier tables keep their digest
        parts.append(sorted(labels.auxiliary_stems))
    blob = json.dumps(parts, sort_keys=True, default=plain)
    return hmac.new(salt, blob.encode("utf-8", "surrogateescape"), "sha256").hexdigest()


def _read_config(path: Path, log) -> dict[str, Any] | None:
    """config.json as a dict; None (with a warning) when absent, empty or corrupt, e.g.
    left by a crash or a full disk before writes were atomic."""
    try:
        doc = json.loads(path.read_bytes())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        log(f"warning: {display_path(path)} is empty or unreadable ({type(exc).__name__}); "
            "ignored (an interrupted run?)")
        return None
    if not isinstance(doc, dict):
        log(f"warning: {display_path(path)} is not a JSON object; ignored")
        return None
    return doc


def _differences(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two config dicts."""
    out = []
    for k in sorted(set(old) | set(new)):
        a, b = old.get(k), new.get(k)
        if isinstance(a, dict) and isinstance(b, dict):
            out += _differences(a, b, f"{prefix}{k}.")
        elif a != b:
            out.append(f"{prefix}{k}")
    return out


def check_existing(out: Path, cfg: ShardConfig, log=print) -> None:
    """Refuse (MammoprepError, pointing to --overwrite) a folder holding shards or parts
    made with another config: other options, another reference or label table content.
    An empty or corrupt config.json is ignored with a warning."""
    digest = cfg.digest()
    found, prev_cfg = None, None
    doc = _read_config(out / "config.json", log)
    if doc is not None and doc.get("config_digest") != digest:
        found, prev_cfg = "config.json", doc.get("config")
    if found is None:
        for p in sorted((out / PARTS).glob("shard-*.json")):
            try:
                part = json.loads(p.read_bytes())
            except (OSError, ValueError):
                continue  # unreadable: redone
            if isinstance(part, dict) and part.get("config_digest") not in (None, digest):
                found = f"{PARTS}/{p.name} (an interrupted run)"
                break
    if found is None:
        return
    what = _differences(prev_cfg, cfg.to_dict()) if isinstance(prev_cfg, dict) else []
    raise MammoprepError(out, "this folder holds shards made with another configuration"
                         + (f" (differs in {', '.join(what)})" if what else ""),
                         tag=found, value="config_digest differs",
                         hint="use a new output folder, or --overwrite to replace them")


def remove_outputs(out: Path) -> None:
    """Delete what ``shard`` writes in ``out`` (config.json first, so a crash halfway is
    not a valid folder): manifests, shards, parts, temporaries. Other files stay."""
    targets = [out / "config.json", *(out / m for m in MANIFESTS),
               *sorted(out.glob("shard-*.tar")), *sorted((out / PARTS).glob("*"))]
    for p in targets:
        try:
            p.unlink()
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise write_error(p, exc) from None
    remove_temporaries(out)


def remove_stale(out: Path, current: set[str]) -> list[str]:
    """After a run: delete shards and parts the plan no longer has (e.g. fewer samples
    than before) and temporaries of interrupted writes. Returns the removed names."""
    gone = []
    for tar in sorted(out.glob("shard-*.tar")):
        if tar.name not in current:
            tar.unlink(missing_ok=True)
            gone.append(tar.name)
    for p in sorted((out / PARTS).glob("shard-*.json")):
        if p.name[:-len(".json")] not in current:
            p.unlink(missing_ok=True)
    remove_temporaries(out)
    remove_temporaries(out / PARTS)
    return gone


# ------------------------------------------------------------------------------- verify

def _verify_config(out: Path) -> list[str]:
    """config.json present, a JSON object with a config digest, and each manifest's
    sha256 equal to the one it records (``manifests_sha256``)."""
    path = out / "config.json"
    try:
        doc = json.loads(path.read_bytes())
    except FileNotFoundError:
        return [f"{path}: missing"]
    except (OSError, ValueError) as exc:
        return [f"{path}: empty or not valid JSON ({type(exc).__name__}); the run that wrote "
                "it did not finish: rerun `mammoprep shard`"]
    if not isinstance(doc, dict) or not doc.get("config_digest"):
        return [f"{path}: no config_digest; not written by a finished `mammoprep shard`"]
    problems = []
    for name, digest in sorted((doc.get("manifests_sha256") or {}).items()):
        if (out / name).exists() and _sha256(out / name) != digest:
            problems.append(f"{out / name}: sha256 differs from config.json (corrupt or "
                            "modified)")
    return problems


def verify(out_dir: str | Path) -> list[str]:
    """Problems found in a shard folder (empty list = all good).

    Checks: manifests and config.json present and readable (an empty or corrupt one is a
    problem line, never a traceback); each manifest's sha256 equals the one config.json
    records; every tar in the folder is listed in shards.parquet; every shard's size and
    sha256 match shards.parquet; every images.parquet row has its PNG in its shard, the PNG
    decodes to the recorded size; every sample has its JSON; no shard holds samples the
    manifest does not list.
    """
    import pyarrow.parquet as pq

    from ..io.png import decode_png16

    out = Path(out_dir)
    problems: list[str] = []
    for name in MANIFESTS:
        if not (out / name).exists():
            problems.append(f"{out / name}: missing manifest")
    problems += _verify_config(out)
    if any(p.endswith("missing manifest") for p in problems):
        return problems
    tables = {}
    for name in ("images.parquet", "shards.parquet"):
        try:
            tables[name] = pq.read_table(out / name).to_pylist()
        except Exception as exc:  # noqa: BLE001 - a corrupt manifest is a problem line
            problems.append(f"{out / name}: not a readable Parquet file "
                            f"({type(exc).__name__}: {exc})")
    if len(tables) < 2:
        return problems
    images, shards = tables["images.parquet"], tables["shards.parquet"]
    listed_names = {s["shard"] for s in shards}
    for tar in sorted(out.glob("*.tar")):
        if tar.name not in listed_names:
            problems.append(f"{tar}: tar not listed in shards.parquet (stale or foreign)")
    by_shard: dict[str, list[dict]] = defaultdict(list)
    for r in images:
        by_shard[r["shard"]].append(r)
    for s in shards:
        path = out / s["shard"]
        if not path.exists():
            problems.append(f"{path}: shard listed in shards.parquet is missing")
            continue
        if path.stat().st_size != s["bytes"]:
            problems.append(f"{path}: size {path.stat().st_size} != {s['bytes']} in shards.parquet")
        if _sha256(path) != s["sha256"]:
            problems.append(f"{path}: sha256 differs from shards.parquet (corrupt or modified)")
            continue
        try:
            with tarfile.open(path) as tar:
                members = {m.name: m for m in tar.getmembers()}
                keys_in_tar = {n.split(".", 1)[0] for n in members}
                expected_keys = {r["key"] for r in by_shard.get(s["shard"], [])}
                for extra in sorted(keys_in_tar - expected_keys):
                    problems.append(f"{path}: sample {extra} is not in images.parquet")
                if len(expected_keys) != s["samples"]:
                    problems.append(f"{path}: {len(expected_keys)} samples in images.parquet, "
                                    f"{s['samples']} in shards.parquet")
                for key in sorted(expected_keys):
                    if f"{key}.json" not in members:
                        problems.append(f"{path}: {key}.json missing")
                for r in by_shard.get(s["shard"], []):
                    name = f"{r['key']}.{r['view']}.png"
                    if name not in members:
                        problems.append(f"{path}: {name} listed in images.parquet is missing")
                        continue
                    try:
                        px = decode_png16(tar.extractfile(members[name]).read())
                    except Exception as exc:  # noqa: BLE001 - report, keep checking
                        problems.append(f"{path}: {name} does not decode ({exc})")
                        continue
                    if px.shape != (r["stored_rows"], r["stored_cols"]):
                        problems.append(f"{path}: {name} is {px.shape}, manifest says "
                                        f"{(r['stored_rows'], r['stored_cols'])}")
        except tarfile.TarError as exc:
            problems.append(f"{path}: not a readable tar ({exc})")
    listed = {s["shard"] for s in shards}
    for r in images:
        if r["shard"] not in listed:
            problems.append(f"images.parquet: {r['key']}.{r['view']} points to unlisted shard "
                            f"{r['shard']}")
    return problems
