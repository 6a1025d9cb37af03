"""Which images get harmonised: the energy class of the acquisition system, from metadata only.

LUMINA harmonises high-energy systems (IMS, GE) to a low-energy reference (Metaltronica,
FUJIFILM, Siemens, Carestream). The decision reads the ``manufacturer`` and ``model`` meta
fields ((0008,0070) and (0008,1090)), never a label or a path. The table is a CSV shipped as
``manifests/energy_classes.csv`` (columns ``manufacturer``, ``model``, ``energy``, ``note``;
lines starting with ``#`` are comments): each pattern is a case-insensitive regular
expression searched in the value, an empty pattern matches anything (but not both empty),
and the first matching row wins. A user file with the same columns replaces it.

Archives whose headers have no Manufacturer (RSNA's screening set, scanned film) can name
the class per image file instead: a table with an ``image`` column (and ``energy``, optional
``note``). ``image`` is the file's name without its DICOM suffix (``462822612``) or its
folder and that name (``10006/462822612``, RSNA's ``patient_id/image_id``); the folder form
wins over the bare name. This is the one place where a file's name, not its header, decides:
it is the user's own statement about files whose headers cannot say. A row of such a table
may instead give ``manufacturer`` / ``model`` patterns (image empty); a table without those
columns classifies the files it does not name by the shipped table.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from ..errors import MammoprepError
from ..inputs import MAX_TABLE_BYTES, read_input

ENERGIES = ("high", "low", "unknown")
COLUMNS = ("manufacturer", "model", "energy", "note")
REQUIRED = ("manufacturer", "energy")  # model and note columns may be left out
IMAGE_COLUMNS = ("image", "energy", "note")  # a table keyed by image file
_FILE = "energy_classes.csv"
_DICOM_SUFFIXES = {".dcm", ".dicom", ".dic", ".ima"}  # as mammoprep.io.dicom.DICOM_SUFFIXES


class EnergyTableError(MammoprepError):
    """An energy-class table that cannot be used (missing file, bad column, bad row)."""

    kind = "bad_energy_table"


@dataclass(frozen=True)
class EnergyRule:
    """One row of the table. ``line`` is the 1-based line number in ``source``."""

    manufacturer: re.Pattern | None
    model: re.Pattern | None
    energy: str
    note: str
    source: str
    line: int

    def matches(self, manufacturer: str, model: str) -> bool:
        return (self.manufacturer is None or self.manufacturer.search(manufacturer) is not None
                ) and (self.model is None or self.model.search(model) is not None)


def image_keys(path: str | Path) -> tuple[str, ...]:
    """The keys an image table may name ``path`` by, most specific first: ``PARENT/NAME``
    and ``NAME``, NAME without a DICOM suffix (``a/10006/462822612.dcm`` ->
    ``('10006/462822612', '462822612')``)."""
    parts = [p for p in str(path).replace("\\", "/").split("/") if p not in ("", ".")]
    if not parts:
        return ()
    name = parts[-1]
    stem, dot, suffix = name.rpartition(".")
    if dot and stem and f".{suffix.lower()}" in _DICOM_SUFFIXES:
        name = stem
    return (f"{parts[-2]}/{name}", name) if len(parts) > 1 else (name,)


@dataclass(frozen=True)
class EnergyTable:
    """Ordered rules; :meth:`classify` returns the first match's energy, else 'unknown'.
    ``images``: energy per image key (:func:`image_keys`) from a table's ``image`` rows,
    tried before the rules when the file is known."""

    rules: tuple[EnergyRule, ...]
    source: str
    images: dict[str, str] = field(default_factory=dict, hash=False, compare=False)

    def image_energy(self, path: str | Path | None) -> str | None:
        """The class an ``image`` row gives ``path`` (the folder form first), else None."""
        if path is None or not self.images:
            return None
        for key in image_keys(path):
            if key in self.images:
                return self.images[key]
        return None

    def match(self, manufacturer: str | None, model: str | None = None) -> EnergyRule | None:
        man, mod = (manufacturer or "").strip(), (model or "").strip()
        for rule in self.rules:
            if rule.matches(man, mod):
                return rule
        return None

    def classify(self, manufacturer: str | None, model: str | None = None,
                 path: str | Path | None = None) -> str:
        """The class of the image ``path`` by an ``image`` row, else of the Manufacturer /
        Model Name pair by the first matching rule, else 'unknown'."""
        by_image = self.image_energy(path)
        if by_image is not None:
            return by_image
        rule = self.match(manufacturer, model)
        return "unknown" if rule is None else rule.energy


def default_table_path() -> Path:
    """The shipped table: ``<repo>/manifests/energy_classes.csv`` (source checkout or
    editable install), else ``mammoprep/data/energy_classes.csv`` inside an installed
    package. Raises :class:`EnergyTableError` listing both places when neither exists."""
    here = Path(__file__).resolve()
    candidates = [here.parents[2] / "manifests" / _FILE, here.parents[1] / "data" / _FILE]
    for path in candidates:
        if path.is_file():
            return path
    raise EnergyTableError(None, "the shipped energy-class table was not found at "
                           + " or ".join(str(p) for p in candidates),
                           hint="pass the CSV path explicitly (columns: "
                           + ", ".join(COLUMNS) + ")")


def _compile(pattern: str, path: Path, line: int, column: str) -> re.Pattern | None:
    pattern = pattern.strip()
    if not pattern:
        return None
    try:
        return re.compile(pattern, re.IGNORECASE)
    except re.error as err:
        raise EnergyTableError(path, f"row at line {line}, column '{column}': invalid "
                               f"regular expression {pattern!r} ({err})") from None


def _check_header(header: list[str], path: Path, line: int) -> None:
    """A header needs ``energy`` and either ``manufacturer`` or ``image``."""
    missing = [c for c in REQUIRED if c not in header
               and not (c == "manufacturer" and "image" in header)]
    if missing:
        raise EnergyTableError(path, f"header at line {line} lacks column(s) "
                               f"{', '.join(missing)} (found {header}; expected "
                               f"{', '.join(COLUMNS)}, or {', '.join(IMAGE_COLUMNS)} for a "
                               "table keyed by image file)")


def _add_image(images: dict[str, tuple[str, int]], cells: dict[str, str], energy: str,
               path: Path, line: int) -> None:
    """Record an ``image`` row (its key as :func:`image_keys` makes it); the same key twice
    with two classes is an error naming both lines."""
    if cells.get("manufacturer") or cells.get("model"):
        raise EnergyTableError(path, f"row at line {line} gives both an image and a "
                               "manufacturer/model pattern (one or the other per row)")
    keys = image_keys(cells["image"])
    key = keys[0]
    if key in images and images[key][0] != energy:
        raise EnergyTableError(path, f"row at line {line}, column 'image': {key!r} is "
                               f"{images[key][0]} at line {images[key][1]} and {energy} here")
    images[key] = (energy, line)


def _parse(path: Path) -> EnergyTable:
    if not path.exists() and not path.is_symlink():
        raise EnergyTableError(path, "energy-class table not found")
    try:  # a FIFO or device is refused, never read
        text = read_input(path, "energy-class table", MAX_TABLE_BYTES).decode("utf-8-sig")
    except MammoprepError as err:
        raise EnergyTableError(path, f"cannot read energy-class table: {err.problem}",
                               hint=err.hint) from None
    except (OSError, UnicodeDecodeError) as err:
        raise EnergyTableError(path, f"cannot read energy-class table: {err}") from None
    # keep physical line numbers: comments become empty lines, which csv skips
    lines = ["" if ln.lstrip().startswith("#") else ln for ln in text.splitlines()]
    reader = csv.reader(lines)
    header: list[str] | None = None
    rules: list[EnergyRule] = []
    images: dict[str, tuple[str, int]] = {}  # image key -> (energy, line)
    try:
        for row in reader:
            line = reader.line_num
            if not row or all(not c.strip() for c in row):
                continue
            if header is None:
                header = [c.strip().lower() for c in row]
                _check_header(header, path, line)
                continue
            if len(row) > len(header):
                raise EnergyTableError(path, f"row at line {line} has {len(row)} fields, "
                                       f"the header has {len(header)} (quote fields "
                                       "that contain commas)")
            cells = dict(zip(header, [c.strip() for c in row]))
            energy = cells.get("energy", "").lower()
            if energy not in ENERGIES:
                raise EnergyTableError(path, f"row at line {line}, column 'energy': "
                                       f"{cells.get('energy', '')!r} is not one of "
                                       f"{', '.join(ENERGIES)}")
            if cells.get("image"):
                _add_image(images, cells, energy, path, line)
                continue
            man = _compile(cells.get("manufacturer", ""), path, line, "manufacturer")
            mod = _compile(cells.get("model", ""), path, line, "model")
            if man is None and mod is None:
                cols = ("columns 'image', 'manufacturer' and 'model' are all" if "image"
                        in header else "columns 'manufacturer' and 'model' are both")
                raise EnergyTableError(path, f"row at line {line}: {cols} empty (the row "
                                       "would match every image)")
            rules.append(EnergyRule(man, mod, energy, cells.get("note", ""), str(path),
                                    line))
    except csv.Error as err:
        raise EnergyTableError(path, f"CSV syntax error near line {reader.line_num}: {err}"
                               ) from None
    if header is None:
        raise EnergyTableError(path, "energy-class table is empty (expected a header "
                               f"{','.join(COLUMNS)})")
    if "manufacturer" not in header and "model" not in header:  # keyed by image only
        rules = list(load_energy_table().rules)  # the shipped rules for files not named
    return EnergyTable(tuple(rules), str(path), {k: e for k, (e, _) in images.items()})


@lru_cache(maxsize=8)
def _load_cached(path: Path, mtime_ns: int) -> EnergyTable:
    return _parse(path)


def load_energy_table(path: str | Path | None = None) -> EnergyTable:
    """Read an energy-class table (default: the shipped one, :func:`default_table_path`).

    Raises:
        EnergyTableError: missing/unreadable file, missing column, bad regex, bad energy
            value; the message names the file, the line and the column.
    """
    p = default_table_path() if path is None else Path(path)
    try:
        mtime = p.stat().st_mtime_ns
    except OSError:
        raise EnergyTableError(p, "energy-class table not found") from None
    return _load_cached(p.resolve(), mtime)


def energy_class(manufacturer: str | None, model: str | None = None,
                 table: EnergyTable | None = None, path: str | Path | None = None) -> str:
    """``'high' | 'low' | 'unknown'`` for a Manufacturer / Model Name pair, or for the image
    file ``path`` when the table has an ``image`` row for it."""
    return (table or load_energy_table()).classify(manufacturer, model, path)


def should_harmonize(meta: Mapping[str, Any], only_energy: str | None = None,
                     table: EnergyTable | None = None, path: str | Path | None = None) -> bool:
    """Whether an image with metadata ``meta`` (keys ``manufacturer``, ``model``; file
    ``path`` for a table's ``image`` rows) is to be harmonised. ``only_energy=None``: every
    image; ``'high'`` / ``'low'``: only images of that class (images of the other class and
    of unknown class are left untouched; the caller reports the unknown ones)."""
    if only_energy is None:
        return True
    if only_energy not in ("high", "low"):
        raise ValueError(f"only_energy must be None, 'high' or 'low', got {only_energy!r}")
    return energy_class(meta.get("manufacturer"), meta.get("model"), table, path) == only_energy
