"""`mammoprep inspect`: decode status, metadata and pixel statistics per DICOM file."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from ..options import decoder_option, salt_option


def _line(path: Path, meta: dict, stats: dict | None) -> str:
    """One human-readable line per file (the name escaped: one line whatever it holds)."""
    from ..errors import display_path

    who = "/".join(x for x in (meta.get("manufacturer"), meta.get("model")) if x) or "?"
    side = f"{meta.get('laterality') or '-'} {meta.get('view') or '-'}"
    fmt = (f"{meta.get('bits_stored')}-bit {meta.get('photometric')} "
           f"{meta.get('transfer_syntax_name')}")
    text = (f"{display_path(path)}  OK  {who}  {side}  {fmt}  "
            f"inverted={'yes' if meta.get('inverted') else 'no'}")
    if stats is not None:
        text += (f"  {stats['shape'][0]}x{stats['shape'][1]}  min={stats['min']} "
                 f"max={stats['max']} zero={stats['zero_fraction']:.1%}  "
                 f"decoder={meta.get('decoder')}")
    if meta.get("voi"):
        text += f"  voi={meta['voi']}"
    return text


@click.command("inspect")
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="One JSON object per file (JSON lines).")
@click.option("--voi", is_flag=True,
              help="Apply the VOI LUT / window (first VOI LUT Sequence item, else first "
                   "window). Off by default: detector values.")
@click.option("--header-only", is_flag=True, help="Read metadata only; do not decode pixels.")
@decoder_option
@salt_option
def inspect_cmd(paths, as_json, voi, header_only, decoder, salt):
    """Decode DICOM files (or directories, recursively) and report each one.

    For every file: identity-free metadata (vendor, model, kVp, anode/filter, laterality,
    view, presentation intent, bits, photometric, transfer syntax, size, spacing, hashed
    UIDs), the decode status, and pixel statistics after MONOCHROME1 inversion (shape, min,
    max, fraction of zero pixels). Unreadable files give an error entry and the rest go on.
    Exit status 1 if any file failed.
    """
    from tqdm import tqdm

    from ..io.dicom import safe_read
    from ..io.header import read_header
    from ..io.paths import iter_dicom_paths
    from ..errors import MammoprepError, display_path

    files = list(iter_dicom_paths(paths))
    if not files:
        raise click.UsageError(f"no DICOM files found under {', '.join(map(str, paths))}")
    failed = 0
    show_bar = len(files) > 1 and any(Path(p).is_dir() for p in paths)
    from ..options import bar_disabled

    for f in tqdm(files, desc="inspect", unit="file", file=sys.stderr, leave=False,
                  disable=bar_disabled() if show_bar else True):
        stats = None
        if header_only:
            try:
                meta, err = read_header(f, salt=salt), None
            except MammoprepError as e:
                meta, err = None, e
        else:
            rec, err = safe_read(f, voi=voi, salt=salt, decoder=decoder)
            meta, stats = (rec.meta, rec.stats()) if rec is not None else (None, None)
        if err is not None:
            failed += 1
            if as_json:
                click.echo(json.dumps({"path": str(f), "status": "error", **err.as_dict()}))
            else:
                click.echo(f"{display_path(f)}  ERROR  {err.kind}: {err}")
            continue
        if as_json:
            click.echo(json.dumps({"path": str(f), "status": "ok", **meta,
                                   **({"stats": stats} if stats else {})}))
        else:
            click.echo(_line(f, meta, stats))
    click.echo(f"{len(files) - failed} ok, {failed} failed", err=True)
    sys.exit(1 if failed else 0)
