"""Deterministic synthetic multi-vendor mammography cohort in the LUMINA layout.

Everything here is a pure function of ``(patients, seed, size)``: the same arguments give
byte-identical files (UIDs come from hashes of the seed, dates are fixed, compressors run
with fixed settings, the spreadsheets are written with fixed zip timestamps).

Layout written by :func:`generate_cohort`::

    OUT/Benign/<ID>/{L,R}_{CC,MLO}.dcm      ID = B0001, B0002, ...
    OUT/Malign/<ID>/{L,R}_{CC,MLO}.dcm      ID = M0001, M0002, ...
    OUT/Benign_Cases.xlsx, OUT/Malign_Cases.xlsx   as published: two rows per patient (MLO
                                            row, then CC row) for the named breast(s)
    OUT/labels.csv                          one row per image (see :data:`LABEL_COLUMNS`)
    OUT/identities.csv                      the fake identities written into the headers

Coordinates: images are ``[rows, cols]``; boxes are ``[xmin, ymin, xmax, ymax]`` in stored-pixel
coordinates with exclusive ends (the box covers ``pixels[ymin:ymax, xmin:xmax]``).
Pixel values are detector values in MONOCHROME2 polarity (higher = denser) unless noted
as *stored* (MONOCHROME1 vendors store ``2**BitsStored - 1 - value``).

The building blocks are public so tests and later stages can use them directly:
:data:`~.plan.VENDORS` (the vendor profile table), :func:`~.plan.plan_cohort` (labels,
identities, lesions; no pixels), :func:`~.render.render_image` (one image's pixels, masks
and boxes), :func:`~.dicom.build_dataset` (pixels -> pydicom dataset) and
:func:`generate_cohort` (all of it, written to disk, here).
"""

from __future__ import annotations

import csv
import datetime as _dt
import hashlib
import io
import json
import os
import shutil
import zipfile
from pathlib import Path
from typing import Any, Callable, Sequence

from ..batch import Runner
from .dicom import _encode, build_dataset, encodable_syntax
from .plan import DEFAULT_SIZE, VENDORS, PatientPlan, plan_cohort
from .render import image_spec, render_image, to_stored


#: Columns of ``labels.csv`` (one row per image). ``birads``/``density`` are what the sheets
#: give the image (:func:`sheet_labels`: per view, R's values for both breasts when
#: BILATERAL), and the plan's values for the breast the sheets do not name.
LABEL_COLUMNS: tuple[str, ...] = (
    "patient", "group", "path", "laterality", "view", "pathology", "birads", "density",
    "vendor", "manufacturer", "model", "energy", "boxes", "lesion_types", "text_boxes",
    "rows", "cols", "bits_stored", "photometric", "transfer_syntax", "fgt_fraction",
    "artefacts",
)

#: Columns of ``identities.csv`` (one row per patient): the answer key for leak tests.
IDENTITY_COLUMNS: tuple[str, ...] = (
    "patient", "group", "patient_name", "patient_id", "birth_date", "accession_number",
    "institution", "study_date", "study_instance_uid",
)

#: Columns of ``Benign_Cases.xlsx`` / ``Malign_Cases.xlsx`` as published. Two rows per
#: patient, the MLO row first, then the CC row (:data:`XLSX_ROW_VIEWS`); ``RIGHT_OR_LEFT``
#: names the breast(s) both rows describe (LEFT / RIGHT / BILATERAL); ``BIRADS`` is the same
#: on both rows; ``BREAST COMPOSITION`` (1-4 = A-D, ``-`` missing) is per row = per view.
XLSX_COLUMNS: tuple[str, ...] = ("ID", "RIGHT_OR_LEFT", "BIRADS", "BREAST COMPOSITION",
                                 "MANUFACTOR")
XLSX_ROW_VIEWS: tuple[str, ...] = ("MLO", "CC")


def named_breasts(plan: PatientPlan) -> tuple[str, ...]:
    """Lateralities named by the sheet's RIGHT_OR_LEFT (both for BILATERAL)."""
    return ("R", "L") if plan.side == "BILATERAL" else (plan.side[0],)


def sheet_labels(plan: PatientPlan, laterality: str, view: str) -> tuple[str, str] | None:
    """(BI-RADS, density) the sheets give the image ``laterality``/``view`` (``'-'`` =
    missing), or None for a breast the sheet does not name.

    BI-RADS is the first named breast's (R before L); density is per view: the first named
    breast's label, except that a breast whose density is missing (``'-'``) has it missing
    on the MLO row, on the CC row or on both (fixed per patient by a hash of the seed and
    ID), the other row then giving the tissue's class."""
    named = named_breasts(plan)
    if laterality not in named:
        return None
    b = plan.breast(named[0])
    density = b.density
    if density == "-":
        pick = int(hashlib.sha256(f"{plan.seed}:{plan.case_id}:density".encode()).hexdigest(),
                   16) % 3  # 0: MLO row '-', 1: CC row '-', 2: both
        missing = {0: ("MLO",), 1: ("CC",), 2: ("MLO", "CC")}[pick]
        density = "-" if view in missing else b.density_class
    return b.birads, density


def _make_image(job: tuple[str, PatientPlan, str, str, float]) -> dict[str, Any]:
    """Render, encode and write one image; return its labels.csv row."""
    out_dir, plan, laterality, view, rate = job
    prof = VENDORS[plan.vendor]
    spec = image_spec(plan, laterality, view, rate)
    img = render_image(spec)
    stored = to_stored(img.pixels, plan.vendor)
    ds = build_dataset(stored, plan, laterality, view)
    syntax = encodable_syntax(prof.transfer_syntax)  # the vendor's, or its fallback
    _encode(ds, stored, syntax)
    rel = f"{plan.group}/{plan.case_id}/{laterality}_{view}.dcm"
    path = Path(out_dir) / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    breast = plan.breast(laterality)
    birads, density = sheet_labels(plan, laterality, view) or (breast.birads, breast.density)
    return {
        "patient": plan.case_id, "group": plan.group, "path": rel,
        "laterality": laterality, "view": view, "pathology": breast.pathology,
        "birads": birads, "density": density, "vendor": prof.name,
        "manufacturer": prof.manufacturer, "model": prof.model, "energy": prof.energy,
        "boxes": json.dumps(img.boxes), "lesion_types": json.dumps(img.lesion_types),
        "text_boxes": json.dumps(img.text_boxes), "rows": spec.rows, "cols": spec.cols,
        "bits_stored": prof.bits_stored, "photometric": prof.photometric,
        "transfer_syntax": syntax, "fgt_fraction": f"{breast.fgt_fraction:.4f}",
        "artefacts": " ".join(spec.artefacts),
    }


_FIXED_ZIP_TIME = (2020, 1, 1, 0, 0, 0)
_FIXED_DOC_TIME = _dt.datetime(2020, 1, 1, 0, 0, 0)


def _write_xlsx(path: Path, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """Write a one-sheet workbook with fixed document and zip timestamps (byte-stable)."""
    from openpyxl import Workbook
    from openpyxl.writer.excel import ExcelWriter

    wb = Workbook()
    ws = wb.active
    ws.title = "Sheet1"
    ws.append(list(header))
    for r in rows:
        ws.append(list(r))
    wb.properties.creator = "mammoprep synth"
    wb.properties.created = _FIXED_DOC_TIME
    wb.properties.modified = _FIXED_DOC_TIME
    raw = io.BytesIO()
    with zipfile.ZipFile(raw, "w", zipfile.ZIP_DEFLATED) as archive:
        ExcelWriter(wb, archive).save()
    raw.seek(0)
    out = io.BytesIO()
    with zipfile.ZipFile(raw) as src, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            fixed = zipfile.ZipInfo(info.filename, date_time=_FIXED_ZIP_TIME)
            fixed.compress_type = zipfile.ZIP_DEFLATED
            fixed.external_attr = 0o644 << 16
            dst.writestr(fixed, src.read(info.filename))
    path.write_bytes(out.getvalue())


def _write_csv(path: Path, columns: Sequence[str], rows: Sequence[dict[str, Any]]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(columns), lineterminator="\n")
        writer.writeheader()
        for r in rows:
            writer.writerow({c: r[c] for c in columns})


_OUTPUT_FILES = ("Benign_Cases.xlsx", "Malign_Cases.xlsx", "labels.csv", "identities.csv")


def _is_synthetic_cohort(out: Path) -> bool:
    """True if ``out`` holds a cohort written by :func:`generate_cohort` (recognised by the
    exact headers of its labels.csv and identities.csv)."""
    for name, columns in (("labels.csv", LABEL_COLUMNS), ("identities.csv", IDENTITY_COLUMNS)):
        try:
            with open(out / name, encoding="utf-8") as fh:
                if fh.readline().rstrip("\n") != ",".join(columns):
                    return False
        except (OSError, UnicodeDecodeError):
            return False
    return True


def _prepare_out(out: Path) -> None:
    """Create ``out``; clear a previous synthetic cohort there; refuse other non-empty dirs."""
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out}: exists and is not a directory")
    out.mkdir(parents=True, exist_ok=True)
    entries = list(out.iterdir())
    if not entries:
        return
    if not _is_synthetic_cohort(out):
        raise FileExistsError(
            f"{out}: directory is not empty and holds no earlier synthetic cohort "
            "(labels.csv and identities.csv written by mammoprep synth); choose an empty "
            "or new directory")
    for name in ("Benign", "Malign"):
        if (out / name).is_dir():
            shutil.rmtree(out / name)
    for name in _OUTPUT_FILES:
        if (out / name).is_file():
            (out / name).unlink()


def generate_cohort(out_dir: str | os.PathLike, patients: int, seed: int,
                    size: tuple[int, int] = DEFAULT_SIZE, workers: int = 1,
                    progress: Callable[[int, int], None] | None = None,
                    artefacts: float = 0.0) -> dict[str, Any]:
    """Write a synthetic cohort of ``patients`` patients to ``out_dir`` (LUMINA layout).

    Args:
        out_dir: output directory; created if needed. If it holds an earlier synthetic cohort
            (a ``labels.csv``), that cohort's files are replaced; any other non-empty
            directory raises :class:`FileExistsError`.
        patients: number of patients (>= 1); ``patients // 2`` are Malign.
        seed: any integer; equal arguments give byte-identical files.
        size: ``(rows, cols)`` of every image, pixels.
        workers: processes used to render and encode (1 = in this process).
        progress: optional callback ``(images_done, images_total)``.
        artefacts: fraction of views (0..1) rendered with real-archive failure modes
            (:data:`ARTEFACTS`: grey noisy background, bimodal dense breast, film edges and
            scanner label, a label touching the skin); column ``artefacts`` of labels.csv.

    Returns:
        A summary dict: ``out_dir``, ``patients``, ``images``, ``benign_patients``,
        ``malign_patients``, ``malignant_images``, ``lesions``, ``missing_views``,
        ``vendors`` (images per vendor), ``transfer_syntaxes`` (images per UID), ``size``,
        ``seed``, ``fallbacks`` (vendor transfer syntax -> the one written instead because
        its encoder is not installed; empty with the ``fast`` extra).
    """
    out = Path(out_dir)
    plans = plan_cohort(patients, seed, size)
    _prepare_out(out)
    if not 0.0 <= artefacts <= 1.0:
        raise ValueError(f"artefacts must be a fraction in 0..1, got {artefacts}")
    jobs = [(str(out), plan, lat, view, artefacts) for plan in plans
            for lat, view in plan.views]
    total = len(jobs)
    done = 0

    def one_done(n: int) -> None:
        nonlocal done
        done += n
        if progress:
            progress(done, total)

    with Runner(min(workers, total)) as runner:  # spawned processes, or this one
        rows = list(runner.map(_make_image, jobs, progress=one_done))
    rows.sort(key=lambda r: r["path"])
    _write_csv(out / "labels.csv", LABEL_COLUMNS, rows)

    id_rows = [{"patient": p.case_id, "group": p.group, **p.identity}
               for p in sorted(plans, key=lambda p: (p.group, p.case_id))]
    _write_csv(out / "identities.csv", IDENTITY_COLUMNS, id_rows)

    for group in ("Benign", "Malign"):
        sheet = []
        for p in sorted((p for p in plans if p.group == group), key=lambda p: p.case_id):
            for view in XLSX_ROW_VIEWS:   # the published order: MLO row, then CC row
                b_raw, d_raw = sheet_labels(p, named_breasts(p)[0], view)
                birads: Any = int(b_raw) if b_raw.isdigit() else "-"
                comp: Any = "ABCD".index(d_raw) + 1 if d_raw != "-" else "-"
                sheet.append((p.case_id, p.side, birads, comp, VENDORS[p.vendor].manufacturer))
        _write_xlsx(out / f"{group}_Cases.xlsx", XLSX_COLUMNS, sheet)

    vendors: dict[str, int] = {}
    syntaxes: dict[str, int] = {}
    for r in rows:
        vendors[r["vendor"]] = vendors.get(r["vendor"], 0) + 1
        syntaxes[r["transfer_syntax"]] = syntaxes.get(r["transfer_syntax"], 0) + 1
    return {
        "out_dir": str(out), "patients": patients, "images": len(rows), "seed": seed,
        "size": list(size),
        "benign_patients": sum(p.group == "Benign" for p in plans),
        "malign_patients": sum(p.group == "Malign" for p in plans),
        "malignant_images": sum(r["pathology"] == "malignant" for r in rows),
        "lesions": sum(len(json.loads(r["boxes"])) for r in rows),
        "missing_views": sum(4 - len(p.views) for p in plans),
        "vendors": dict(sorted(vendors.items())),
        "transfer_syntaxes": dict(sorted(syntaxes.items())),
        # vendor transfer syntax -> the one written instead (its encoder is not installed)
        "fallbacks": {ts: encodable_syntax(ts) for ts in sorted(
            {VENDORS[p.vendor].transfer_syntax for p in plans}) if encodable_syntax(ts) != ts},
    }
