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
  mammotrain compare runs/* -o results/     one paper-style table: raw vs harmonised, CIs, p
  mammotrain combine runs/* --ablation runs/abl -o report.md
"""

from __future__ import annotations

import functools
import importlib.util
import sys
import tomllib
from pathlib import Path

import click

from mammoprep.errors import MammoprepError

from .options import CLI_ORDER, Options, click_options


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
    """The options shared by train / cv / ablation: ``--config``, the declared training
    options (:mod:`mammotrain.options`; without ``--shards`` for ablation) and ``--resume``."""
    names = CLI_ORDER if shards else tuple(n for n in CLI_ORDER if n != "shards")
    opts = click_options(Options, names) + [click.option(
        "--resume", is_flag=True,
        help="Continue from the folds' checkpoints; finished folds are kept.")]
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
    from .config import TrainConfig  # torch

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
        from .data import DataError  # torch

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
    from .engine.fit import run_cv

    resume = kw["resume"]
    run_cv(_config(kw), resume=resume, log=_log)


@main.command("train")
@training_options()
@click.option("--fold", type=click.IntRange(0), required=True, help="The test fold.")
@_run
def train_cmd(fold, **kw):
    """Train and evaluate one test fold (the report covers the finished folds of OUT)."""
    from .engine.fit import run_cv

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
    from .compare import write_ablation_report
    from .engine.distributed import init_distributed
    from .engine.fit import run_cv

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
    from .engine.inference import predict_shards

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
@click.argument("runs", nargs=-1, required=True, type=click.Path(file_okay=False))
@click.option("--out", "-o", type=click.Path(file_okay=False), required=True,
              help="Folder for results.md, results.png and results.json.")
@click.option("--title", default="Results: raw vs harmonised", show_default=True)
@click.option("--notes", default="", help="A paragraph placed under the title.")
@_run
def compare_cmd(runs, out, title, notes):
    """One results table over finished runs, laid out like the paper's tables.

    \b
    mammotrain compare runs/diag2v-raw runs/diag2v runs/density-2v -o results/

    A row per task x views x backbone x input size, pooled out-of-fold ACC / AUC / F1
    (detection: mAP@.5 / mAP@.25 / R@.25) with 95 % CIs for the raw and the harmonised
    run, and the paired p-value between them. Runs are paired by their options (all but
    the shards); raw or harmonised is read from their shards' config.json. Writes
    OUT/results.{md,png,json}; two runs of one configuration also get the ablation
    report OUT/ablation.md (the first is raw unless their shards say otherwise)."""
    from .compare import write_ablation_report
    from .results import ablation_pair, write_results

    write_results(runs, out, title, notes)
    click.echo(str(Path(out) / "results.md"))
    pair = ablation_pair(runs)
    if pair:
        write_ablation_report(*pair, out)
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
    from .compare import write_combined_report

    write_combined_report(runs, ablations, out, title, notes)
    click.echo(out)


if __name__ == "__main__":  # pragma: no cover
    main()
