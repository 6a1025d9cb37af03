"""Build or load the low-energy harmonisation reference (``--ref``).

A reference is the pooled foreground histogram of a set of low-energy images, after the
same decoding and text removal as the images it will be applied to, stored with its bit
depth and the hashed list of contributing images (:class:`mammoprep.harmonize.Reference`).
``--ref`` accepts a saved ``.npz``, a folder of DICOMs, or one DICOM file.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Callable, Iterable

from .errors import MammoprepError, ReferenceError_


def build_reference(inputs: Iterable[str | Path], *, energy: str | None = "low",
                    energy_table: str | None = None, bits: int | None = None,
                    salt: bytes | str | None = None, decoder: str | None = None,
                    progress: Callable[[int], None] | None = None,
                    on_error: Callable[[MammoprepError], None] | None = None):
    """Pool foreground histograms of the DICOMs under ``inputs``.

    energy: keep only images of this energy class (metadata only), None for all.
    bits: histogram bit depth; default the largest Bits Stored among contributing images.
    Returns (reference, report) where report counts used, skipped-by-energy and failed files.
    """
    from .dicomio import iter_dicom_paths, read_dicom
    from .energy import energy_class, load_energy_table
    from .foreground import remove_text
    from .harmonize import Reference, foreground_histogram

    table = load_energy_table(energy_table)
    records = []
    report = {"used": 0, "other_energy": 0, "failed": 0}
    for path in iter_dicom_paths(inputs):
        try:
            rec = read_dicom(path, salt=salt, decoder=decoder)
            cls = energy_class(rec.meta.get("manufacturer", ""), rec.meta.get("model", ""), table)
            if energy and cls != energy:
                report["other_energy"] += 1
            else:
                rec = remove_text(rec)
                records.append((rec.meta["sop_uid_hash"], rec.pixels,
                                int(rec.meta.get("value_bits") or rec.meta["bits_stored"])))
        except MammoprepError as err:
            report["failed"] += 1
            if on_error:
                on_error(err)
        if progress:
            progress(1)
    if not records:
        raise ReferenceError_(None, f"no {'%s-energy ' % energy if energy else ''}image could be "
                              "used for the reference", tag="inputs",
                              value=[str(p) for p in inputs],
                              hint="pass low-energy DICOMs (see manifests/energy_classes.csv) or "
                                   "--energy any")
    b = bits or max(r[2] for r in records)
    records.sort(key=lambda r: r[0])
    ref = Reference.from_histograms((foreground_histogram(px, b) for _, px, _ in records),
                                    bits=b, image_hashes=[r[0] for r in records])
    report["used"] = len(records)
    report["bits"] = b
    return ref, report


def load_reference(spec: str | Path):
    """A reference from a saved ``.npz``, a DICOM folder (low-energy images pooled) or a
    single DICOM file (used whatever its energy class)."""
    from .harmonize import Reference

    path = Path(spec)
    if not path.exists():
        raise ReferenceError_(path, "reference not found", tag="--ref", value=str(spec),
                              hint="build one with `mammoprep reference DIR -o ref.npz`")
    if path.suffix.lower() == ".npz":
        return Reference.load(path)
    ref, _ = build_reference([path], energy="low" if path.is_dir() else None,
                             on_error=lambda e: print(f"reference: skipped {e}", file=sys.stderr))
    return ref
