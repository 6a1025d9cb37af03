"""`mammotrain` command line: thin commands that validate options and call the library.

\b
  mammotrain cv --task diagnosis --views 2 --backbone efficientnet_b0 --size 512 \\
      --shards shards/ --out runs/diag2v
  mammotrain train --fold 0 ...            one test fold (same options as cv)
  mammotrain ablation --raw-shards raw/ --harmonized-shards harm/ --out runs/abl ...
  mammotrain cv --task detection --backbone convnextv2_tiny --shards shards/ --out runs/det
  mammotrain predict --checkpoint runs/det/fold0/best.pt --shards new_shards/ -o preds.parquet
  mammotrain predict --checkpoint runs/det/fold0/best.pt --dicom new_dicoms/ -o preds.parquet
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
        click.option("--size", type=click.IntRange(16), default=None,
                     help="Model input, square (pixels) [default: 224; detection 512]."),
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
        click.option("--step-size", type=click.IntRange(1), default=DEFAULTS["step_size"],
                     show_default=True, help="StepLR: epochs between lr decays."),
        click.option("--gamma", type=click.FloatRange(0, 1), default=DEFAULTS["gamma"],
                     show_default=True, help="StepLR decay factor."),
        click.option("--folds", type=FoldsType(), default=None,
                     help="Test folds to run, e.g. 0,1 [default: all in the manifest]."),
        click.option("--val-fraction", type=click.FloatRange(0, 1, max_open=True),
                     default=DEFAULTS["val_fraction"], show_default=True,
                     help="Share of the training folds' patients held out for model selection."),
        click.option("--workers", type=click.IntRange(0), default=DEFAULTS["workers"],
                     show_default=True, help="DataLoader worker processes."),
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
        click.option("--resize", type=click.Choice(["square", "letterbox"]), default="square",
                     show_default=True, help="Square resize (LUMINA) or keep the aspect ratio."),
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
        click.option("--amp/--no-amp", default=None, help="Mixed precision [default: on CUDA]."),
        click.option("--resume", is_flag=True,
                     help="Continue from the folds' checkpoints; finished folds are kept."),
    ]
    if shards:
        opts.insert(0, click.option("--shards", type=click.Path(file_okay=False, exists=True),
                                    required=True, help="Shard folder (mammoprep shard)."))

    def deco(f):
        for o in reversed(opts):
            f = o(f)
        return f
    return deco


def _config(kw: dict, **extra):
    from .train import TrainConfig

    kw = dict(kw, **extra)
    kw["in_chans"] = int(kw["in_chans"])
    kw.pop("resume", None)
    return TrainConfig(**kw)


def _run(fn):
    """Library errors -> a one-line message and exit 1 (not a traceback)."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from .data import DataError

        try:
            return fn(*args, **kwargs)
        except (DataError, ValueError, FileNotFoundError) as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(1)
    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="mammoprep")
def main() -> None:
    """Train and evaluate mammography models on mammoprep WebDataset shards."""


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
              help="A run's foldK/best.pt (or checkpoint.pt).")
@click.option("--shards", type=click.Path(file_okay=False, exists=True), default=None,
              help="Shard folder to predict (labels optional).")
@click.option("--dicom", "dicoms", multiple=True, type=click.Path(exists=True),
              help="DICOM files or folders (repeatable): prepared with the training shards' "
                   "mammoprep options (config.json), then predicted.")
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
def predict_cmd(checkpoint, shards, dicoms, ref, shard_size, out, device, batch_size, workers,
                figure):
    """Scores of every image or breast (and boxes, for detection) with a trained model.

    Writes OUT (Parquet: uid, key, view, patient, label (-1 = none), pred, scores, score,
    energy, manufacturer; detection adds boxes [x0, y0, x1, y1] in model-input pixels with
    their objectness, best first, and the same boxes in the original DICOM's pixels as
    boxes_original), OUT's .metrics.json where labels exist, and for detection a PNG of
    boxes.
    """
    from .train import predict_shards

    if bool(shards) == bool(dicoms):
        raise click.UsageError("give either --shards or --dicom")
    if shards:
        predict_shards(checkpoint, shards, out, device=device, batch_size=batch_size,
                       workers=workers, figure=figure, log=_log)
        return
    import tempfile

    with tempfile.TemporaryDirectory(prefix="mammotrain-predict-") as tmp:
        _shard_dicoms(checkpoint, dicoms, Path(tmp) / "shards", ref, shard_size)
        predict_shards(checkpoint, Path(tmp) / "shards", out, device=device,
                       batch_size=batch_size, workers=workers, figure=figure, log=_log)


def _shard_dicoms(checkpoint, dicoms, out: Path, ref, shard_size) -> None:
    """DICOMs -> shards with the training shards' mammoprep options (no labels, no folds)."""
    import json

    from mammoprep.identity import resolve_salt
    from mammoprep.pipeline import PrepConfig
    from mammoprep.shards import ShardConfig, build_shards

    from .train import load_checkpoint

    cfg, _, _ = load_checkpoint(checkpoint)
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
    scfg = ShardConfig(prep=PrepConfig(**prep), labels=None, folds=0)
    summary = build_shards([str(p) for p in dicoms], out, scfg, resolve_salt(None),
                           log=_log)
    _log(f"prepared {summary['images']} images ({summary['rejected']} rejected) from "
         f"{len(dicoms)} input(s)")


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
