"""DICOM files as ``mammotrain predict --dicom`` input, with rows a user can join back.

Every file is prepared with the training shards' mammoprep options (``config.json`` next to
the shards the checkpoint was trained on): read, burned-in text removed, harmonised, cropped
and resized exactly as ``mammoprep shard`` would store it.

* Single-view models: each file is one example, prepared in memory (the same pixels as a
  shard PNG); no View Position or laterality is needed, any view is predicted.
* Two-view models: the files are grouped into breasts (CC + MLO of one study's breast) by
  ``mammoprep shard`` itself in a temporary folder, so they need laterality and view, from
  the header or from ``--labels`` (any mammoprep label source,
  :func:`mammoprep.labels.load_labels`).

Each prediction row carries the input file's ``path`` and ``sop_instance_uid`` (two-view:
the CC file; the MLO's in ``path_mlo`` / ``sop_instance_uid_mlo``): the user's own data, in the
user's own output file. Rejected files are listed with their reasons on screen and in
``OUT.rejects.csv``; a batch never stops for one bad file.
"""

from __future__ import annotations

import csv
import json
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Sequence

import pyarrow.parquet as pq
import torch

from mammoprep.io.header import header_meta, read_header_dataset
from mammoprep.io.paths import iter_dicom_paths
from mammoprep.harmonise.energy import energy_class, load_energy_table
from mammoprep.errors import MammoprepError
from mammoprep.identity import resolve_salt
from mammoprep.labels import LabelRow
from mammoprep.labels import load_labels
from mammoprep.pipeline import PrepConfig
from mammoprep.pipeline import Prepared
from mammoprep.pipeline import prepare_for_model
from mammoprep.shards.plan import image_identity
from mammoprep.shards.schema import ShardConfig, value_bits
from mammoprep.shards.write import build_shards

from .config import TrainConfig
from .data import Example
from .engine.checkpoint import read_checkpoint
from .engine.evaluate import predict, write_predictions
from .engine.inference import (inference_model, predict_shards, warn_seen_patients,
                               write_prediction_outputs)
from .preprocess import Preprocess
from .stream import collate
from .tasks import get_task

Log = Callable[[str], None]


# ------------------------------------------------------------------------------ options

def training_prep(cfg, ref: str | None = None, shard_size: int | None = None):
    """The :class:`mammoprep.pipeline.PrepConfig` of the shards ``cfg`` was trained on
    (their ``config.json``), with ``ref`` ('none' = no harmonisation) and ``shard_size``
    overriding it."""
    src = Path(cfg.shards) / "config.json"
    prep = json.loads(src.read_text())["config"]["prep"] if src.exists() else {}
    if not prep and shard_size is None:
        raise ValueError(f"{src} not found: give --shard-size (and --ref) for the DICOMs")
    if ref is not None:
        prep["reference"] = None if ref.lower() == "none" else ref
    if shard_size is not None:
        prep["size"] = shard_size
    if prep.get("reference") and not Path(prep["reference"]).exists():
        raise ValueError(f"harmonisation reference {prep['reference']} (from {src}) not "
                         "found: give --ref REF or --ref none")
    known = set(PrepConfig.__dataclass_fields__)
    return PrepConfig(**{k: v for k, v in prep.items() if k in known})


# ------------------------------------------------------------------------------ sources

def _reject(path: str, reason: str, message: str) -> dict[str, str]:
    return {"path": str(path), "reason": reason, "message": message}


def scan_sources(inputs: Sequence[str], salt: bytes, labels=None, energy_table=None
                 ) -> tuple[list[dict[str, Any]], list[dict[str, str]]]:
    """Header-only scan of the DICOM files under ``inputs`` -> (sources, rejects).

    A source: path, sop_instance_uid, sop_uid_hash (mammoprep's salted pseudonym of it),
    patient / study pseudonyms, laterality ('L'/'R'), view (lower case; None when absent),
    manufacturer, energy, the raw labels (pathology, birads, density) of ``labels`` (a
    table from :func:`mammoprep.labels.load_labels`) and ``tasks``, the class per task under
    that source's rules (None without a table row). The table wins over the header for
    patient, study, laterality and view (``mammoprep shard``'s precedence,
    :func:`mammoprep.shards.plan.image_identity`); ``key`` names the breast (study and
    laterality) as a shard's manifest does, or the image alone when that is unknown, so
    per-breast metrics never merge unrelated images."""
    table = load_energy_table(energy_table)
    sources, rejects = [], []
    for p in iter_dicom_paths(inputs):
        path = str(p)
        if labels is not None and labels.is_auxiliary(path):
            continue  # ROI masks, crops, C-views the label source names: not stored
        try:  # one header parse: the identity-free meta and, for the output, the UID
            ds, ts = read_header_dataset(path)
            meta = header_meta(ds, ts, salt)
            uid = str(ds.get("SOPInstanceUID") or "") or None
        except MammoprepError as err:
            d = err.as_dict()
            rejects.append(_reject(path, d.get("error", "bad_dicom"), d.get("message", str(err))))
            continue
        except Exception as exc:  # noqa: BLE001 - one bad file must not stop the batch
            rejects.append(_reject(path, "header_failed", f"{path}: {type(exc).__name__}: {exc}"))
            continue
        lab = labels.lookup(Path(path)) if labels is not None else None
        who = image_identity(lab or LabelRow(), meta, salt)
        lat, study = who["laterality"], who["study"]
        sources.append({
            "path": path, "sop_instance_uid": uid,
            "sop_uid_hash": meta.get("sop_uid_hash"), "patient": who["patient"],
            "study": study, "laterality": lat, "view": who["view"].lower() or None,
            # one breast of one study, as `shard` groups them; an image without laterality
            # (or without study and patient) is a breast of its own
            "key": (f"{study}_{lat}" if study and lat in ("L", "R")
                    else f"image-{len(sources):06d}"),
            "manufacturer": meta.get("manufacturer"),
            "energy": energy_class(meta.get("manufacturer"), meta.get("model"), table, path),
            "labels": {k: getattr(lab, k, None) for k in ("pathology", "birads", "density")},
            # class per task under the source's own rules (e.g. LUMINA: named breasts only)
            "tasks": (labels.tasks(lab) if lab is not None and hasattr(labels, "tasks")
                      else None),
        })
    return sources, rejects


def report_rejects(rejects: list[dict[str, str]], n_inputs: int, out: Path, log: Log,
                   limit: int = 10) -> None:
    """Counts by reason and the first ``limit`` messages on screen; all in
    ``OUT.rejects.csv`` (path, reason, message)."""
    path = out.with_suffix(".rejects.csv")
    if not rejects:
        path.unlink(missing_ok=True)
        return
    counts = Counter(r["reason"] for r in rejects)
    log(f"{len(rejects)} of {n_inputs} inputs not predicted: "
        + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    for r in rejects[:limit]:
        log(f"  {r['reason']}: {r['message']}")
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["path", "reason", "message"], extrasaction="ignore")
        w.writeheader()
        w.writerows(rejects)
    log(f"  {'all ' if len(rejects) <= limit else f'{len(rejects) - limit} more, all '}"
        f"in {path}")


# -------------------------------------------------------------------- single-view images

class DicomImages(torch.utils.data.Dataset):
    """Map-style dataset over sources: item ``i`` is a :func:`~mammotrain.stream.collate`
    sample (``image`` float32 ``[1, 1, S, S]``, uid ``f'{i:06d}'``, the original -> stored
    transform) or ``{'reject': {path, reason, message}}`` when the file cannot be prepared.
    """

    def __init__(self, sources: list[dict[str, Any]], prep_cfg, pre: Preprocess,
                 labels: list[int], salt: bytes):
        self.sources, self.labels, self.salt = sources, labels, salt
        self.prep_cfg, self.pre = prep_cfg, pre
        self.prepared = Prepared(prep_cfg)

    def __len__(self) -> int:
        return len(self.sources)

    def __getitem__(self, i: int) -> dict[str, Any]:
        path = self.sources[i]["path"]
        try:
            rec, t = prepare_for_model(path, self.prepared, self.prep_cfg, salt=self.salt)
        except MammoprepError as err:
            return {"reject": _reject(path, err.kind, str(err))}
        except Exception as exc:  # noqa: BLE001 - one bad image must not stop the batch
            return {"reject": _reject(path, "preprocess_failed",
                                      f"{path}: {type(exc).__name__}: {exc}")}
        img, b = self.pre(rec.pixels, value_bits(rec.meta), None, False)
        return {"image": img[None], "label": self.labels[i], "uid": f"{i:06d}",
                "key": self.sources[i]["key"], "boxes": [b],
                "transforms": [t.to_dict()], "flipped": False}


def _collate_or_reject(samples: list[dict[str, Any]]) -> dict[str, Any]:
    ok = [s for s in samples if "reject" not in s]
    batch = collate(ok) if ok else {"image": None}
    batch["rejects"] = [s["reject"] for s in samples if "reject" in s]
    return batch


class _Batches:
    """The prepared batches of a DataLoader over :class:`DicomImages`; rejects collected."""

    def __init__(self, loader, rejects: list):
        self.loader, self.rejects = loader, rejects

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        for batch in self.loader:
            self.rejects.extend(batch.pop("rejects"))
            if batch["image"] is not None:
                yield batch


# ---------------------------------------------------------------------------- predict

def predict_dicoms(checkpoint: str | Path, inputs: Sequence[str], out: str | Path, *,
                   ref: str | None = None, shard_size: int | None = None,
                   labels: str | None = None, device: str = "auto",
                   batch_size: int | None = None, workers: int = 0, figure: int = 8,
                   log: Log = print) -> dict[str, Any]:
    """Predict DICOM files (and folders of them) with a checkpoint; see the module docstring.
    ``labels``: a ``--labels`` spec (``KIND:PATH``) supplying views, laterality and labels
    (metrics are written for the labelled rows). Returns {'rows', 'metrics', 'rejects'}."""
    out = Path(out)
    ck = read_checkpoint(checkpoint)
    cfg0 = TrainConfig.from_dict(ck["config"])
    prep = training_prep(cfg0, ref, shard_size)
    salt = resolve_salt(None)
    # relative image paths in some sources (CBIS-DDSM) resolve against the input folders
    table = load_labels(labels, roots=[p for p in inputs if Path(p).is_dir()]) \
        if labels else None
    sources, rejects = scan_sources(inputs, salt, table, prep.energy_table)
    n_inputs = len(sources) + len(rejects)
    warn_seen_patients(ck, {s["patient"] for s in sources}, "the DICOM inputs", log)
    by_hash = {s["sop_uid_hash"]: s for s in sources if s["sop_uid_hash"]}
    views = cfg0.views if cfg0.views is not None else get_task(cfg0.task).default("views")
    if views in (2, 4):  # through shards: pairs (and exams) need the shard plan
        return _predict_two_view(checkpoint, ck, inputs, out, prep, labels, table, salt, sources,
                                 rejects, by_hash, n_inputs, device=device, batch_size=batch_size,
                                 workers=workers, figure=figure, log=log)
    return _predict_single_view(ck, out, prep, salt, sources, rejects, n_inputs,
                                device=device, batch_size=batch_size, workers=workers,
                                figure=figure, log=log)


def _label(task, source: dict[str, Any]) -> int:
    """Class of a source for ``task`` (-1 = none): the label table's own rules where it gave
    them, else the generic rule of the raw values."""
    if source.get("tasks") is not None:
        v = source["tasks"].get(task.label_rule)
    else:
        v = task.label(source["labels"]) if any(source["labels"].values()) else None
    return -1 if v is None else int(v)


def _nothing(n_inputs: int, rejects: list, out: Path, hint: str = "") -> ValueError:
    reasons = Counter(r["reason"] for r in rejects)
    return ValueError(f"nothing to predict: {n_inputs} input file(s), all rejected ("
                      + (", ".join(f"{k} {v}" for k, v in sorted(reasons.items())) or "none found")
                      + f"; listed above and in {out.with_suffix('.rejects.csv')}){hint}")


def _predict_single_view(ck, out: Path, prep, salt, sources, rejects, n_inputs, *, device,
                         batch_size, workers, figure, log) -> dict[str, Any]:
    cfg, model = inference_model(ck, ck["config"]["shards"], device, workers)
    task = get_task(cfg.task)
    if not sources:
        report_rejects(rejects, n_inputs, out, log)
        raise _nothing(n_inputs, rejects, out)
    labels = [_label(task, s) for s in sources]
    ds = DicomImages(sources, prep, cfg.preprocess(), labels, salt)
    loader = torch.utils.data.DataLoader(ds, batch_size=batch_size or cfg.eval_batch_size
                                         or cfg.batch_size, num_workers=workers,
                                         collate_fn=_collate_or_reject)
    log(f"{len(sources)} DICOM image(s): {task.name} 1-view {cfg.backbone} {cfg.size}px "
        f"(epoch {ck['epoch']}), prepared with {prep.to_dict()}")
    failed: list = []
    pred = predict(model, _Batches(loader, failed), cfg, torch.device(cfg.device),
                   with_loss=False, temperature=float(ck.get("temperature", 1.0)))
    rejects = rejects + failed
    report_rejects(rejects, n_inputs, out, log)
    if not pred["uid"]:
        raise _nothing(n_inputs, rejects, out)
    by_uid = {}
    for i, s in enumerate(sources):
        by_uid[f"{i:06d}"] = Example(f"{i:06d}", s["key"], (s["view"] or "unknown",),
                                     labels[i], s["patient"] or "", None, "", s["energy"],
                                     s["manufacturer"], (s["sop_uid_hash"],))
    figure_batch = None
    if task.draws_predictions and figure > 0:
        figure_batch = _collate_or_reject([ds[int(u)] for u in pred["uid"][:figure]])
    res = write_prediction_outputs(cfg, pred, by_uid, out, figure=figure, log=log,
                                   figure_batch=figure_batch)
    for r in res["rows"]:  # the file itself, whatever its header holds
        s = sources[int(r["uid"])]
        r["path"], r["sop_instance_uid"] = s["path"], s["sop_instance_uid"]
    write_predictions(res["rows"], out, task)
    return {**res, "rejects": rejects}


def _predict_two_view(checkpoint, ck, inputs, out: Path, prep, labels, table, salt, sources,
                      rejects, by_hash, n_inputs, *, device, batch_size, workers, figure,
                      log) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="mammotrain-predict-") as tmp:
        shards = Path(tmp) / "shards"
        summary = build_shards([str(p) for p in inputs], shards,
                               ShardConfig(prep=prep, labels=labels, folds=0), salt, log=log,
                               table=table)  # the labels as loaded above, not read again
        log(f"prepared {summary['images']} images ({summary['rejected']} rejected) from "
            f"{len(inputs)} input(s)")
        seen = {r["path"] for r in rejects}
        rejects = rejects + [
            _reject(r["path"], r["reason"], r["message"])
            for r in pq.read_table(shards / "rejects.parquet").to_pylist()
            if r["path"] not in seen]
        if (shards / "images.parquet").exists():
            images = pq.read_table(shards / "images.parquet").to_pylist()
            per_key: dict[str, list] = {}
            for r in images:
                per_key.setdefault(r["key"], []).append(r)
            for key, rs in sorted(per_key.items()):
                if len(rs) == 1:
                    src = by_hash.get(rs[0]["sop_uid_hash"] or "", {})
                    path = src.get("path", key)
                    rejects.append(_reject(path, "one_view", (
                        f"{path}: only the {rs[0]['view'].upper()} of this breast; a "
                        "two- or four-view model needs CC and MLO (a single-view model "
                        "needs neither)")))
        report_rejects(rejects, n_inputs, out, log)
        if not summary["images"] or len(rejects) >= n_inputs:
            raise _nothing(n_inputs, rejects, out, hint=(
                "; a two- or four-view model needs laterality and view of every image: give "
                "--labels with them (e.g. rsna:train.csv) or use a single-view model"))
        res = predict_shards(checkpoint, shards, out, device=device, batch_size=batch_size,
                             workers=workers, figure=figure, log=log, sources=by_hash,
                             loaded=ck)
    return {**res, "rejects": rejects}
