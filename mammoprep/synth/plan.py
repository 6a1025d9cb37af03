"""The cohort plan (no pixels): vendor profiles, patients with their identities, breasts
with density and lesions, and the per-view artefacts; all drawn from hashes of the seed."""

from __future__ import annotations

import datetime as _dt
import hashlib
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

#: Transfer syntaxes the vendor profiles store their images in.
_TS_EXPLICIT = "1.2.840.10008.1.2.1"
_TS_J2K_LOSSLESS = "1.2.840.10008.1.2.4.90"
_TS_JLS_LOSSLESS = "1.2.840.10008.1.2.4.80"
_TS_RLE = "1.2.840.10008.1.2.5"

#: Default synthetic image size, (rows, cols).
DEFAULT_SIZE: tuple[int, int] = (512, 416)


#: Reference detector width (columns) at which a profile's native pixel spacing applies;
#: smaller synthetic images get a proportionally larger spacing.
_NATIVE_COLS = 3328


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
    spiculated: bool = True     # False: a round, circumscribed (benign-looking) mass


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


def _lesion(rng: np.random.Generator, kind: str, size: tuple[float, float],
            contrast: tuple[float, float], spiculated: bool = True) -> Lesion:
    return Lesion(kind, float(rng.uniform(0.35, 0.62)), float(rng.uniform(-0.8, 0.8)),
                  float(rng.uniform(-0.5, 0.9)), float(rng.uniform(*size)),
                  float(rng.uniform(*contrast)), int(rng.integers(0, 2**63)), spiculated)


#: Share of cancers that are subtle (small, faint) and read as BI-RADS 2-3: missed at
#: screening, as real readers miss some.
_SUBTLE_CANCER = 0.15


def _malignant_lesions(rng: np.random.Generator) -> tuple[tuple[Lesion, ...], str]:
    """(lesions, BI-RADS) of a malignant breast: 1-3 spiculated masses or calcification
    clusters, large enough to be seen at CPU training sizes (a mass radius of 4.5-7.5 % of
    the image width). The assessment follows what is visible: a subtle cancer
    (:data:`_SUBTLE_CANCER`: one small faint lesion) is read as 2 or 3, the others as 4-6,
    more often 5-6 the larger and more numerous the lesions."""
    if rng.random() < _SUBTLE_CANCER:
        les = _lesion(rng, "mass", (0.030, 0.040), (0.25, 0.32))
        return (les,), _choice(rng, ("2", "3"), (0.5, 0.5))
    n = _choice(rng, (1, 2, 3), (0.6, 0.3, 0.1))
    out = []
    for _ in range(n):
        if _choice(rng, ("mass", "calcification"), (0.7, 0.3)) == "mass":
            out.append(_lesion(rng, "mass", (0.045, 0.075), (0.50, 0.65)))
        else:
            out.append(_lesion(rng, "calcification", (0.040, 0.060), (0.60, 0.75)))
    big = max(le.size / (0.075 if le.kind == "mass" else 0.060) for le in out)
    suspicion = big + 0.25 * (n - 1) + rng.normal(0.0, 0.08)
    birads = "4" if suspicion < 0.80 else _choice(rng, ("5", "6"), (0.65, 0.35))
    return tuple(out), birads


def _benign_findings(rng: np.random.Generator, named: bool) -> tuple[tuple[Lesion, ...], str]:
    """(lesions, BI-RADS) of a benign breast. A breast the sheet names (the Benign group's
    referred breast) has a round circumscribed mass half of the time, assessed 4 when it is
    large (biopsied, benign) and 3 otherwise; without a finding 1 or 2. Other breasts have
    no lesion (BI-RADS 1-2, a few 3)."""
    if named and rng.random() < 0.5:
        les = _lesion(rng, "mass", (0.035, 0.060), (0.38, 0.50), spiculated=False)
        big = (les.size - 0.035) / 0.025 + rng.normal(0.0, 0.15)
        return (les,), "4" if big > 0.5 else "3"
    if named:
        return (), _choice(rng, ("1", "2"), (0.4, 0.6))
    return (), _choice(rng, ("1", "2", "3"), (0.60, 0.35, 0.05))


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
                lesions, birads = _malignant_lesions(rng)
            else:
                lesions, birads = _benign_findings(rng, group == "Benign" and on_side)
            u = rng.random()
            if u < 0.05:
                birads = "0"
            elif u < 0.10:
                birads = "-"
            density = "-" if rng.random() < 0.07 else klass
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
