"""Every option of a training run, declared once: name, type, default, help, choices.

The options come in groups (:data:`GROUPS`): data, model, optimisation, evaluation,
runtime. Each group is a frozen dataclass whose fields carry their command-line declaration
in the field metadata (:func:`option`); :class:`Options` is the task plus every group, and
:class:`mammotrain.config.TrainConfig` adds its methods (its fields and ``config.json`` keys
are the groups'). ``mammotrain.cli`` builds the click options of ``train`` / ``cv`` /
``ablation`` from the same declarations (:func:`click_options`), in :data:`CLI_ORDER`. This
module imports neither torch nor the training code (``mammotrain --help`` stays fast); the
parameter types that check names against the registries import them when converting.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable

import click

_UNSET = object()


def option(default: Any, help: str | None = None, *, flags: tuple[str, ...] = (),
           type: Any = None, cli_default: Any = _UNSET, show_default: bool = False,
           required: bool = False, is_flag: bool = False, cli: bool = True) -> Any:
    """A config field with its command-line option.

    default: the config's default (``TrainConfig()``); cli_default: the option's default
    where it differs (None where the config's value is derived from other options); flags:
    the option's names (default ``--field-name``); cli: False for fields without an option
    (set in a config file or from Python only)."""
    meta = {"cli": cli, "help": help, "flags": flags, "type": type,
            "cli_default": cli_default, "show_default": show_default, "required": required,
            "is_flag": is_flag}
    if isinstance(default, (list, dict, set)):
        raise TypeError("option defaults must be immutable")
    return dataclasses.field(default=default, metadata={"option": meta})


# --------------------------------------------------------------- parameter types

class TaskType(click.ParamType):
    """A task name from the registry (:mod:`mammotrain.tasks`)."""

    name = "task"

    def convert(self, value, param, ctx):
        from .tasks import UnknownTaskError, get_task  # torch: only when a value is given

        try:
            return get_task(str(value)).name
        except UnknownTaskError as exc:
            self.fail(str(exc), param, ctx)


class BackboneType(click.ParamType):
    """A timm model name (checked without building or downloading anything)."""

    name = "backbone"

    def convert(self, value, param, ctx):
        from .models import UnknownModelError, check_backbone_name  # timm

        try:
            check_backbone_name(str(value))
        except UnknownModelError as exc:
            self.fail(str(exc), param, ctx)
        return str(value)


class SizeType(click.ParamType):
    """A model input size: ``512`` or ``ROWSxCOLS`` (``1024x512``)."""

    name = "size"

    def convert(self, value, param, ctx):
        from .preprocess import input_hw, parse_size

        try:
            size = parse_size(value)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)
        if min(input_hw(size)) < 16:
            self.fail(f"size must be at least 16 pixels per side, got {value!r}", param, ctx)
        return size


class ViewsType(click.Choice):
    """``--views``: 1, 2 or 4 (:data:`mammotrain.data.VIEW_MODES`), converted to int."""

    def __init__(self) -> None:
        super().__init__(["1", "2", "4"])

    def convert(self, value, param, ctx):
        return int(super().convert(str(value), param, ctx))


class FoldsType(click.ParamType):
    """Comma-separated fold numbers, e.g. ``0,2``."""

    name = "folds"

    def convert(self, value, param, ctx):
        if isinstance(value, tuple):
            return value
        try:
            folds = tuple(int(x) for x in str(value).split(",") if x.strip() != "")
        except ValueError:
            self.fail(f"expected comma-separated fold numbers such as 0,1,2; got {value!r}",
                      param, ctx)
        if not folds or min(folds) < 0:
            self.fail(f"expected fold numbers >= 0, got {value!r}", param, ctx)
        return folds


# ------------------------------------------------------------------------- groups

@dataclass(frozen=True)
class DataOptions:
    """What the model sees: shards, views, input size and resizing, folds and splits,
    sampling and augmentation."""

    shards: str = option(
        "", "Shard folder (mammoprep shard).", required=True,
        type=click.Path(file_okay=False, exists=True))
    views: int | None = option(
        None, "1: one example per image; 2: CC + MLO pairs of a breast; 4: CC + MLO of "
              "both breasts of a study, one output per breast (a breast without both "
              "views or a label is masked) [default: 2; detection: 1, the only mode].",
        type=ViewsType())
    size: int | tuple[int, int] | None = option(
        None, "Model input in pixels: S (square) or ROWSxCOLS, e.g. 1024x512 "
              "(aspect ratio kept: letterboxed; classification) [default: 224; "
              "detection 512].", type=SizeType())
    folds: tuple[int, ...] | None = option(
        None, "Test folds to run, e.g. 0,1 [default: all in the manifest; with "
              "--split-by vendor or energy: every group; with --split official: "
              "0, the official test part].", type=FoldsType())
    split_by: str = option(
        "fold", "What a test fold is: fold (the manifest's patient-level folds), "
                "vendor or energy (leave one out: test fold K holds every example "
                "of the K-th manufacturer or energy class, in sorted order; the "
                "model is trained and selected on the other groups' patients, "
                "never on a patient of the test group). The log, split.json and "
                "the report name each fold's group.",
        type=click.Choice(["fold", "vendor", "energy"]), show_default=True)
    split: str = option(
        "kfold", "kfold: the folds of --split-by. official: the publisher's "
                 "train/test split (manifest column split: CBIS-DDSM, VinDr, a "
                 "csv: table's split column): trained on the train part (validation: "
                 "--val-fraction of its patients), tested once on the test part "
                 "(fold 0); examples without a split are excluded (no_split); a "
                 "patient in both parts keeps its test examples and loses its "
                 "training ones (train_of_test_patient). Not with --split-by "
                 "vendor or energy.",
        type=click.Choice(["kfold", "official"]), show_default=True)
    val_fraction: float = option(
        0.2, "Share of the training folds' patients held out for model selection.",
        type=click.FloatRange(0, 1, max_open=True), show_default=True)
    workers: int = option(
        2, "DataLoader worker processes.", type=click.IntRange(0), show_default=True)
    shuffle_buffer: int = option(
        256, "Training samples shuffled in memory per loader worker (raw shard "
             "bytes: size it to RAM; 0 or 1 = shard order only).",
        type=click.IntRange(0), show_default=True)
    in_chans: int = option(
        3, "3: grayscale replicated + ImageNet normalisation; 1: one channel.",
        type=click.Choice(["1", "3"]), cli_default="3", show_default=True)
    resize: str = option(
        "square", "square: stretch to the input (LUMINA); letterbox: keep the aspect "
                  "ratio, pad with background [default: square; letterbox for a "
                  "ROWSxCOLS --size].",
        type=click.Choice(["square", "letterbox"]), cli_default=None)
    intensity: str = option("bits", cli=False)
    interpolation: str = option(
        "bilinear", "Loader resize filter; timm: the backbone's timm data config "
                    "(bicubic for most weights).",
        type=click.Choice(["bilinear", "bicubic", "timm"]), show_default=True)
    augment: str = option(
        "flip", "Training augmentation (torchvision transforms v2, boxes moved "
                "with the image): none; flip (horizontal, p 0.5: the earlier "
                "behaviour); full (flips, small affine: rotate 5 deg, scale and "
                "translate; intensity jitter: gamma, contrast, brightness 10 %). "
                "Both views of a breast share flips and intensity; each view gets "
                "its own affine. --aug-* override magnitudes.",
        type=click.Choice(["none", "flip", "full"]), show_default=True)
    flip_p: float = option(
        0.5, "Horizontal flip probability [default: 0.5].", flags=("--aug-hflip",),
        type=click.FloatRange(0, 1), cli_default=None)
    aug_vflip: float | None = option(  # probability (shared by the views)
        None, "Vertical flip probability [default: full 0.5, flip 0].",
        type=click.FloatRange(0, 1))
    aug_rotate: float | None = option(  # degrees, +- (per view)
        None, "Rotation, +- degrees [default: full 5].", type=click.FloatRange(0))
    aug_scale: float | None = option(  # zoom 1 +- this (per view)
        None, "Zoom 1 +- this [default: full 0.1].",
        type=click.FloatRange(0, 1, max_open=True))
    aug_translate: float | None = option(  # fraction of width / height, +- (per view)
        None, "Shift, +- this fraction of width/height [default: full 0.05].",
        type=click.FloatRange(0, 1))
    aug_brightness: float | None = option(  # factor 1 +- this (shared)
        None, "Brightness factor 1 +- this [default: full 0.1].",
        type=click.FloatRange(0, 1, max_open=True))
    aug_contrast: float | None = option(  # factor 1 +- this, about the breast's mean (shared)
        None, "Contrast about the breast's mean, 1 +- this [default: full 0.1].",
        type=click.FloatRange(0, 1, max_open=True))
    aug_gamma: float | None = option(  # exponent 1 +- this (shared)
        None, "Gamma 1 +- this [default: full 0.1].",
        type=click.FloatRange(0, 1, max_open=True))
    balanced: bool = option(  # class-balanced sampling of the training split (ShardStream)
        False, "Class-balanced sampling: each training epoch draws its examples "
               "with replacement, every class equally likely.",
        is_flag=True, cli_default=_UNSET)


@dataclass(frozen=True)
class ModelOptions:
    """The network: backbone, weights, head, detector shape."""

    backbone: str = option(
        "efficientnet_b0", "Any timm model name.", type=BackboneType(), show_default=True)
    shared: bool = option(
        True, "Two-view: one backbone for both views or one per view.",
        flags=("--shared/--independent",), show_default=True)
    pretrained: str | None = option(
        None, "Local backbone weights (.pth or .safetensors); never downloaded.",
        type=click.Path(dir_okay=False, exists=True))
    hidden: int = option(128, cli=False)
    dropout: float = option(0.3, cli=False)
    global_pool: str | None = option(None, cli=False)
    queries: int = option(
        3, "Detection: learned object queries.", type=click.IntRange(1), show_default=True)
    dec_layers: int = option(
        3, "Detection: deformable decoder layers.", type=click.IntRange(1),
        show_default=True)


@dataclass(frozen=True)
class OptimOptions:
    """Optimisation: epochs, batch, AdamW, lr schedule, accumulation, clipping, EMA."""

    epochs: int | None = option(
        None, "[default: 100; detection 400]", type=click.IntRange(1))
    batch_size: int = option(32, type=click.IntRange(1), show_default=True)
    lr: float | None = option(
        None, "Learning rate [default: detection 1e-4; else 1e-5 transformers "
              "(Swin, ViT), 1e-3 CNNs].", type=click.FloatRange(0, min_open=True))
    weight_decay: float = option(
        1e-5, "AdamW weight decay.", flags=("--wd",), type=click.FloatRange(0),
        show_default=True)
    schedule: str | None = option(
        None, "lr schedule, stepped per epoch: step (x gamma every step-size "
              "epochs), constant, or cosine (annealed to 0 over the epochs) "
              "[default: step; detection constant].",
        type=click.Choice(["step", "constant", "cosine"]))
    step_size: int = option(
        30, "--schedule step: epochs between lr decays.", type=click.IntRange(1),
        show_default=True)
    gamma: float = option(
        0.1, "--schedule step: decay factor.", type=click.FloatRange(0, 1),
        show_default=True)
    max_steps_per_epoch: int | None = option(
        None, "Cap on optimiser steps per epoch (quick runs).", type=click.IntRange(1))
    det_lambda: float = option(
        1.0, "Detection: weight of the detection loss (L = L_cls + lambda L_det).",
        type=click.FloatRange(0), show_default=True)
    clip_grad: float | None = option(  # clip the gradients' global L2 norm (None = off)
        None, "Clip the gradients' global L2 norm to this value [default: off].",
        type=click.FloatRange(0, min_open=True))
    ema: float | None = option(
        None, "EMA of the weights with this decay (e.g. 0.999), updated every "
              "optimiser step; validation, selection and the saved model use "
              "the averaged weights [default: off].",
        type=click.FloatRange(0, 1, min_open=True, max_open=True))
    warmup_epochs: int = option(
        0, "Linear lr warm-up epochs ((e + 1) / (N + 1) of the lr) before "
           "--schedule, which then runs over the remaining epochs.",
        type=click.IntRange(0), show_default=True)
    accum_steps: int = option(
        1, "Gradient accumulation: batches per optimiser step (effective "
           "batch = batch-size x accum-steps).", type=click.IntRange(1), show_default=True)


@dataclass(frozen=True)
class EvalOptions:
    """Model selection, early stopping and the evaluation outputs."""

    patience: int | None = option(
        None, "Early stopping: epochs without a better validation score "
              "[default: off; detection 150]; 0 = off.", type=click.IntRange(0))
    select: str = option(
        "auc", "Model selection on the validation split (map25: detection only).",
        type=click.Choice(["auc", "loss", "last", "map25"]), show_default=True)
    gradcam: int = option(
        4, "Test examples per fold shown with Grad-CAM (detection: with "
           "predicted and true boxes).", type=click.IntRange(0), show_default=True)
    eval_batch_size: int | None = option(None, cli=False)


@dataclass(frozen=True)
class RuntimeOptions:
    """Where and how it runs: output folder, device, precision, seed, DDP, compile."""

    out: str = option(
        "runs/run", "Output folder of the run.", flags=("--out", "-o"), required=True,
        type=click.Path(file_okay=False))
    device: str = option("auto", "auto, cpu, cuda or cuda:N.", show_default=True)
    seed: int = option(0, type=int, show_default=True)
    dist_timeout: float = option(  # minutes a collective may wait under torchrun (DDP)
        30.0, "torchrun: minutes a rank waits for the others before failing.",
        type=click.FloatRange(0, min_open=True), show_default=True)
    amp: bool | None = option(
        None, "Mixed precision [default: on CUDA].", flags=("--amp/--no-amp",))
    channels_last: bool | None = option(None, cli=False)
    deterministic: bool = option(True, cli=False)
    compile: bool = option(
        False, "torch.compile the training forward (first steps slower).", is_flag=True,
        cli_default=_UNSET)


@dataclass(frozen=True)
class Options(RuntimeOptions, EvalOptions, OptimOptions, ModelOptions, DataOptions):
    """Every declared option, flat: the task and the fields of the :data:`GROUPS` (the
    fields of :class:`mammotrain.config.TrainConfig`, which adds the methods)."""

    task: str = option(
        "diagnosis", "diagnosis, birads2, birads3, density (classification) or "
                     "detection (multi-task DETR: malignancy + lesion boxes).",
        type=TaskType(), required=True)


#: group name -> its options (the nested view of a TrainConfig: ``cfg.group(name)``)
GROUPS: dict[str, type] = {"data": DataOptions, "model": ModelOptions,
                           "optimisation": OptimOptions, "evaluation": EvalOptions,
                           "runtime": RuntimeOptions}

#: the training options in the order ``--help`` lists them (``task`` is the config's own)
CLI_ORDER = (
    "shards", "task", "views", "backbone", "size", "out", "epochs", "patience", "batch_size",
    "lr", "weight_decay", "schedule", "step_size", "gamma", "folds", "split_by", "split",
    "val_fraction", "workers", "shuffle_buffer", "dist_timeout", "device", "shared",
    "pretrained", "seed", "max_steps_per_epoch", "in_chans", "resize", "select", "gradcam",
    "queries", "dec_layers", "det_lambda", "interpolation", "clip_grad", "augment",
    "flip_p", "aug_vflip", "aug_rotate", "aug_scale", "aug_translate", "aug_brightness",
    "aug_contrast", "aug_gamma", "ema", "warmup_epochs", "accum_steps", "compile",
    "balanced", "amp")


#: the order of the fields in a serialised config (``TrainConfig.to_dict``: checkpoints keep
#: it; ``config.json`` and model files sort their keys)
CONFIG_ORDER = (
    "task", "views", "backbone", "size", "shards", "out", "epochs", "batch_size", "lr",
    "weight_decay", "step_size", "gamma", "schedule", "folds", "split_by", "split",
    "val_fraction", "workers", "device", "shared", "pretrained", "seed", "max_steps_per_epoch",
    "in_chans", "resize", "intensity", "flip_p", "balanced", "clip_grad", "interpolation",
    "hidden", "dropout", "global_pool", "select", "amp", "channels_last", "deterministic",
    "eval_batch_size", "shuffle_buffer", "dist_timeout", "gradcam", "patience", "queries",
    "dec_layers", "det_lambda", "augment", "aug_vflip", "aug_rotate", "aug_scale",
    "aug_translate", "aug_brightness", "aug_contrast", "aug_gamma", "ema", "warmup_epochs",
    "accum_steps", "compile")


def declarations(cls: type) -> dict[str, dataclasses.Field]:
    """Field name -> field of a dataclass made of option groups (with their metadata)."""
    return {f.name: f for f in dataclasses.fields(cls)}


def click_option(f: dataclasses.Field) -> Callable:
    """The click option of a declared field (:func:`option`)."""
    meta = f.metadata["option"]
    flags = meta["flags"] or ("--" + f.name.replace("_", "-"),)
    kw: dict[str, Any] = {}
    if meta["type"] is not None:
        kw["type"] = meta["type"]
    if meta["required"]:
        kw["required"] = True
    elif meta["cli_default"] is not _UNSET or not meta["is_flag"]:
        kw["default"] = f.default if meta["cli_default"] is _UNSET else meta["cli_default"]
    for key in ("is_flag", "show_default"):
        if meta[key]:
            kw[key] = True
    if meta["help"] is not None:
        kw["help"] = meta["help"]
    return click.option(*flags, f.name, **kw)


def click_options(cls: type, names: tuple[str, ...] = CLI_ORDER) -> list[Callable]:
    """The click options of ``names`` (fields of ``cls``), in that order."""
    fields_ = declarations(cls)
    return [click_option(fields_[n]) for n in names]


_names = {f.name for f in dataclasses.fields(Options)}
if set(CONFIG_ORDER) != _names or not set(CLI_ORDER) <= _names:  # a field added in one place
    raise RuntimeError("options: CONFIG_ORDER must list every field of Options once, CLI_ORDER "
                       f"only fields ({sorted(_names ^ set(CONFIG_ORDER))}, "
                       f"{sorted(set(CLI_ORDER) - _names)})")
