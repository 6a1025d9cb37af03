"""`mammoprep shard` and `mammoprep verify`."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import click

from ..options import (ENERGY_TABLE_HELP, bar_disabled, batch_runner, decoder_option,
                       jobs_option, keep_suspect_option, progress_option, salt_option,
                       scheduler_option, worker_paths)


@click.command("shard")
@click.argument("inputs", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option("-o", "--out", "out", required=True, type=click.Path(path_type=Path),
              help="Output folder for shards and manifests.")
@click.option("--labels", default=None, metavar="KIND:PATH",
              help="Label source: lumina:DIR, lumina-per-view:DIR, rsna:CSV, "
              "cbis-ddsm:CSV[,CSV...], vindr:DIR, embed:DIR, csv:FILE or parquet:FILE "
              "(schema above).")
@click.option("--ref", "ref", default=None, metavar="REF",
              help="Harmonisation reference (.npz, DICOM folder or file). Omit for raw shards.")
@click.option("--only-energy", type=click.Choice(["high", "low"]), default=None,
              help="Harmonise only images of this energy class (default: all).")
@click.option("--energy-table", type=click.Path(exists=True, dir_okay=False), default=None,
              help=ENERGY_TABLE_HELP)
@click.option("--size", type=click.IntRange(min=16), default=1024, show_default=True,
              help="Longer side of stored images, pixels (aspect ratio kept).")
@click.option("--no-crop", is_flag=True, help="Keep the full field instead of the breast box.")
@click.option("--decode-scale", type=click.Choice(["auto", "full"]), default="auto",
              show_default=True,
              help="auto: decode JPEG 2000 at 1/2, 1/4, ... of its size when the breast crop "
                   "still gets at least --size pixels on its longer side (several times "
                   "faster; stored images within 1% of full scale of 'full'); full: always "
                   "decode at full resolution.")
@click.option("--samples-per-shard", type=click.IntRange(min=1), default=64, show_default=True)
@click.option("--folds", type=click.IntRange(min=0), default=5, show_default=True,
              help="Patient-level stratified group k-fold (0 = none).")
@click.option("--seed", type=int, default=0, show_default=True, help="Fold assignment seed.")
@scheduler_option
@click.option("--allow-rejects", is_flag=True, help="Exit 0 even if some inputs were rejected.")
@click.option("--strict-labels", is_flag=True,
              help="Stop on a label value that the source's legend does not have (default: "
                   "that value of that row is left out, counted per column in the summary).")
@click.option("--overwrite", is_flag=True,
              help="Replace shards and manifests in OUT made with other options, another "
                   "reference or label table (only this command's files are deleted).")
@click.option("--voi", is_flag=True, help="Apply the VOI LUT/window (default: detector values).")
@keep_suspect_option
@decoder_option
@salt_option
@jobs_option
@progress_option
def shard_cmd(inputs, out, labels, ref, only_energy, energy_table, size, no_crop, decode_scale,
              samples_per_shard, folds, seed, scheduler, allow_rejects, strict_labels, overwrite,
              voi, keep_suspect, decoder, salt, jobs, progress):
    """Write WebDataset shards and Parquet manifests from DICOM files or folders.

    One sample = one breast of one study: KEY.cc.png and KEY.mlo.png (16-bit, text removed,
    harmonised with --ref, cropped to the breast, longer side --size) and KEY.json (labels,
    boxes in stored pixels, transforms, vendor, energy). Next to the shards: images.parquet,
    shards.parquet, rejects.parquet and config.json. Every file is written atomically: a
    rerun after a crash or a full disk skips finished shards and gives identical bytes. OUT
    is locked (OUT/.lock) while a run writes to it; a folder made with other options, another
    reference or label table is refused unless --overwrite. Views other than CC and MLO
    (AT, ML, LM, XCCL, ...) are skipped and counted, not rejected. Exit 1 if anything was
    rejected (see --allow-rejects).

    \b
    Label sources: lumina:DIR, lumina-per-view:DIR, rsna:CSV, cbis-ddsm:CSV[,CSV...],
    vindr:DIR, embed:DIR, csv:FILE, parquet:FILE (each with its publisher's schema and task
    rules: README, "Label sources").
    Generic label table (csv:FILE / parquet:FILE), one row per image; column names in any
    case; empty, '-', NA, N/A, null mean missing; another value is left out of its row and
    counted per column in the summary (--strict-labels: an error naming the row):
      path        required  image file, relative to the table's folder or absolute
      patient     optional  patient id (pseudonymised); wins over (0010,0020); on
                            every row or none
      study       optional  study id (pseudonymised); wins over (0020,000D)
      laterality  optional  L, R, LEFT, RIGHT; wins over (0020,0062)/(0020,0060)
      view        optional  CC, MLO (others not stored); wins over (0018,5101)
      pathology   optional  benign, malignant, 0 (benign), 1 (malignant)
      birads      optional  0-6; 4A/4B/4C = 4; 'BI-RADS 4'
      density     optional  A-D; 1-4 = A-D; 'DENSITY C'
      boxes       optional  JSON [[xmin, ymin, xmax, ymax], ...] in original pixels
      split       optional  train (or training), test: your official split
                            (manifest column split; mammotrain --split official)
    The table wins over the header; every disagreement is counted in the summary. Rules:
    diagnosis from pathology (BI-RADS 0 excluded), BI-RADS tasks 1-6, density A-D. The other
    sources have their own rules (README, "Label sources").
    """
    from tqdm import tqdm

    from ..errors import MammoprepError
    from ..identity import resolve_salt, salt_fingerprint
    from ..pipeline import PrepConfig
    from ..batch import numba_worker_init
    from ..shards.schema import ShardConfig
    from ..shards.write import build_shards

    salt_b = resolve_salt(salt)
    cfg = ShardConfig(
        prep=PrepConfig(reference=str(Path(ref).resolve()) if ref else None,
                        only_energy=only_energy,
                        energy_table=str(Path(energy_table).resolve()) if energy_table else None,
                        voi=voi, decoder=decoder, size=size, crop=not no_crop,
                        decode_scale=decode_scale, keep_suspect=keep_suspect),
        labels=labels, samples_per_shard=samples_per_shard, folds=folds, seed=seed,
        salt_fingerprint=salt_fingerprint(salt_b))
    bars: dict[str, tqdm] = {}

    def on_progress(kind, n, total):
        if kind not in bars:
            for b in bars.values():
                b.close()
            bars[kind] = tqdm(total=total, desc=kind, unit="img" if kind == "write" else "file",
                              file=sys.stderr, dynamic_ncols=True,
                              disable=bar_disabled(progress))
        if n:
            bars[kind].update(n)

    try:
        with batch_runner(scheduler, jobs or os.cpu_count() or 1,
                          initializer=numba_worker_init) as runner:
            summary = build_shards([str(p) for p in worker_paths(inputs, scheduler)],
                                   worker_paths([out], scheduler)[0], cfg, salt_b, runner,
                                   progress=on_progress, overwrite=overwrite,
                                   log=lambda m: click.echo(m, err=True),
                                   strict_labels=strict_labels)
    except MammoprepError as err:
        raise click.ClickException(str(err))
    finally:
        for b in bars.values():
            b.close()
    _echo_summary(summary, out)
    sys.exit(1 if summary["rejected"] and not allow_rejects else 0)



def _echo_summary(summary: dict, out: Path) -> None:
    """What was stored and rejected, per vendor and energy class, and the labels' part."""
    unmatched = summary.pop("unmatched_labels")
    click.echo(f"stored {summary['images']} images in {summary['samples']} samples, "
               f"{summary['shards']} shards; rejected {summary['rejected']}; "
               f"harmonised {summary['harmonized']}")
    if summary.get("suspect_kept"):
        click.echo(f"{summary['suspect_kept']} image(s) stored with a suspect segmentation "
                   "(--keep-suspect; column qc in images.parquet)")
    click.echo(f"per vendor: {json.dumps(summary['per_vendor'])}")
    click.echo(f"per energy class: {json.dumps(summary['per_energy'])}")
    if summary["rejected"]:
        click.echo(f"rejects by reason: {json.dumps(summary['rejects_by_reason'])} "
                   f"(details: {out / 'rejects.parquet'})")
    if summary.get("skipped_views"):
        click.echo(f"skipped views shards do not store (CC and MLO are stored): "
                   f"{json.dumps(summary['skipped_views'])}")
    if unmatched:
        click.echo(f"{len(unmatched)} label rows matched no image (e.g. {unmatched[0]})")
    _echo_labels(summary)


def _echo_labels(summary: dict) -> None:
    """The label source's part of the summary: labelled images per task, table/header
    disagreements (the table wins), the source's own warnings."""
    rep = summary.get("labels")
    if not rep:
        return
    click.echo(f"labels ({rep['source']}): labelled images per task "
               f"{json.dumps(rep['labelled_images'])}")
    con = rep["conflicts"]
    if any(con.values()):
        click.echo(f"table and header disagree (table used): {json.dumps(con)}")
        for line in summary["label_details"]["conflict_examples"]:
            click.echo(f"  {line}")
    for column, d in sorted(rep.get("dropped_values", {}).items()):
        click.echo(f"labels: {d['count']} value(s) of column {column} are not in the "
                   f"{rep['source']} legend and were left out (e.g. {'; '.join(d['examples'])});"
                   " --strict-labels stops instead")
    if rep.get("splits") and set(rep["splits"]) != {"none"}:
        click.echo(f"official split (samples): {json.dumps(rep['splits'])}")
    if rep.get("skipped_files"):
        click.echo(f"skipped {rep['skipped_files']} file(s) the label source names but does "
                   "not store (ROI masks, crops, C-views, ...)")
    for w in summary["label_details"]["source_warnings"]:
        click.echo(f"warning: {w}", err=True)


@click.command("verify")
@click.argument("shards", type=click.Path(exists=True, file_okay=False, path_type=Path))
def verify_cmd(shards):
    """Check a shard folder: every manifest row's sample is in its shard, every shard's hash
    matches, every image decodes. Exit 1 with the list of problems otherwise."""
    from ..shards.verify import verify

    problems = verify(shards)
    for p in problems:
        click.echo(p)
    click.echo(f"{'OK' if not problems else 'FAILED'}: {len(problems)} problem(s) in {shards}")
    sys.exit(1 if problems else 0)
