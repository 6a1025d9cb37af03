"""`mammoprep qc`: a segmentation contact sheet a person can scan in seconds."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from ..options import (batch_runner, decoder_option, jobs_option, scheduler_option,
                       worker_paths)


def _item(job):
    """One tile of the sheet (a pool worker's job: ``job`` is a :class:`mammoprep.batch.Job`)."""
    from ..segmentation.qc import qc_item

    return qc_item(job.src, decoder=job.decoder)


@click.command("qc")
@click.argument("inputs", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option("-o", "--out", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Contact sheet PNG to write.")
@click.option("--max", "max_images", type=click.IntRange(min=1), default=None,
              help="Show at most N images (errors and suspect images are kept first).")
@click.option("--columns", type=click.IntRange(1, 20), default=6, show_default=True,
              help="Tiles per row.")
@decoder_option
@jobs_option
@scheduler_option
def qc_cmd(inputs, out, max_images, columns, decoder, jobs, scheduler):
    """Contact sheet of the breast segmentation of every DICOM under INPUTS.

    Per image: a thumbnail with the kept region outlined in green, removed non-zero pixels
    tinted red, a blue bar on the chest-wall side, and the verdict (OK / SUSPECT with its
    reason / ERROR with the message). Errors and suspect images come first. Prints one
    line per suspect or failed file and a summary; exit 1 if any image is suspect or
    failed. With --scheduler the tiles are made on a Dask cluster: the same sheet.
    """
    from tqdm import tqdm

    from ..atomic import check_writable
    from ..errors import MammoprepError, WriteError
    from ..io.paths import iter_dicom_paths
    from ..batch import Job, numba_worker_init
    from ..options import bar_disabled
    from ..segmentation.qc import order, render_sheet

    files = [str(p) for p in iter_dicom_paths(worker_paths(inputs, scheduler))]
    if not files:
        raise click.UsageError("no DICOM files found")
    try:
        check_writable(out)  # a sheet that cannot be written fails before the batch runs
    except WriteError as err:
        raise click.ClickException(str(err)) from None
    n_jobs = min(jobs or os.cpu_count() or 1, len(files))
    with tqdm(total=len(files), desc="qc", unit="img", file=sys.stderr,
              disable=True if len(files) < 2 else bar_disabled()) as bar, \
            batch_runner(scheduler, n_jobs, initializer=numba_worker_init) as runner:
        try:
            items = list(runner.map(_item, [Job(f, decoder=decoder) for f in files],
                                    progress=bar.update))
        except MammoprepError as err:  # a worker lost (killed, out of memory)
            raise click.ClickException(str(err))
    ranked = order(items)
    shown = ranked[:max_images] if max_images else ranked
    try:
        render_sheet(shown, out, columns=columns)
    except WriteError as err:
        raise click.ClickException(str(err)) from None
    counts = {v: sum(it.verdict == v for it in items) for v in ("ok", "suspect", "error")}
    for it in ranked:
        if it.verdict != "ok":
            click.echo(f"{it.verdict.upper()} {it.name}: {it.caption}", err=True)
    click.echo(f"qc sheet {out}: {len(shown)} of {len(items)} images; {counts['ok']} ok, "
               f"{counts['suspect']} suspect, {counts['error']} failed")
    sys.exit(1 if counts["suspect"] or counts["error"] else 0)
