"""Derived-DICOM writing speed and what each way of de-identifying leaves in the file.

    .venv/bin/python benchmarks/derived.py [--rows 4096 --cols 3328 --repeats 5]

Writes one source DICOM with the synthetic cohort's fake identity in its header (plus a
private element holding the patient's name, as vendors do), then times, as the median of
``repeats`` runs after one warm-up, writing a derived DICOM of a full-field 14-bit image:

* ``before``: the previous :func:`write_derived_dicom` (re-read the whole source with its
  pixels, edit that copy, ``np.percentile`` window), kept here as the baseline;
* ``keep-list``: this project's default (header parsed without pixels, a new data set of
  the kept attributes plus the new pixels, written once, atomically with fsync);
* ``keep-identity``: ``--keep-identity`` (the source header without pixels, edited);
* ``dicognito``: the same writer with the header de-identified by dicognito's
  ``Anonymizer`` instead of the keep-list (only if ``dicognito`` is importable);
* ``floor``: writing the pixel bytes alone to a file, with fsync.

For each, the number of the cohort's identifying values (name, ID, birth date, accession
number, institution, original UIDs, study date) found anywhere in the output bytes.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _image import breast_image  # noqa: E402

from mammoprep.io.derived import _atomic_save, _set_pixels, write_derived_dicom  # noqa: E402
from mammoprep.record import Record  # noqa: E402
from mammoprep.synth import build_dataset, plan_cohort  # noqa: E402

SALT = b"benchmark-salt-not-secret"


def _before(source, rec, dest, description, uid_salt=""):
    """The writer as it was before de-identification (baseline, kept verbatim in spirit)."""
    import pydicom
    from pydicom.dataset import Dataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    stale = ("VOILUTSequence", "WindowCenter", "WindowWidth", "WindowCenterWidthExplanation",
             "VOILUTFunction", "ModalityLUTSequence", "PixelPaddingValue",
             "PixelPaddingRangeLimit", "SmallestImagePixelValue", "LargestImagePixelValue")
    ds = pydicom.dcmread(source, force=True)
    px = np.ascontiguousarray(rec.pixels, dtype=np.uint16)
    bits = max(max(1, int(px.max(initial=0)).bit_length()), int(rec.meta["bits_stored"]))
    old_uid = str(ds.get("SOPInstanceUID", ""))
    for kw in stale:
        if kw in ds:
            delattr(ds, kw)
    ds.PhotometricInterpretation = "MONOCHROME2"
    if "PresentationLUTShape" in ds:
        ds.PresentationLUTShape = "IDENTITY"
    ds.SamplesPerPixel = 1
    ds.Rows, ds.Columns = px.shape
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, bits, bits - 1, 0
    fg = px[px > 0]
    if fg.size:
        lo, hi = np.percentile(fg, [0.5, 99.5])
        ds.WindowCenter, ds.WindowWidth = f"{(lo + hi) / 2:.1f}", f"{max(hi - lo, 1):.1f}"
    image_type = list(ds.get("ImageType", ["ORIGINAL", "PRIMARY"]))
    ds.ImageType = ["DERIVED", *image_type[1:]] if image_type else ["DERIVED", "PRIMARY"]
    ds.DerivationDescription = description[:1024]
    ref = Dataset()
    ref.ReferencedSOPClassUID = ds.get("SOPClassUID", "")
    ref.ReferencedSOPInstanceUID = old_uid
    ds.SourceImageSequence = [ref]
    new_uid = generate_uid(entropy_srcs=[old_uid or str(source), uid_salt])
    ds.SOPInstanceUID = new_uid
    ds.file_meta.MediaStorageSOPInstanceUID = new_uid
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.PixelData = px.tobytes()
    ds["PixelData"].VR = "OW"
    ds.save_as(dest, enforce_file_format=True)


def _dicognito(source, rec, dest, description, uid_salt=""):
    """The same writer, header de-identified by dicognito instead of the keep-list."""
    from dicognito.anonymizer import Anonymizer

    from mammoprep.io.header import read_header_dataset

    header, _ = read_header_dataset(source)
    Anonymizer(seed=SALT.decode()).anonymize(header)
    _set_pixels(header, np.ascontiguousarray(rec.pixels), rec, header)
    header.DerivationDescription = description
    _atomic_save(header, rec.pixels, Path(dest))


def _floor(source, rec, dest, description, uid_salt=""):
    with open(dest, "wb") as fh:
        fh.write(np.ascontiguousarray(rec.pixels).tobytes())
        fh.flush()
        os.fsync(fh.fileno())


def _secrets(plan, ds) -> list[bytes]:
    ident = plan.identity
    values = [ident[k] for k in ("patient_name", "patient_id", "birth_date",
                                 "accession_number", "institution", "study_date",
                                 "study_instance_uid")]
    values += [str(ds.SOPInstanceUID), str(ds.SeriesInstanceUID)]
    return [v.encode() for v in values if v]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=4096)
    ap.add_argument("--cols", type=int, default=3328)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()

    px = breast_image(args.rows, args.cols, bits=14)
    plan = plan_cohort(1, seed=0, size=(args.rows, args.cols))[0]
    ds = build_dataset(px, plan, "L", "CC")
    block = ds.private_block(0x0029, "BENCH VENDOR", create=True)
    block.add_new(0x10, "LO", plan.identity["patient_name"])
    secrets = _secrets(plan, ds)
    rec = Record(pixels=px, meta={"bits_stored": 14, "steps": ["decode", "remove_text"],
                                  "qc": "ok"})
    ways = {"before": _before,
            "keep-list": lambda *a, **k: write_derived_dicom(*a, **k, salt=SALT),
            "keep-identity": lambda *a, **k: write_derived_dicom(*a, **k, salt=SALT,
                                                                 keep_identity=True),
            "floor": _floor}
    try:
        import dicognito  # noqa: F401

        ways["dicognito"] = _dicognito
    except ImportError:
        print("dicognito not importable: its row is left out")
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "src.dcm"
        ds.save_as(src, enforce_file_format=True)
        rows = []
        for name, fn in ways.items():
            dest = Path(tmp) / f"{name}.dcm"
            times = []
            for i in range(args.repeats + 1):
                t0 = time.perf_counter()
                fn(src, rec, dest, "benchmark", uid_salt="x")
                if i:
                    times.append(time.perf_counter() - t0)
            data = dest.read_bytes()
            leaked = sum(s in data for s in secrets)
            rows.append((name, statistics.median(times) * 1e3, len(data) / 1e6, leaked))
    base = rows[0][1]
    print(f"{args.rows}x{args.cols} 16-bit, median of {args.repeats}, "
          f"{len(secrets)} identifying values checked")
    print("| writer | ms/image | x before | file MB | identifying values left |")
    print("|---|---|---|---|---|")
    for name, ms, mb, leaked in rows:
        ratio = "baseline" if name == "before" else f"{base / ms:.2f}x faster"
        print(f"| {name} | {ms:.1f} | {ratio} | {mb:.1f} | {leaked} |")


if __name__ == "__main__":
    main()
