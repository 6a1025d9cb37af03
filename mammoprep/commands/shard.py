"""`mammoprep shard` and `mammoprep verify`."""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import click

from ..options import decoder_option, jobs_option, salt_option


@click.command("shard")
@click.argument("inputs", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option("-o", "--out", "out", required=True, type=click.Path(path_type=Path),
              help="Output folder for shards and manifests.")
@click.option("--labels", default=None, metavar="KIND:PATH",
              help="Label source: lumina:DIR, csv:FILE, parquet:FILE or vindr:DIR.")
@click.option("--ref", "ref", default=None, metavar="REF",
              help="Harmonisation reference (.npz, DICOM folder or file). Omit for raw shards.")
@click.option("--only-energy", type=click.Choice(["high", "low"]), default=None,
              help="Harmonise only images of this energy class (default: all).")
@click.option("--energy-table", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Your own vendor/model -> energy CSV (default: manifests/energy_classes.csv).")
@click.option("--size", type=click.IntRange(min=16), default=1024, show_default=True,
              help="Longer side of stored images, pixels (aspect ratio kept).")
@click.option("--no-crop", is_flag=True, help="Keep the full field instead of the breast box.")
@click.option("--samples-per-shard", type=click.IntRange(min=1), default=64, show_default=True)
@click.option("--folds", type=click.IntRange(min=0), default=5, show_default=True,
              help="Patient-level stratified group k-fold (0 = none).")
@click.option("--seed", type=int, default=0, show_default=True, help="Fold assignment seed.")
@click.option("--scheduler", default=None, metavar="ADDRESS",
              help="Run the shard tasks on a Dask distributed cluster at ADDRESS.")
@click.option("--allow-rejects", is_flag=True, help="Exit 0 even if some inputs were rejected.")
@click.option("--overwrite", is_flag=True, help="Delete OUT first if it holds other shards.")
@click.option("--voi", is_flag=True, help="Apply the VOI LUT/window (default: detector values).")
@decoder_option
@salt_option
@jobs_option
def shard_cmd(inputs, out, labels, ref, only_energy, energy_table, size, no_crop,
              samples_per_shard, folds, seed, scheduler, allow_rejects, overwrite, voi,
              decoder, salt, jobs):
    """Write WebDataset shards and Parquet manifests from DICOM files or folders.

    One sample = one breast of one study: KEY.cc.png and KEY.mlo.png (16-bit, text removed,
    harmonised with --ref, cropped to the breast, longer side --size) and KEY.json (labels,
    boxes in stored pixels, transforms, vendor, energy). Next to the shards: images.parquet,
    shards.parquet, rejects.parquet and config.json. A rerun after a crash skips finished
    shards and gives identical bytes. Exit 1 if anything was rejected (see --allow-rejects).
    """
    from tqdm import tqdm

    from ..errors import MammoprepError
    from ..identity import resolve_salt, salt_fingerprint
    from ..pipeline import PrepConfig
    from ..shards import ShardConfig, build_shards, local_executor

    salt_b = resolve_salt(salt)
    cfg = ShardConfig(
        prep=PrepConfig(reference=str(Path(ref).resolve()) if ref else None,
                        only_energy=only_energy,
                        energy_table=str(Path(energy_table).resolve()) if energy_table else None,
                        voi=voi, decoder=decoder, size=size, crop=not no_crop),
        labels=labels, samples_per_shard=samples_per_shard, folds=folds, seed=seed,
        salt_fingerprint=salt_fingerprint(salt_b))
    if overwrite and out.exists():
        shutil.rmtree(out)
    bars: dict[str, tqdm] = {}

    def progress(kind, n, total):
        if kind not in bars:
            for b in bars.values():
                b.close()
            bars[kind] = tqdm(total=total, desc=kind, unit="img" if kind == "write" else "file",
                              file=sys.stderr, dynamic_ncols=True)
        if n:
            bars[kind].update(n)

    client = None
    try:
        if scheduler:
            try:
                from distributed import Client
            except ImportError:
                raise click.UsageError("--scheduler needs Dask: pip install 'mammoprep[dask]'")
            client = Client(scheduler)
            executor = client.get_executor()
        else:
            executor = local_executor(jobs or os.cpu_count() or 1)
        with executor:
            summary = build_shards([str(p) for p in inputs], out, cfg, salt_b, executor,
                                   progress=progress)
    except MammoprepError as err:
        raise click.ClickException(str(err))
    finally:
        for b in bars.values():
            b.close()
        if client is not None:
            client.close()
    unmatched = summary.pop("unmatched_labels")
    click.echo(f"stored {summary['images']} images in {summary['samples']} samples, "
               f"{summary['shards']} shards; rejected {summary['rejected']}; "
               f"harmonised {summary['harmonized']}")
    click.echo(f"per vendor: {json.dumps(summary['per_vendor'])}")
    click.echo(f"per energy class: {json.dumps(summary['per_energy'])}")
    if summary["rejected"]:
        click.echo(f"rejects by reason: {json.dumps(summary['rejects_by_reason'])} "
                   f"(details: {out / 'rejects.parquet'})")
    if unmatched:
        click.echo(f"{len(unmatched)} label rows matched no image (e.g. {unmatched[0]})")
    sys.exit(1 if summary["rejected"] and not allow_rejects else 0)


@click.command("verify")
@click.argument("shards", type=click.Path(exists=True, file_okay=False, path_type=Path))
def verify_cmd(shards):
    """Check a shard folder: every manifest row's sample is in its shard, every shard's hash
    matches, every image decodes. Exit 1 with the list of problems otherwise."""
    from ..shards import verify

    problems = verify(shards)
    for p in problems:
        click.echo(p)
    click.echo(f"{'OK' if not problems else 'FAILED'}: {len(problems)} problem(s) in {shards}")
    sys.exit(1 if problems else 0)
