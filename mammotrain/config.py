"""The configuration of a training run: :class:`TrainConfig`, written to ``OUT/config.json``."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any

import torch

from .augment import PRESETS as AUG_PRESETS
from .augment import build_augment
from .data import SPLIT_BY
from .schedule import SCHEDULES
from .models import check_backbone_name, timm_interpolation
from .options import CONFIG_ORDER, GROUPS, Options
from .preprocess import INTERPOLATIONS, Preprocess, input_hw, parse_size
from .splits import SPLITS
from .tasks import get_task

TRANSFORMER_PREFIXES = ("swin", "vit", "eva", "deit", "beit", "cait", "mambaout")

#: TrainConfig fields overriding the augmentation preset's magnitudes
AUG_KNOBS = ("aug_vflip", "aug_rotate", "aug_scale", "aug_translate", "aug_brightness",
             "aug_contrast", "aug_gamma")

#: fields that may differ when a run is resumed
RESUME_FREE = ("out", "workers", "device", "gradcam", "folds", "dist_timeout", "shuffle_buffer",
               "compile")


@dataclass(frozen=True)
class TrainConfig(Options):
    """Every option of a training run (LUMINA defaults). Written to ``OUT/config.json``.

    The fields are those of :class:`mammotrain.options.Options`: the task plus the option
    groups (data, model, optimisation, evaluation, runtime), each declared there once with
    its command-line option; ``config.json`` keeps them flat (one key per field).

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
    schedule: the lr schedule (:data:`~mammotrain.schedule.SCHEDULES`), None = the
        task's: 'step' (x ``gamma`` every ``step_size`` epochs; classification, LUMINA),
        'constant' (detection: the paper names no decay) or 'cosine' (cosine annealing to 0
        over ``epochs``).
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
    warmup_epochs: linear lr warm-up epochs before the schedule
        (:func:`~mammotrain.schedule.lr_factor`).
    accum_steps: loader batches per optimiser step (gradient accumulation: effective batch
        ``batch_size * accum_steps``; :mod:`mammotrain.engine.stepping`).
    compile: ``torch.compile`` the training forward.
    """

    def group(self, name: str):
        """The options of group ``name`` (:data:`mammotrain.options.GROUPS`) as that group's
        dataclass: the nested view of this flat config."""
        cls = GROUPS[name]
        return cls(**{f.name: getattr(self, f.name) for f in fields(cls)})

    def validate(self) -> "TrainConfig":
        """Check a resolved config (:meth:`resolved`); raises ValueError naming the field."""
        task = get_task(self.task)
        check_backbone_name(self.backbone)
        if self.views not in task.views:
            raise ValueError(f"views must be {' or '.join(map(str, task.views))} for task "
                             f"{task.name}, got {self.views!r}")
        selects = task.selects
        hw = input_hw(self.size) if self.size is not None else (0, 0)
        checks = [(min(hw) >= 16, "size", ">= 16 pixels (S or ROWSxCOLS)"),
                  (hw[0] == hw[1] or self.resize == "letterbox", "resize",
                   "'letterbox' for a non-square size (keeps the aspect ratio)"),
                  (hw[0] == hw[1] or not task.square_only, "size",
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
            fill["interpolation"] = timm_interpolation(self.backbone)
        if "size" not in fill:
            fill["size"] = parse_size(self.size)
        return replace(self, lr=lr, device=device, **fill,
                       amp=cuda if self.amp is None else self.amp,
                       channels_last=cuda if self.channels_last is None else self.channels_last,
                       folds=tuple(self.folds) if self.folds is not None else None)

    def to_dict(self) -> dict[str, Any]:
        """The fields as plain values (folds and size as lists), in
        :data:`~mammotrain.options.CONFIG_ORDER` (the order checkpoints have always had)."""
        d = asdict(self)
        d = {k: d[k] for k in CONFIG_ORDER}
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
            interp = timm_interpolation(self.backbone)
        return Preprocess(self.size, self.resize, self.intensity, interp)

