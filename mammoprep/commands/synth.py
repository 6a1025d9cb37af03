"""``mammoprep synth``: write a deterministic synthetic multi-vendor cohort."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import click


def _size(ctx: click.Context, param: click.Parameter, value: str) -> tuple[int, int]:
    from mammoprep.synth import parse_size

    try:
        return parse_size(value)
    except ValueError as err:
        raise click.BadParameter(str(err), ctx=ctx, param=param) from None


@click.command("synth")
@click.argument("out", type=click.Path(file_okay=False, path_type=Path))
@click.option("--patients", default=12, show_default=True, type=click.IntRange(min=1),
              help="Number of patients (half Benign, half Malign).")
@click.option("--seed", default=0, show_default=True, type=int,
              help="Random seed; equal arguments give byte-identical files.")
@click.option("--size", default="512x416", show_default=True, metavar="ROWSxCOLS",
              callback=_size, help="Image size in pixels, e.g. 4096x3328 for benchmarks.")
@click.option("-j", "--jobs", default=1, show_default=True, type=click.IntRange(min=0),
              help="Worker processes (0 = one per CPU).")
@click.option("--artefacts", default=0.0, show_default=True, type=click.FloatRange(0, 1),
              metavar="FRACTION",
              help="Fraction of views rendered with failure modes of real archives: noisy "
                   "grey background, bimodal dense breast, film edges and scanner label, a "
                   "label touching the skin (column artefacts of labels.csv).")
def synth_cmd(out: Path, patients: int, seed: int, size: tuple[int, int], jobs: int,
              artefacts: float) -> None:
    """Write a synthetic cohort to OUT: Benign|Malign/<ID>/{L,R}_{CC,MLO}.dcm,
    Benign_Cases.xlsx, Malign_Cases.xlsx, labels.csv and identities.csv."""
    from tqdm import tqdm

    from mammoprep.synth import generate_cohort

    workers = jobs or (os.cpu_count() or 1)
    from ..options import bar_disabled

    bar = tqdm(total=None, unit="img", file=sys.stderr, desc="synth", leave=False,
               disable=bar_disabled())

    def progress(done: int, total: int) -> None:
        if bar.total != total:
            bar.reset(total=total)
        bar.n = done
        bar.refresh()

    t0 = time.perf_counter()
    try:
        summary = generate_cohort(out, patients, seed, size=size, workers=workers,
                                  progress=progress, artefacts=artefacts)
    except FileExistsError as err:
        raise click.ClickException(str(err)) from None
    finally:
        bar.close()
    dt = time.perf_counter() - t0
    for wanted, used in summary.get("fallbacks", {}).items():
        click.echo(f"note: no encoder installed for {_ts_name(wanted)} ({wanted}); wrote "
                   f"{_ts_name(used)} ({used}) instead (pip install 'mammoprep[fast]' for "
                   "the JPEG-LS encoder, pyjpegls)", err=True)
    vendors = ", ".join(f"{k} {v}" for k, v in summary["vendors"].items())
    click.echo(f"wrote {summary['images']} images of {summary['patients']} patients "
               f"({summary['benign_patients']} benign, {summary['malign_patients']} malign; "
               f"{summary['lesions']} lesion boxes; {vendors}) at {size[0]}x{size[1]} "
               f"to {out} in {dt:.1f} s")


def _ts_name(uid: str) -> str:
    from pydicom.uid import UID

    return UID(uid).name
