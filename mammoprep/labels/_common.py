"""What every label adapter shares: the row and table types, the task rules as data, and the
one strict value parser.

A label source becomes a :class:`LabelTable`: one :class:`LabelRow` per image (raw values in
our spelling: pathology ``benign``/``malignant``, BI-RADS ``'0'``..``'6'``, density ``'A'``..
``'D'``, laterality ``L``/``R``, view upper case) plus the adapter's :class:`TaskRules`, which
turn a row's raw values into one class index per task (None = the image enters no task of
that name). Values are parsed by the ``parse_*`` functions below: blank or ``-`` means
missing; anything else that is not a known spelling is a :class:`LabelError` naming the file,
the row and the column.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from ..errors import MammoprepError

#: Task name -> number of classes (mammotrain's task registry must agree).
TASKS = {"diagnosis": 2, "birads2": 2, "birads3": 3, "density": 4}

#: How many examples of dropped values are kept per column.
MAX_EXAMPLES = 3

_MISSING = ("", "-", "nan", "none", "na", "n/a", "null")


class LabelError(MammoprepError):
    kind = "bad_labels"


@dataclass
class LabelRow:
    """Labels of one image.

    patient, study: identifiers as the source gives them (pseudonymised before they are
    written anywhere); laterality ``L``/``R``; view ``CC``/``MLO``/...; pathology
    ``benign``/``malignant``; birads ``'0'``..``'6'``; density ``'A'``..``'D'`` (None =
    missing). ``boxes``: ``[[xmin, ymin, xmax, ymax], ...]`` float, original DICOM pixels,
    exclusive ends. ``source_row``: ``FILE:ROW`` the values came from (for messages).
    ``split``: the publisher's official split of the image, ``train`` or ``test`` (None where
    the source publishes none). ``boxes_frame``: None when ``boxes`` are in the stored DICOM
    pixels; ``'chest_wall_left'`` when they are in the image mirrored, where its chest wall
    is on the right, to put the chest wall on the left (EMBED's ``ROI_coords``): ``shard``
    maps them to the stored pixels once the image is read
    (:func:`mammoprep.geometry.from_chest_wall_left`).
    """

    patient: str | None = None
    study: str | None = None
    laterality: str | None = None
    view: str | None = None
    pathology: str | None = None
    birads: str | None = None
    density: str | None = None
    boxes: list = field(default_factory=list)
    source_row: str = ""
    split: str | None = None
    boxes_frame: str | None = None

    def raw(self) -> dict[str, str | None]:
        return {"pathology": self.pathology, "birads": self.birads, "density": self.density}


# ----------------------------------------------------------------------------- task rules

@dataclass(frozen=True)
class TaskRules:
    """How one label source's raw values become task labels (class indices).

    diagnosis_birads: which BI-RADS values keep an image in the diagnosis task:
        ``'assessed'`` (1-6 only: BI-RADS 0 and missing excluded, the LUMINA protocol),
        ``'not_zero'`` (BI-RADS 0 excluded, missing kept) or ``'any'`` (pathology alone).
    birads_tasks: whether the source's BI-RADS feeds ``birads2``/``birads3`` (1-3 / 4-6 and
        1-2 / 3-4 / 5-6; BI-RADS 0 and missing always excluded).
    Density (A-D -> 0-3) never depends on BI-RADS: BI-RADS 0 is kept, missing density
    excluded. Which images carry values at all (e.g. LUMINA's named breasts) is the
    adapter's business: an image without raw values enters no task.
    """

    name: str
    diagnosis_birads: str = "not_zero"
    birads_tasks: bool = True
    description: str = ""

    def __post_init__(self):
        if self.diagnosis_birads not in ("assessed", "not_zero", "any"):
            raise ValueError(f"diagnosis_birads: {self.diagnosis_birads!r}")

    def labels(self, pathology: str | None, birads: str | None, density: str | None
               ) -> dict[str, int | None]:
        """Class index per task (see :data:`TASKS`), None where the image is excluded."""
        b = int(birads) if birads is not None else None
        assessed = b is not None and b > 0
        keep = {"assessed": assessed, "not_zero": b != 0, "any": True}[self.diagnosis_birads]
        diag = int(pathology == "malignant") if keep and pathology in (
            "benign", "malignant") else None
        use_b = assessed and self.birads_tasks
        return {
            "diagnosis": diag,
            "birads2": int(b >= 4) if use_b else None,
            "birads3": (0 if b <= 2 else 1 if b <= 4 else 2) if use_b else None,
            "density": "ABCD".index(density) if density in ("A", "B", "C", "D") else None,
        }


#: The rule of the generic table and VinDr-Mammo, and of manifests without label columns.
GENERIC_RULES = TaskRules(
    "generic", "not_zero", True,
    "diagnosis: pathology, BI-RADS 0 excluded (missing BI-RADS kept); BI-RADS tasks: 1-6; "
    "density: A-D, BI-RADS 0 kept")


def task_labels(pathology: str | None, birads: str | None, density: str | None,
                rules: TaskRules = GENERIC_RULES) -> dict[str, int | None]:
    """Class index per task under ``rules`` (default: the generic table's rule)."""
    return rules.labels(pathology, birads, density)


# ------------------------------------------------------------------------------- table

@dataclass
class LabelTable:
    """Rows keyed by how the source names images.

    by_path: resolved absolute file path; by_tail: ``PARENT/STEM`` (e.g. RSNA's
    ``patient_id/image_id``); by_stem: file name without suffix (VinDr's image id).
    auxiliary: resolved paths of files the source names that are not mammograms to
    store (e.g. CBIS-DDSM ROI masks and crops); auxiliary_stems: the same, by file name
    without suffix, for sources whose paths are another machine's (EMBED's C-view and
    magnified views); ``shard`` skips both (:meth:`is_auxiliary`). warnings: structural
    problems the adapter worked around (reported by ``shard``).

    strict: a value that no legend of the source has is an error (``--strict-labels``);
    otherwise (the default) :meth:`value` drops that one value (the row keeps its others)
    and counts it in ``dropped`` (column -> ``{"count": n, "examples": [...]}``, the
    examples naming the table file, row and value, never an image path).
    """

    kind: str
    rules: TaskRules = GENERIC_RULES
    by_path: dict[str, LabelRow] = field(default_factory=dict)
    by_tail: dict[str, LabelRow] = field(default_factory=dict)
    by_stem: dict[str, LabelRow] = field(default_factory=dict)
    auxiliary: set[str] = field(default_factory=set)
    auxiliary_stems: set[str] = field(default_factory=set)
    warnings: list[str] = field(default_factory=list)
    strict: bool = False
    dropped: dict[str, dict[str, Any]] = field(default_factory=dict)

    def value(self, parser: Callable[..., Any], v: Any, where: str, column: str,
              *args: Any) -> Any:
        """``parser(v, where, column, *args)``; where it raises :class:`LabelError` (a value
        no legend has) and the table is not strict: None, the value counted in ``dropped``."""
        try:
            return parser(v, where, column, *args)
        except LabelError as err:
            if self.strict:
                raise
            self.drop(column, where, v, err.problem)
            return None

    def drop(self, column: str, where: str, value: Any, why: str) -> None:
        """Count one value left out of column ``column`` at ``where`` (``FILE:ROW``)."""
        entry = self.dropped.setdefault(column, {"count": 0, "examples": []})
        entry["count"] += 1
        if len(entry["examples"]) < MAX_EXAMPLES:
            entry["examples"].append(f"{Path(str(where)).name}: {str(value)[:40]!r} ({why})")

    def is_auxiliary(self, path: str | Path) -> bool:
        """True for a file the source names but that is not to be stored (skipped)."""
        p = Path(path)
        if self.auxiliary_stems and (p.stem in self.auxiliary_stems
                                     or p.name in self.auxiliary_stems):
            return True
        return bool(self.auxiliary) and str(p.resolve()) in self.auxiliary

    def match_key(self, path: str | Path) -> str | None:
        p = Path(path)
        full = str(p.resolve())
        if full in self.by_path:
            return full
        tail = f"{p.parent.name}/{p.stem}"
        if tail in self.by_tail:
            return tail
        # the name itself too: a file named by its SOP Instance UID without an extension
        # (PACS exports) has a "stem" that drops the UID's last component
        return next((n for n in (p.stem, p.name) if n in self.by_stem), None)

    def lookup(self, path: str | Path) -> LabelRow | None:
        key = self.match_key(path)
        if key is None:
            return None
        return self.by_path.get(key) or self.by_tail.get(key) or self.by_stem.get(key)

    def keys(self) -> set[str]:
        return set(self.by_path) | set(self.by_tail) | set(self.by_stem)

    def tasks(self, row: LabelRow | None) -> dict[str, int | None]:
        if row is None:
            return {t: None for t in TASKS}
        return self.rules.labels(row.pathology, row.birads, row.density)


def unmatched(table: LabelTable, matched: Iterable[str]) -> list[str]:
    """Label keys that no image matched (reported, never fatal)."""
    return sorted(table.keys() - set(matched))


# -------------------------------------------------------------------- strict value parser

def is_missing(v: Any) -> bool:
    """Blank, ``-``, NaN, None, ``NA``/``N/A``/``null`` (any case)."""
    return v is None or (isinstance(v, float) and math.isnan(v)) or (
        str(v).strip().lower() in _MISSING)


def _fail(where: str, column: str, value: Any, what: str, hint: str) -> LabelError:
    return LabelError(where, what, tag=f"column {column}", value=value, hint=hint)


def _check_formula(v: Any, where: str, column: str) -> None:
    if isinstance(v, str) and v.strip().startswith("="):
        raise _fail(where, column, v, "a spreadsheet formula, not a value",
                    "save the sheet with values (copy, paste as values)")


def _integer(v: Any) -> int | None:
    """4, 4.0, '4', '4.0' -> 4; anything else None."""
    if isinstance(v, bool):
        return None
    if isinstance(v, int):
        return v
    if isinstance(v, float):
        return int(v) if v.is_integer() else None
    m = re.fullmatch(r"\s*(\d+)(?:\.0+)?\s*", str(v))
    return int(m.group(1)) if m else None


def parse_birads(v: Any, where: str = "", column: str = "birads") -> str | None:
    """BI-RADS category ``'0'``..``'6'``; None when missing.

    Accepted: 0-6 as number or text (``4``, ``4.0``, ``'4'``), ``4A``/``4B``/``4C`` (-> 4),
    with an optional ``BI-RADS``/``BIRADS`` prefix (``'BI-RADS 4'``). Raises
    :class:`LabelError` for anything else (7, 3.5, text, a formula)."""
    if is_missing(v):
        return None
    _check_formula(v, where, column)
    n = _integer(v)
    if n is None:
        m = re.fullmatch(r"(?:BI-?RADS[\s_:-]*)?(\d)([ABC])?", str(v).strip().upper())
        n = int(m.group(1)) if m and (m.group(2) is None or m.group(1) == "4") else None
    if n is None or not 0 <= n <= 6:
        raise _fail(where, column, v, "not a BI-RADS category",
                    "use 0-6 (4A/4B/4C count as 4), or leave empty / '-' when missing")
    return str(n)


def parse_density(v: Any, where: str = "", column: str = "density") -> str | None:
    """ACR density ``'A'``..``'D'``; None when missing.

    Accepted: ``A``-``D`` (any case, optional ``DENSITY`` prefix: ``'DENSITY C'``) or
    1-4 (= A-D, number or text). Raises :class:`LabelError` otherwise."""
    if is_missing(v):
        return None
    _check_formula(v, where, column)
    n = _integer(v)
    if n is not None:
        if 1 <= n <= 4:
            return "ABCD"[n - 1]
    else:
        m = re.fullmatch(r"(?:DENSITY[\s_:-]*)?([ABCD])", str(v).strip().upper())
        if m:
            return m.group(1)
    raise _fail(where, column, v, "not a breast density",
                "use A-D or 1-4 (= A-D), or leave empty / '-' when missing")


_PATHOLOGY = {"malignant": "malignant", "1": "malignant", "benign": "benign", "0": "benign",
              "benign_without_callback": "benign"}


def parse_pathology(v: Any, where: str = "", column: str = "pathology") -> str | None:
    """``benign`` / ``malignant``; None when missing.

    Accepted (any case): ``malignant``, ``benign``, ``benign_without_callback`` (CBIS-DDSM),
    ``1`` (= malignant), ``0`` (= benign). Raises :class:`LabelError` otherwise."""
    if is_missing(v):
        return None
    _check_formula(v, where, column)
    n = _integer(v)
    key = str(n) if n is not None else str(v).strip().lower()
    if key not in _PATHOLOGY:
        raise _fail(where, column, v, "unknown pathology",
                    "use benign, malignant (or 0 / 1), or leave empty when unknown")
    return _PATHOLOGY[key]


def parse_laterality(v: Any, where: str = "", column: str = "laterality") -> str | None:
    """``L`` / ``R`` from L, R, LEFT, RIGHT (any case); None when missing."""
    if is_missing(v):
        return None
    _check_formula(v, where, column)
    s = str(v).strip().upper()
    if s in ("L", "LEFT"):
        return "L"
    if s in ("R", "RIGHT"):
        return "R"
    raise _fail(where, column, v, "not a laterality", "use L, R, LEFT or RIGHT")


def parse_view(v: Any, where: str = "", column: str = "view") -> str | None:
    """View abbreviation in upper case (``CC``, ``MLO``, ``ML``, ``LM``, ``XCCL``, ...);
    None when missing. Shards store CC and MLO; other views are rejected there, not here."""
    if is_missing(v):
        return None
    _check_formula(v, where, column)
    s = str(v).strip().upper()
    if not re.fullmatch(r"[A-Z]{1,6}", s):
        raise _fail(where, column, v, "not a view abbreviation", "use CC, MLO, ML, LM, ...")
    return s


def parse_text(v: Any, where: str = "", column: str = "") -> str | None:
    """An identifier as text (``12.0`` from a spreadsheet -> ``'12'``); None when missing."""
    if is_missing(v):
        return None
    _check_formula(v, where, column)
    if isinstance(v, float) and v.is_integer():
        v = int(v)
    return str(v).strip()


def parse_boxes(v: Any, where: str = "", column: str = "boxes") -> list:
    """JSON list of ``[xmin, ymin, xmax, ymax]`` (original pixels) -> list of float lists."""
    if is_missing(v) or v == "[]":
        return []
    def not_json(name):  # strict JSON: NaN / Infinity are not numbers
        raise ValueError(f"{name} is not a JSON number")

    try:
        boxes = json.loads(v, parse_constant=not_json) if isinstance(v, str) else list(v)
        boxes = [[float(c) for c in b] for b in boxes]
    except (ValueError, TypeError) as exc:
        raise _fail(where, column, v, f"boxes are not a JSON list of [xmin, ymin, xmax, ymax] "
                    f"({exc})", "write boxes as e.g. [[10, 20, 110, 140]]") from None
    for b in boxes:
        if not all(math.isfinite(c) for c in b):
            raise _fail(where, column, b, "a box coordinate is not a finite number",
                        "fix the box or drop it")
        if len(b) != 4 or b[2] <= b[0] or b[3] <= b[1]:
            raise _fail(where, column, b, "a box is not [xmin, ymin, xmax, ymax] with "
                        "xmax > xmin and ymax > ymin", "fix the box or drop it")
    return boxes


# ----------------------------------------------------------------------------- registry

@dataclass(frozen=True)
class Adapter:
    """One label source kind (``--labels KIND:PATH``).

    load: ``(path_text, roots, strict=False) -> LabelTable``; path_text is what follows
    ``KIND:``, roots the shard inputs (folders relative paths in the source may be resolved
    against), strict: refuse values no legend has (:attr:`LabelTable.strict`).
    several: path_text may be a comma-separated list of paths (the first must exist).
    """

    kind: str
    usage: str
    load: Callable[..., LabelTable]
    rules: TaskRules
    summary: str
    several: bool = False
