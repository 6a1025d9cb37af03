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
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
from collections import Counter, defaultdict
from concurrent.futures import Executor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from . import __version__
from .errors import MammoprepError
from .pipeline import PrepConfig

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

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["prep"] = self.prep.to_dict()
        return d

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:16]


# ---------------------------------------------------------------------------- planning

def _scan_one(args: tuple[str, bytes]) -> dict[str, Any]:
    """Header-only read of one file -> {'path', 'meta'} or {'path', 'error'}."""
    from .dicomio import read_header

    path, salt = args
    try:
        return {"path": path, "meta": read_header(path, salt=salt)}
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
    return {"path": path, "reason": reason, "message": message, "stage": stage}


def plan_samples(scanned: list[dict[str, Any]], labels, salt: bytes
                 ) -> tuple[list[dict[str, Any]], list[dict[str, str]], list[str]]:
    """Group scanned images into samples (one breast of one study, CC and/or MLO).

    Returns (samples sorted by key, rejects, label keys that matched no image).
    """
    from .identity import pseudonym
    from .labels import LabelRow

    rejects: list[dict[str, str]] = []
    groups: dict[str, dict[str, Any]] = {}
    matched: set[str] = set()
    for item in scanned:
        path = item["path"]
        if "error" in item:
            rejects.append(_reject(path, item["error"]["error"], item["error"]["message"],
                                   "scan"))
            continue
        meta = item["meta"]
        lab = labels.lookup(Path(path)) if labels is not None else None
        if lab is not None:
            matched.add(labels.match_key(Path(path)))
        lab = lab or LabelRow()
        lat = meta.get("laterality") or lab.laterality
        view = (meta.get("view") or lab.view or "").upper()
        if lat not in ("L", "R"):
            rejects.append(_reject(path, "no_laterality", f"{path}: laterality is "
                                   f"{lat!r} in (0020,0062)/(0020,0060) and the labels; "
                                   "need L or R", "plan"))
            continue
        if view not in STORED_VIEWS:
            rejects.append(_reject(path, "view_not_stored", f"{path}: view {view or 'absent'!r}"
                                   " in (0018,5101)/View Code Sequence; shards store CC and "
                                   "MLO", "plan"))
            continue
        patient = pseudonym(lab.patient, salt) if lab.patient else meta.get("patient_hash")
        study = meta.get("study_hash") or (pseudonym(lab.study, salt) if lab.study else None)
        if not patient:
            rejects.append(_reject(path, "no_patient", f"{path}: no (0010,0020) PatientID and "
                                   "no patient in the labels; cannot group folds by patient",
                                   "plan"))
            continue
        study = study or patient
        key = f"{study}_{lat}"
        g = groups.setdefault(key, {"key": key, "patient": patient, "study": study,
                                    "laterality": lat, "views": {}, "labels": None})
        v = view.lower()
        if v in g["views"]:
            rejects.append(_reject(path, "duplicate_view", f"{path}: a second {view} of the "
                                   f"same breast and study (kept {Path(g['views'][v]['path']).name})",
                                   "plan"))
            continue
        g["views"][v] = {"path": path, "meta": meta, "boxes": lab.boxes}
        raw = {"pathology": lab.pathology, "birads": lab.birads, "density": lab.density}
        if g["labels"] is None or (not any(g["labels"].values()) and any(raw.values())):
            g["labels"] = raw
    samples = [groups[k] for k in sorted(groups)]
    unmatched_keys = sorted(labels.keys() - matched) if labels is not None else []
    return samples, rejects, unmatched_keys


def assign_folds(samples: list[dict[str, Any]], k: int, seed: int) -> dict[str, int]:
    """Patient-level stratified group k-fold: patient -> fold. No patient is in two folds.

    Stratified on the patient's pathology (malignant if any breast is, else benign, else
    unknown), seeded. Returns {} when k < 2.
    """
    if k < 2:
        return {}
    import numpy as np
    from sklearn.model_selection import StratifiedGroupKFold

    patients = sorted({s["patient"] for s in samples})
    status = {}
    for s in samples:
        p = (s["labels"] or {}).get("pathology")
        rank = {"malignant": 2, "benign": 1}.get(p, 0)
        status[s["patient"]] = max(status.get(s["patient"], 0), rank)
    k_eff = min(k, len(patients))
    if k_eff < 2:
        return {p: 0 for p in patients}
    y = np.array([status[p] for p in patients])
    # one row per patient: grouping is then trivial and stratification exact
    counts = Counter(y.tolist())
    if min(counts.values()) < k_eff:  # too few of a class to stratify: group-only split
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


def _sample_entries(sample: dict[str, Any], prep, cfg: ShardConfig, salt: bytes, fold: int | None
                    ) -> tuple[dict[str, bytes], list[dict], list[dict]]:
    """Preprocess the views of one sample -> (tar entries, image rows, rejects)."""
    from .labels import task_labels
    from .pipeline import crop_and_resize, preprocess
    from .png import encode_png16

    entries: dict[str, bytes] = {}
    rows, rejects = [], []
    views_json: dict[str, Any] = {}
    key = sample["key"]
    raw = sample["labels"] or {"pathology": None, "birads": None, "density": None}
    tasks = task_labels(raw["pathology"], raw["birads"], raw["density"])
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
        boxes = t.apply(item["boxes"]).round(2).tolist() if item["boxes"] else []
        entries[f"{key}.{v}.png"] = encode_png16(rec.pixels, cfg.png_level)
        views_json[v] = {
            "boxes": boxes, "boxes_original": item["boxes"], "transform": t.to_dict(),
            "sop_uid_hash": m.get("sop_uid_hash"), "manufacturer": m.get("manufacturer"),
            "model": m.get("model"), "energy": m.get("energy"),
            "harmonized": m.get("harmonized"), "bits": m.get("bits_stored"),
            "removed_fraction": m.get("removed_fraction"), "breast_bbox": m.get("breast_bbox"),
            "chest_wall": m.get("chest_wall"), "inverted": m.get("inverted"),
            "presentation_intent": m.get("presentation_intent"),
        }
        rows.append({
            "key": key, "view": v, "laterality": sample["laterality"],
            "patient": sample["patient"], "study": sample["study"],
            "pathology": raw["pathology"], "birads": raw["birads"], "density": raw["density"],
            **{f"label_{k}": val for k, val in tasks.items()},
            "boxes": boxes, "boxes_original": [list(map(float, b)) for b in item["boxes"]],
            "manufacturer": m.get("manufacturer"), "model": m.get("model"), "kvp": m.get("kvp"),
            "energy": m.get("energy"), "bits_stored": m.get("bits_stored"),
            "photometric": m.get("photometric"), "transfer_syntax": m.get("transfer_syntax"),
            "presentation_intent": m.get("presentation_intent"),
            "original_rows": t.original_size[0], "original_cols": t.original_size[1],
            "stored_rows": t.stored_size[0], "stored_cols": t.stored_size[1],
            "removed_fraction": m.get("removed_fraction"),
            "breast_bbox": [int(x) for x in (m.get("breast_bbox") or [])],
            "harmonized": bool(m.get("harmonized")), "inverted": bool(m.get("inverted")),
            "sop_uid_hash": m.get("sop_uid_hash"), "fold": fold,
        })
    if views_json:
        first = views_json[sorted(views_json)[0]]
        doc = {
            "schema": SCHEMA_VERSION, "key": key, "patient": sample["patient"],
            "study": sample["study"], "laterality": sample["laterality"],
            "views": sorted(views_json), "fold": fold,
            "labels": {"raw": raw, **tasks},
            "boxes": {v: d["boxes"] for v, d in views_json.items()},
            "transform": {v: d["transform"] for v, d in views_json.items()},
            "images": views_json,
            "manufacturer": first["manufacturer"], "model": first["model"],
            "energy": first["energy"],
            "harmonized": all(d["harmonized"] for d in views_json.values()),
            "bits": first["bits"],
        }
        entries[f"{key}.json"] = json.dumps(doc, sort_keys=True).encode()
    return entries, rows, rejects


def write_tar(path: Path, entries: dict[str, bytes]) -> None:
    """A reproducible tar: sorted names, fixed mtime/owner/mode, USTAR format."""
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tar:
        for name in sorted(entries):
            data = entries[name]
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(data), TAR_MTIME, 0o644
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            tar.addfile(info, io.BytesIO(data))


def write_shard(task: ShardTask) -> dict[str, Any]:
    """Write one shard (tmp name, then rename) and its part file; return the part."""
    from .pipeline import Prepared

    out = Path(task.out_dir)
    name = shard_name(task.index)
    prep = Prepared(task.config.prep)
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
            "config_digest": task.config.digest()}
    if n_samples:
        tmp = out / (name + ".tmp")
        write_tar(tmp, entries)
        os.replace(tmp, out / name)
        part["bytes"] = (out / name).stat().st_size
        part["sha256"] = _sha256(out / name)
    _atomic_json(out / PARTS / (name + ".json"), part)
    return part


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _atomic_json(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, sort_keys=True))
    os.replace(tmp, path)


def finished_part(out: Path, index: int, digest: str) -> dict[str, Any] | None:
    """The part of a shard finished by an earlier run with the same config, else None."""
    p = out / PARTS / (shard_name(index) + ".json")
    if not p.exists():
        return None
    try:
        part = json.loads(p.read_text())
    except ValueError:
        return None
    if part.get("config_digest") != digest:
        return None
    if part["samples"] and not (out / part["shard"]).exists():
        return None
    return part


# ---------------------------------------------------------------------------- manifests

def write_manifests(out: Path, parts: list[dict[str, Any]], plan_rejects: list[dict[str, str]],
                    cfg: ShardConfig, extra: dict[str, Any]) -> dict[str, Any]:
    """images.parquet, shards.parquet, rejects.parquet and config.json; returns a summary."""
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

    def write(name, rows, schema):
        table = pa.Table.from_pylist(rows, schema=schema) if rows else schema.empty_table()
        table = table.replace_schema_metadata(meta)
        pq.write_table(table, out / name)

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
        "rejects_by_reason": dict(sorted(Counter(r["reason"] for r in rejects).items())),
    }
    (out / "config.json").write_text(json.dumps({**config, "summary": summary}, indent=2,
                                                sort_keys=True))
    return summary


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
        ("energy", pa.string()), ("bits_stored", pa.int16()), ("photometric", pa.string()),
        ("transfer_syntax", pa.string()), ("presentation_intent", pa.string()),
        ("original_rows", pa.int32()), ("original_cols", pa.int32()),
        ("stored_rows", pa.int32()), ("stored_cols", pa.int32()),
        ("removed_fraction", pa.float64()), ("breast_bbox", pa.list_(pa.int32())),
        ("harmonized", pa.bool_()), ("inverted", pa.bool_()), ("sop_uid_hash", pa.string()),
        ("fold", pa.int8()),
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
        import numba

        numba.set_num_threads(1)
    except Exception:  # noqa: BLE001
        pass


def build_shards(inputs: Iterable[str], out_dir: str | Path, cfg: ShardConfig, salt: bytes,
                 executor: Executor | None = None, progress=None, log=print) -> dict[str, Any]:
    """Plan and write shards and manifests. Returns the summary (see write_manifests).

    ``progress(kind, n, total)`` is called as files are scanned and images are written.
    """
    from .dicomio import iter_dicom_paths
    from .labels import load_labels

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    old = out / "config.json"
    if old.exists():
        prev = json.loads(old.read_text()).get("config_digest")
        if prev != cfg.digest():
            raise MammoprepError(out, "this folder holds shards made with other options",
                                 tag="config.json config_digest", value=prev,
                                 hint="use a new output folder or --overwrite")
    labels = load_labels(cfg.labels) if cfg.labels else None
    paths = [str(p) for p in iter_dicom_paths(inputs)]
    if not paths:
        raise MammoprepError(None, "no DICOM files found", tag="IN", value=list(map(str, inputs)))
    if progress:
        progress("scan", 0, len(paths))
    scanned = scan(paths, salt, executor, (lambda n: progress("scan", n, len(paths)))
                   if progress else None)
    samples, plan_rejects, unmatched_labels = plan_samples(scanned, labels, salt)
    folds = assign_folds(samples, cfg.folds, cfg.seed)
    for s in samples:
        s["fold"] = folds.get(s["patient"])
    n = cfg.samples_per_shard
    tasks = [ShardTask(i, tuple(samples[i * n:(i + 1) * n]), str(out), cfg, salt)
             for i in range((len(samples) + n - 1) // n)]
    total_images = sum(len(s["views"]) for s in samples)
    parts, todo = [], []
    for t in tasks:
        done = finished_part(out, t.index, cfg.digest())
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
             "patients": len({s["patient"] for s in samples}), "folds": cfg.folds}
    summary = write_manifests(out, parts, plan_rejects, cfg, extra)
    summary["unmatched_labels"] = unmatched_labels
    return summary


# ------------------------------------------------------------------------------- verify

def verify(out_dir: str | Path) -> list[str]:
    """Problems found in a shard folder (empty list = all good).

    Checks: manifests present; every shard's size and sha256 match shards.parquet; every
    images.parquet row has its PNG in its shard, the PNG decodes to the recorded size; every
    sample has its JSON; no shard holds samples the manifest does not list.
    """
    import pyarrow.parquet as pq

    from .png import decode_png16

    out = Path(out_dir)
    problems: list[str] = []
    for name in ("images.parquet", "shards.parquet", "rejects.parquet"):
        if not (out / name).exists():
            problems.append(f"{out / name}: missing manifest")
    if problems:
        return problems
    images = pq.read_table(out / "images.parquet").to_pylist()
    shards = pq.read_table(out / "shards.parquet").to_pylist()
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
