"""`mammoprep reference`, `mammoprep harmonize` and `mammoprep preview`."""

from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path

import click

from ..options import (ENERGY_TABLE_HELP, bar_disabled, batch_runner, decoder_option,
                       keep_suspect_option, progress_bar, salt_option, scheduler_option,
                       worker_paths)

_ENERGY = click.Choice(["low", "high", "any"])


_jobs_option = click.option(
    "-j", "--jobs", type=click.IntRange(min=0), default=0, show_default=True,
    help="Worker processes. 0 = auto: one per core. Each worker (or this process, with "
         "-j 1) reads the next file and writes the previous ones in threads while its "
         "kernels work on the current one; files go to workers in batches. Measured on 2 "
         "cores: benchmarks/RESULTS.md.")


def _reasons(counts: dict[str, int]) -> str:
    """'not_mammogram 3, truncated 1' (sorted by reason), or 'none'."""
    return ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "none"


@click.command("reference")
@click.argument("inputs", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option("-o", "--out", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Reference file to write (.npz).")
@click.option("--energy", type=_ENERGY, default="low", show_default=True,
              help="Pool only images of this energy class (from metadata: Manufacturer / "
                   "Model Name, or --energy-table), or any. Files without (0008,0070) "
                   "Manufacturer are of unknown class: counted, with the two ways on.")
@click.option("--bits", type=click.IntRange(1, 16), default=None,
              help="Reference bit depth; each image's histogram is rescaled from its own depth "
                   "to it (default: the largest bit depth of the images used).")
@click.option("--energy-table", type=click.Path(exists=True, dir_okay=False), default=None,
              help=ENERGY_TABLE_HELP)
@keep_suspect_option
@decoder_option
@salt_option
@scheduler_option
def reference_cmd(inputs, out, energy, bits, energy_table, keep_suspect, decoder, salt,
                  scheduler):
    """Pool the foreground histograms of low-energy mammograms into a reference (.npz).

    Only mammograms are pooled: Modality MG, a mammography SOP Class UID, or a radiograph
    with Image Laterality, a breast view or Body Part BREAST and nothing that says otherwise
    (a CR chest, a CT, ... are left out and counted; README, "What counts as a mammogram").
    Images go through the same decoding and burned-in text removal
    as at harmonisation time; each histogram is rescaled from the image's bit depth to the
    reference depth before pooling. A file that cannot be used is reported with its reason
    and the reference is written from the rest. The file stores the pooled histogram, its
    bit depth, and the hash, bit depth, vendor and mammogram evidence of each contributing
    image. With --scheduler the files are read on a Dask cluster: the same reference.
    """
    from tqdm import tqdm

    from ..io.paths import iter_dicom_paths
    from ..errors import MammoprepError
    from ..harmonise.reference import build_reference, unknown_energy_note

    files = list(iter_dicom_paths(worker_paths(inputs, scheduler)))
    if energy_table:
        energy_table = str(worker_paths([energy_table], scheduler)[0])
    with tqdm(total=len(files), desc="reference", unit="file", file=sys.stderr,
              disable=True if len(files) < 2 else bar_disabled()) as bar, \
            batch_runner(scheduler) as runner:
        try:
            ref, report = build_reference(
                files, energy=None if energy == "any" else energy, energy_table=energy_table,
                bits=bits, salt=salt, decoder=decoder, keep_suspect=keep_suspect,
                progress=bar.update, runner=runner,
                on_error=lambda e: tqdm.write(f"left out ({e.kind}): {e}", file=sys.stderr))
        except MammoprepError as err:
            raise click.ClickException(str(err))
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        ref.save(out)  # atomic; a full disk is a WriteError naming the file
    except OSError as exc:
        from ..atomic import write_error

        raise click.ClickException(str(write_error(out.parent, exc)))
    except MammoprepError as err:
        raise click.ClickException(str(err))
    depths = ", ".join(f"{n} x {k}-bit" for k, n in report["depths"].items())
    click.echo(f"reference {out}: {report['used']} images ({depths}) pooled at "
               f"{report['bits']}-bit; {sum(report['rejects'].values())} left out: "
               f"{_reasons(report['rejects'])}")
    click.echo(f"mammograms by evidence: {_reasons(report['evidence'])}")
    if report["no_manufacturer"]:
        click.echo("note: " + unknown_energy_note(report["no_manufacturer"],
                                                  report["no_manufacturer_example"]), err=True)


@click.command("harmonize")
@click.argument("inputs", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option("--ref", "ref", required=True, metavar="REF",
              help="Reference: a .npz from `mammoprep reference`, a folder of DICOMs (its "
                   "low-energy mammograms are pooled) or a single DICOM mammogram.")
@click.option("-o", "--out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Output folder; the layout of the inputs below their common folder is "
                   "mirrored under it.")
@click.option("--format", "fmt", type=click.Choice(["dicom", "png"]), default="dicom",
              show_default=True, help="Derived DICOM (uncompressed MONOCHROME2) or 16-bit PNG.")
@click.option("--only-energy", type=click.Choice(["high", "low"]), default=None,
              help="Harmonise only this energy class; the others are written with text "
                   "removed but not matched. Default: all.")
@click.option("--energy-table", type=click.Path(exists=True, dir_okay=False), default=None,
              help=ENERGY_TABLE_HELP)
@click.option("--orient-left", is_flag=True,
              help="Flip images so the chest wall is on the left (recorded).")
@click.option("--voi", is_flag=True, help="Apply the VOI LUT/window first (default: no).")
@keep_suspect_option
@click.option("--keep-identity", is_flag=True,
              help="Derived DICOMs keep the source header with its patient identifiers "
                   "(only for writing back into the source PACS). Default: de-identified "
                   "(PS3.15 Basic Profile, Retain Device Identity; see the README). "
                   "DICOM output only.")
@decoder_option
@salt_option
@_jobs_option
@scheduler_option
def harmonize_cmd(inputs, ref, out, fmt, only_energy, energy_table, orient_left, voi,
                  keep_suspect, keep_identity, decoder, salt, jobs, scheduler):
    """Remove burned-in text and CDF-match DICOMs to a low-energy reference.

    Foreground-only matching (LUMINA, Eq. 7): background stays exactly 0. Which images are
    matched is decided from metadata only (vendor/model -> energy class). Input files are
    never modified. Derived DICOMs are de-identified (PS3.15 Basic Profile with Retain
    Device Identity; salted pseudonyms and UIDs) unless --keep-identity. Outputs mirror the inputs' paths below their common folder; if two
    inputs would still map to one output, nothing is written and both are named. Writes
    OUT/harmonize_log.jsonl (one row per input: status, QC fields, or the reject kind and
    message); the summary counts rejects by reason; exit 1 if any file was rejected. With
    --scheduler the files are processed on a Dask cluster, with the same outputs.
    """
    from ..runtime import start_up, started

    start_up()  # no garbage collection until the kernels are loaded (resumed below)
    try:
        _harmonize(inputs, ref, out, fmt, only_energy, energy_table, orient_left, voi,
                   keep_suspect, keep_identity, decoder, salt, jobs, scheduler)
    finally:
        started()


def _harmonize(inputs, ref, out, fmt, only_energy, energy_table, orient_left, voi,
               keep_suspect, keep_identity, decoder, salt, jobs, scheduler) -> None:
    """The body of :func:`harmonize_cmd`."""
    from ..atomic import output_lock, sweep_temporaries
    from ..batch import Job, auto_jobs
    from ..errors import MammoprepError
    from ..runs import harmonize as hf
    from ..harmonise.reference import load_reference
    from ..identity import resolve_salt
    from ..pipeline import PrepConfig, prepared
    from ..runtime import prepare_process

    inputs, (out,) = worker_paths(inputs, scheduler), worker_paths([out], scheduler)
    try:
        files, dests = hf.output_paths(inputs, out, fmt)
    except hf.OutputPathsError as err:
        raise click.UsageError(str(err))
    # one run per output folder: a second one fails at once (released at exit, even kill -9)
    lock = contextlib.ExitStack()
    try:
        lock.enter_context(output_lock(out, "harmonize"))
    except MammoprepError as err:
        raise click.ClickException(str(err))
    click.get_current_context().call_on_close(lock.close)
    sweep_temporaries(out)  # under the lock, every temporary file in OUT is a dead run's
    runner = lock.enter_context(batch_runner(scheduler)) if scheduler else None
    n_jobs = min(jobs or auto_jobs(), len(files))
    if n_jobs == 1 and runner is None:  # the kernels run in this process
        prepare_process()
    if energy_table:  # as every worker must find it (and in the UIDs' config digest)
        energy_table = str(Path(energy_table).resolve())
    ref_path = Path(ref)
    if ref_path.suffix.lower() != ".npz":  # build once here, not in every worker
        try:
            built = load_reference(ref_path, keep_suspect=keep_suspect, salt=salt,
                                   energy_table=energy_table, runner=runner)
        except MammoprepError as err:
            raise click.ClickException(str(err))
        out.mkdir(parents=True, exist_ok=True)
        ref_path = out / "reference.npz"
        built.save(ref_path)
    cfg = PrepConfig(reference=str(ref_path.resolve()), only_energy=only_energy,
                     energy_table=energy_table, voi=voi, decoder=decoder,
                     orient_left=orient_left, keep_suspect=keep_suspect)
    try:
        prepared(cfg)  # fail fast on a bad reference or energy table
    except MammoprepError as err:
        raise click.ClickException(str(err))
    salt_b = resolve_salt(salt)
    out.mkdir(parents=True, exist_ok=True)
    bars = []

    def started_progress():  # the bar after the workers have started
        bars.append(progress_bar(len(files), "harmonize", "img"))
        return bars[0].update

    try:
        rows = hf.harmonize_jobs([Job(str(f), str(d), fmt, cfg, salt_b, keep_identity)
                                  for f, d in zip(files, dests)], n_jobs, started_progress,
                                 runner)
    except MammoprepError as err:  # a worker lost (killed, out of memory)
        raise click.ClickException(str(err))
    finally:
        for bar in bars:
            bar.close()
    _summary(out, rows)


def _summary(out: Path, rows: list[dict]) -> None:
    """Write the log, print the rejects and the summary; exit 1 if any file failed."""
    from ..errors import MammoprepError
    from ..runs.harmonize import write_log

    unwritten = [r for r in rows if r.get("kind") == "write_failed"]
    try:
        write_log(out, rows)
    except MammoprepError as err:
        unwritten.append({"error": str(err)})
    if unwritten:  # a full disk or no permission: one error, not one per file
        raise click.ClickException(f"{unwritten[0]['error']} ({len(unwritten)} output(s) not "
                                   "written)")
    failed = [r for r in rows if r["status"] != "ok"]
    for r in failed:
        click.echo(f"ERROR ({r['kind']}) {r['error']}", err=True)
    ok = [r for r in rows if r["status"] == "ok"]
    energies: dict[str, int] = {}
    for r in ok:
        energies[r["energy"]] = energies.get(r["energy"], 0) + 1
    reasons: dict[str, int] = {}
    for r in failed:
        reasons[r["kind"]] = reasons.get(r["kind"], 0) + 1
    suspect_kept = sum(1 for r in ok if r.get("qc") == "suspect")
    click.echo(f"{len(ok)} written to {out} ({sum(r['harmonized'] for r in ok)} harmonised, "
               f"energy classes {json.dumps(energies, sort_keys=True)}"
               + (f", {suspect_kept} kept with qc=suspect" if suspect_kept else "")
               + f"), {len(failed)} failed"
               + (f" ({_reasons(reasons)})" if failed else ""))
    if energies.get("unknown"):
        click.echo(f"note: {energies['unknown']} image(s) of unknown energy class (no "
                   "(0008,0070) Manufacturer, or a vendor not in the energy table); pass "
                   "--energy-table (manufacturer/model rules, or one row per image file) "
                   "to classify them", err=True)
    sys.exit(1 if failed else 0)


@click.command("preview")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--ref", "ref", required=True, metavar="REF", help="Reference (.npz, folder, file).")
@click.option("-o", "--out", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="PNG to write.")
@decoder_option
def preview_cmd(file, ref, out, decoder):
    """Before/after images side by side with their foreground histograms and the reference's."""
    from ..errors import MammoprepError, UnexpectedError
    from ..runs.preview import render_preview

    try:
        render_preview(file, ref, out, decoder=decoder)
    except MammoprepError as err:
        raise click.ClickException(str(err))
    except Exception as exc:  # noqa: BLE001 - no traceback from user input
        raise click.ClickException(str(UnexpectedError.wrap(file, exc, "preview")))
    click.echo(f"wrote {out}")
