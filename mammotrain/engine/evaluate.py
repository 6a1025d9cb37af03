"""Evaluation: predictions of a model over a loader, their metrics, the prediction table
(``predictions.parquet``) and the test-fold evaluation of a trained fold (``metrics.json``,
figures)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from mammoprep.atomic import atomic_write

from ..calibration import (FEW_CALIBRATION_EXAMPLES, N_BINS, calibration_metrics,
                           fold_calibration)
from ..config import TrainConfig
from ..data import Example, Split, breast_index
from ..fourview import breast_rows
from ..jsonio import write_json
from ..models import count_parameters
from ..stream import EpochLoader, ShardStream
from ..tasks import Task, get_task
from .checkpoint import atomic_save, load_best, save_best
from .distributed import Dist
from .stepping import autocast, progress


@torch.no_grad()
def predict(model: torch.nn.Module, loader: EpochLoader, cfg: TrainConfig,
            device: torch.device, with_loss: bool = True,
            keep_unlabelled: bool | None = None, temperature: float = 1.0) -> dict[str, Any]:
    """Run ``model`` over ``loader`` -> {'uid': [N], 'label': int [N], 'probs': float [N, K]
    (of ``logits / temperature``), 'logits': float32 the model's image-level (four-view:
    breast-level) logits (``[N, K]``; detection ``[N, 1]``), 'loss': mean training objective
    (of the unscaled outputs)} plus the task's per-example outputs
    (:meth:`mammotrain.tasks.Task.collect`; detection: 'boxes', 'box_scores', 'gt_boxes',
    'boxes_original').

    Four-view exams (logits ``[B, 2, K]``): one row per imaged breast
    (:func:`mammotrain.fourview.breast_rows`); unlabelled breasts are dropped unless
    ``keep_unlabelled`` (default: when not computing the loss, i.e. inference)."""
    keep = (not with_loss) if keep_unlabelled is None else keep_unlabelled
    task = get_task(cfg.task)
    crit = task.make_criterion(cfg.size, cfg.det_lambda) if with_loss else None
    model.eval()
    uids, labels, probs, logits, loss_sum = [], [], [], [], 0.0
    extra = task.new_outputs()
    prep = cfg.preprocess()
    for batch in progress(loader, True, "predict"):
        x = batch["image"].to(device, non_blocking=True)
        with autocast(cfg, device):
            out = model(x)
        z, lab, ids = task.logits(out).float(), batch["label"], batch["uid"]
        if z.ndim == 3:  # four-view: per breast
            z, lab, ids = breast_rows(z, batch, keep)
        if crit is not None and len(ids):
            loss_sum += float(crit(out, batch)["loss"]) * len(ids)
        logits.append(z.cpu().numpy())
        probs.append(task.activate(z, temperature).cpu().numpy())
        labels.append(lab.numpy())
        uids.extend(ids)
        task.collect(extra, out, batch, cfg, prep)
    n = len(uids)
    res = {"uid": uids, "label": np.concatenate(labels) if labels else np.zeros(0, np.int64),
           "probs": np.concatenate(probs) if probs else np.zeros((0, task.num_classes)),
           "logits": (np.concatenate(logits) if logits
                      else np.zeros((0, task.num_classes), np.float32)),
           "loss": loss_sum / max(n, 1)}
    res.update(extra)
    return res


def eval_loader(cfg: TrainConfig, examples: list[Example], dist: Dist | None = None
                ) -> EpochLoader:
    """Evaluation batches of ``examples``: all of them, or with ``dist`` this rank's shards'
    share (every example on exactly one rank;
    :func:`~mammotrain.engine.distributed.gather_predictions`)."""
    dist = dist or Dist()
    stream = ShardStream(cfg.shards, examples, cfg.preprocess(), train=False, seed=cfg.seed,
                         rank=dist.rank, world=dist.world)
    return EpochLoader(stream, cfg.eval_batch_size or cfg.batch_size,
                       workers=min(cfg.workers, 2), drop_last=False)


def selection_score(cfg: TrainConfig, val: dict[str, float]) -> tuple[float, float]:
    if cfg.select in ("auc", "map25"):
        v = val.get(cfg.select, float("nan"))
        return (v if math.isfinite(v) else -math.inf, -val["loss"])
    return (-val["loss"], 0.0)


def predictions_table(pred: dict[str, Any], examples: dict[str, Example], fold: int | None,
                      split: str, task: Task) -> list[dict[str, Any]]:
    """Rows of ``predictions.parquet``: uid, key, view ('cc', 'mlo' or 'cc+mlo'), patient,
    fold, split, label (-1 = unlabelled), pred (arg-max), scores (class probabilities),
    score (binary: p of class 1; multi-class: p of the label, of the prediction when
    unlabelled), energy, manufacturer, sop_uid_hash (mammoprep's salted pseudonym of the
    image's SOP Instance UID; two-view: of the CC image, the MLO's in sop_uid_hash_mlo) and,
    filled by ``predict --dicom`` only, path / sop_instance_uid of the input file (two-view:
    the CC file; the MLO's in path_mlo / sop_instance_uid_mlo); then the task's columns
    (:meth:`mammotrain.tasks.Task.row_fields`; detection: ``boxes`` (``[Q, 4]`` pixel xyxy
    at the model input, best first), ``box_scores`` (objectness), ``gt_boxes`` (model input)
    and ``boxes_original`` (the ``boxes`` in original DICOM pixels, same order)); last
    ``logits`` (the model's unscaled logits; ``scores`` = their softmax at the model's
    temperature, :mod:`mammotrain.calibration`) where ``pred`` has them."""
    rows = []
    for i, (uid, label, p) in enumerate(zip(pred["uid"], pred["label"], pred["probs"])):
        e = examples[uid]
        k = int(label) if label >= 0 else int(np.argmax(p))
        row = {"uid": uid, "key": e.key, "view": "+".join(e.views), "patient": e.patient,
               "fold": fold if fold is not None else e.fold, "split": split,
               "label": int(label), "pred": int(np.argmax(p)), "scores": [float(v) for v in p],
               "score": float(p[1] if len(p) == 2 else p[k]),
               "energy": e.energy, "manufacturer": e.manufacturer}
        hashes = list(e.sop_uid_hashes) + [None, None]
        row.update({"sop_uid_hash": hashes[0], "path": None, "sop_instance_uid": None,
                    "sop_uid_hash_mlo": hashes[1] if len(e.views) > 1 else None,
                    "path_mlo": None, "sop_instance_uid_mlo": None})
        row.update(task.row_fields(pred, i))
        if "logits" in pred:
            row["logits"] = [float(v) for v in np.reshape(pred["logits"][i], -1)]
        rows.append(row)
    return rows


def write_predictions(rows: list[dict[str, Any]], path: Path, task: Task | None = None
                      ) -> None:
    """``predictions.parquet``: the columns of :func:`predictions_table`; ``task``'s
    columns where the rows have them."""
    fields_ = [("uid", pa.string()), ("key", pa.string()), ("view", pa.string()),
               ("patient", pa.string()), ("fold", pa.int16()), ("split", pa.string()),
               ("label", pa.int16()), ("pred", pa.int16()),
               ("scores", pa.list_(pa.float32())), ("score", pa.float32()),
               ("energy", pa.string()), ("manufacturer", pa.string()),
               ("sop_uid_hash", pa.string()), ("path", pa.string()),
               ("sop_instance_uid", pa.string()), ("sop_uid_hash_mlo", pa.string()),
               ("path_mlo", pa.string()), ("sop_instance_uid_mlo", pa.string())]
    if task is not None:
        fields_ += [f for f in task.prediction_columns() if rows and f[0] in rows[0]]
    if rows and "logits" in rows[0]:
        fields_.append(("logits", pa.list_(pa.float32())))
    table = pa.Table.from_pylist(rows, schema=pa.schema(fields_))
    atomic_write(path, lambda fh: pq.write_table(table, fh))



def selection_text(cfg: TrainConfig, has_val: bool) -> str:
    """How the evaluated epoch is chosen, as said in logs, metrics.json and reports."""
    if not has_val:
        return "last epoch: no validation patients"
    return {"auc": "highest validation AUC (ties: lowest loss)",
            "map25": "highest validation mAP@.25 (ties: lowest loss)",
            "loss": "lowest validation loss",
            "last": "last epoch (--select last)"}[cfg.select]


def evaluate_fold(cfg: TrainConfig, model, split: Split, examples: list[Example],
                  device: torch.device, out: Path, log: Callable[[str], None],
                  selection: str | None = None) -> dict[str, Any]:
    """Load the selected weights, fit their temperature on the validation split
    (classification; :func:`calibrate_fold`), predict the test fold with it, write
    predictions/metrics/Grad-CAM. ``metrics.json`` gives ``selected_epoch`` counted from 1,
    ``selection`` (how) and the calibration (``temperature``, test ECE/NLL before/after)."""
    best = load_best(out, model)
    task = get_task(cfg.task)
    cal = (calibrate_fold(cfg, model, split, device, out, best, log)
           if task.kind == "classification" else None)
    temperature = cal["temperature"] if cal else 1.0
    save_best(out, model, cfg, best, log)
    by_uid = breast_index(examples)
    pred = predict(model, eval_loader(cfg, split.test), cfg, device, temperature=temperature)
    expected = len(split.test) if cfg.views != 4 else sum(
        s is not None and s.label >= 0 for e in split.test for s in e.sides)
    if len(pred["uid"]) != expected:
        log(f"warning: fold {split.test_fold}: {expected - len(pred['uid'])} test "
            "examples listed in images.parquet were not found in the shards")
    rows = predictions_table(pred, by_uid, split.test_fold, "test", task)
    write_predictions(rows, out / "predictions.parquet", task)
    metrics = task.compute_metrics(pred)
    epoch = int(best["epoch"]) + 1 - int(best.get("epoch_base", 0))
    selection = selection or best.get("selection") or selection_text(cfg, bool(split.val))
    metrics.update({"fold": split.test_fold, "selected_epoch": epoch, "selection": selection,
                    "test_loss": pred["loss"], "n_train": len(split.train),
                    "n_val": len(split.val), "n_test": len(split.test),
                    "params": count_parameters(model)})
    if cfg.views == 4:  # n_* count exams; the metrics are over these labelled breasts
        metrics["n_test_breasts"] = len(pred["uid"])
    if cal is not None:
        metrics.update(calibration_entries(pred, cal, split.test_fold, log))
    write_json(out / "metrics.json", metrics)
    log(f"fold {split.test_fold} test (epoch {epoch}; {selection}): "
        + ", ".join(f"{task.metric_label(k)} {fmt(metrics[k])}" for k in task.metrics))
    if cfg.gradcam > 0 and cfg.views == 4:
        log(f"fold {split.test_fold}: no Grad-CAM figure for four-view exams")
    elif cfg.gradcam > 0:
        try:
            cases = _gradcam_cases(rows, cfg.gradcam)
            task.fold_figure(model, cfg, [by_uid[u] for u in cases],
                             {r["uid"]: r for r in rows}, out, device)
        except Exception as exc:  # noqa: BLE001 - a figure must not lose the fold's results
            log(f"warning: fold {split.test_fold}: figure failed ({type(exc).__name__}: {exc})")
    return metrics


def calibrate_fold(cfg: TrainConfig, model, split: Split, device: torch.device, out: Path,
                   best: dict[str, Any], log: Callable[[str], None]) -> dict[str, Any]:
    """Fit the selected model's temperature on the fold's validation examples only (never
    its test fold; :func:`mammotrain.calibration.fold_calibration`), store it in ``best``
    and ``best.pt`` (``temperature``) and write ``calibration.json`` (T, the validation
    uids used, their NLL before/after). T = 1 without validation patients."""
    if split.val:
        val = predict(model, eval_loader(cfg, split.val), cfg, device, with_loss=False,
                      keep_unlabelled=False)
        cal = fold_calibration(val["logits"], val["label"], val["uid"])
    else:
        cal = fold_calibration(np.zeros((0, 2)), np.zeros(0, np.int64), [])
        log(f"warning: fold {split.test_fold}: no validation patients, no calibration (T = 1)")
    cal.update({"fitted_on": "validation", "test_fold": split.test_fold})
    best["temperature"] = cal["temperature"]
    atomic_save(best, out / "best.pt")
    write_json(out / "calibration.json", cal)
    return cal


def calibration_entries(pred: dict[str, Any], cal: dict[str, Any], fold: int,
                     log: Callable[[str], None]) -> dict[str, Any]:
    """The calibration entries of a fold's ``metrics.json``: ``temperature``,
    ``calibration_n`` (validation examples it was fitted on) and the labelled test
    examples' top-label ECE (:data:`~mammotrain.calibration.N_BINS` bins) and NLL before
    (T = 1) and after."""
    y = np.asarray(pred["label"], dtype=np.int64)
    keep = y >= 0
    m = calibration_metrics(np.asarray(pred["logits"])[keep], y[keep], cal["temperature"])
    log(f"fold {fold} calibration: T {cal['temperature']:.3f} (on {cal['n']} validation "
        f"examples); test ECE {fmt(m['ece_before'])} -> {fmt(m['ece_after'])}, NLL "
        f"{fmt(m['nll_before'])} -> {fmt(m['nll_after'])}"
        + (f"; warning: fewer than {FEW_CALIBRATION_EXAMPLES} validation examples, T is "
           "uncertain" if cal["n"] < FEW_CALIBRATION_EXAMPLES else ""))
    return {"temperature": cal["temperature"], "calibration_n": cal["n"], **m,
            "ece_kind": "top-label", "ece_bins": N_BINS}


def fmt(v: float) -> str:
    return f"{v:.3f}" if v is not None and math.isfinite(v) else "undefined"


def _gradcam_cases(rows: list[dict[str, Any]], n: int) -> list[str]:
    """Test uids for Grad-CAM: the most confident example of each class, round-robin."""
    by_label: dict[int, list] = {}
    for r in sorted(rows, key=lambda r: -r["scores"][r["label"]]):
        by_label.setdefault(r["label"], []).append(r["uid"])
    order = sorted(by_label, reverse=True)
    picked: list[str] = []
    while len(picked) < n and any(by_label[k] for k in order):
        for k in order:
            if by_label[k] and len(picked) < n:
                picked.append(by_label[k].pop(0))
    return picked


