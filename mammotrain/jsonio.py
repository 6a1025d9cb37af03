"""Strict JSON for every file mammotrain writes: NaN and infinities become ``null`` (a bare
``NaN`` is not JSON and breaks other readers), NumPy scalars and arrays become plain values,
paths and other objects their ``str``. Files are written atomically through
:func:`mammoprep.atomic.atomic_write` (temporary file, fsync, rename, fsync of the folder)."""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from mammoprep.atomic import atomic_write


def json_safe(obj: Any) -> Any:
    """A copy of ``obj`` that :func:`json.dumps` with ``allow_nan=False`` accepts:
    non-finite floats -> None, NumPy values -> Python values, tuples -> lists, keys -> str,
    anything else unknown -> ``str``."""
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return json_safe(obj.tolist())
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(float(obj)) else None
    if obj is None or isinstance(obj, str):
        return obj
    return str(obj)


def dumps(obj: Any, **kw) -> str:
    """Strict JSON text of ``obj`` (see :func:`json_safe`)."""
    return json.dumps(json_safe(obj), allow_nan=False, **kw)


def write_json(path: str | Path, obj: Any) -> None:
    """Write ``obj`` as strict, indented, key-sorted JSON (atomically)."""
    write_text(path, dumps(obj, indent=2, sort_keys=True))


def write_text(path: str | Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically (:func:`mammoprep.atomic.atomic_write`)."""
    atomic_write(path, text.encode("utf-8"))


def write_csv(path: str | Path, rows: Sequence[dict[str, Any]], cols: list[str],
              **dialect) -> None:
    """Write ``rows`` (dicts; ``cols`` the header, in order) as CSV atomically; ``dialect``:
    :class:`csv.DictWriter` options (e.g. ``lineterminator``)."""
    buf = io.StringIO(newline="")
    w = csv.DictWriter(buf, fieldnames=cols, **dialect)
    w.writeheader()
    w.writerows(rows)
    write_text(path, buf.getvalue())


def append_jsonl(path: str | Path, obj: dict) -> None:
    """Append ``obj`` to ``path`` as one strict, key-sorted JSON line."""
    with open(path, "a") as fh:
        fh.write(dumps(obj, sort_keys=True) + "\n")
