"""Inference with a trained model: a checkpoint's model, scores of a shard folder
(``mammotrain predict --shards``), the prediction files (Parquet, metrics, figure)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from ..config import TrainConfig
from ..data import Example, breast_index, plan_examples, read_manifest
from ..jsonio import write_json
from ..stream import EpochLoader, ShardStream
from ..tasks import build_task_model, get_task
from .checkpoint import read_checkpoint
from .evaluate import fmt, predict, predictions_table, write_predictions


def inference_model(ck: dict[str, Any], shards: str | Path, device: str, workers: int = 0
                    ) -> tuple[TrainConfig, torch.nn.Module]:
    """The resolved config (reading ``shards``) and the loaded model of a checkpoint."""
    cfg = replace(TrainConfig.from_dict(ck["config"]), shards=str(shards), device=device,
                  pretrained=None, workers=workers, amp=None, channels_last=None).resolved()
    model, _ = build_task_model(cfg)
    model.load_state_dict(ck["model"])
    model.to(torch.device(cfg.device))
    return cfg, model


def warn_seen_patients(ck: dict[str, Any], patients, where: str,
                       log: Callable[[str], None]) -> int:
    """Warn when ``patients`` (pseudonyms) include patients the checkpoint was trained or
    selected on: their scores are not held-out estimates. Returns how many."""
    seen = set(ck.get("seen_patients") or ())
    patients = {p for p in patients if p}
    both = patients & seen
    if both:
        fold = ck.get("test_fold")
        log(f"warning: {len(both)} of {len(patients)} patients in {where} were in the "
            f"training or validation split of this checkpoint"
            f"{f' (test fold {fold})' if fold is not None else ''}: their scores are not "
            "held-out estimates; use the run's foldK/predictions.parquet for cross-validated "
            "scores")
    return len(both)


def predict_shards(checkpoint: str | Path, shards: str | Path, out: str | Path, *,
                   device: str = "auto", batch_size: int | None = None, workers: int = 0,
                   figure: int = 8, log: Callable[[str], None] = print,
                   sources: dict[str, dict[str, Any]] | None = None,
                   loaded: dict[str, Any] | None = None) -> dict[str, Any]:
    """Scores (and boxes, for detection) of every example of ``shards`` with a trained model.

    Every image (single-view), CC + MLO breast (two-view) or imaged breast of a four-view
    exam (one row per breast) in ``SHARDS/images.parquet`` is predicted, labelled or not;
    scores are ``softmax(logits / T)`` with the checkpoint's calibration temperature ``T``
    (1 for checkpoints without one). Writes ``out`` (Parquet, the columns of
    :func:`predictions_table`; ``label`` -1 = no label), ``out``'s ``.metrics.json`` when
    labels are present (metrics over the labelled examples) and, for detection, a figure
    ``.png`` with the boxes of the first ``figure`` images. Warns when the shards hold
    patients the checkpoint was trained or selected on. ``sources``: sop_uid_hash -> {'path',
    'sop_instance_uid'} of the input files (``predict --dicom``), written into the rows.
    ``loaded``: ``checkpoint`` as :func:`read_checkpoint` already returned it (not read
    again). Returns {'rows', 'metrics'}.
    """
    ck = loaded if loaded is not None else read_checkpoint(checkpoint)
    cfg, model = inference_model(ck, shards, device, workers)
    task = get_task(cfg.task)
    examples, plan = plan_examples(read_manifest(shards), task, cfg.views, unlabeled=True)
    if not examples:
        raise ValueError(f"{shards}: nothing to predict ({plan.describe()})")
    temperature = float(ck.get("temperature", 1.0))
    log(f"{checkpoint}: {task.name} {cfg.views}-view {cfg.backbone} {cfg.size}px (epoch "
        f"{ck['epoch']}, temperature {temperature:.3f}); {len(examples)} {plan.unit}s in "
        f"{shards}")
    if sources is None:
        warn_seen_patients(ck, {e.patient for e in examples}, str(shards), log)
    stream = ShardStream(shards, examples, cfg.preprocess(), train=False, seed=cfg.seed)
    loader = EpochLoader(stream, batch_size or cfg.eval_batch_size or cfg.batch_size,
                         workers=workers, drop_last=False)
    pred = predict(model, loader, cfg, torch.device(cfg.device), with_loss=False,
                   temperature=temperature)
    return write_prediction_outputs(cfg, pred, breast_index(examples), out,
                                    figure=figure, log=log, sources=sources)


def write_prediction_outputs(cfg: TrainConfig, pred: dict[str, Any],
                             by_uid: dict[str, Example], out: str | Path, *, figure: int = 8,
                             log: Callable[[str], None] = print,
                             sources: dict[str, dict[str, Any]] | None = None,
                             figure_batch: dict[str, Any] | None = None) -> dict[str, Any]:
    """Rows (+ the input files of ``sources``), metrics of the labelled rows and the detection
    figure of :func:`predict`'s output; see :func:`predict_shards`."""
    task = get_task(cfg.task)
    rows = predictions_table(pred, by_uid, None, "predict", task)
    if sources is not None:
        attach_sources(rows, sources)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_predictions(rows, out, task)
    metrics: dict[str, Any] = {}
    labelled = np.asarray(pred["label"]) >= 0
    if labelled.any():
        sub = {k: ([v[i] for i in np.flatnonzero(labelled)] if isinstance(v, list)
                   else v[labelled] if isinstance(v, np.ndarray) else v)
               for k, v in pred.items()}
        metrics = task.compute_metrics(sub)
        metrics["n"] = int(labelled.sum())
        write_json(out.with_suffix(".metrics.json"), metrics)
        log(f"{int(labelled.sum())} labelled: " + ", ".join(
            f"{task.metric_label(k)} {fmt(metrics[k])}" for k in task.metrics))
    if figure > 0 and rows:
        task.prediction_figure(cfg, [by_uid[r["uid"]] for r in rows[:figure]],
                               {r["uid"]: r for r in rows}, out.with_suffix(".png"),
                               batch=figure_batch)
    log(f"predictions: {out} ({len(rows)} rows)")
    return {"rows": rows, "metrics": metrics}


def attach_sources(rows: list[dict[str, Any]], sources: dict[str, dict[str, Any]]) -> None:
    """Fill ``path`` / ``sop_instance_uid`` (and their ``_mlo`` twins) of prediction rows from
    ``sources`` (sop_uid_hash -> {'path', 'sop_instance_uid'}), in place."""
    for r in rows:
        for suffix in ("", "_mlo"):
            src = sources.get(r.get(f"sop_uid_hash{suffix}") or "")
            if src is not None:
                r[f"path{suffix}"] = src.get("path")
                r[f"sop_instance_uid{suffix}"] = src.get("sop_instance_uid")
