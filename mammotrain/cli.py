"""`mammotrain` command line: thin commands that validate options and call the library.

\b
  mammotrain cv --task diagnosis --views 2 --backbone efficientnet_b0 --size 512 \\
      --shards shards/ --out runs/diag2v
  mammotrain train --fold 0 ...            one test fold (same options as cv)
  mammotrain ablation --raw-shards raw/ --harmonized-shards harm/ --out runs/abl ...
  mammotrain cv --task detection --backbone convnextv2_tiny --shards shards/ --out runs/det
  mammotrain predict --checkpoint runs/det/fold0/best.pt --shards new_shards/ -o preds.parquet
  mammotrain predict --checkpoint runs/det/fold0/best.pt --dicom new_dicoms/ -o preds.parquet
  mammotrain predict -c runs/diag2v/fold0/best.safetensors --dicom new/ -o preds.parquet
  mammotrain export -c runs/diag2v/fold0/best.safetensors -o model.onnx
  mammotrain report runs/diag2v            rebuild a run's report from its fold folders
  mammotrain combine runs/* --ablation runs/abl -o report.md
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path

import click

# the LUMINA defaults live in TrainConfig; the CLI only mirrors them
DEFAULTS = dict(batch_size=32, weight_decay=1e-5, step_size=30, gamma=0.1,
                val_fraction=0.2, workers=2, seed=0)


class TaskType(click.ParamType):
    """A task name from the registry (:mod:`mammotrain.tasks`)."""

    name = "task"

    def convert(self, value, param, ctx):
        from .tasks import UnknownTaskError, get_task

        try:
            return get_task(str(value)).name
        except UnknownTaskError as exc:
            self.fail(str(exc), param, ctx)


class BackboneType(click.ParamType):
    """A timm model name (checked without building or downloading anything)."""

    name = "backbone"

    def convert(self, value, param, ctx):
        from .models import UnknownModelError, check_backbone_name

        try:
            check_backbone_name(str(value))
        except UnknownModelError as exc:
            self.fail(str(exc), param, ctx)
        return str(value)


class SizeType(click.ParamType):
    """A model input size: ``512`` or ``ROWSxCOLS`` (``1024x512``)."""

    name = "size"

    def convert(self, value, param, ctx):
        from .data import input_hw, parse_size

        try:
            size = parse_size(value)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)
        if min(input_hw(size)) < 16:
            self.fail(f"size must be at least 16 pixels per side, got {value!r}", param, ctx)
        return size


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


def _log(msg: str) -> None:
    click.echo(msg, err=True)


def _read_config_file(ctx: click.Context, param: click.Parameter, value):
    """``--config FILE``: its values become the command's defaults (``ctx.default_map``),
    so the command line still overrides them; unknown keys are refused with the known ones."""
    if value is None or ctx.resilient_parsing:
        return value
    path = Path(value)
    try:
        if path.suffix.lower() in (".yaml", ".yml"):
            try:
                import yaml
            except ImportError:
                raise click.BadParameter(f"{path}: YAML needs pyyaml (pip install pyyaml), "
                                         "or write the file as TOML", ctx, param) from None
            data = yaml.safe_load(path.read_text()) or {}
        else:
            import tomllib

            data = tomllib.loads(path.read_text())
    except click.BadParameter:
        raise
    except Exception as exc:  # noqa: BLE001 - any parse error is the user's file
        raise click.BadParameter(f"{path}: not valid TOML/YAML ({exc})", ctx, param) from None
    if not isinstance(data, dict):
        raise click.BadParameter(f"{path}: expected a table of option = value", ctx, param)
    names: dict[str, str] = {}  # option name or flag (no dashes, _ for -) -> parameter
    for prm in ctx.command.params:
        if prm.name and prm.expose_value and isinstance(prm, click.Option):
            for flag in [prm.name, *prm.opts]:
                names[flag.lstrip("-").replace("-", "_")] = prm.name
    values, unknown = {}, []
    for key, v in data.items():
        name = names.get(str(key).lstrip("-").replace("-", "_"))
        if name is None:
            unknown.append(str(key))
        else:
            values[name] = ",".join(map(str, v)) if isinstance(v, list) else v
    if unknown:
        known = sorted({n.replace("_", "-") for n in names.values()})
        raise click.BadParameter(f"{path}: unknown option(s) {', '.join(unknown)}; known: "
                                 f"{', '.join(known)}", ctx, param)
    ctx.default_map = {**(ctx.default_map or {}), **values}
    return value


def training_options(shards: bool = True):
    """The options shared by train / cv / ablation."""
    opts = [
        click.option("--task", type=TaskType(), required=True,
                     help="diagnosis, birads2, birads3, density (classification) or "
                          "detection (multi-task DETR: malignancy + lesion boxes)."),
        click.option("--views", type=click.IntRange(1, 2), default=None,
                     help="1: one example per image; 2: CC + MLO pairs of a breast "
                          "[default: 2; detection: 1, the only mode]."),
        click.option("--backbone", type=BackboneType(), default="efficientnet_b0",
                     show_default=True, help="Any timm model name."),
        click.option("--size", type=SizeType(), default=None,
                     help="Model input in pixels: S (square) or ROWSxCOLS, e.g. 1024x512 "
                          "(aspect ratio kept: letterboxed; classification) [default: 224; "
                          "detection 512]."),
        click.option("--out", "-o", type=click.Path(file_okay=False), required=True,
                     help="Output folder of the run."),
        click.option("--epochs", type=click.IntRange(1), default=None,
                     help="[default: 100; detection 400]"),
        click.option("--patience", type=click.IntRange(0), default=None,
                     help="Early stopping: epochs without a better validation score "
                          "[default: off; detection 150]; 0 = off."),
        click.option("--batch-size", type=click.IntRange(1), default=DEFAULTS["batch_size"],
                     show_default=True),
        click.option("--lr", type=click.FloatRange(0, min_open=True), default=None,
                     help="Learning rate [default: detection 1e-4; else 1e-5 transformers "
                          "(Swin, ViT), 1e-3 CNNs]."),
        click.option("--wd", "weight_decay", type=click.FloatRange(0),
                     default=DEFAULTS["weight_decay"], show_default=True,
                     help="AdamW weight decay."),
        click.option("--schedule", type=click.Choice(["step", "constant", "cosine"]),
                     default=None,
                     help="lr schedule, stepped per epoch: step (x gamma every step-size "
                          "epochs), constant, or cosine (annealed to 0 over the epochs) "
                          "[default: step; detection constant]."),
        click.option("--step-size", type=click.IntRange(1), default=DEFAULTS["step_size"],
                     show_default=True, help="--schedule step: epochs between lr decays."),
        click.option("--gamma", type=click.FloatRange(0, 1), default=DEFAULTS["gamma"],
                     show_default=True, help="--schedule step: decay factor."),
        click.option("--folds", type=FoldsType(), default=None,
                     help="Test folds to run, e.g. 0,1 [default: all in the manifest; with "
                          "--split-by vendor or energy: every group; with --split official: "
                          "0, the official test part]."),
        click.option("--split-by", type=click.Choice(["fold", "vendor", "energy"]),
                     default="fold", show_default=True,
                     help="What a test fold is: fold (the manifest's patient-level folds), "
                          "vendor or energy (leave one out: test fold K holds every example "
                          "of the K-th manufacturer or energy class, in sorted order; the "
                          "model is trained and selected on the other groups' patients, "
                          "never on a patient of the test group). The log, split.json and "
                          "the report name each fold's group."),
        click.option("--split", type=click.Choice(["kfold", "official"]), default="kfold",
                     show_default=True,
                     help="kfold: the folds of --split-by. official: the publisher's "
                          "train/test split (manifest column split: CBIS-DDSM, VinDr, a "
                          "csv: table's split column): trained on the train part (validation: "
                          "--val-fraction of its patients), tested once on the test part "
                          "(fold 0); examples without a split are excluded (no_split); a "
                          "patient in both parts keeps its test examples and loses its "
                          "training ones (train_of_test_patient). Not with --split-by "
                          "vendor or energy."),
        click.option("--val-fraction", type=click.FloatRange(0, 1, max_open=True),
                     default=DEFAULTS["val_fraction"], show_default=True,
                     help="Share of the training folds' patients held out for model selection."),
        click.option("--workers", type=click.IntRange(0), default=DEFAULTS["workers"],
                     show_default=True, help="DataLoader worker processes."),
        click.option("--shuffle-buffer", type=click.IntRange(0), default=256,
                     show_default=True,
                     help="Training samples shuffled in memory per loader worker (raw shard "
                          "bytes: size it to RAM; 0 or 1 = shard order only)."),
        click.option("--dist-timeout", type=click.FloatRange(0, min_open=True), default=30.0,
                     show_default=True,
                     help="torchrun: minutes a rank waits for the others before failing."),
        click.option("--device", default="auto", show_default=True,
                     help="auto, cpu, cuda or cuda:N."),
        click.option("--shared/--independent", default=True, show_default=True,
                     help="Two-view: one backbone for both views or one per view."),
        click.option("--pretrained", type=click.Path(dir_okay=False, exists=True), default=None,
                     help="Local backbone weights (.pth or .safetensors); never downloaded."),
        click.option("--seed", type=int, default=DEFAULTS["seed"], show_default=True),
        click.option("--max-steps-per-epoch", type=click.IntRange(1), default=None,
                     help="Cap on optimiser steps per epoch (quick runs)."),
        click.option("--in-chans", type=click.Choice(["1", "3"]), default="3", show_default=True,
                     help="3: grayscale replicated + ImageNet normalisation; 1: one channel."),
        click.option("--resize", type=click.Choice(["square", "letterbox"]), default=None,
                     help="square: stretch to the input (LUMINA); letterbox: keep the aspect "
                          "ratio, pad with background [default: square; letterbox for a "
                          "ROWSxCOLS --size]."),
        click.option("--select", type=click.Choice(["auc", "loss", "last", "map25"]),
                     default="auc", show_default=True,
                     help="Model selection on the validation split (map25: detection only)."),
        click.option("--gradcam", type=click.IntRange(0), default=4, show_default=True,
                     help="Test examples per fold shown with Grad-CAM (detection: with "
                          "predicted and true boxes)."),
        click.option("--queries", type=click.IntRange(1), default=3, show_default=True,
                     help="Detection: learned object queries."),
        click.option("--dec-layers", type=click.IntRange(1), default=3, show_default=True,
                     help="Detection: deformable decoder layers."),
        click.option("--det-lambda", type=click.FloatRange(0), default=1.0, show_default=True,
                     help="Detection: weight of the detection loss (L = L_cls + lambda L_det)."),
        click.option("--interpolation", type=click.Choice(["bilinear", "bicubic", "timm"]),
                     default="bilinear", show_default=True,
                     help="Loader resize filter; timm: the backbone's timm data config "
                          "(bicubic for most weights)."),
        click.option("--clip-grad", type=click.FloatRange(0, min_open=True), default=None,
                     help="Clip the gradients' global L2 norm to this value [default: off]."),
        click.option("--augment", type=click.Choice(["none", "flip", "full"]), default="flip",
                     show_default=True,
                     help="Training augmentation (torchvision transforms v2, boxes moved "
                          "with the image): none; flip (horizontal, p 0.5: the earlier "
                          "behaviour); full (flips, small affine: rotate 5 deg, scale and "
                          "translate; intensity jitter: gamma, contrast, brightness 10 %). "
                          "Both views of a breast share flips and intensity; each view gets "
                          "its own affine. --aug-* override magnitudes."),
        click.option("--aug-hflip", "flip_p", type=click.FloatRange(0, 1), default=None,
                     help="Horizontal flip probability [default: 0.5]."),
        click.option("--aug-vflip", type=click.FloatRange(0, 1), default=None,
                     help="Vertical flip probability [default: full 0.5, flip 0]."),
        click.option("--aug-rotate", type=click.FloatRange(0), default=None,
                     help="Rotation, +- degrees [default: full 5]."),
        click.option("--aug-scale", type=click.FloatRange(0, 1, max_open=True), default=None,
                     help="Zoom 1 +- this [default: full 0.1]."),
        click.option("--aug-translate", type=click.FloatRange(0, 1), default=None,
                     help="Shift, +- this fraction of width/height [default: full 0.05]."),
        click.option("--aug-brightness", type=click.FloatRange(0, 1, max_open=True),
                     default=None, help="Brightness factor 1 +- this [default: full 0.1]."),
        click.option("--aug-contrast", type=click.FloatRange(0, 1, max_open=True),
                     default=None, help="Contrast about the breast's mean, 1 +- this "
                                        "[default: full 0.1]."),
        click.option("--aug-gamma", type=click.FloatRange(0, 1, max_open=True), default=None,
                     help="Gamma 1 +- this [default: full 0.1]."),
        click.option("--ema", type=click.FloatRange(0, 1, min_open=True, max_open=True),
                     default=None,
                     help="EMA of the weights with this decay (e.g. 0.999), updated every "
                          "optimiser step; validation, selection and the saved model use "
                          "the averaged weights [default: off]."),
        click.option("--warmup-epochs", type=click.IntRange(0), default=0, show_default=True,
                     help="Linear lr warm-up epochs ((e + 1) / (N + 1) of the lr) before "
                          "--schedule, which then runs over the remaining epochs."),
        click.option("--accum-steps", type=click.IntRange(1), default=1, show_default=True,
                     help="Gradient accumulation: batches per optimiser step (effective "
                          "batch = batch-size x accum-steps)."),
        click.option("--compile", is_flag=True,
                     help="torch.compile the training forward (first steps slower)."),
        click.option("--balanced", is_flag=True,
                     help="Class-balanced sampling: each training epoch draws its examples "
                          "with replacement, every class equally likely."),
        click.option("--amp/--no-amp", default=None, help="Mixed precision [default: on CUDA]."),
        click.option("--resume", is_flag=True,
                     help="Continue from the folds' checkpoints; finished folds are kept."),
    ]
    if shards:
        opts.insert(0, click.option("--shards", type=click.Path(file_okay=False, exists=True),
                                    required=True, help="Shard folder (mammoprep shard)."))
    opts.insert(0, click.option(
        "--config", "config_file", type=click.Path(dir_okay=False, exists=True),
        is_eager=True, expose_value=False, callback=_read_config_file,
        help="TOML or YAML file of option values (keys: option names, e.g. task = "
             "'density', batch-size = 16); options given on the command line win. The "
             "resolved configuration is saved as OUT/config.json."))

    def deco(f):
        for o in reversed(opts):
            f = o(f)
        return f
    return deco


def _config(kw: dict, **extra):
    from .train import TrainConfig

    kw = dict(kw, **extra)
    if kw.get("split") == "official" and kw.get("split_by", "fold") != "fold":
        raise click.BadParameter(f"--split official is its own test set; it does not combine "
                                 f"with --split-by {kw['split_by']} (leave one group out)",
                                 param_hint="--split")
    kw["in_chans"] = int(kw["in_chans"])
    kw.pop("resume", None)
    if kw.get("flip_p") is None:
        kw.pop("flip_p", None)
    if kw.get("resize") is None:  # a ROWSxCOLS input keeps the aspect ratio
        kw["resize"] = "letterbox" if isinstance(kw.get("size"), tuple) else "square"
    return TrainConfig(**kw)


def _run(fn):
    """Library errors -> a one-line message and exit 1 (not a traceback)."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from mammoprep.errors import MammoprepError

        from .data import DataError

        try:
            return fn(*args, **kwargs)
        except (DataError, ValueError, FileNotFoundError, MammoprepError) as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(1)
    return wrapper


#: import names of the ``train`` extra (pyproject.toml); every command needs them
TRAIN_EXTRA = ("torch", "torchvision", "timm", "safetensors", "torchmetrics", "pycocotools",
               "webdataset")


def missing_train_modules() -> list[str]:
    """The modules of :data:`TRAIN_EXTRA` that are not installed (found without importing)."""
    import importlib.util

    return [m for m in TRAIN_EXTRA if importlib.util.find_spec(m) is None]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="mammoprep")
def main() -> None:
    """Train and evaluate mammography models on mammoprep WebDataset shards."""
    missing = missing_train_modules()
    if missing:  # a message naming the extra, not a ModuleNotFoundError traceback
        raise click.ClickException(
            f"mammotrain needs the 'train' extra (not installed: {', '.join(missing)}): "
            "pip install 'mammoprep[train]'")


@main.command("cv")
@training_options()
@_run
def cv_cmd(**kw):
    """K-fold cross-validation: every test fold, then the report (summary.md, roc.png, ...).

    Runs under torchrun as well (DDP; gloo on CPU, NCCL on GPU).
    """
    from .train import run_cv

    resume = kw["resume"]
    run_cv(_config(kw), resume=resume, log=_log)


@main.command("train")
@training_options()
@click.option("--fold", type=click.IntRange(0), required=True, help="The test fold.")
@_run
def train_cmd(fold, **kw):
    """Train and evaluate one test fold (the report covers the finished folds of OUT)."""
    from .train import run_cv

    resume = kw["resume"]
    kw["folds"] = (fold,)
    run_cv(_config(kw), resume=resume, log=_log)


@main.command("ablation")
@click.option("--raw-shards", type=click.Path(file_okay=False, exists=True), required=True,
              help="Shards written without --ref.")
@click.option("--harmonized-shards", type=click.Path(file_okay=False, exists=True),
              required=True, help="The same images, shards written with --ref.")
@training_options(shards=False)
@_run
def ablation_cmd(raw_shards, harmonized_shards, **kw):
    """The same configuration on raw and harmonised shards: OUT/raw, OUT/harmonized and
    OUT/ablation.md (table with deltas, overlaid mean ROC, energy-wise AUC)."""
    from .report import write_ablation_report
    from .train import init_distributed, run_cv

    resume, out = kw["resume"], Path(kw["out"])
    for name, shards in (("raw", raw_shards), ("harmonized", harmonized_shards)):
        _log(f"== {name}: {shards}")
        run_cv(_config(kw, shards=shards, out=str(out / name)), resume=resume, log=_log)
    if init_distributed("cpu").main:
        write_ablation_report(out / "raw", out / "harmonized", out)
        _log(f"report: {out / 'ablation.md'}")


@main.command("predict")
@click.option("--checkpoint", "-c", type=click.Path(dir_okay=False, exists=True), required=True,
              help="A run's foldK/best.safetensors (self-contained: needs neither the run "
                   "nor its shards), foldK/best.pt or checkpoint.pt.")
@click.option("--shards", type=click.Path(file_okay=False, exists=True), default=None,
              help="Shard folder to predict (labels optional).")
@click.option("--dicom", "dicoms", multiple=True, type=click.Path(exists=True),
              help="DICOM files or folders, several at once: --dicom a.dcm b.dcm dir/ (the "
                   "paths after the first belong to --dicom too; repeatable). Prepared with "
                   "the training shards' mammoprep options (config.json), then predicted.")
@click.argument("more_dicoms", nargs=-1, type=click.Path(exists=True))
@click.option("--labels", default=None, metavar="KIND:PATH",
              help="With --dicom: a mammoprep label source (lumina:DIR, rsna:CSV, csv:FILE, "
                   "...) giving laterality and view where headers lack them (a two-view model "
                   "needs both; a single-view model neither) and labels for metrics.")
@click.option("--ref", default=None, metavar="REF",
              help="With --dicom: harmonisation reference [default: the training shards']. "
                   "'none' = no harmonisation.")
@click.option("--shard-size", type=click.IntRange(16), default=None,
              help="With --dicom: stored size [default: the training shards'].")
@click.option("--out", "-o", type=click.Path(dir_okay=False), required=True,
              help="Predictions (Parquet).")
@click.option("--device", default="auto", show_default=True)
@click.option("--batch-size", type=click.IntRange(1), default=None)
@click.option("--workers", type=click.IntRange(0), default=0, show_default=True)
@click.option("--figure", type=click.IntRange(0), default=8, show_default=True,
              help="Detection: images drawn with their boxes into OUT's .png.")
@_run
def predict_cmd(checkpoint, shards, dicoms, more_dicoms, labels, ref, shard_size, out, device,
                batch_size, workers, figure):
    """Scores of every image or breast (and boxes, for detection) with a trained model.

    \b
    mammotrain predict -c run/fold0/best.pt --dicom new/ -o preds.parquet
    mammotrain predict -c run/fold0/best.pt --dicom a.dcm b.dcm c.dcm -o preds.parquet
    mammotrain predict -c run/fold0/best.pt --shards shards/ -o preds.parquet

    Writes OUT (Parquet: uid, key, view, patient, label (-1 = none), pred, scores, score,
    energy, manufacturer, sop_uid_hash; with --dicom also path and sop_instance_uid of the
    input file, to join the scores back to your data (two-view rows: the CC file, the MLO
    in path_mlo / sop_instance_uid_mlo); with --shards, which hold no UIDs, join on
    sop_uid_hash = mammoprep's salted pseudonym of the SOP Instance UID (same salt) or on
    key; detection adds boxes [x0, y0, x1, y1] in model-input pixels with their
    objectness, best first, and the same boxes in the original DICOM's pixels as
    boxes_original), OUT's .metrics.json where labels exist, OUT's .rejects.csv listing
    the files not predicted and why (also shown on screen), and for detection a PNG of
    boxes. Single-view models need no View Position. A warning is printed when the inputs
    hold patients the checkpoint was trained or selected on.
    """
    from .train import predict_shards

    if more_dicoms and not dicoms:
        raise click.UsageError(f"unexpected path(s) {', '.join(more_dicoms)}: extra paths "
                               "belong to --dicom (give --dicom PATH first)")
    dicoms = tuple(dicoms) + tuple(more_dicoms)
    if bool(shards) == bool(dicoms):
        raise click.UsageError("give either --shards or --dicom")
    if shards:
        if labels or ref or shard_size:
            raise click.UsageError("--labels, --ref and --shard-size go with --dicom; shards "
                                   "carry their labels and preparation")
        predict_shards(checkpoint, shards, out, device=device, batch_size=batch_size,
                       workers=workers, figure=figure, log=_log)
        return
    from .dicom_input import predict_dicoms

    predict_dicoms(checkpoint, dicoms, out, ref=ref, shard_size=shard_size, labels=labels,
                   device=device, batch_size=batch_size, workers=workers, figure=figure,
                   log=_log)


@main.command("export")
@click.option("--checkpoint", "-c", type=click.Path(dir_okay=False, exists=True), required=True,
              help="A run's foldK/best.safetensors or best.pt.")
@click.option("--out", "-o", type=click.Path(dir_okay=False), required=True,
              help="model.onnx (ONNX) or model.safetensors (self-contained model file).")
@click.option("--opset", type=click.IntRange(13), default=17, show_default=True,
              help="ONNX opset.")
@click.option("--no-check", is_flag=True,
              help="ONNX: skip the onnxruntime vs PyTorch comparison.")
@_run
def export_cmd(checkpoint, out, opset, no_check):
    """Export a trained model: ONNX (input image float32 [B, V, 1, S, S] in [0, 1],
    normalisation inside the graph; outputs logits and probs, detection: logits, boxes,
    objectness; checked against PyTorch with onnxruntime when installed), or a best.pt as
    a self-contained .safetensors model file (weights + JSON config: model, task,
    preprocessing, shard config and the embedded harmonisation reference) that
    `mammotrain predict -c` takes with nothing else."""
    from .export import export_model_file, export_onnx

    suffix = Path(out).suffix.lower()
    if suffix == ".onnx":
        res = export_onnx(checkpoint, out, opset=opset, check=not no_check, log=_log)
        click.echo(f"{out} (opset {res['opset']}, input {res['input']}, outputs "
                   f"{', '.join(res['outputs'])})")
    elif suffix == ".safetensors":
        click.echo(str(export_model_file(checkpoint, out)))
    else:
        raise click.BadParameter(f"{out}: give a .onnx or .safetensors file name",
                                 param_hint="--out")


@main.command("report")
@click.argument("runs", nargs=-1, required=True, type=click.Path(file_okay=False, exists=True))
@_run
def report_cmd(runs):
    """Rebuild the report of finished run folders (no training)."""
    from .report import write_run_report

    for r in runs:
        write_run_report(r)
        click.echo(f"{Path(r) / 'summary.md'}")


@main.command("compare")
@click.argument("raw_run", type=click.Path(file_okay=False, exists=True))
@click.argument("harmonized_run", type=click.Path(file_okay=False, exists=True))
@click.option("--out", "-o", type=click.Path(file_okay=False), required=True)
@_run
def compare_cmd(raw_run, harmonized_run, out):
    """Ablation report (raw vs harmonised) from two finished runs of one configuration."""
    from .report import write_ablation_report

    write_ablation_report(raw_run, harmonized_run, out)
    click.echo(str(Path(out) / "ablation.md"))


@main.command("combine")
@click.argument("runs", nargs=-1, type=click.Path(file_okay=False))
@click.option("--ablation", "ablations", multiple=True, type=click.Path(file_okay=False),
              help="Ablation folder(s) to include (repeatable).")
@click.option("--out", "-o", type=click.Path(dir_okay=False), required=True,
              help="Markdown file to write.")
@click.option("--title", default="mammotrain: all configurations", show_default=True)
@click.option("--notes", default="", help="A paragraph placed under the title.")
@_run
def combine_cmd(runs, ablations, out, title, notes):
    """One Markdown report over several runs (tables per task) and ablations."""
    from .report import write_combined_report

    write_combined_report(runs, ablations, out, title, notes)
    click.echo(out)


if __name__ == "__main__":  # pragma: no cover
    main()
