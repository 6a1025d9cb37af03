"""Writing WebDataset shards + Parquet manifests from a DICOM archive.

:func:`build_shards` plans (:mod:`.plan`: header-only scan -> samples -> folds -> shards),
then runs one task per shard, each a pure function of its slice of the plan, through a
:class:`mammoprep.batch.Runner` (a process pool or any ``concurrent.futures`` executor,
Dask's). A shard is written under a temporary name and renamed when complete; its result
(manifest rows) goes to ``.parts/NAME.json`` last, so a rerun skips finished shards and
gives byte-identical output. The format itself is :mod:`.schema`.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from collections import Counter
from concurrent.futures import Executor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Iterable

from .. import __version__
from ..atomic import (atomic_write, output_lock, remove_temporaries, sweep_temporaries,
                      write_error)
from ..batch import Runner
from ..errors import MammoprepError
from ..geometry import label_boxes
from ..io.paths import iter_dicom_paths
from ..io.png import encode_png16
from ..labels import LabelError, load_labels
from ..labels._common import TASKS as LABEL_TASKS
from ..pipeline import original_bbox, prepare_for_model, prepared
from .plan import assign_folds, plan_samples, reject_row, scan
from .schema import (MANIFESTS, PARTS, SCHEMA_VERSION, ShardConfig, image_row, manifest_schemas,
                     sample_json, shard_name, view_record)
from .verify import check_existing, content_digest, labels_digest

TAR_MTIME = 946684800  # 2000-01-01T00:00:00Z: fixed, so shards are byte-reproducible





@dataclass(frozen=True)
class ShardTask:
    """Input of :func:`write_shard`: a pure function of this (and the files it names)."""

    index: int
    samples: tuple
    out_dir: str
    config: ShardConfig
    salt: bytes


def _sample_entries(sample: dict[str, Any], prep, cfg: ShardConfig, salt: bytes, fold: int | None
                    ) -> tuple[dict[str, bytes], list[dict], list[dict]]:
    """Preprocess the views of one sample -> (tar entries, image rows, rejects)."""
    from ..segmentation.foreground import qc_fields  # Numba: loaded where images are made

    entries: dict[str, bytes] = {}
    rows, rejects = [], []
    views_json: dict[str, Any] = {}
    key = sample["key"]
    tasks = sample["tasks"]  # sample level: merge_view_labels
    for v in sorted(sample["views"]):
        item = sample["views"][v]
        try:
            rec, t = prepare_for_model(item["path"], prep, cfg.prep, salt=salt)
        except MammoprepError as err:
            rejects.append(reject_row(item["path"], err.kind, str(err), "write"))
            continue
        except Exception as exc:  # noqa: BLE001 - one bad image must not lose the shard
            rejects.append(reject_row(item["path"], "preprocess_failed",
                                      f"{item['path']}: {type(exc).__name__}: {exc}", "write"))
            continue
        m = rec.meta
        bbox = original_bbox(m)  # original pixel units, also after a reduced decode
        reduction = int(m.get("decode_reduction") or 0)
        original_boxes = label_boxes(item["boxes"], item.get("boxes_frame"), m,
                                     t.original_size[1], sample["laterality"])
        boxes = t.apply(original_boxes).round(2).tolist() if original_boxes else []
        entries[f"{key}.{v}.png"] = encode_png16(rec.pixels, cfg.png_level)
        qc = qc_fields(m)
        views_json[v] = view_record(item, m, t, boxes, original_boxes, bbox, reduction, qc)
        rows.append(image_row(sample, v, item, m, t, boxes, original_boxes, bbox, reduction,
                              qc, fold))
    if views_json:
        entries[f"{key}.json"] = sample_json(sample, views_json, fold)
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



def build_shards(inputs: Iterable[str], out_dir: str | Path, cfg: ShardConfig, salt: bytes,
                 executor: Runner | Executor | None = None, progress=None, log=print,
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
    inputs = [str(p) for p in inputs]
    labels = None
    if cfg.labels:  # read and matched before OUT is touched: a table that fits no image
        labels = table if table is not None else load_labels(  # writes nothing
            cfg.labels, roots=[p for p in inputs if Path(p).is_dir()], strict=strict_labels)
    paths, auxiliary = input_files(inputs, labels, cfg.labels)
    with output_lock(out, "shard"):  # a second run on OUT stops here with a message
        return _build_locked(paths, auxiliary, out, cfg, salt, executor, progress, log,
                             overwrite, labels)


def input_files(inputs: list[str], labels, spec: str | None) -> tuple[list[str], list[str]]:
    """(DICOM files to store, files the label source names but does not store: ROI masks,
    crops, C-views). Raises :class:`MammoprepError` when there is no file to store, and
    :class:`~mammoprep.labels.LabelError` when the label table has no row or no row names
    any of the files (an empty table, a header alone, another archive's paths)."""
    paths = [str(p) for p in iter_dicom_paths(inputs)]
    auxiliary = [p for p in paths if labels is not None and labels.is_auxiliary(p)]
    aux = set(auxiliary)
    paths = [p for p in paths if p not in aux]
    if not paths:
        raise MammoprepError(None, "no DICOM files found", tag="IN", value=list(map(str, inputs)))
    if labels is not None and not any(labels.match_key(p) is not None for p in paths):
        rows = len(labels.keys())
        what = (f"names none of the {len(paths)} DICOM file(s) found" if rows else
                "has no rows")
        raise LabelError(None, f"the label table {what}; nothing was written", tag="--labels",
                         value=spec, hint="give the table of these images" + (
                             " (relative paths are read from the table's folder, then from "
                             "each input folder)" if rows else ""))
    return paths, auxiliary


def _build_locked(paths: list[str], auxiliary: list[str], out: Path, cfg: ShardConfig,
                  salt: bytes, executor, progress, log, overwrite: bool, labels=None
                  ) -> dict[str, Any]:
    sweep_temporaries(out)  # under the lock: every temporary file in OUT is a dead run's
    if overwrite:
        remove_outputs(out)
    cfg = replace(cfg, reference_sha256=cfg.reference_sha256 or content_digest(
                      cfg.prep.reference),
                  labels_digest=cfg.labels_digest or labels_digest(labels, salt))
    check_existing(out, cfg, log)
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
    results = Runner.of(executor).map(write_shard, todo)
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




