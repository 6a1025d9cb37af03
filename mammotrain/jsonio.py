"""Strict JSON for every file mammotrain writes: NaN and infinities become ``null`` (a bare
``NaN`` is not JSON and breaks other readers), NumPy scalars and arrays become plain values,
paths and other objects their ``str``."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any


def json_safe(obj: Any) -> Any:
    """A copy of ``obj`` that :func:`json.dumps` with ``allow_nan=False`` accepts:
    non-finite floats -> None, NumPy values -> Python values, tuples -> lists, keys -> str,
    anything else unknown -> ``str``."""
    import numpy as np

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
    """Write ``obj`` as strict, indented, key-sorted JSON (temporary name, then rename)."""
    path = Path(path)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(dumps(obj, indent=2, sort_keys=True))
    os.replace(tmp, path)
