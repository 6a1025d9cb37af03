"""`mammoprep reference`, `mammoprep harmonize` and `mammoprep preview`."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import click

from ..options import decoder_option, jobs_option, salt_option

_ENERGY = click.Choice(["low", "high", "any"])


@click.command("reference")
@click.argument("inputs", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option("-o", "--out", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Reference file to write (.npz).")
@click.option("--energy", type=_ENERGY, default="low", show_default=True,
              help="Pool only images of this energy class (from metadata), or any.")
@click.option("--bits", type=click.IntRange(1, 16), default=None,
              help="Histogram bit depth (default: the largest Bits Stored of the images used).")
@click.option("--energy-table", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Your own vendor/model -> energy CSV (default: manifests/energy_classes.csv).")
@decoder_option
@salt_option
def reference_cmd(inputs, out, energy, bits, energy_table, decoder, salt):
    """Pool the foreground histograms of low-energy DICOMs into a reference (.npz).

    Images go through the same decoding and burned-in text removal as at harmonisation
    time. The file stores the pooled histogram, its bit depth and the hashed list of
    contributing images.
    """
    from tqdm import tqdm

    from ..dicomio import iter_dicom_paths
    from ..errors import MammoprepError
    from ..reference import build_reference

    files = list(iter_dicom_paths(inputs))
    with tqdm(total=len(files), desc="reference", unit="file", file=sys.stderr,
              disable=len(files) < 2) as bar:
        try:
            ref, report = build_reference(
                files, energy=None if energy == "any" else energy, energy_table=energy_table,
                bits=bits, salt=salt, decoder=decoder, progress=bar.update,
                on_error=lambda e: tqdm.write(f"skipped: {e}", file=sys.stderr))
        except MammoprepError as err:
            raise click.ClickException(str(err))
    out.parent.mkdir(parents=True, exist_ok=True)
    ref.save(out)
    click.echo(f"reference {out}: {report['used']} images, {report['bits']}-bit, "
               f"{report['other_energy']} of another energy class left out, "
               f"{report['failed']} unreadable")


def _harmonize_one(job: tuple) -> dict:
    """Worker: preprocess one file and write it; returns a log row (never raises)."""
    src, dest, fmt, cfg, salt = job
    from ..derived import write_derived_dicom
    from ..errors import MammoprepError
    from ..pipeline import preprocess
    from ..png import write_png16

    prep = _prepared(cfg)
    try:
        rec = preprocess(src, prep, salt=salt)
        m = rec.meta
        Path(dest).parent.mkdir(parents=True, exist_ok=True)
        if fmt == "png":
            write_png16(dest, rec.pixels)
        else:
            what = ["decoded", "MONOCHROME1 inverted" if m.get("inverted") else None,
                    f"burned-in text removed ({m.get('removed_fraction', 0):.2%} of non-zero "
                    "pixels)",
                    "CDF-matched to a low-energy reference (mammoprep, LUMINA protocol)"
                    if m.get("harmonized") else "not harmonised (energy rule)"]
            write_derived_dicom(src, rec, dest, "mammoprep: " + "; ".join(w for w in what if w),
                                uid_salt=cfg.digest())
        return {"output": str(dest), "status": "ok", "energy": m.get("energy"),
                "harmonized": bool(m.get("harmonized")),
                "removed_fraction": m.get("removed_fraction"),
                "sop_uid_hash": m.get("sop_uid_hash")}
    except MammoprepError as err:
        return {"output": str(dest), "status": "error", "error": str(err)}
    except Exception as exc:  # noqa: BLE001 - one bad file must not end the batch
        return {"output": str(dest), "status": "error",
                "error": f"{src}: {type(exc).__name__}: {exc}"}


_PREPARED: dict = {}


def _prepared(cfg):
    """Per-process cache of the loaded reference and energy table."""
    from ..pipeline import Prepared

    key = cfg.digest()
    if key not in _PREPARED:
        _PREPARED[key] = Prepared(cfg)
    return _PREPARED[key]


def _mirror(src: Path, roots: list[Path], out: Path, suffix: str) -> Path:
    """OUT/<path of src relative to the input root it came from>, with ``suffix``."""
    for root in roots:
        if root.is_dir():
            try:
                rel = src.resolve().relative_to(root.resolve())
                return (out / rel).with_suffix(suffix)
            except ValueError:
                continue
    return (out / src.name).with_suffix(suffix)


@click.command("harmonize")
@click.argument("inputs", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option("--ref", "ref", required=True, metavar="REF",
              help="Reference: a .npz from `mammoprep reference`, a folder of DICOMs (its "
                   "low-energy images are pooled) or a single DICOM file.")
@click.option("-o", "--out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Output folder; the input layout is mirrored under it.")
@click.option("--format", "fmt", type=click.Choice(["dicom", "png"]), default="dicom",
              show_default=True, help="Derived DICOM (uncompressed MONOCHROME2) or 16-bit PNG.")
@click.option("--only-energy", type=click.Choice(["high", "low"]), default=None,
              help="Harmonise only this energy class; the others are written with text "
                   "removed but not matched. Default: all.")
@click.option("--energy-table", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Your own vendor/model -> energy CSV (default: manifests/energy_classes.csv).")
@click.option("--orient-left", is_flag=True,
              help="Flip images so the chest wall is on the left (recorded).")
@click.option("--voi", is_flag=True, help="Apply the VOI LUT/window first (default: no).")
@decoder_option
@salt_option
@jobs_option
def harmonize_cmd(inputs, ref, out, fmt, only_energy, energy_table, orient_left, voi, decoder,
                  salt, jobs):
    """Remove burned-in text and CDF-match DICOMs to a low-energy reference.

    Foreground-only matching (LUMINA, Eq. 7): background stays exactly 0. Which images are
    matched is decided from metadata only (vendor/model -> energy class). Input files are
    never modified. Writes OUT/harmonize_log.jsonl; exit 1 if any file failed.
    """
    from concurrent.futures import ProcessPoolExecutor

    from tqdm import tqdm

    from ..dicomio import iter_dicom_paths
    from ..errors import MammoprepError
    from ..identity import resolve_salt
    from ..pipeline import PrepConfig
    from ..reference import load_reference
    from ..shards import _worker_init

    files = list(iter_dicom_paths(inputs))
    if not files:
        raise click.UsageError("no DICOM files found")
    ref_path = Path(ref)
    if ref_path.suffix.lower() != ".npz":  # build once here, not in every worker
        try:
            built = load_reference(ref_path)
        except MammoprepError as err:
            raise click.ClickException(str(err))
        out.mkdir(parents=True, exist_ok=True)
        ref_path = out / "reference.npz"
        built.save(ref_path)
    cfg = PrepConfig(reference=str(ref_path.resolve()), only_energy=only_energy,
                     energy_table=energy_table, voi=voi, decoder=decoder,
                     orient_left=orient_left)
    try:
        _prepared(cfg)  # fail fast on a bad reference or energy table
    except MammoprepError as err:
        raise click.ClickException(str(err))
    salt_b = resolve_salt(salt)
    suffix = ".png" if fmt == "png" else ".dcm"
    roots = [Path(p) for p in inputs]
    jobs_list = [(str(f), _mirror(f, roots, out, suffix), fmt, cfg, salt_b) for f in files]
    for _, dest, *_ in jobs_list:
        if Path(dest).resolve() in {f.resolve() for f in files}:
            raise click.UsageError(f"output {dest} would overwrite an input; choose another -o")
    n_jobs = min(jobs or os.cpu_count() or 1, len(files))
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    bar = tqdm(total=len(files), desc="harmonize", unit="img", file=sys.stderr)
    if n_jobs > 1:
        import multiprocessing as mp

        with ProcessPoolExecutor(n_jobs, mp_context=mp.get_context("spawn"),
                                 initializer=_worker_init) as pool:
            for row in pool.map(_harmonize_one, jobs_list, chunksize=4):
                rows.append(row)
                bar.update()
    else:
        for job in jobs_list:
            rows.append(_harmonize_one(job))
            bar.update()
    bar.close()
    with open(out / "harmonize_log.jsonl", "w") as fh:
        for row in rows:
            fh.write(json.dumps(row) + "\n")
    failed = [r for r in rows if r["status"] != "ok"]
    for r in failed:
        click.echo(f"ERROR {r['error']}", err=True)
    ok = [r for r in rows if r["status"] == "ok"]
    energies = {}
    for r in ok:
        energies[r["energy"]] = energies.get(r["energy"], 0) + 1
    click.echo(f"{len(ok)} written to {out} ({sum(r['harmonized'] for r in ok)} harmonised, "
               f"energy classes {json.dumps(energies, sort_keys=True)}), {len(failed)} failed")
    if energies.get("unknown"):
        click.echo(f"note: {energies['unknown']} image(s) of unknown energy class (vendor not in "
                   "the energy table); pass --energy-table to classify them", err=True)
    sys.exit(1 if failed else 0)


@click.command("preview")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--ref", "ref", required=True, metavar="REF", help="Reference (.npz, folder, file).")
@click.option("-o", "--out", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="PNG to write.")
@decoder_option
def preview_cmd(file, ref, out, decoder):
    """Before/after images side by side with their foreground histograms and the reference's."""
    from ..errors import MammoprepError
    from ..preview import render_preview

    try:
        render_preview(file, ref, out, decoder=decoder)
    except MammoprepError as err:
        raise click.ClickException(str(err))
    click.echo(f"wrote {out}")
