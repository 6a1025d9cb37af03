"""One trainer for every task: folds, epochs, checkpoints, evaluation, predictions.

Layout of a run folder ``OUT``::

    OUT/config.json            resolved TrainConfig, versions, example counts and exclusions
    OUT/foldK/split.json       patient-disjoint train/val/test uids of test fold K
    OUT/foldK/checkpoint.pt    last epoch (model, optimiser, scheduler, scaler, RNG, history)
    OUT/foldK/best.pt          weights of the epoch selected on the validation split
    OUT/foldK/history.jsonl    one line per epoch (train loss, val loss/metrics, lr, time)
    OUT/foldK/history.csv, OUT/foldK/tensorboard/   the same curves (mammotrain.curves)
    OUT/foldK/best.safetensors + best.json   self-contained model file (mammotrain.modelfile)
    OUT/foldK/train_log.rankR.jsonl   per-rank steps, examples and shards read (DDP)
    OUT/foldK/predictions.parquet     test-fold predictions of the selected model
    OUT/foldK/metrics.json     test-fold metrics
    OUT/foldK/gradcam.png      Grad-CAM overlays of a few test examples (classification)
    OUT/foldK/detections.png   predicted vs true boxes on a few test images (detection)

The report (summary table, ROC curves, energy-/vendor-wise AUC) is written by
:mod:`mammotrain.report` from the fold folders. Runs under ``torchrun`` use DDP (gloo on CPU,
NCCL on GPU): each rank reads its own shards (:class:`mammotrain.data.ShardStream`) and
validates its share of the validation shards; rank 0 gathers the validation predictions,
selects the epoch, evaluates the test fold and writes.
"""

from __future__ import annotations

import json
import math
import os
import platform
import random
import time
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from .augment import PRESETS as AUG_PRESETS
from .data import (INTERPOLATIONS, EpochLoader, Example, Preprocess, ShardStream, Split,
                   SPLIT_BY, folds_in, input_hw, parse_size, plan_examples, read_manifest,
                   regroup_folds, split_examples)
from .jsonio import dumps as strict_dumps
from .jsonio import write_json
from .metrics import classification_metrics
from .models import build_model, check_backbone_name, count_parameters
from .splits import OFFICIAL_TEST_FOLD, SPLITS
from .tasks import TaskSpec, get_task

TRANSFORMER_PREFIXES = ("swin", "vit", "eva", "deit", "beit", "cait", "mambaout")

#: lr schedules: name -> multiplier of the base lr in (0-based) epoch ``e`` of ``epochs``
SCHEDULES = ("step", "constant", "cosine")


def lr_factor(schedule: str, epoch: int, epochs: int, step_size: int = 30,
              gamma: float = 0.1, warmup: int = 0) -> float:
    """Multiplier of the base lr during 0-based ``epoch`` of a ``epochs``-epoch run.

    warmup: linear warm-up epochs first: epoch ``e < warmup`` gets ``(e + 1) / (warmup +
    1)``; the schedule then runs over the remaining ``epochs - warmup`` epochs from its start.
    step: ``gamma ** (epoch // step_size)``; constant: 1; cosine: ``(1 + cos(pi * epoch /
    epochs)) / 2`` (1 in the first epoch, approaching 0 in the last)."""
    if warmup > 0:
        if epoch < warmup:
            if schedule not in SCHEDULES:
                raise ValueError(f"schedule must be one of {', '.join(SCHEDULES)}, "
                                 f"got {schedule!r}")
            return (epoch + 1) / (warmup + 1)
        return lr_factor(schedule, epoch - warmup, max(epochs - warmup, 1), step_size, gamma)
    if schedule == "step":
        return float(gamma ** (epoch // step_size))
    if schedule == "constant":
        return 1.0
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * epoch / max(epochs, 1)))
    raise ValueError(f"schedule must be one of {', '.join(SCHEDULES)}, got {schedule!r}")


def build_scheduler(cfg: "TrainConfig", optimizer) -> torch.optim.lr_scheduler.LambdaLR:
    """The lr scheduler of a resolved config, stepped once per epoch (:func:`lr_factor`)."""
    from functools import partial

    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, partial(lr_factor, cfg.schedule, epochs=cfg.epochs,
                           step_size=cfg.step_size, gamma=cfg.gamma,
                           warmup=cfg.warmup_epochs))


#: TrainConfig fields overriding the augmentation preset's magnitudes
AUG_KNOBS = ("aug_vflip", "aug_rotate", "aug_scale", "aug_translate", "aug_brightness",
             "aug_contrast", "aug_gamma")

#: fields that may differ when a run is resumed
_RESUME_FREE = ("out", "workers", "device", "gradcam", "folds", "dist_timeout", "shuffle_buffer",
                "compile")


@dataclass(frozen=True)
class TrainConfig:
    """Every option of a training run (LUMINA defaults). Written to ``OUT/config.json``.

    views / size / epochs / patience: None = the task's paper default (classification:
    2-view, 224 px, 100 epochs, no early stopping; detection: 1-view, 512 px, 400 epochs,
    patience 150 epochs on the validation split).
    lr: None = the task's default (detection 1e-4), else 1e-5 for transformers (Swin, ViT,
    EVA/DINOv3) and 1e-3 for CNNs (LUMINA).
    folds: test folds to run (None = every fold in the manifest).
    split_by: what a test fold is (:data:`mammotrain.data.SPLIT_BY`): 'fold' (the manifest's
        patient-level folds), 'vendor' or 'energy' (leave one manufacturer / energy class
        out: fold K is the K-th group in sorted order, trained on the others' patients).
    split: 'kfold' (folds as ``split_by`` says) or 'official' (the publisher's train/test
        split, :mod:`mammotrain.splits`: one test fold 0 = the test part; with split_by
        'fold' only).
    val_fraction: share of the training folds' patients held out for model selection.
    select: model selection on the validation split: 'auc' (highest AUC, ties: lowest loss),
        'loss' (lowest loss) or 'last' (last epoch). Without validation patients the last
        epoch is used, and the fold's metrics say so.
    schedule: the lr schedule (:data:`SCHEDULES`), None = the task's: 'step' (x ``gamma``
        every ``step_size`` epochs; classification, LUMINA), 'constant' (detection: the paper
        names no decay) or 'cosine' (cosine annealing to 0 over ``epochs``).
    amp / channels_last: None = on for CUDA, off for CPU.
    max_steps_per_epoch: cap on optimiser steps per epoch (quick runs).
    global_pool: backbone pooling passed to timm ('avg', 'max', ...; None = model default).
    queries / dec_layers / det_lambda: detector shape and the weight of its detection loss.
    size: ``S`` (square) or ``(rows, cols)`` (e.g. ``(1024, 512)``, with resize
        'letterbox': the aspect ratio is kept, the rest padded; classification only).
    augment: training augmentation preset (:data:`mammotrain.augment.PRESETS`: 'none',
        'flip' (horizontal flip with probability ``flip_p``, the behaviour before presets
        existed), 'full'); ``aug_*`` override the preset's magnitudes (None = the preset's).
    ema: decay of an exponential moving average of the weights (None = off); validation,
        selection and the saved model use the averaged weights (:mod:`mammotrain.ema`).
    warmup_epochs: linear lr warm-up epochs before the schedule (:func:`lr_factor`).
    accum_steps: loader batches per optimiser step (gradient accumulation: effective batch
        ``batch_size * accum_steps``; :mod:`mammotrain.stepping`).
    compile: ``torch.compile`` the training forward.
    """

    task: str = "diagnosis"
    views: int | None = None
    backbone: str = "efficientnet_b0"
    size: int | None = None
    shards: str = ""
    out: str = "runs/run"
    epochs: int | None = None
    batch_size: int = 32
    lr: float | None = None
    weight_decay: float = 1e-5
    step_size: int = 30
    gamma: float = 0.1
    schedule: str | None = None
    folds: tuple[int, ...] | None = None
    split_by: str = "fold"
    split: str = "kfold"
    val_fraction: float = 0.2
    workers: int = 2
    device: str = "auto"
    shared: bool = True
    pretrained: str | None = None
    seed: int = 0
    max_steps_per_epoch: int | None = None
    in_chans: int = 3
    resize: str = "square"
    intensity: str = "bits"
    flip_p: float = 0.5
    balanced: bool = False  # class-balanced sampling of the training split (ShardStream)
    clip_grad: float | None = None  # clip the gradients' global L2 norm to this (None = off)
    interpolation: str = "bilinear"  # loader resize: bilinear, bicubic, timm (data config)
    hidden: int = 128
    dropout: float = 0.3
    global_pool: str | None = None
    select: str = "auc"
    amp: bool | None = None
    channels_last: bool | None = None
    deterministic: bool = True
    eval_batch_size: int | None = None
    shuffle_buffer: int = 256  # training samples (raw bytes) shuffled per loader worker
    dist_timeout: float = 30.0  # minutes a collective may wait under torchrun (DDP)
    gradcam: int = 4
    patience: int | None = None
    queries: int = 3
    dec_layers: int = 3
    det_lambda: float = 1.0
    augment: str = "flip"
    aug_vflip: float | None = None  # probability (shared by the views)
    aug_rotate: float | None = None  # degrees, +- (per view)
    aug_scale: float | None = None  # zoom 1 +- this (per view)
    aug_translate: float | None = None  # fraction of width / height, +- (per view)
    aug_brightness: float | None = None  # factor 1 +- this (shared)
    aug_contrast: float | None = None  # factor 1 +- this, about the breast's mean (shared)
    aug_gamma: float | None = None  # exponent 1 +- this (shared)
    ema: float | None = None
    warmup_epochs: int = 0
    accum_steps: int = 1
    compile: bool = False

    def validate(self) -> "TrainConfig":
        """Check a resolved config (:meth:`resolved`); raises ValueError naming the field."""
        task = get_task(self.task)
        check_backbone_name(self.backbone)
        if self.views not in task.views:
            raise ValueError(f"views must be {' or '.join(map(str, task.views))} for task "
                             f"{task.name}, got {self.views!r}")
        selects = ("auc", "loss", "last") + (("map25",) if task.detection else ())
        hw = input_hw(self.size) if self.size is not None else (0, 0)
        checks = [(min(hw) >= 16, "size", ">= 16 pixels (S or ROWSxCOLS)"),
                  (hw[0] == hw[1] or self.resize == "letterbox", "resize",
                   "'letterbox' for a non-square size (keeps the aspect ratio)"),
                  (hw[0] == hw[1] or not task.detection, "size",
                   "square for detection (non-square inputs: classification tasks)"),
                  (self.ema is None or 0 < self.ema < 1, "ema", "in (0, 1) or None"),
                  (self.warmup_epochs >= 0, "warmup_epochs", ">= 0"),
                  (self.accum_steps >= 1, "accum_steps", ">= 1"),
                  (self.augment in AUG_PRESETS, "augment", ", ".join(AUG_PRESETS)),
                  (self.augment != "none" or all(getattr(self, k) is None
                                                  for k in AUG_KNOBS), "augment",
                   "'flip' or 'full' when aug_* magnitudes are given"),
                  (self.epochs is not None and self.epochs >= 1, "epochs", ">= 1"),
                  (self.batch_size >= 1, "batch_size", ">= 1"),
                  (self.select in selects, "select", ", ".join(selects)),
                  (self.schedule is None or self.schedule in SCHEDULES, "schedule",
                   ", ".join(SCHEDULES)),
                  (self.patience is None or self.patience >= 0, "patience", ">= 0 (0 = off)"),
                  (self.queries >= 1, "queries", ">= 1"),
                  (self.shuffle_buffer >= 0, "shuffle_buffer", ">= 0 (0 or 1 = off)"),
                  (self.dist_timeout > 0, "dist_timeout", "> 0 minutes"),
                  (self.clip_grad is None or self.clip_grad > 0, "clip_grad", "> 0 or None"),
                  (self.interpolation in INTERPOLATIONS + ("timm",), "interpolation",
                   ", ".join(INTERPOLATIONS + ("timm",))),
                  (0 <= self.val_fraction < 1, "val_fraction", "in [0, 1)"),
                  (self.split_by in SPLIT_BY, "split_by", ", ".join(SPLIT_BY)),
                  (self.split in SPLITS, "split", ", ".join(SPLITS)),
                  (self.split == "kfold" or self.split_by == "fold", "split_by",
                   "'fold' with split 'official' (one or the other)"),
                  (bool(self.shards), "shards", "a shard folder")]
        for ok, name, what in checks:
            if not ok:
                raise ValueError(f"{name} must be {what}, got {getattr(self, name)!r}")
        self.augmentation()  # magnitudes in range (ValueError naming the knob)
        return self

    def augmentation(self):
        """The training :class:`mammotrain.augment.Augment` of this config."""
        from .augment import build_augment

        if self.augment == "none":
            return build_augment("none")
        return build_augment(self.augment, hflip=self.flip_p,
                             **{k[4:]: getattr(self, k) for k in AUG_KNOBS})

    def resolved(self) -> "TrainConfig":
        """Defaults filled in: the task's views / size / epochs / patience / lr (else lr by
        backbone family), device, AMP and channels_last."""
        task = get_task(self.task)
        lr = self.lr if self.lr is not None else task.default("lr")
        if lr is None:
            lr = 1e-5 if self.backbone.startswith(TRANSFORMER_PREFIXES) else 1e-3
        fill = {k: task.default(k) for k in ("views", "size", "epochs", "patience")
                if getattr(self, k) is None}
        if self.schedule is None:
            fill["schedule"] = task.default("schedule", "step")
        device = self.device
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        cuda = device.startswith("cuda")
        if self.interpolation == "timm":  # the backbone's timm data config
            from .models import timm_interpolation

            fill["interpolation"] = timm_interpolation(self.backbone)
        if "size" not in fill:
            fill["size"] = parse_size(self.size)
        return replace(self, lr=lr, device=device, **fill,
                       amp=cuda if self.amp is None else self.amp,
                       channels_last=cuda if self.channels_last is None else self.channels_last,
                       folds=tuple(self.folds) if self.folds is not None else None)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["folds"] = list(self.folds) if self.folds is not None else None
        if isinstance(self.size, tuple):
            d["size"] = list(self.size)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
        names = {f.name for f in fields(cls)}
        d = {k: v for k, v in d.items() if k in names}
        if d.get("folds") is not None:
            d["folds"] = tuple(d["folds"])
        if d.get("size") is not None:
            d["size"] = parse_size(d["size"])
        return cls(**d)

    def preprocess(self) -> Preprocess:
        interp = self.interpolation
        if interp == "timm":
            from .models import timm_interpolation

            interp = timm_interpolation(self.backbone)
        return Preprocess(self.size, self.resize, self.intensity, interp)


# ------------------------------------------------------------------------ distributed

@dataclass(frozen=True)
class Dist:
    """Process group membership (world = 1 without torchrun)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world > 1:
            torch.distributed.barrier()


def init_distributed(device: str, timeout_min: float = 30.0) -> Dist:
    """Join the torchrun process group when ``WORLD_SIZE > 1`` (gloo on CPU, NCCL on CUDA).
    A collective that waits more than ``timeout_min`` minutes (a rank died or hangs) fails
    instead of blocking the others for ever."""
    from datetime import timedelta

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if not torch.distributed.is_initialized():
        backend = "nccl" if device.startswith("cuda") else "gloo"
        if device.startswith("cuda"):
            torch.cuda.set_device(local)
        torch.distributed.init_process_group(backend, timeout=timedelta(minutes=timeout_min))
    return Dist(rank, world, local)


def merge_predictions(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """:func:`predict` outputs of disjoint example sets (one per rank) -> one output sorted
    by uid: per-example arrays and lists concatenated in that order, ``loss`` the mean over
    all examples. Raises ValueError when an example was predicted on two ranks."""
    from collections import Counter

    uids = [u for p in parts for u in p["uid"]]
    twice = sorted(u for u, c in Counter(uids).items() if c > 1)
    if twice:
        raise ValueError(f"{len(twice)} examples predicted on more than one rank (e.g. "
                         f"{twice[0]}): the evaluation split was not partitioned")
    order = np.asarray(sorted(range(len(uids)), key=uids.__getitem__), dtype=np.int64)
    out: dict[str, Any] = {"uid": [uids[i] for i in order],
                           "loss": sum(p["loss"] * len(p["uid"]) for p in parts)
                           / max(len(uids), 1)}
    for k, v in parts[0].items():
        if isinstance(v, np.ndarray):
            out[k] = np.concatenate([p[k] for p in parts])[order]
        elif isinstance(v, list) and k != "uid":
            vals = [x for p in parts for x in p[k]]
            out[k] = [vals[i] for i in order]
    return out


def gather_predictions(pred: dict[str, Any], dist: Dist) -> dict[str, Any] | None:
    """Each rank's :func:`predict` output (its share of the examples) -> all of them on rank
    0 (one ``gather_object``, then :func:`merge_predictions`); other ranks get None."""
    if dist.world <= 1:
        return pred
    parts: list | None = [None] * dist.world if dist.main else None
    torch.distributed.gather_object(pred, parts, dst=0)
    return merge_predictions(parts) if dist.main else None


def _device(cfg: TrainConfig, dist: Dist) -> torch.device:
    if cfg.device.startswith("cuda") and dist.world > 1:
        return torch.device("cuda", dist.local_rank)
    return torch.device(cfg.device)


def seed_everything(seed: int, deterministic: bool) -> None:
    random.seed(seed)
    np.random.seed(seed % (2 ** 32))
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
        torch.use_deterministic_algorithms(True, warn_only=True)


# ----------------------------------------------------------------------------- helpers

def _atomic_save(obj: Any, path: Path) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _write_json(path: Path, obj: Any) -> None:
    write_json(path, obj)  # strict: NaN -> null


def _append_jsonl(path: Path, obj: dict) -> None:
    with open(path, "a") as fh:
        fh.write(strict_dumps(obj, sort_keys=True) + "\n")


def _progress(loader, main: bool, desc: str):
    """A tqdm bar over the loader's steps on an interactive stderr (rank 0 only); the plain
    iterable otherwise (logs and CI keep one line per epoch)."""
    import sys

    if not (main and sys.stderr.isatty()):
        return loader
    from tqdm import tqdm

    return tqdm(loader, total=len(loader), desc=desc, unit="step", leave=False)


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return model.module if hasattr(model, "module") else model


def _autocast(cfg: TrainConfig, device: torch.device):
    if cfg.amp and device.type == "cuda":
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.autocast("cuda", dtype=dtype)
    return torch.autocast(device.type, enabled=False)


def versions() -> dict[str, str]:
    import timm
    import webdataset

    import mammoprep

    from . import __version__
    return {"mammotrain": __version__, "mammoprep": mammoprep.__version__,
            "torch": torch.__version__, "timm": timm.__version__,
            "webdataset": getattr(webdataset, "__version__", "?"),
            "python": platform.python_version()}


def prepare(cfg: TrainConfig) -> tuple[list[dict], list[Example], Any, list[int]]:
    """Manifest rows, the task's examples, the plan report and the folds to run."""
    task = get_task(cfg.task)
    rows = read_manifest(cfg.shards)
    examples, plan = plan_examples(rows, task, cfg.views, need_fold=cfg.split == "kfold")
    try:
        examples = regroup_folds(examples, plan, cfg.split_by, cfg.split)
    except ValueError as exc:  # official: no split, or an empty part
        raise ValueError(f"{cfg.shards}/images.parquet: {exc}") from None
    if cfg.split == "official":
        available = [OFFICIAL_TEST_FOLD]
    elif cfg.split_by == "fold":
        available = folds_in(rows)
        if not available:
            raise ValueError(f"{cfg.shards}/images.parquet: no fold assigned; shard with "
                             "--folds >= 2")
    else:
        available = sorted(plan.fold_names)
        if len(available) < 2:
            raise ValueError(f"{cfg.shards}/images.parquet: --split-by {cfg.split_by} needs "
                             "examples of at least 2 groups to leave one out, found "
                             f"{list(plan.fold_names.values()) or 'none'}")
    folds = list(cfg.folds) if cfg.folds is not None else available
    bad = [f for f in folds if f not in available]
    if bad:
        raise ValueError(f"folds {bad} not in {cfg.shards}/images.parquet (folds: {available})")
    return rows, examples, plan, folds


def write_run_config(cfg: TrainConfig, plan, folds: list[int], resume: bool) -> None:
    """``OUT/config.json``; with ``resume`` the stored config must match (except
    :data:`_RESUME_FREE` fields)."""
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "config.json"
    if resume and path.exists():
        old = json.loads(path.read_text()).get("config", {})
        new = cfg.to_dict()
        absent = TrainConfig().to_dict()  # fields added since the run was stored: defaults
        diff = sorted(k for k in new
                      if k not in _RESUME_FREE and old.get(k, absent[k]) != new[k])
        if diff:
            raise ValueError(f"{path}: --resume with other options than the stored run "
                             f"({', '.join(f'{k}: {old.get(k)!r} -> {new[k]!r}' for k in diff)})")
    _write_json(path, {"config": cfg.to_dict(), "versions": versions(), "folds": folds,
                       "plan": plan.to_dict()})


# -------------------------------------------------------------------------- evaluation

def build_task_model(cfg: TrainConfig) -> tuple[torch.nn.Module, list]:
    """The model of ``cfg`` (resolved): the multi-view classifier, or the multi-task DETR for
    detection tasks; plus the load reports of ``cfg.pretrained``."""
    task = get_task(cfg.task)
    if task.detection:
        from .detr import DetrConfig, build_detector

        return build_detector(cfg.backbone, cfg.in_chans, cfg.size, cfg.pretrained,
                              DetrConfig(queries=cfg.queries, layers=cfg.dec_layers))
    return build_model(cfg.backbone, task.num_classes, cfg.views, cfg.shared, cfg.in_chans,
                       cfg.size, cfg.pretrained, cfg.hidden, cfg.dropout, cfg.global_pool)


@torch.no_grad()
def predict(model: torch.nn.Module, loader: EpochLoader, cfg: TrainConfig,
            device: torch.device, with_loss: bool = True) -> dict[str, Any]:
    """Run ``model`` over ``loader`` -> {'uid': [N], 'label': int [N], 'probs': float [N, K],
    'loss': mean training objective}; detection adds per example 'boxes' float ``[Q, 4]``
    (pixel xyxy at the model input), 'box_scores' ``[Q]`` (objectness probabilities) and
    'gt_boxes' ``[T, 4]`` (the loader's boxes, same frame) and 'boxes_original' ``[Q, 4]``
    (the predicted boxes in the pixels of the original DICOM, through the shard JSON's
    transform; None where the shard has none)."""
    from .detr_loss import cxcywh_to_xyxy

    task = get_task(cfg.task)
    crit = task.make_criterion(cfg.size, cfg.det_lambda) if with_loss else None
    model.eval()
    uids, labels, probs, loss_sum = [], [], [], 0.0
    det: dict[str, list] = {"boxes": [], "box_scores": [], "gt_boxes": [], "boxes_original": []}
    prep = cfg.preprocess()
    for batch in _progress(loader, True, "predict"):
        x = batch["image"].to(device, non_blocking=True)
        with _autocast(cfg, device):
            out = model(x)
        if crit is not None:
            loss_sum += float(crit(out, batch)["loss"]) * len(batch["label"])
        probs.append(task.activate(task.logits(out)).cpu().numpy())
        labels.append(batch["label"].numpy())
        uids.extend(batch["uid"])
        if task.detection:
            boxes = (cxcywh_to_xyxy(out["pred_boxes"].float()) * cfg.size).cpu().numpy()
            scores = out["pred_obj"].float().sigmoid().cpu().numpy()
            det["boxes"].extend(boxes)
            det["box_scores"].extend(scores)
            det["gt_boxes"].extend(np.asarray(b[0], np.float32).reshape(-1, 4)
                                   for b in batch["boxes"])
            det["boxes_original"].extend(_to_original(prep, b, tr[0])
                                         for b, tr in zip(boxes, batch["transforms"]))
    n = len(uids)
    res = {"uid": uids, "label": np.concatenate(labels) if labels else np.zeros(0, np.int64),
           "probs": np.concatenate(probs) if probs else np.zeros((0, task.num_classes)),
           "loss": loss_sum / max(n, 1)}
    if task.detection:
        res.update(det)
    return res


def _to_original(prep: Preprocess, boxes: np.ndarray, transform: dict) -> np.ndarray | None:
    """Model-input xyxy boxes of an unflipped example -> original DICOM pixels, clipped."""
    from mammoprep.geometry import Transform

    if "crop_xyxy" not in transform:
        return None
    t = Transform.from_dict(transform)
    b = t.invert(prep.to_stored(boxes, tuple(transform["stored_size"])))
    h, w = t.original_size
    b[:, [0, 2]] = np.clip(b[:, [0, 2]], 0, w)
    b[:, [1, 3]] = np.clip(b[:, [1, 3]], 0, h)
    return b


def task_metrics(task: TaskSpec, pred: dict[str, Any]) -> dict[str, float]:
    """Metrics of :func:`predict`'s output: classification, plus detection for the
    detector (:func:`mammotrain.detection_metrics.detection_metrics`)."""
    m = classification_metrics(pred["label"], pred["probs"])
    if task.detection:
        from .detection_metrics import detection_metrics

        m.update(detection_metrics(pred["boxes"], pred["box_scores"], pred["gt_boxes"]))
    return m


def _eval_loader(cfg: TrainConfig, examples: list[Example], dist: Dist | None = None
                 ) -> EpochLoader:
    """Evaluation batches of ``examples``: all of them, or with ``dist`` this rank's shards'
    share (every example on exactly one rank; :func:`gather_predictions`)."""
    dist = dist or Dist()
    stream = ShardStream(cfg.shards, examples, cfg.preprocess(), train=False, seed=cfg.seed,
                         rank=dist.rank, world=dist.world)
    return EpochLoader(stream, cfg.eval_batch_size or cfg.batch_size,
                       workers=min(cfg.workers, 2), drop_last=False)


def _selection_score(cfg: TrainConfig, val: dict[str, float]) -> tuple[float, float]:
    if cfg.select in ("auc", "map25"):
        v = val.get(cfg.select, float("nan"))
        return (v if math.isfinite(v) else -math.inf, -val["loss"])
    return (-val["loss"], 0.0)


def predictions_table(pred: dict[str, Any], examples: dict[str, Example], fold: int | None,
                      split: str) -> list[dict[str, Any]]:
    """Rows of ``predictions.parquet``: uid, key, view ('cc', 'mlo' or 'cc+mlo'), patient,
    fold, split, label (-1 = unlabelled), pred (arg-max), scores (class probabilities),
    score (binary: p of class 1; multi-class: p of the label, of the prediction when
    unlabelled), energy, manufacturer, sop_uid_hash (mammoprep's salted pseudonym of the
    image's SOP Instance UID; two-view: of the CC image, the MLO's in sop_uid_hash_mlo) and,
    filled by ``predict --dicom`` only, path / sop_instance_uid of the input file (two-view:
    the CC file; the MLO's in path_mlo / sop_instance_uid_mlo). Detection adds ``boxes``
    (``[Q, 4]`` pixel xyxy at the
    model input, best first), ``box_scores`` (objectness), ``gt_boxes`` (model input) and
    ``boxes_original`` (the ``boxes`` in original DICOM pixels, same order)."""
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
        if "boxes" in pred:
            order = np.argsort(-pred["box_scores"][i], kind="stable")
            row["boxes"] = pred["boxes"][i][order].round(2).tolist()
            row["box_scores"] = pred["box_scores"][i][order].tolist()
            row["gt_boxes"] = np.asarray(pred["gt_boxes"][i]).round(2).tolist()
            orig = pred["boxes_original"][i]
            row["boxes_original"] = None if orig is None else orig[order].round(1).tolist()
        rows.append(row)
    return rows


def write_predictions(rows: list[dict[str, Any]], path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    fields_ = [("uid", pa.string()), ("key", pa.string()), ("view", pa.string()),
               ("patient", pa.string()), ("fold", pa.int16()), ("split", pa.string()),
               ("label", pa.int16()), ("pred", pa.int16()),
               ("scores", pa.list_(pa.float32())), ("score", pa.float32()),
               ("energy", pa.string()), ("manufacturer", pa.string()),
               ("sop_uid_hash", pa.string()), ("path", pa.string()),
               ("sop_instance_uid", pa.string()), ("sop_uid_hash_mlo", pa.string()),
               ("path_mlo", pa.string()), ("sop_instance_uid_mlo", pa.string())]
    if rows and "boxes" in rows[0]:
        fields_ += [("boxes", pa.list_(pa.list_(pa.float32()))),
                    ("box_scores", pa.list_(pa.float32())),
                    ("gt_boxes", pa.list_(pa.list_(pa.float32()))),
                    ("boxes_original", pa.list_(pa.list_(pa.float32())))]
    tmp = path.with_suffix(".tmp")
    pq.write_table(pa.Table.from_pylist(rows, schema=pa.schema(fields_)), tmp)
    os.replace(tmp, path)


# ---------------------------------------------------------------------------- training

def train_fold(cfg: TrainConfig, test_fold: int, *, resume: bool = False,
               dist: Dist | None = None, log: Callable[[str], None] = print,
               prepared: tuple | None = None) -> dict[str, Any]:
    """Train on the training folds (minus validation patients), select the epoch on the
    validation split, evaluate it on ``test_fold``. Returns the test metrics (rank 0; other
    ranks return {}). ``cfg`` must be resolved (:meth:`TrainConfig.resolved`)."""
    dist = dist or Dist()
    task = get_task(cfg.task)
    out = Path(cfg.out) / f"fold{test_fold}"
    if resume and (out / "metrics.json").exists() and (out / "predictions.parquet").exists():
        if dist.main:
            log(f"fold {test_fold}: done earlier, kept ({out / 'metrics.json'})")
        return json.loads((out / "metrics.json").read_text())
    _, examples, plan, _ = prepared or prepare(cfg)
    split = split_examples(examples, test_fold, cfg.val_fraction, cfg.seed)
    if not split.train or not split.test:
        raise ValueError(f"fold {test_fold}: empty split ({split.describe()})")
    device = _device(cfg, dist)
    seed_everything(cfg.seed * 1000 + test_fold, cfg.deterministic)
    if dist.main:
        out.mkdir(parents=True, exist_ok=True)
        if not resume:
            for name in ("checkpoint.pt", "best.pt", "history.jsonl", "metrics.json",
                         "predictions.parquet"):
                (out / name).unlink(missing_ok=True)
            for p in out.glob("train_log.rank*.jsonl"):
                p.unlink()
        group = plan.fold_names.get(test_fold)
        _write_json(out / "split.json", {"test_fold": test_fold, "split_by": plan.split_by,
                                         "split": plan.split, "test_group": group, **{
            k: [e.uid for e in getattr(split, k)] for k in ("train", "val", "test")}})
        what = "official split" if plan.split == "official" else plan.split_by
        log(split.describe() + (f" [test: {what} {group}]" if group else ""))
    dist.barrier()

    stream = ShardStream(cfg.shards, split.train, cfg.preprocess(), train=True, seed=cfg.seed,
                         rank=dist.rank, world=dist.world, flip_p=cfg.flip_p,
                         shuffle_buffer=cfg.shuffle_buffer, balanced=cfg.balanced,
                         augment=cfg.augmentation())
    loader = EpochLoader(stream, cfg.batch_size, workers=cfg.workers,
                         max_steps=cfg.max_steps_per_epoch, pin_memory=device.type == "cuda")
    # every rank validates its shards' share; rank 0 gathers and scores (gather_predictions)
    val_loader = _eval_loader(cfg, split.val, dist) if split.val else None
    select = cfg.select if split.val else "last"
    selection = selection_text(cfg, bool(split.val))
    if not split.val and dist.main:
        log(f"warning: fold {test_fold}: no validation patients (val_fraction "
            f"{cfg.val_fraction:g}, {len({e.patient for e in split.train})} training patients); "
            "the last epoch is used, not one selected on validation")
    # patients the weights have seen (training + validation): predict warns on them
    seen_patients = sorted({e.patient for e in split.train + split.val})

    model, reports = build_task_model(cfg)
    for r in reports:
        if dist.main:
            log(f"pretrained: {r.describe()}")
    model.to(device)
    if cfg.channels_last and device.type == "cuda":
        model.to(memory_format=torch.channels_last)
        model.channels_last = True
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = build_scheduler(cfg, optimizer)
    scaler = torch.amp.GradScaler(device.type, enabled=bool(
        cfg.amp and device.type == "cuda" and not torch.cuda.is_bf16_supported()))
    criterion = task.make_criterion(cfg.size, cfg.det_lambda)
    start, best_score, best_epoch, history = 0, (-math.inf, -math.inf), -1, []
    stopped = False
    ckpt_path = out / "checkpoint.pt"
    if resume and ckpt_path.exists():
        ck = torch.load(ckpt_path, map_location="cpu", weights_only=False)
        model.load_state_dict(ck["model"])
        optimizer.load_state_dict(ck["optimizer"])
        scheduler.load_state_dict(ck["scheduler"])
        scaler.load_state_dict(ck["scaler"])
        torch.set_rng_state(ck["rng"]["torch"])
        np.random.set_state(ck["rng"]["numpy"])
        # checkpoints count epochs from 1 (older ones from 0: epoch_base absent)
        base = int(ck.get("epoch_base", 0))
        start, best_epoch = ck["epoch"] + 1 - base, ck["best_epoch"] - base
        history = ck["history"]
        best_score = tuple(ck["best_score"])
        stopped = bool(ck.get("stopped", False))
        if dist.main:
            log(f"fold {test_fold}: resumed after epoch {start}")
    ema = None
    if cfg.ema:  # averaged weights are validated, selected and saved (mammotrain.ema)
        from .ema import ModelEma

        ema = ModelEma(model, cfg.ema)
        if start > 0 and ck.get("ema") is not None:
            ema.load_state_dict(ck["ema"])
    eval_model = ema.module if ema is not None else model
    net = model
    if dist.world > 1:
        net = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    from .stepping import OptimStep, compile_model

    net = compile_model(net, cfg.compile, log if dist.main else None)
    stepper = OptimStep(net, model, optimizer, scaler, accum=cfg.accum_steps,
                        clip_grad=cfg.clip_grad, ema=ema, total=loader.steps)

    for epoch in range(start, cfg.epochs):
        if stopped:
            break
        t0 = time.time()
        loader.set_epoch(epoch)
        net.train()
        steps, seen, loss_sum = 0, 0, 0.0
        for batch in _progress(loader, dist.main, f"fold {test_fold} epoch {epoch + 1}"):
            x = batch["image"].to(device, non_blocking=True)
            with stepper.no_sync(steps):  # accumulation: DDP all-reduce on the last only
                with _autocast(cfg, device):
                    loss = criterion(net(x), batch)["loss"]
                stepper.backward(loss, steps)  # clip, step, EMA every accum_steps batches
            steps += 1
            seen += len(batch["label"])
            loss_sum += float(loss.detach()) * len(batch["label"])
        lr = optimizer.param_groups[0]["lr"]
        scheduler.step()
        read = stream.epoch_plan()[1]  # the shards this rank read (planned, per epoch)
        _append_jsonl(out / f"train_log.rank{dist.rank}.jsonl",
                      {"fold": test_fold, "epoch": epoch + 1, "rank": dist.rank,
                       "world": dist.world, "steps": steps, "examples": seen,
                       "expected_steps": loader.steps, "shards": len(read),
                       "shard_bytes": sum((Path(cfg.shards) / s).stat().st_size
                                          for s in read)})
        rec = {"epoch": epoch + 1, "train_loss": loss_sum / max(seen, 1), "steps": steps,
               "lr": lr}
        val = None
        if val_loader is not None:  # all ranks predict their share, rank 0 gets the union
            val = gather_predictions(predict(eval_model, val_loader, cfg, device), dist)
        if dist.main:
            improved = False
            if val is not None:
                vm = task_metrics(task, val)
                vm["loss"] = val["loss"]
                rec.update({f"val_{k}": v for k, v in vm.items()})
                score = _selection_score(cfg, vm)
                if select == "last" or score > best_score:
                    best_score, best_epoch, improved = score, epoch, True
            else:
                best_epoch, improved = epoch, True
            if improved:
                _atomic_save({"model": eval_model.state_dict(), "epoch": epoch + 1,
                              "epoch_base": 1,
                              "config": cfg.to_dict(), "selection": selection,
                              "test_fold": test_fold, "seen_patients": seen_patients},
                             out / "best.pt")
            rec["seconds"] = round(time.time() - t0, 2)
            stopped = bool(cfg.patience) and epoch - best_epoch >= cfg.patience
            rec["early_stop"] = stopped
            history.append(rec)
            _append_jsonl(out / "history.jsonl", rec)
            from .curves import log_epoch  # history.csv + TensorBoard events

            log_epoch(out, rec)
            _atomic_save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                          "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(),
                          "ema": ema.state_dict() if ema is not None else None,
                          "epoch": epoch + 1, "best_epoch": best_epoch + 1, "epoch_base": 1,
                          "best_score": list(best_score), "history": history,
                          "stopped": stopped, "selection": selection,
                          "test_fold": test_fold, "seen_patients": seen_patients,
                          "rng": {"torch": torch.get_rng_state(),
                                  "numpy": np.random.get_state()},
                          "config": cfg.to_dict()}, ckpt_path)
            val_txt = (f" val loss {rec['val_loss']:.4f} {task.metric_label('auc')} "
                       f"{_fmt(rec.get('val_auc'))}" if "val_loss" in rec else "")
            log(f"fold {test_fold} epoch {epoch + 1}/{cfg.epochs}: train loss "
                f"{rec['train_loss']:.4f} ({steps} steps, {seen} examples){val_txt} "
                f"{rec['seconds']:.1f}s{' *' if improved else ''}")
            if stopped:
                log(f"fold {test_fold}: early stop, no better validation score for "
                    f"{cfg.patience} epochs (best: epoch {best_epoch + 1})")
        stopped = _agree(stopped, dist, device)
        dist.barrier()

    result: dict[str, Any] = {}
    if dist.main:
        result = evaluate_fold(cfg, model, split, examples, device, out, log, selection)
    dist.barrier()
    return result


def _agree(flag: bool, dist: Dist, device: torch.device) -> bool:
    """Rank 0's ``flag`` on every rank (early stopping under DDP)."""
    if dist.world <= 1:
        return flag
    t = torch.tensor([int(flag)], device=device if device.type == "cuda" else "cpu")
    torch.distributed.broadcast(t, 0)
    return bool(t.item())


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
    """Load the selected weights, predict the test fold, write predictions/metrics/Grad-CAM.
    ``metrics.json`` gives ``selected_epoch`` counted from 1 and ``selection`` (how)."""
    from .report import plot_detections, plot_gradcam

    best = torch.load(out / "best.pt", map_location="cpu", weights_only=False)
    model.load_state_dict(best["model"])
    from .modelfile import save_best  # self-contained best.safetensors + best.json

    save_best(out, model, cfg, best, log)
    by_uid = {e.uid: e for e in examples}
    pred = predict(model, _eval_loader(cfg, split.test), cfg, device)
    if len(pred["uid"]) != len(split.test):
        log(f"warning: fold {split.test_fold}: {len(split.test) - len(pred['uid'])} test "
            "examples listed in images.parquet were not found in the shards")
    rows = predictions_table(pred, by_uid, split.test_fold, "test")
    write_predictions(rows, out / "predictions.parquet")
    task = get_task(cfg.task)
    metrics = task_metrics(task, pred)
    epoch = int(best["epoch"]) + 1 - int(best.get("epoch_base", 0))
    selection = selection or best.get("selection") or selection_text(cfg, bool(split.val))
    metrics.update({"fold": split.test_fold, "selected_epoch": epoch, "selection": selection,
                    "test_loss": pred["loss"], "n_train": len(split.train),
                    "n_val": len(split.val), "n_test": len(split.test),
                    "params": count_parameters(model)})
    _write_json(out / "metrics.json", metrics)
    log(f"fold {split.test_fold} test (epoch {epoch}; {selection}): "
        + ", ".join(f"{task.metric_label(k)} {_fmt(metrics[k])}" for k in task.metrics))
    if cfg.gradcam > 0:
        try:
            cases = _gradcam_cases(rows, cfg.gradcam)
            if task.detection:
                plot_detections(cfg, [by_uid[u] for u in cases], {r["uid"]: r for r in rows},
                                out / "detections.png")
            else:
                plot_gradcam(model, cfg, [by_uid[u] for u in cases], out / "gradcam.png",
                             device)
        except Exception as exc:  # noqa: BLE001 - a figure must not lose the fold's results
            log(f"warning: fold {split.test_fold}: figure failed ({type(exc).__name__}: {exc})")
    return metrics


def _fmt(v: float) -> str:
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


def run_cv(cfg: TrainConfig, *, resume: bool = False, log: Callable[[str], None] = print,
           report: bool = True) -> dict[str, Any]:
    """Every requested fold of ``cfg`` (resolved here), then the run report (rank 0)."""
    cfg = cfg.resolved().validate()
    dist = init_distributed(cfg.device, cfg.dist_timeout)
    prepared = prepare(cfg)
    _, _, plan, folds = prepared
    if dist.main:
        write_run_config(cfg, plan, folds, resume)
        log(plan.describe())
        log(f"config: task {cfg.task}, {cfg.views}-view, {cfg.backbone} "
            f"({'shared' if cfg.shared else 'independent'}), {cfg.size}px, {cfg.epochs} epochs, "
            f"batch {cfg.batch_size}, lr {cfg.lr:g}, device {cfg.device}, world {dist.world}")
    dist.barrier()
    results = {}
    for f in folds:
        results[f] = train_fold(cfg, f, resume=resume, dist=dist, log=log, prepared=prepared)
    summary: dict[str, Any] = {}
    if dist.main and report:
        from .report import summary_line, write_run_report

        summary = write_run_report(cfg.out)
        log(summary_line(summary))
        log(f"report: {Path(cfg.out) / 'summary.md'}")
    dist.barrier()
    return summary


# ---------------------------------------------------------------------------- inference

def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """A ``best.pt`` / ``checkpoint.pt`` as a dict with its ``config`` (from the file or,
    for older files, from the run's ``config.json`` two folders up) and ``epoch`` counted
    from 1; ``seen_patients`` (the patient pseudonyms of its training and validation
    splits) and ``test_fold`` where the run recorded them."""
    path = Path(path)
    if path.suffix == ".safetensors":  # a self-contained model file (mammotrain.modelfile)
        from .modelfile import read_model_file

        return read_model_file(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: checkpoint not found")
    ck = torch.load(path, map_location="cpu", weights_only=False)
    if not isinstance(ck, dict) or "model" not in ck:
        raise ValueError(f"{path}: not a mammotrain checkpoint (no 'model' entry)")
    if ck.get("config") is None:
        run_cfg = path.resolve().parent.parent / "config.json"
        if not run_cfg.exists():
            raise ValueError(f"{path}: the checkpoint holds no config and {run_cfg} is missing")
        ck["config"] = json.loads(run_cfg.read_text())["config"]
    ck["epoch"] = int(ck.get("epoch", -1)) + 1 - int(ck.get("epoch_base", 0))
    ck["epoch_base"] = 1
    return ck


def load_checkpoint(path: str | Path) -> tuple[TrainConfig, dict[str, torch.Tensor], int]:
    """(config, model state dict, epoch counted from 1) of a checkpoint
    (:func:`read_checkpoint`)."""
    ck = read_checkpoint(path)
    return TrainConfig.from_dict(ck["config"]), ck["model"], ck["epoch"]


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

    Every image (single-view) or CC + MLO breast (two-view) in ``SHARDS/images.parquet`` is
    predicted, labelled or not. Writes ``out`` (Parquet, the columns of
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
    log(f"{checkpoint}: {task.name} {cfg.views}-view {cfg.backbone} {cfg.size}px (epoch "
        f"{ck['epoch']}); {len(examples)} {plan.unit}s in {shards}")
    if sources is None:
        warn_seen_patients(ck, {e.patient for e in examples}, str(shards), log)
    stream = ShardStream(shards, examples, cfg.preprocess(), train=False, seed=cfg.seed)
    loader = EpochLoader(stream, batch_size or cfg.eval_batch_size or cfg.batch_size,
                         workers=workers, drop_last=False)
    pred = predict(model, loader, cfg, torch.device(cfg.device), with_loss=False)
    return write_prediction_outputs(cfg, pred, {e.uid: e for e in examples}, out,
                                    figure=figure, log=log, sources=sources)


def write_prediction_outputs(cfg: TrainConfig, pred: dict[str, Any],
                             by_uid: dict[str, Example], out: str | Path, *, figure: int = 8,
                             log: Callable[[str], None] = print,
                             sources: dict[str, dict[str, Any]] | None = None,
                             figure_batch: dict[str, Any] | None = None) -> dict[str, Any]:
    """Rows (+ the input files of ``sources``), metrics of the labelled rows and the detection
    figure of :func:`predict`'s output; see :func:`predict_shards`."""
    task = get_task(cfg.task)
    rows = predictions_table(pred, by_uid, None, "predict")
    if sources is not None:
        attach_sources(rows, sources)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_predictions(rows, out)
    metrics: dict[str, Any] = {}
    labelled = np.asarray(pred["label"]) >= 0
    if labelled.any():
        sub = {k: ([v[i] for i in np.flatnonzero(labelled)] if isinstance(v, list)
                   else v[labelled] if isinstance(v, np.ndarray) else v)
               for k, v in pred.items()}
        metrics = task_metrics(task, sub)
        metrics["n"] = int(labelled.sum())
        _write_json(out.with_suffix(".metrics.json"), metrics)
        log(f"{int(labelled.sum())} labelled: " + ", ".join(
            f"{task.metric_label(k)} {_fmt(metrics[k])}" for k in task.metrics))
    if task.detection and figure > 0 and rows:
        from .report import plot_detections

        plot_detections(cfg, [by_uid[r["uid"]] for r in rows[:figure]],
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
