"""Reading label tables (CSV, Parquet, XLSX) into rows, refusing what would be read two ways.

Every table is opened by :func:`mammoprep.inputs.open_input` (a regular file on disk, at
most :data:`~mammoprep.inputs.MAX_TABLE_BYTES`: a FIFO or ``/dev/zero`` is refused, never
read). Then, before any row reaches an adapter:

* a column given twice (``pathology`` and ``PATHOLOGY``: names are matched without case or
  surrounding spaces) is one column where every row agrees, else a :class:`LabelError`
  naming both columns and the first row where they differ;
* a CSV is UTF-16 (with a BOM), UTF-8 (BOM or not) or, where no row holds UTF-8 text at all,
  Windows-1252 (Latin-1 for the bytes Windows-1252 leaves undefined). A table with UTF-8 rows
  and rows that are not UTF-8 is refused, naming the first row and column that are not:
  ``Müller`` and its mis-decoded twin would be two patients;
* a text cell holding a NUL byte is refused, naming its row and column.

Rows are numbered as in a spreadsheet: the header is row 1, the first data row row 2.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any, Iterable, Sequence

from ..errors import MammoprepError
from ..inputs import MAX_TABLE_BYTES, open_input
from ._common import LabelError, is_missing

_WHAT = "label table"
_BOMS = (b"\xff\xfe", b"\xfe\xff")


def normalise_columns(row: dict[str, Any]) -> dict[str, Any]:
    """Header names stripped and lower-cased (``'BI-RADS '`` -> ``'bi-rads'``)."""
    return {str(k).strip().lower(): v for k, v in row.items() if k is not None}


def _key(name: Any) -> str:
    return str(name).strip().lower()


def _cannot_read(path: Path, exc: BaseException) -> LabelError:
    if isinstance(exc, LabelError):
        return exc
    if isinstance(exc, MammoprepError):  # not a regular file, too large, unreadable
        return LabelError(path, f"cannot read the label table ({exc.problem})", tag=exc.tag,
                          value=exc.value, hint=exc.hint)
    if isinstance(exc, (OSError, UnicodeDecodeError, csv.Error)):
        return LabelError(path, f"cannot read the label table ({exc})")
    return LabelError(path, f"cannot read the label table ({type(exc).__name__}: {exc})",
                      hint="give a CSV or Parquet file")


# --------------------------------------------------------------------------------- CSV

class _EncodingScan:
    """Which text cells of a CSV read as UTF-8 with ``surrogateescape`` are UTF-8 text
    (non-ASCII, valid) and which are not (undecodable bytes, kept as lone surrogates)."""

    def __init__(self) -> None:
        self.bad: tuple[int, str, str] | None = None   # first (row, column, cell) not UTF-8
        self.good: tuple[int, str] | None = None       # first (row, column) of UTF-8 text

    def see(self, row: int, column: str, cell: str) -> None:
        if cell.isascii():
            return
        try:
            cell.encode("utf-8")
        except UnicodeEncodeError:  # lone surrogates: bytes that are not UTF-8
            if self.bad is None:
                self.bad = (row, column, cell)
            return
        if self.good is None:
            self.good = (row, column)

    def check(self, path: Path) -> None:
        """Refuse a table with UTF-8 rows and non-UTF-8 rows, naming the first bad cell."""
        if self.bad is None or self.good is None:
            return
        row, column, cell = self.bad
        raw = cell.encode("utf-8", "surrogateescape")
        raise LabelError(f"{path}:{row}", "this row is not UTF-8 but row "
                         f"{self.good[0]} (column {self.good[1]}) is: the table mixes "
                         "encodings, so one name could be read two ways (two patients)",
                         tag=f"column {column}", value=raw,
                         hint="save the whole table in one encoding (UTF-8), e.g. from the "
                              "spreadsheet it was assembled in")


def _legacy(cell: str | None, encoding: str) -> str | None:
    """A cell read as UTF-8 with ``surrogateescape``, decoded again from its bytes."""
    if cell is None or cell.isascii():
        return cell
    return cell.encode("utf-8", "surrogateescape").decode(encoding)


def _csv_rows(path: Path, want: set[str] | None, header_only: bool = False
              ) -> tuple[list[str], list[list[Any]]]:
    """(header as written, rows as lists of the kept columns) of a CSV, decoded while
    streamed (the file is never held whole, nor read twice). ``want``: the columns to keep
    (lower case; None for all); ``header_only``: no rows."""
    with open_input(path, _WHAT, MAX_TABLE_BYTES) as raw:
        utf16 = raw.peek(2)[:2] in _BOMS
        text = io.TextIOWrapper(raw, encoding="utf-16" if utf16 else "utf-8-sig",
                                errors="strict" if utf16 else "surrogateescape", newline="")
        reader = csv.reader(text)
        header = next(reader, [])
        keep = [i for i, h in enumerate(header) if want is None or _key(h) in want]
        names = [header[i] for i in keep]
        if header_only:
            return [_legacy_header(h) for h in names], []
        scan = _EncodingScan()
        rows = []
        for n, row in enumerate(reader, start=2):
            cells = [row[i] if i < len(row) else None for i in keep]
            for name, cell in zip(names, cells):
                if cell is not None:
                    scan.see(n, name, cell)
            rows.append(cells)
    scan.check(path)
    if scan.bad is not None:  # no UTF-8 text anywhere: a Windows-1252 (or Latin-1) table
        rows, names = _decode_legacy(rows, names)
    return names, rows


def _legacy_header(name: str) -> str:
    try:
        name.encode("utf-8")
        return name
    except UnicodeEncodeError:
        return _legacy(name, "cp1252") if _cp1252_ok([name]) else _legacy(name, "latin-1")


def _cp1252_ok(cells: Iterable[str | None]) -> bool:
    try:
        for c in cells:
            _legacy(c, "cp1252")
        return True
    except UnicodeDecodeError:  # one of the five bytes Windows-1252 leaves undefined
        return False


def _decode_legacy(rows: list[list[Any]], names: list[str]):
    """Rows and header of a table with no UTF-8 text, decoded as Windows-1252, or Latin-1
    where a byte is undefined in Windows-1252 (the whole table the same way)."""
    enc = "cp1252" if _cp1252_ok(c for r in [names, *rows] for c in r) else "latin-1"
    return [[_legacy(c, enc) for c in r] for r in rows], [_legacy(h, enc) for h in names]


# ------------------------------------------------------------- columns given twice, NUL

def _merge_twins(path: Path, names: list[str], rows: list[list[Any]]
                 ) -> tuple[list[str], list[list[Any]]]:
    """One column per name (any case): a name given twice is kept once where every row
    agrees; else :class:`LabelError` naming both columns and the first row that differs."""
    first: dict[str, int] = {}
    drop: list[int] = []
    for j, name in enumerate(names):
        i = first.setdefault(_key(name), j)
        if i == j:
            continue
        if not _key(name):  # columns without a name: never read, the first one kept
            drop.append(j)
            continue
        for n, r in enumerate(rows, start=2):
            a, b = r[i], r[j]
            if not (is_missing(a) and is_missing(b)) and str(a).strip() != str(b).strip():
                raise LabelError(f"{path}:{n}", f"the columns {names[i]!r} and {names[j]!r} "
                                 "are the same column given twice, with different values",
                                 tag=f"columns {names[i]}, {names[j]}", value=[a, b],
                                 hint="keep one of them (column names are matched without "
                                      "regard to case)")
        drop.append(j)
    if not drop:
        return names, rows
    keep = [j for j in range(len(names)) if j not in set(drop)]
    return [names[j] for j in keep], [[r[j] for j in keep] for r in rows]


def _check_nul(path: Path, names: list[str], rows: list[list[Any]]) -> None:
    """A text cell with a NUL byte is a :class:`LabelError` naming its row and column."""
    for n, r in enumerate(rows, start=2):
        for name, cell in zip(names, r):
            if isinstance(cell, str) and "\x00" in cell:
                raise LabelError(f"{path}:{n}", "a NUL byte in a cell (a binary or corrupt "
                                 "table)", tag=f"column {name}",
                                 value=cell,
                                 hint="remove the NUL bytes, or re-export the table as text")


def _as_dicts(path: Path, names: list[str], rows: list[list[Any]]) -> list[dict[str, Any]]:
    _check_nul(path, names, rows)
    names, rows = _merge_twins(path, names, rows)
    return [dict(zip(names, r)) for r in rows]


# ------------------------------------------------------------------------ Parquet, XLSX

def _parquet_rows(path: Path, want: set[str] | None) -> tuple[list[str], list[list[Any]]]:
    import pyarrow.parquet as pq

    with open_input(path, _WHAT, MAX_TABLE_BYTES) as fh:
        pf = pq.ParquetFile(fh)
        names = [n for n in pf.schema_arrow.names if want is None or _key(n) in want]
        if len(set(names)) == len(names):  # read only the kept columns
            t = pf.read(columns=names)
        else:  # a name given exactly twice: read all, keep by position
            t = pf.read()
            idx = [i for i, n in enumerate(t.column_names) if want is None or _key(n) in want]
            t = t.select(idx)
        cols = [t.column(i).to_pylist() for i in range(t.num_columns)]
    return list(t.column_names), [list(r) for r in zip(*cols)]


def table_columns(path: Path) -> list[str]:
    """The header of a CSV or Parquet label table, as written, without reading its rows."""
    try:
        if path.suffix.lower() == ".parquet":
            import pyarrow.parquet as pq

            with open_input(path, _WHAT, MAX_TABLE_BYTES) as fh:
                return list(pq.read_schema(fh).names)
        return _csv_rows(path, None, header_only=True)[0]
    except Exception as exc:  # noqa: BLE001 - pyarrow raises many types
        raise _cannot_read(path, exc) from None


def read_table(path: Path, columns: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """Rows of a CSV (UTF-8 with or without BOM, UTF-16 with BOM, or Windows-1252 / Latin-1
    throughout) or Parquet file as dicts (header as written), checked as the module says.

    columns: keep only these (matched in any case; absent ones are simply not there, for
    :func:`require_columns` to name): wide tables, such as EMBED's metadata with its
    hundred DICOM columns over 480,000 rows, then hold only what is read."""
    want = {c.lower() for c in columns} if columns is not None else None
    try:
        if path.suffix.lower() == ".parquet":
            names, rows = _parquet_rows(path, want)
        else:
            names, rows = _csv_rows(path, want)
    except Exception as exc:  # noqa: BLE001 - pyarrow raises many types
        raise _cannot_read(path, exc) from None
    return _as_dicts(path, names, rows)


def read_xlsx(path: Path) -> list[dict[str, Any]]:
    """First sheet of a workbook as dicts (header = first row), with formulas as written
    (``'=A1+1'``, so that the parser can refuse them); blank rows dropped."""
    from openpyxl import load_workbook

    try:
        with open_input(path, "spreadsheet", MAX_TABLE_BYTES) as fh:
            wb = load_workbook(fh, read_only=True, data_only=False)
            rows = list(wb.worksheets[0].iter_rows(values_only=True))
            wb.close()
    except Exception as exc:  # noqa: BLE001 - openpyxl raises many types
        raise LabelError(path, f"cannot read the spreadsheet ({getattr(exc, 'problem', exc)})"
                         ) from None
    if not rows:
        return []
    header = [str(h).strip() if h is not None else "" for h in rows[0]]
    body = [list(r) for r in rows[1:]]
    _check_nul(path, header, body)
    header, body = _merge_twins(path, header, body)
    return [dict(zip(header, r)) for r in body if any(c not in (None, "") for c in r)]


def require_columns(path: Path, rows: Sequence[dict[str, Any]], columns: Sequence[str],
                    hint: str) -> None:
    """Raise naming the file and the missing columns when the first row lacks any."""
    have = list(rows[0]) if rows else []
    missing = [c for c in columns if c not in have]
    if rows and missing:
        raise LabelError(path, f"column(s) {', '.join(missing)} missing", tag="header row",
                         value=have, hint=hint)
