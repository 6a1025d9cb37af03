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
:data:`VENDORS` (the vendor profile table), :func:`plan_cohort` (labels, identities, lesions;
no pixels), :func:`render_image` (one image's pixels, masks and boxes), :func:`build_dataset`
(pixels -> pydicom dataset) and :func:`generate_cohort` (all of it, written to disk).
"""

from __future__ import annotations

import concurrent.futures as cf
import csv
import datetime as _dt
import functools
import hashlib
import io
import json
import math
import multiprocessing
import os
import shutil
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

__all__ = [
    "VendorProfile", "VENDORS", "Lesion", "BreastPlan", "PatientPlan", "ImageSpec",
    "SynthImage", "LABEL_COLUMNS", "IDENTITY_COLUMNS", "XLSX_COLUMNS", "XLSX_ROW_VIEWS",
    "named_breasts", "sheet_labels", "DEFAULT_SIZE",
    "VIEW_CODES", "plan_cohort", "image_spec", "render_image", "to_stored",
    "build_dataset", "generate_cohort", "parse_size",
]

#: Default synthetic image size, (rows, cols).
DEFAULT_SIZE: tuple[int, int] = (512, 416)

#: Reference detector width (columns) at which a profile's native pixel spacing applies;
#: smaller synthetic images get a proportionally larger spacing.
_NATIVE_COLS = 3328

#: SNOMED view codes written into View Code Sequence (0054,0220).
VIEW_CODES: dict[str, tuple[str, str, str]] = {
    "CC": ("R-10242", "SRT", "cranio-caudal"),
    "MLO": ("R-10226", "SRT", "medio-lateral oblique"),
}

_SOP_FOR_PRESENTATION = "1.2.840.10008.5.1.4.1.1.1.2"
_SOP_FOR_PROCESSING = "1.2.840.10008.5.1.4.1.1.1.2.1"

_TS_EXPLICIT = "1.2.840.10008.1.2.1"
_TS_J2K_LOSSLESS = "1.2.840.10008.1.2.4.90"
_TS_JLS_LOSSLESS = "1.2.840.10008.1.2.4.80"
_TS_RLE = "1.2.840.10008.1.2.5"

#: The encoder plug-ins pydicom may use for each compressed transfer syntax, in order of
#: preference (named explicitly so that output bytes do not depend on plug-in discovery
#: order). RLE: pylibjpeg-rle is ~20x faster than pydicom's native encoder and writes the
#: same bytes; the native one is the fallback.
_ENCODER_PLUGINS = {_TS_J2K_LOSSLESS: ("pylibjpeg",), _TS_JLS_LOSSLESS: ("pyjpegls",),
                    _TS_RLE: ("pylibjpeg", "pydicom")}

#: Where a vendor's transfer syntax cannot be encoded here (its encoder is an optional
#: package), the next one is written instead: JPEG-LS (pyjpegls, extra ``fast``) ->
#: JPEG 2000 lossless (pylibjpeg-openjpeg) -> Explicit VR Little Endian (always).
_ENCODER_FALLBACK = {_TS_JLS_LOSSLESS: _TS_J2K_LOSSLESS, _TS_J2K_LOSSLESS: _TS_EXPLICIT,
                     _TS_RLE: _TS_EXPLICIT}


def _encoder_plugin(transfer_syntax: str) -> str | None:
    """The pydicom encoder plug-in used for ``transfer_syntax`` here (None: none installed)."""
    from pydicom.pixels import get_encoder

    available = get_encoder(transfer_syntax).available_plugins
    return next((p for p in _ENCODER_PLUGINS[transfer_syntax] if p in available), None)


@functools.lru_cache(maxsize=None)
def encodable_syntax(transfer_syntax: str) -> str:
    """``transfer_syntax`` if an installed encoder writes it, else the first fallback that
    one does (:data:`_ENCODER_FALLBACK`; Explicit VR Little Endian needs no encoder)."""
    ts = transfer_syntax
    while ts != _TS_EXPLICIT and _encoder_plugin(ts) is None:
        ts = _ENCODER_FALLBACK[ts]
    return ts


# --------------------------------------------------------------------------------------
# Vendor profiles
# --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class VendorProfile:
    """One synthetic acquisition system.

    Tone curve: a tissue value ``t`` in [0, 1] (0 = skin edge / fat, 1 = densest) is stored as
    ``round(maxv * (tone_lo + (tone_hi - tone_lo) * t ** tone_gamma))`` with
    ``maxv = 2**bits_stored - 1`` (MONOCHROME2 polarity, before any MONOCHROME1 inversion).
    Ranges ``(lo, hi)`` are sampled uniformly per image.
    """

    name: str
    manufacturer: str
    model: str
    energy: str                     # 'high' | 'low'
    bits_stored: int
    photometric: str                # 'MONOCHROME2' | 'MONOCHROME1'
    tone_lo: float                  # fraction of maxv at t = 0 (always > 2 %)
    tone_hi: float                  # fraction of maxv at t = 1
    tone_gamma: float
    anode: str                      # (0018,1191) Anode Target Material
    filter: str                     # (0018,7050) Filter Material
    kvp: tuple[float, float]        # kV
    thickness_mm: tuple[float, float]
    force_n: tuple[float, float]    # compression force, N
    mas: tuple[int, int]            # exposure, mAs
    native_spacing_mm: float        # pixel spacing at _NATIVE_COLS columns, mm
    transfer_syntax: str
    presentation_intent: str        # 'FOR PRESENTATION' | 'FOR PROCESSING'
    view_position: bool             # False: only View Code Sequence, no (0018,5101)
    noisy_background: bool          # True: background is low noise (< 2 % of range), not 0
    rescale: bool                   # write an identity Rescale Slope/Intercept
    date_format: str                # strftime pattern of the burned-in date label
    weight: float                   # relative frequency in a cohort

    @property
    def maxv(self) -> int:
        """Largest stored value, ``2**bits_stored - 1``."""
        return (1 << self.bits_stored) - 1


#: The vendor table. Keys are the profile names used in ``labels.csv`` (column ``vendor``).
VENDORS: dict[str, VendorProfile] = {p.name: p for p in (
    VendorProfile("ims", "IMS GIOTTO", "GIOTTO CLASS", "high", 14, "MONOCHROME2",
                  0.16, 0.66, 0.80, "TUNGSTEN", "SILVER", (28.0, 33.0), (35.0, 75.0),
                  (70.0, 150.0), (60, 160), 0.085, _TS_EXPLICIT, "FOR PRESENTATION",
                  True, False, True, "%d/%m/%Y", 0.45),
    VendorProfile("ge", "GE MEDICAL SYSTEMS", "Senographe Pristina", "high", 14,
                  "MONOCHROME2", 0.24, 0.58, 1.30, "MOLYBDENUM", "RHODIUM", (26.0, 32.0),
                  (30.0, 70.0), (60.0, 140.0), (40, 120), 0.100, _TS_J2K_LOSSLESS,
                  "FOR PRESENTATION", True, False, False, "%b %d %Y", 0.10),
    VendorProfile("metaltronica", "METALTRONICA", "Helianthus", "low", 12, "MONOCHROME2",
                  0.09, 0.88, 1.00, "MOLYBDENUM", "MOLYBDENUM", (25.0, 30.0), (30.0, 70.0),
                  (50.0, 130.0), (50, 180), 0.085, _TS_JLS_LOSSLESS, "FOR PRESENTATION",
                  True, True, False, "%Y-%m-%d", 0.20),
    VendorProfile("siemens", "SIEMENS", "Mammomat Revelation", "low", 12, "MONOCHROME2",
                  0.12, 0.80, 1.60, "TUNGSTEN", "RHODIUM", (26.0, 32.0), (35.0, 80.0),
                  (60.0, 150.0), (30, 140), 0.085, _TS_RLE, "FOR PROCESSING", False, False,
                  True, "%d.%m.%Y", 0.10),
    VendorProfile("fujifilm", "FUJIFILM Corporation", "AMULET Innovality", "low", 12,
                  "MONOCHROME1", 0.10, 0.84, 0.90, "TUNGSTEN", "RHODIUM", (27.0, 34.0),
                  (30.0, 75.0), (60.0, 160.0), (40, 150), 0.070, _TS_J2K_LOSSLESS,
                  "FOR PRESENTATION", True, False, False, "%Y/%m/%d", 0.15),
)}

#: Failure modes of real archives that :func:`render_image` can add (``ImageSpec.artefacts``):
#: ``grey_background`` a noisy background well above 0 (8-12 % of the range, FFDM without
#: padding); ``bimodal`` a dense breast whose histogram has two separate peaks (fat and
#: fibroglandular); ``film`` a digitised film: non-uniform film base (a gradient) with
#: noise, bright unexposed film edges along the borders and a scanner label; ``skin_label``
#: a view label box whose corner touches the skin line.
ARTEFACTS = ("grey_background", "bimodal", "film", "skin_label")

#: Order used to pick vendors when a cohort has fewer patients than vendors.
_VENDOR_PRIORITY = ("ims", "fujifilm", "metaltronica", "siemens", "ge")

#: Fibroglandular tissue fraction ranges per BI-RADS density class.
_DENSITY_FRACTION = {"A": (0.04, 0.20), "B": (0.28, 0.45), "C": (0.53, 0.70), "D": (0.78, 0.92)}
_DENSITY_CLASSES = ("A", "B", "C", "D")


# --------------------------------------------------------------------------------------
# Seeding helpers
# --------------------------------------------------------------------------------------

def _key(*parts: Any) -> int:
    """A 128-bit integer hashed from ``parts`` (stable across runs, platforms, processes)."""
    text = "\x1f".join(str(p) for p in ("mammoprep-synth-v1", *parts))
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:16], "little")


def _rng(*parts: Any) -> np.random.Generator:
    """A numpy generator seeded from a hash of ``parts``."""
    return np.random.default_rng(np.random.SeedSequence(_key(*parts)))


def _uid(*parts: Any) -> str:
    """A deterministic ``2.25.<int>`` UID (128-bit hash of ``parts``, at most 44 characters).

    Not :func:`pydicom.uid.generate_uid`: with ``prefix=None`` it ignores ``entropy_srcs``
    and returns a random UUID-based UID.
    """
    text = "\x1f".join(str(p) for p in ("mammoprep-synth-uid-v1", *parts))
    return "2.25." + str(int.from_bytes(hashlib.sha256(text.encode()).digest()[:16], "big"))


def parse_size(text: str) -> tuple[int, int]:
    """``'512x416'`` -> ``(512, 416)`` (rows, cols). Raises ValueError on bad text or sizes
    outside 64..16384."""
    parts = text.lower().replace("*", "x").split("x")
    if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
        raise ValueError(f"expected ROWSxCOLS such as 512x416, got {text!r}")
    rows, cols = (int(p) for p in parts)
    if not (64 <= rows <= 16384 and 64 <= cols <= 16384):
        raise ValueError(f"rows and cols must be within 64..16384, got {rows}x{cols}")
    return rows, cols


# --------------------------------------------------------------------------------------
# Cohort plan (labels, identities, lesions; no pixels)
# --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Lesion:
    """One lesion of a breast, shared by its CC and MLO images.

    Position is in normalised breast coordinates: ``rho`` is the radial position inside the
    breast outline (0 = chest-wall centre, 1 = skin) and ``psi_cc`` / ``psi_mlo`` the angle in
    radians from the breast axis in each view (positive = towards the bottom rows).
    ``size`` is the mass radius (or calcification cluster radius) as a fraction of the image
    width; ``contrast`` the added tissue value (0..1 scale of the tone curve input).
    """

    kind: str          # 'mass' | 'calcification'
    rho: float
    psi_cc: float
    psi_mlo: float
    size: float
    contrast: float
    seed: int


@dataclass(frozen=True)
class BreastPlan:
    """Labels and tissue of one breast."""

    laterality: str                 # 'L' | 'R'
    pathology: str                  # 'benign' | 'malignant'
    birads: str                     # '0'..'6' or '-'
    density: str                    # 'A'..'D' or '-' (label; '-' = missing in the sheet)
    density_class: str              # 'A'..'D', the class the tissue was drawn from
    fgt_fraction: float             # fibroglandular fraction of the breast area, 0..1
    lesions: tuple[Lesion, ...] = ()


@dataclass(frozen=True)
class PatientPlan:
    """Everything about one synthetic patient except pixels."""

    case_id: str                    # folder name, e.g. 'B0003'
    group: str                      # 'Benign' | 'Malign'
    vendor: str                     # key of VENDORS
    side: str                       # xlsx RIGHT_OR_LEFT: 'LEFT' | 'RIGHT' | 'BILATERAL'
    breasts: tuple[BreastPlan, BreastPlan]  # (R, L)
    views: tuple[tuple[str, str], ...]      # (laterality, view) pairs present
    identity: dict[str, str]        # see IDENTITY_COLUMNS (without 'patient'/'group')
    seed: int                       # cohort seed
    size: tuple[int, int]           # (rows, cols)

    def breast(self, laterality: str) -> BreastPlan:
        return self.breasts[0] if laterality == "R" else self.breasts[1]


_FAMILY_HEAD = ("Zqx", "Qvor", "Xyl", "Vrz", "Zyph", "Kwyx", "Jorq", "Pryx", "Wzen", "Yxol",
                "Gzor", "Fjal")
_FAMILY_TAIL = ("well", "ton", "mere", "dottir", "vane", "holt", "quist", "bury", "wyn",
                "stead", "worth", "ley")
_GIVEN_HEAD = ("Orph", "Ysm", "Quel", "Zaph", "Xan", "Vel", "Ilv", "Brys", "Thez", "Myrz",
               "Oqu", "Evy")
_GIVEN_TAIL = ("inda", "ora", "elle", "ith", "ane", "ette", "ia", "wyn", "ys", "ara", "olde",
               "imae")
_SITE_HEAD = ("Qorvath", "Zelmire", "Xandrel", "Vyrtle", "Pquinn", "Jothmar", "Wexford-Zq",
              "Olvrith")
_SITE_TAIL = ("Breast Centre", "Imaging Clinic", "Screening Unit", "Mammo Institute")


def _identity(rng: np.random.Generator, seed: int, case_id: str,
              used: set[str]) -> dict[str, str]:
    """Fake but distinctive header identity of one patient (fixed dates, hashed UIDs)."""
    while True:
        name = (f"{rng.choice(_FAMILY_HEAD)}{rng.choice(_FAMILY_TAIL)}^"
                f"{rng.choice(_GIVEN_HEAD)}{rng.choice(_GIVEN_TAIL)}")
        pid = f"SYNPID{int(rng.integers(0, 10**8)):08d}"
        acc = f"ACZ{int(rng.integers(0, 10**9)):09d}"
        if not {name, pid, acc} & used:
            used.update((name, pid, acc))
            break
    birth = _dt.date(1938, 1, 1) + _dt.timedelta(days=int(rng.integers(0, 45 * 365)))
    study = _dt.date(2017, 1, 1) + _dt.timedelta(days=int(rng.integers(0, 6 * 365)))
    secs = int(rng.integers(7 * 3600, 19 * 3600))
    age = study.year - birth.year - ((study.month, study.day) < (birth.month, birth.day))
    return {
        "patient_name": name,
        "patient_id": pid,
        "birth_date": birth.strftime("%Y%m%d"),
        "accession_number": acc,
        "institution": f"{rng.choice(_SITE_HEAD)} {rng.choice(_SITE_TAIL)}",
        "study_date": study.strftime("%Y%m%d"),
        "study_time": f"{secs // 3600:02d}{secs // 60 % 60:02d}{secs % 60:02d}",
        "patient_age": f"{age:03d}Y",
        "study_instance_uid": _uid(seed, case_id, "study"),
    }


def _vendor_list(patients: int, rng: np.random.Generator) -> list[str]:
    """Vendor of each patient: every vendor at least once when ``patients >= 5``, the rest
    by the profile weights (largest remainder), in a seeded random order."""
    names = list(VENDORS)
    if patients < len(names):
        chosen = list(_VENDOR_PRIORITY[:patients])
    else:
        extra = patients - len(names)
        w = np.array([VENDORS[n].weight for n in names])
        quota = w / w.sum() * extra
        counts = np.floor(quota).astype(int)
        order = np.argsort(-(quota - counts), kind="stable")
        counts[order[: extra - counts.sum()]] += 1
        chosen = [n for n, c in zip(names, counts) for _ in range(c + 1)]
    return [chosen[i] for i in rng.permutation(len(chosen))]


def _choice(rng: np.random.Generator, items: Sequence[Any], p: Sequence[float]) -> Any:
    return items[int(rng.choice(len(items), p=np.asarray(p) / np.sum(p)))]


def _lesions(rng: np.random.Generator) -> tuple[Lesion, ...]:
    n = _choice(rng, (1, 2, 3), (0.6, 0.3, 0.1))
    out = []
    for _ in range(n):
        kind = _choice(rng, ("mass", "calcification"), (0.7, 0.3))
        size = rng.uniform(0.030, 0.050) if kind == "mass" else rng.uniform(0.020, 0.032)
        contrast = rng.uniform(0.40, 0.52) if kind == "mass" else rng.uniform(0.45, 0.60)
        out.append(Lesion(kind, float(rng.uniform(0.35, 0.62)), float(rng.uniform(-0.8, 0.8)),
                          float(rng.uniform(-0.5, 0.9)), float(size), float(contrast),
                          int(rng.integers(0, 2**63))))
    return tuple(out)


def plan_cohort(patients: int, seed: int, size: tuple[int, int] = DEFAULT_SIZE
                ) -> list[PatientPlan]:
    """Plan a cohort: groups, vendors, identities, per-breast labels and lesions.

    Groups alternate (Benign first), so ``patients // 2`` are Malign and both groups are
    present for ``patients >= 2``. Every vendor appears once ``patients >= 5``. From
    ``patients >= 10`` on, about 6 % of patients (at least one) lack one view (never a view
    of a malignant breast). Returns the plans in generation order (B0001, M0001, B0002, ...).
    """
    if patients < 1:
        raise ValueError(f"patients must be >= 1, got {patients}")
    rows, cols = size
    crng = _rng(seed, "cohort")
    vendors = _vendor_list(patients, crng)
    groups = ["Benign" if i % 2 == 0 else "Malign" for i in range(patients)]
    counters = {"Benign": 0, "Malign": 0}
    used: set[str] = set()
    drafts = []
    for i, group in enumerate(groups):
        counters[group] += 1
        case_id = f"{group[0]}{counters[group]:04d}"
        rng = _rng(seed, "patient", case_id)
        identity = _identity(rng, seed, case_id, used)
        if group == "Malign":
            side = _choice(rng, ("LEFT", "RIGHT", "BILATERAL"), (0.45, 0.45, 0.10))
        else:
            side = _choice(rng, ("LEFT", "RIGHT", "BILATERAL"), (0.45, 0.45, 0.10))
        dclass = _choice(rng, _DENSITY_CLASSES, (0.12, 0.38, 0.38, 0.12))
        breasts = []
        for lat in ("R", "L"):
            on_side = side == "BILATERAL" or side[0] == lat
            malignant = group == "Malign" and on_side
            klass = dclass
            if lat == "L" and rng.random() < 0.15:   # occasionally asymmetric density
                k = _DENSITY_CLASSES.index(dclass) + (1 if rng.random() < 0.5 else -1)
                klass = _DENSITY_CLASSES[min(3, max(0, k))]
            lo, hi = _DENSITY_FRACTION[klass]
            fraction = float(rng.uniform(lo, hi))
            if malignant:
                birads = _choice(rng, ("4", "5", "6"), (0.45, 0.35, 0.20))
            elif group == "Benign" and on_side:
                birads = _choice(rng, ("1", "2", "3"), (0.20, 0.45, 0.35))
            else:
                birads = _choice(rng, ("1", "2", "3"), (0.55, 0.35, 0.10))
            u = rng.random()
            if u < 0.05:
                birads = "0"
            elif u < 0.10:
                birads = "-"
            density = "-" if rng.random() < 0.07 else klass
            lesions = _lesions(rng) if malignant else ()
            breasts.append(BreastPlan(lat, "malignant" if malignant else "benign", birads,
                                      density, klass, round(fraction, 4), lesions))
        drafts.append((case_id, group, vendors[i], side, tuple(breasts), identity))

    # a few patients lack one view (not for tiny cohorts; never a malignant breast's view)
    views_all = (("L", "CC"), ("L", "MLO"), ("R", "CC"), ("R", "MLO"))
    missing: dict[int, tuple[str, str]] = {}
    if patients >= 10:
        eligible = [i for i, d in enumerate(drafts) if d[3] != "BILATERAL" or d[1] == "Benign"]
        n_missing = min(len(eligible), max(1, round(0.06 * patients)))
        for i in sorted(crng.choice(eligible, size=n_missing, replace=False).tolist()):
            case_id, group, _, side, breasts, _ = drafts[i]
            options = [v for v in views_all
                       if not any(b.laterality == v[0] and b.pathology == "malignant"
                                  for b in breasts)]
            missing[i] = options[int(crng.integers(0, len(options)))]
    plans = []
    for i, (case_id, group, vendor, side, breasts, identity) in enumerate(drafts):
        views = tuple(v for v in views_all if missing.get(i) != v)
        plans.append(PatientPlan(case_id, group, vendor, side, breasts, views, identity,
                                 seed, (rows, cols)))
    return plans


# --------------------------------------------------------------------------------------
# One image: pixels, masks, boxes
# --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ImageSpec:
    """Inputs of :func:`render_image` (a pure function of this spec)."""

    rows: int
    cols: int
    vendor: str
    laterality: str                 # 'L' (chest wall at column 0) | 'R' (at the last column)
    view: str                       # 'CC' | 'MLO'
    fgt_fraction: float             # fibroglandular fraction, 0..1
    lesions: tuple[Lesion, ...] = ()
    labels: tuple[str, ...] = ()    # burned-in text lines
    seed: int = 0
    artefacts: tuple[str, ...] = ()  # failure modes of real archives, see ARTEFACTS


@dataclass
class SynthImage:
    """Output of :func:`render_image`.

    ``pixels``: uint16 [rows, cols], MONOCHROME2 detector values in ``0..2**bits-1``;
    ``foreground``: bool [rows, cols], breast incl. skin and pectoral muscle;
    ``pectoral``: bool [rows, cols];
    ``boxes`` / ``lesion_types``: one ``[xmin, ymin, xmax, ymax]`` (exclusive ends) per lesion;
    ``text_boxes``: boxes of burned-in labels and the orientation marker.
    """

    pixels: np.ndarray
    foreground: np.ndarray
    pectoral: np.ndarray
    boxes: list[list[int]] = field(default_factory=list)
    lesion_types: list[str] = field(default_factory=list)
    text_boxes: list[list[int]] = field(default_factory=list)


def _upsample(field_: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """Bilinear resize of a small float field to ``[rows, cols]`` float32 (pixel centres
    aligned)."""
    from PIL import Image

    if field_.shape == (rows, cols):
        return field_.astype(np.float32, copy=False)
    img = Image.fromarray(np.ascontiguousarray(field_, dtype=np.float32))
    return np.array(img.resize((cols, rows), Image.Resampling.BILINEAR), dtype=np.float32)


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int],
                  sigma: float | tuple[float, float]) -> np.ndarray:
    """Gaussian-filtered white noise with unit standard deviation, float32 ``shape``."""
    from scipy.ndimage import gaussian_filter

    n = gaussian_filter(rng.standard_normal(shape, dtype=np.float32), sigma, mode="reflect")
    return n / max(float(n.std()), 1e-6)


def _norm_radius(rows_c: np.ndarray, cols_c: np.ndarray, g: dict) -> np.ndarray:
    """Normalised radius of the rotated breast ellipse at pixel centres (before modulation).

    ``rows_c`` [h, 1] and ``cols_c`` [1, w] are pixel-centre coordinates in full-size pixels.
    """
    dy = rows_c - np.float32(g["cy"])
    c, s = np.float32(math.cos(g["phi"])), np.float32(math.sin(g["phi"]))
    u = cols_c * c + dy * s
    u *= np.float32(1.0 / g["a"])
    np.square(u, out=u)
    v = dy * c - cols_c * s
    v *= np.float32(1.0 / g["b"])
    np.square(v, out=v)
    u += v
    return np.sqrt(u, out=u)


def _modulation(rows_c: np.ndarray, cols_c: np.ndarray, g: dict) -> np.ndarray:
    """Outline modulation factor ``m(theta)`` (around 1) at the given pixel centres."""
    dy = rows_c - np.float32(g["cy"])
    c, s = math.cos(g["phi"]), math.sin(g["phi"])
    un = (cols_c * c + dy * s) / g["a"]
    vn = (dy * c - cols_c * s) / g["b"]
    theta = np.arctan2(vn, un)
    m = np.ones_like(theta)
    for k, amp, ph in g["harmonics"]:
        m += amp * np.cos(k * theta + ph)
    return m.astype(np.float32)


def _pectoral_limit(rows_c: np.ndarray, g: dict) -> np.ndarray:
    """Column of the pectoral edge at each row (pectoral = columns left of it), L orientation."""
    frac = np.clip(1.0 - rows_c / g["ph"], 0.0, 1.0)
    return g["pw"] * frac ** g["kappa"]


def _geometry(rng: np.random.Generator, rows: int, cols: int, view: str) -> dict:
    """Random breast outline parameters (L orientation, chest wall at column 0)."""
    g: dict[str, Any] = {}
    if view == "CC":
        g.update(cy=rows * rng.uniform(0.46, 0.54), a=cols * rng.uniform(0.56, 0.76),
                 b=rows * rng.uniform(0.33, 0.42), phi=rng.uniform(-0.06, 0.06))
    else:
        g.update(cy=rows * rng.uniform(0.40, 0.47), a=cols * rng.uniform(0.56, 0.74),
                 b=rows * rng.uniform(0.46, 0.53), phi=rng.uniform(0.12, 0.26))
        g.update(pw=g["a"] * rng.uniform(0.30, 0.45), ph=rows * rng.uniform(0.38, 0.60),
                 kappa=rng.uniform(0.8, 1.25))
    g["harmonics"] = [(k, rng.uniform(0.0, 0.035) / math.sqrt(k - 1), rng.uniform(0, 2 * np.pi))
                      for k in range(2, 6)]
    g["edge"] = rng.uniform(0.10, 0.18)       # width of the thickness fall-off, normalised
    return g


def _lesion_center(g: dict, rho: float, psi: float
                   ) -> tuple[float, float]:
    """Pixel (row, col) of a lesion centre at normalised (rho, psi), L orientation."""
    un, vn = rho * math.cos(psi), rho * math.sin(psi)
    u, v = un * g["a"], vn * g["b"]
    c, s = math.cos(g["phi"]), math.sin(g["phi"])
    return g["cy"] + u * s + v * c, u * c - v * s


def _mass_field(rng: np.random.Generator, radius: float) -> np.ndarray:
    """Irregular / spiculated mass profile in a square window, float32 in [0, 1]."""
    harmonics = [(k, rng.uniform(0.03, 0.11) / math.sqrt(k - 1), rng.uniform(0, 2 * np.pi))
                 for k in range(2, 8)]
    n_spic = int(rng.integers(5, 13)) if rng.random() < 0.75 else 0
    spic = [(rng.uniform(0, 2 * np.pi), radius * rng.uniform(0.4, 0.9)) for _ in range(n_spic)]
    ext = radius * (1.35 + max([ln / radius for _, ln in spic], default=0.0))
    half = int(math.ceil(ext)) + 2
    yy, xx = np.ogrid[-half:half + 1, -half:half + 1]
    yy = yy.astype(np.float32)
    xx = xx.astype(np.float32)
    rho = np.hypot(yy, xx)
    theta = np.arctan2(yy, xx)
    r_theta = np.full_like(rho, radius)
    for k, amp, ph in harmonics:
        r_theta += radius * amp * np.cos(k * theta + ph)
    soft = max(0.6, 0.07 * radius)
    inside = 1.0 / (1.0 + np.exp(np.clip((rho - r_theta) / soft, -60.0, 60.0)))
    dome = np.sqrt(np.clip(1.0 - (rho / r_theta) ** 2, 0.0, 1.0))
    out = inside * (0.55 + 0.45 * dome)
    width = max(0.7, 0.06 * radius)
    for ang, length in spic:
        along = xx * math.cos(ang) + yy * math.sin(ang)
        perp = np.abs(yy * math.cos(ang) - xx * math.sin(ang))
        start = 0.8 * radius
        taper = np.clip(1.0 - (along - start) / length, 0.0, 1.0) * (along > start)
        out = np.maximum(out, 0.7 * taper * np.exp(-(perp / (width * (0.4 + taper))) ** 2))
    return out.astype(np.float32)


def _calc_field(rng: np.random.Generator, radius: float, cols: int) -> np.ndarray:
    """Calcification cluster (tiny bright dots on a denser haze, so that a cluster stays
    visible as a blob at the small inputs of CPU tests) in a square window."""
    n = int(rng.integers(8, 21))
    sd = max(0.75, 0.0035 * cols) * rng.uniform(0.8, 1.3, size=n)
    ang = rng.uniform(0, 2 * np.pi, size=n)
    dist = radius * np.sqrt(rng.uniform(0, 1, size=n)) * 0.85
    elong = rng.uniform(0.6, 1.0)
    cy_ = dist * np.sin(ang) * elong
    cx_ = dist * np.cos(ang)
    half = int(math.ceil(radius + 3 * sd.max())) + 2
    yy, xx = np.ogrid[-half:half + 1, -half:half + 1]
    yy = yy.astype(np.float32)
    xx = xx.astype(np.float32)
    out = 0.35 * np.exp(-(yy ** 2 + xx ** 2) / (radius ** 2))
    for y0, x0, s, a in zip(cy_, cx_, sd, rng.uniform(0.75, 1.0, size=n)):
        out = np.maximum(out, a * np.exp(-((yy - y0) ** 2 + (xx - x0) ** 2) / (2 * s * s)))
    return out.astype(np.float32)


@functools.lru_cache(maxsize=16)
def _font(px: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=px)
    except Exception:  # pragma: no cover - Pillow without FreeType
        return ImageFont.load_default()


def _text_alpha(text: str, px: int) -> np.ndarray:
    """Anti-aliased glyph coverage of ``text`` in a tight box, float32 [h, w] in [0, 1]."""
    from PIL import Image, ImageDraw, ImageFont

    font = _font(px)
    left, top, right, bottom = font.getbbox(text)
    img = Image.new("L", (max(1, right - left), max(1, bottom - top)), 0)
    ImageDraw.Draw(img).text((-left, -top), text, fill=255, font=font)
    if not isinstance(font, ImageFont.FreeTypeFont):  # pragma: no cover - bitmap fallback
        scale = max(1, round(px / 11))
        img = img.resize((img.width * scale, img.height * scale), Image.Resampling.NEAREST)
    return np.asarray(img, dtype=np.float32) / 255.0


def _marker_alpha(px: int) -> np.ndarray:
    """Filled right triangle orientation marker, float32 [px, px] in {0, 1}."""
    yy, xx = np.mgrid[0:px, 0:px]
    return (xx <= yy).astype(np.float32)


def _place(occupied_fg: np.ndarray, rects: list[tuple[int, int, int, int]], h: int, w: int,
           top: bool, far_right: bool, inset: int, margin: int) -> tuple[int, int] | None:
    """First free (row, col) for an ``h x w`` label, scanning from a far-side corner.

    Free means: the label grown by ``margin`` does not touch the foreground, and the label
    grown by ``margin // 2`` does not touch labels already placed (``rects`` = y0, x0, y1, x1).
    """
    rows, cols = occupied_fg.shape
    if h + inset > rows or w + inset > cols:
        return None
    ys = range(inset, rows - h + 1, max(1, h // 3)) if top else \
        range(rows - h - inset, -1, -max(1, h // 3))
    xs = list(range(cols - w - inset, -1, -max(1, w // 4))) if far_right else \
        list(range(inset, cols - w + 1, max(1, w // 4)))
    half = margin // 2
    for y in ys:
        for x in xs:
            y0, y1 = max(0, y - margin), min(rows, y + h + margin)
            x0, x1 = max(0, x - margin), min(cols, x + w + margin)
            if occupied_fg[y0:y1, x0:x1].any():
                continue
            if any(y - half < r[2] and r[0] < y + h + half and x - half < r[3]
                   and r[1] < x + w + half for r in rects):
                continue
            return y, x
    return None


def render_image(spec: ImageSpec) -> SynthImage:
    """Render one synthetic mammogram (pure function of ``spec``).

    The breast is a modulated, slightly rotated half-ellipse attached to the chest wall
    (column 0 for 'L', the last column for 'R'); tissue = fat + fibroglandular field
    (smoothed noise thresholded so that ``spec.fgt_fraction`` of the breast is glandular) +
    mid/fine texture, darkened towards the skin (compressed-thickness fall-off) with a
    brighter skin line; MLO views add a bright pectoral triangle at the top chest-wall corner.
    Lesions (masses, calcification clusters) are added inside the breast; text labels and a
    marker are burned into the background away from the breast. Background is exactly 0
    (or < 2 % noise for vendors with ``noisy_background``).

    Returns a :class:`SynthImage`; ``pixels`` are uint16 [rows, cols] MONOCHROME2 values.
    About 1 s for 4096 x 3328 on one core.
    """
    prof = VENDORS[spec.vendor]
    rows, cols, view = spec.rows, spec.cols, spec.view
    maxv = prof.maxv
    rng = np.random.default_rng(np.random.SeedSequence(_key("image", spec.seed)))
    g = _geometry(rng, rows, cols, view)

    # ---- low-resolution fields (outline modulation, glandular tissue) ----
    ds = max(1, round(rows / 128))
    lh, lw = -(-rows // ds), -(-cols // ds)
    lr = ((np.arange(lh, dtype=np.float32) + 0.5) * ds - 0.5)[:, None]
    lc = ((np.arange(lw, dtype=np.float32) + 0.5) * ds - 0.5)[None, :]
    mod_low = _modulation(lr, lc, g)
    rn_low = _norm_radius(lr, lc, g) / mod_low
    breast_low = rn_low < 1.0
    if view == "MLO":
        breast_low &= ~(lc < _pectoral_limit(lr, g))
    sig = lh / 128.0
    # isotropic blobs at two scales + streaks along the breast axis (ducts towards the
    # nipple) + a central prior; thresholded softly at the (1 - fraction) quantile
    field_ = (0.45 * _smooth_noise(rng, (lh, lw), 1.3 * sig)
              + 0.75 * _smooth_noise(rng, (lh, lw), 4.5 * sig)
              + 0.45 * _smooth_noise(rng, (lh, lw), (0.8 * sig, 4.0 * sig))
              + 1.3 * np.clip(1.0 - rn_low, 0.0, 1.0))
    vals = field_[breast_low] if breast_low.any() else field_.ravel()
    thr = float(np.quantile(vals, 1.0 - float(np.clip(spec.fgt_fraction, 0.0, 1.0))))
    soft = 0.30 * max(float(vals.std()), 1e-3)
    if "bimodal" in spec.artefacts:
        soft *= 0.15
    gland_low = 1.0 / (1.0 + np.exp(np.clip(-(field_ - thr) / soft, -60.0, 60.0)))

    # ---- full-resolution outline ----
    rc = np.arange(rows, dtype=np.float32)[:, None]
    cc = np.arange(cols, dtype=np.float32)[None, :]
    rn = _norm_radius(rc, cc, g)
    rn /= _upsample(mod_low, rows, cols)
    breast = rn < 1.0

    # ---- tissue value t in [0, 1] ----
    ds2 = max(1, ds // 4)
    mid = _upsample(_smooth_noise(rng, (-(-rows // ds2), -(-cols // ds2)), 1.0), rows, cols)
    fine = rng.standard_normal((rows, cols), dtype=np.float32)
    fat, gland = rng.uniform(0.14, 0.22), rng.uniform(0.56, 0.66)
    if "bimodal" in spec.artefacts:
        fat, gland = 0.30, 0.75
    t = _upsample(gland_low.astype(np.float32), rows, cols)
    t *= np.float32(gland - fat)
    t += np.float32(fat)
    t += np.float32(0.045) * mid
    t += np.float32(0.008) * fine
    # thickness fall-off towards the skin: p = s(2 - s), s = clip((1 - rn) / edge, 0, 1)
    p = np.subtract(1.0, rn, dtype=np.float32)
    p *= np.float32(1.0 / g["edge"])
    np.clip(p, 0.0, 1.0, out=p)
    p *= 2.0 - p
    t *= p
    del p
    skin_w = max(1.2, 0.005 * cols) / min(g["a"], g["b"])
    t += np.float32(rng.uniform(0.16, 0.24)) * ((rn > 1.0 - skin_w) & breast)

    pectoral = np.zeros((rows, cols), dtype=bool)
    if view == "MLO":
        ph, pw = min(rows, int(math.ceil(g["ph"]))), min(cols, int(math.ceil(g["pw"])))
        sub_r = rc[:ph]
        lim = _pectoral_limit(sub_r, g)
        pec = cc[:, :pw] < lim
        pectoral[:ph, :pw] = pec
        base = rng.uniform(0.70, 0.80)
        pec_t = (base + 0.10 * (1.0 - cc[:, :pw] / max(g["pw"], 1.0))
                 + 0.03 * mid[:ph, :pw] + 0.01 * fine[:ph, :pw]).astype(np.float32)
        # a slightly darker band along the muscle edge
        pec_t -= 0.06 * np.exp(-((lim - cc[:, :pw]) / max(1.0, 0.02 * cols)) ** 2)
        t[:ph, :pw] = np.where(pec, pec_t, t[:ph, :pw])
    fg = breast | pectoral

    # ---- lesions ----
    boxes: list[list[int]] = []
    types: list[str] = []
    taken: list[tuple[float, float, float]] = []
    for les in spec.lesions:
        lrng = np.random.default_rng(np.random.SeedSequence(_key("lesion", les.seed)))
        radius = les.size * cols
        patch = (_mass_field(lrng, radius) if les.kind == "mass"
                 else _calc_field(lrng, radius, cols))
        half = patch.shape[0] // 2
        psi0 = les.psi_cc if view == "CC" else les.psi_mlo
        placed = None
        for scale in (1.0, 0.8, 0.6):
            h2 = max(2, int(half * scale))
            cands = [(rho, psi) for rho in (les.rho, 0.5, 0.42, 0.58, 0.35)
                     for psi in (psi0, 0.5 * psi0, 0.0, 0.45, -0.45, 0.8)]
            for rho, psi in cands:
                r0, c0 = _lesion_center(g, rho, psi)
                y0, x0 = int(round(r0)) - h2, int(round(c0)) - h2
                y1, x1 = y0 + 2 * h2 + 1, x0 + 2 * h2 + 1
                if y0 < 0 or x0 < 0 or y1 > rows or x1 > cols:
                    continue
                win_ok = (rn[y0:y1, x0:x1] < 0.88).all() and not pectoral[
                    max(0, y0 - h2 // 2):y1, max(0, x0 - h2 // 2):x1].any()
                if not win_ok:
                    continue
                if any(math.hypot(r0 - tr, c0 - tc) < (h2 + th) * 0.9 for tr, tc, th in taken):
                    continue
                placed = (y0, x0, y1, x1, scale)
                break
            if placed:
                break
        if placed is None:
            continue
        y0, x0, y1, x1, scale = placed
        if scale != 1.0:
            patch = _upsample(patch, y1 - y0, x1 - x0)
        contrib = patch * np.float32(les.contrast)
        contrib *= breast[y0:y1, x0:x1]
        t[y0:y1, x0:x1] += contrib
        on = np.nonzero(contrib > 0.2 * les.contrast)
        if on[0].size == 0:
            continue
        boxes.append([int(x0 + on[1].min()), int(y0 + on[0].min()),
                      int(x0 + on[1].max() + 1), int(y0 + on[0].max() + 1)])
        types.append(les.kind)
        taken.append(((y0 + y1) / 2, (x0 + x1) / 2, (y1 - y0) / 2))

    # ---- tone curve (LUT on 14-bit quantised t) ----
    n_lut = 1 << 14
    lo = prof.tone_lo + rng.uniform(-0.015, 0.015)
    hi = prof.tone_hi + rng.uniform(-0.03, 0.03)
    lut = np.round(maxv * (lo + (hi - lo) * np.linspace(0.0, 1.0, n_lut) ** prof.tone_gamma))
    lut = np.clip(lut, 1, maxv).astype(np.uint16)
    np.clip(t, 0.0, 1.0, out=t)
    t *= np.float32(n_lut - 1)
    t += np.float32(0.5)
    idx = t.astype(np.uint16)
    del t
    if prof.noisy_background:
        bg = np.abs(fine)
        bg *= np.float32(0.006 * maxv)
        np.clip(bg, 0, 0.019 * maxv, out=bg)
        bgv = bg.astype(np.uint16)
    else:
        bgv = np.uint16(0)
    art = _ArtefactRng(spec)
    if "grey_background" in spec.artefacts or "film" in spec.artefacts:
        bgv = _grey_background(art.rng, fine, maxv, "film" in spec.artefacts)
        floor = min(0.9 * maxv, float(bgv.max()) + 0.06 * maxv)
        lut = np.rint(floor + (maxv - floor) * (lut.astype(np.float64) / maxv)).astype(np.uint16)
    pixels = np.where(fg, lut[idx], bgv).astype(np.uint16)
    del idx, fine, mid, rn

    # ---- orientation ----
    if spec.laterality == "R":
        pixels = np.ascontiguousarray(pixels[:, ::-1])
        fg = np.ascontiguousarray(fg[:, ::-1])
        pectoral = np.ascontiguousarray(pectoral[:, ::-1])
        boxes = [[cols - b[2], b[1], cols - b[0], b[3]] for b in boxes]
    far_right = spec.laterality != "R"

    # ---- burned-in labels and marker ----
    text_boxes: list[list[int]] = []
    rects: list[tuple[int, int, int, int]] = []
    font_px = max(9, round(0.021 * rows))
    margin = max(3, round(0.015 * cols))
    for i, text in enumerate(spec.labels):
        alpha = _text_alpha(text, font_px)
        block = i != 2 or rng.random() < 0.5       # the third line is sometimes plain text
        if block:
            pad = max(2, round(0.3 * font_px))
            alpha = np.pad(alpha, ((pad, pad), (pad, pad)))
        top = i != 1                                # the date goes to the bottom corner
        inset = 0 if rng.random() < 0.6 else margin  # flush labels touch the image border
        pos = _place(fg, rects, alpha.shape[0], alpha.shape[1], top, far_right, inset, margin)
        if pos is None:
            continue
        y, x = pos
        h, w = alpha.shape
        region = pixels[y:y + h, x:x + w]
        if block:
            block_v = maxv * rng.uniform(0.90, 0.97)
            dark_v = maxv * rng.uniform(0.20, 0.35)
            region[...] = np.round(block_v + (dark_v - block_v) * alpha).astype(np.uint16)
            box = [x, y, x + w, y + h]
        else:
            val = np.round(maxv * rng.uniform(0.93, 1.0) * alpha).astype(np.uint16)
            region[...] = np.maximum(region, val)
            on = np.nonzero(val)
            box = [x + int(on[1].min()), y + int(on[0].min()),
                   x + int(on[1].max()) + 1, y + int(on[0].max()) + 1]
        rects.append((y, x, y + h, x + w))
        text_boxes.append([int(v) for v in box])
    mk = max(5, round(0.03 * rows))
    pos = _place(fg, rects, mk, mk, True, far_right, margin, margin)
    if pos is not None:
        y, x = pos
        alpha = _marker_alpha(mk)
        if not far_right:
            alpha = alpha[:, ::-1]
        region = pixels[y:y + mk, x:x + mk]
        region[...] = np.where(alpha > 0, np.uint16(maxv), region)
        text_boxes.append([int(x), int(y), int(x + mk), int(y + mk)])

    if "skin_label" in spec.artefacts:
        box = _skin_label(art.rng, pixels, fg, maxv, far_right)
        if box:
            text_boxes.append(box)
    if "film" in spec.artefacts:
        text_boxes.extend(_film_edges(art.rng, pixels, fg, maxv, far_right))
    return SynthImage(pixels, fg, pectoral, boxes, types, text_boxes)


class _ArtefactRng:
    """A random stream of its own for the artefacts, so an image without artefacts is
    rendered exactly as before."""

    def __init__(self, spec: ImageSpec):
        self.rng = np.random.default_rng(np.random.SeedSequence(_key("artefacts", spec.seed)))


def _grey_background(rng: np.random.Generator, fine: np.ndarray, maxv: int,
                     film: bool) -> np.ndarray:
    """uint16 background: level 8-12 % of ``maxv`` with noise (sigma 0.5 %); for film a
    film base that brightens by up to 6 % of ``maxv`` across the image."""
    rows, cols = fine.shape
    level = rng.uniform(0.08, 0.12) * maxv
    bg = level + 0.005 * maxv * fine
    if film:
        ramp = np.linspace(0.0, 1.0, rows, dtype=np.float32)[:, None] \
            + 0.5 * np.linspace(0.0, 1.0, cols, dtype=np.float32)[None, :]
        bg = bg + 0.04 * maxv * ramp
    return np.clip(np.rint(bg), 1, maxv).astype(np.uint16)


def _skin_label(rng: np.random.Generator, pixels: np.ndarray, fg: np.ndarray, maxv: int,
                far_right: bool) -> list[int] | None:
    """Burn a label box whose chest-wall-side corner touches the skin line (the breast's
    outermost point, at mid height); returns its box or None when it does not fit."""
    rows, cols = pixels.shape
    h, w = max(6, round(0.05 * rows)), max(8, round(0.12 * cols))
    mid = rows // 2 - h - max(2, round(0.08 * rows))
    on = np.nonzero(fg[mid + h - 1])[0]
    if on.size == 0:
        return None
    x = int(on.max()) - 1 if far_right else int(on.min()) - w + 2
    y = mid
    if x < 0 or x + w > cols:
        return None
    region = pixels[y:y + h, x:x + w]
    box_v = np.uint16(maxv * rng.uniform(0.90, 0.97))
    keep = fg[y:y + h, x:x + w]
    region[...] = np.where(keep, region, box_v)
    return [x, y, x + w, y + h]


def _film_edges(rng: np.random.Generator, pixels: np.ndarray, fg: np.ndarray, maxv: int,
                far_right: bool) -> list[list[int]]:
    """Bright unexposed film along the top, bottom and far borders (1-2 % wide, with a
    ragged inner edge) and a scanner label in the far bottom corner. Returns their boxes."""
    rows, cols = pixels.shape
    boxes = []
    k = max(2, round(rng.uniform(0.01, 0.02) * min(rows, cols)))
    edge_v = np.uint16(maxv * rng.uniform(0.85, 0.95))
    for sl, box in (((slice(0, k), slice(None)), [0, 0, cols, k]),
                    ((slice(rows - k, rows), slice(None)), [0, rows - k, cols, rows])):
        pixels[sl] = edge_v
        boxes.append(box)
    xs = slice(cols - k, cols) if far_right else slice(0, k)
    pixels[:, xs] = edge_v
    boxes.append([cols - k, 0, cols, rows] if far_right else [0, 0, k, rows])
    h, w = max(6, round(0.04 * rows)), max(10, round(0.15 * cols))
    y = rows - k - h - max(2, round(0.02 * rows))
    x = cols - k - w - max(2, round(0.03 * cols)) if far_right else k + max(2, round(0.03 * cols))
    if not fg[max(0, y - 3):y + h + 3, max(0, x - 3):x + w + 3].any():
        pixels[y:y + h, x:x + w] = np.uint16(maxv * 0.98)
        pixels[y + h // 3: y + 2 * h // 3, x + 2: x + w - 2: 3] = np.uint16(maxv * 0.3)
        boxes.append([x, y, x + w, y + h])
    return boxes


def to_stored(pixels: np.ndarray, vendor: str) -> np.ndarray:
    """MONOCHROME2 values -> stored values for ``vendor`` (``maxv - x`` for MONOCHROME1)."""
    prof = VENDORS[vendor]
    if prof.photometric == "MONOCHROME1":
        return (np.uint16(prof.maxv) - pixels).astype(np.uint16)
    return pixels


# --------------------------------------------------------------------------------------
# DICOM
# --------------------------------------------------------------------------------------

def _image_seed(seed: int, case_id: str, laterality: str, view: str) -> int:
    return _key(seed, case_id, laterality, view) & ((1 << 63) - 1)


def image_artefacts(plan: PatientPlan, laterality: str, view: str,
                    rate: float) -> tuple[str, ...]:
    """The real-archive failure modes (:data:`ARTEFACTS`) of one view: with probability
    ``rate`` one or two of them, drawn from the image's own seed (deterministic)."""
    if rate <= 0:
        return ()
    rng = _rng("artefacts", plan.seed, plan.case_id, laterality, view)
    if rng.random() >= rate:
        return ()
    k = 1 + int(rng.random() < 0.5)
    picked = tuple(sorted(str(a) for a in rng.choice(ARTEFACTS, size=k, replace=False)))
    return picked


def image_spec(plan: PatientPlan, laterality: str, view: str,
               artefact_rate: float = 0.0) -> ImageSpec:
    """The :class:`ImageSpec` of one view of a planned patient (labels included); with
    ``artefact_rate`` > 0 some views get :func:`image_artefacts`."""
    prof = VENDORS[plan.vendor]
    breast = plan.breast(laterality)
    study = _dt.datetime.strptime(plan.identity["study_date"], "%Y%m%d")
    site = plan.identity["institution"].split(" ")[0].upper()
    labels = (f"{laterality} {view}", study.strftime(prof.date_format), site)
    return ImageSpec(plan.size[0], plan.size[1], plan.vendor, laterality, view,
                     breast.fgt_fraction, breast.lesions, labels,
                     _image_seed(plan.seed, plan.case_id, laterality, view),
                     image_artefacts(plan, laterality, view, artefact_rate))


def _ds(x: float, digits: int = 2) -> str:
    """Format a decimal string (DS) value compactly."""
    return f"{x:.{digits}f}".rstrip("0").rstrip(".")


def build_dataset(stored: np.ndarray, plan: PatientPlan, laterality: str, view: str):
    """A complete MG pydicom ``FileDataset`` for one image (uncompressed; call
    :func:`_encode` to apply the vendor's transfer syntax).

    ``stored``: uint16 [rows, cols] values as stored (already inverted for MONOCHROME1).
    """
    from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
    from pydicom.sequence import Sequence as DSequence
    from pydicom.uid import ExplicitVRLittleEndian, PYDICOM_IMPLEMENTATION_UID

    prof = VENDORS[plan.vendor]
    ident = plan.identity
    rows, cols = stored.shape
    rng = _rng(plan.seed, plan.case_id, laterality, view, "exposure")
    sop_class = (_SOP_FOR_PROCESSING if prof.presentation_intent == "FOR PROCESSING"
                 else _SOP_FOR_PRESENTATION)
    sop_uid = _uid(plan.seed, plan.case_id, laterality, view, "sop")
    number = {("R", "CC"): 1, ("R", "MLO"): 2, ("L", "CC"): 3, ("L", "MLO"): 4}[
        (laterality, view)]

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    meta.ImplementationVersionName = "MAMMOPREP_SYNTH"
    ds = FileDataset(None, {}, file_meta=meta, preamble=b"\0" * 128)

    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = (["ORIGINAL", "PRIMARY", ""] if prof.presentation_intent == "FOR PROCESSING"
                    else ["DERIVED", "PRIMARY", ""])
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_uid
    ds.StudyDate = ds.SeriesDate = ds.AcquisitionDate = ds.ContentDate = ident["study_date"]
    ds.StudyTime = ds.SeriesTime = ds.AcquisitionTime = ds.ContentTime = ident["study_time"]
    ds.AccessionNumber = ident["accession_number"]
    ds.Modality = "MG"
    ds.PresentationIntentType = prof.presentation_intent
    ds.Manufacturer = prof.manufacturer
    ds.InstitutionName = ident["institution"]
    ds.ReferringPhysicianName = ""
    ds.StudyDescription = "MAMMOGRAPHY BILATERAL"
    ds.SeriesDescription = f"{laterality}{view}"
    ds.ManufacturerModelName = prof.model
    ds.PatientName = ident["patient_name"]
    ds.PatientID = ident["patient_id"]
    ds.PatientBirthDate = ident["birth_date"]
    ds.PatientSex = "F"
    ds.PatientAge = ident["patient_age"]
    ds.BurnedInAnnotation = "YES"
    ds.BodyPartExamined = "BREAST"
    ds.KVP = _ds(rng.uniform(*prof.kvp), 1)
    ds.DistanceSourceToDetector = "660"
    ds.ExposureTime = str(int(rng.integers(400, 1800)))
    ds.XRayTubeCurrent = str(int(rng.integers(60, 200)))
    ds.Exposure = str(int(rng.integers(prof.mas[0], prof.mas[1] + 1)))
    ds.ImagerPixelSpacing = [_ds(prof.native_spacing_mm * _NATIVE_COLS / cols, 5)] * 2
    ds.AnodeTargetMaterial = prof.anode
    ds.BodyPartThickness = _ds(rng.uniform(*prof.thickness_mm), 1)
    ds.CompressionForce = _ds(rng.uniform(*prof.force_n), 1)
    ds.FilterMaterial = prof.filter
    if prof.view_position:
        ds.ViewPosition = view
    ds.DetectorType = "DIRECT" if prof.energy == "high" else "SCINTILLATOR"
    ds.StudyInstanceUID = ident["study_instance_uid"]
    ds.SeriesInstanceUID = _uid(plan.seed, plan.case_id, laterality, view, "series")
    ds.StudyID = ident["accession_number"][-6:]
    ds.SeriesNumber = number
    ds.InstanceNumber = 1
    ds.PatientOrientation = (["A", "R"] if laterality == "L" else ["P", "L"]) if view == "CC" \
        else (["A", "FR"] if laterality == "L" else ["P", "FL"])
    ds.Laterality = laterality
    ds.ImageLaterality = laterality
    code, scheme, meaning = VIEW_CODES[view]
    item = Dataset()
    item.CodeValue = code
    item.CodingSchemeDesignator = scheme
    item.CodeMeaning = meaning
    item.ViewModifierCodeSequence = DSequence([])
    ds.ViewCodeSequence = DSequence([item])

    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = prof.photometric
    ds.Rows = rows
    ds.Columns = cols
    ds.PixelSpacing = list(ds.ImagerPixelSpacing)
    ds.BitsAllocated = 16
    ds.BitsStored = prof.bits_stored
    ds.HighBit = prof.bits_stored - 1
    ds.PixelRepresentation = 0
    if prof.presentation_intent == "FOR PRESENTATION":
        centre = prof.maxv * (prof.tone_lo + prof.tone_hi) / 2
        width = prof.maxv * (prof.tone_hi - prof.tone_lo)
        if prof.photometric == "MONOCHROME1":
            centre = prof.maxv - centre
        ds.WindowCenter = _ds(centre, 1)
        ds.WindowWidth = _ds(width, 1)
    if prof.rescale:
        ds.RescaleIntercept = "0"
        ds.RescaleSlope = "1"
        ds.RescaleType = "US"
    ds.PresentationLUTShape = "INVERSE" if prof.photometric == "MONOCHROME1" else "IDENTITY"
    ds.PixelData = np.ascontiguousarray(stored, dtype="<u2").tobytes()
    return ds


def _encode(ds, stored: np.ndarray, transfer_syntax: str) -> None:
    """Compress ``ds`` in place with ``transfer_syntax`` (no-op for Explicit VR LE)."""
    if transfer_syntax == _TS_EXPLICIT:
        return
    plugin = _encoder_plugin(transfer_syntax)
    if plugin is None:
        raise RuntimeError(
            f"cannot encode transfer syntax {transfer_syntax}: none of the pydicom encoder "
            f"plug-ins {_ENCODER_PLUGINS[transfer_syntax]} is installed "
            "(pip install 'mammoprep[fast]' for pyjpegls)")
    # generate_instance_uid=False: keep the deterministic SOP Instance UID
    ds.compress(transfer_syntax, stored, encoding_plugin=plugin, generate_instance_uid=False)


# --------------------------------------------------------------------------------------
# Cohort on disk
# --------------------------------------------------------------------------------------

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
    rows: list[dict[str, Any]] = []
    if workers <= 1 or total <= 1:
        for i, job in enumerate(jobs):
            rows.append(_make_image(job))
            if progress:
                progress(i + 1, total)
    else:
        ctx = multiprocessing.get_context("spawn")
        with cf.ProcessPoolExecutor(max_workers=min(workers, total), mp_context=ctx) as pool:
            futures = [pool.submit(_make_image, job) for job in jobs]
            for i, fut in enumerate(cf.as_completed(futures)):
                if progress:
                    progress(i + 1, total)
            rows = [f.result() for f in futures]
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
