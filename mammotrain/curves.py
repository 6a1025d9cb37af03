"""Training curves a person can look at: ``foldK/history.csv`` and TensorBoard event files.

After every epoch the trainer calls :func:`log_epoch` with the epoch's record (the line it
appends to ``history.jsonl``: epoch counted from 1, train_loss, lr, val_loss, val_auc, ...):

* ``foldK/history.csv``: ``history.jsonl`` as a table (one row per epoch, one column per key
  seen so far; rewritten each epoch, so a resumed run stays whole);
* ``foldK/tensorboard/``: one scalar per numeric key (``train/loss``, ``train/lr``,
  ``val/auc``, ...) at step = epoch, when the ``tensorboard`` package is installed
  (``tensorboard --logdir OUT`` shows every fold of a run side by side).
"""

from __future__ import annotations

import atexit
import json
import math
from pathlib import Path
from typing import Any

from . import jsonio

_WRITERS: dict[str, Any] = {}


def scalar_name(key: str) -> str:
    """A history key -> TensorBoard tag: ``val_auc`` -> ``val/auc``, ``train_loss`` ->
    ``train/loss``, ``lr`` -> ``train/lr``, others under ``epoch/``."""
    for prefix in ("train", "val"):
        if key.startswith(prefix + "_"):
            return f"{prefix}/{key[len(prefix) + 1:]}"
    return "train/lr" if key == "lr" else f"epoch/{key}"


def write_csv(fold_dir: Path) -> Path:
    """``history.csv`` from ``history.jsonl`` (columns: epoch first, then in order seen)."""
    fold_dir = Path(fold_dir)
    rows = [json.loads(line) for line in (fold_dir / "history.jsonl").read_text().splitlines()
            if line.strip()]
    cols: list[str] = ["epoch"]
    for r in rows:
        cols += [k for k in r if k not in cols]
    path = fold_dir / "history.csv"
    jsonio.write_csv(path, [{k: r.get(k) for k in cols} for r in rows], cols,
                     lineterminator="\n")
    return path


def _writer(log_dir: Path):
    key = str(log_dir)
    if key not in _WRITERS:
        for old in list(_WRITERS)[:-7]:  # a run's earlier folds: at most 8 writers open
            close(Path(old).parent)
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # tensorboard not installed: the CSV still has the curves
            _WRITERS[key] = None
        else:
            _WRITERS[key] = SummaryWriter(log_dir=key)
    return _WRITERS[key]


def log_epoch(fold_dir: Path, rec: dict[str, Any]) -> None:
    """Add one epoch record (already appended to ``history.jsonl``) to the CSV and to
    TensorBoard."""
    fold_dir = Path(fold_dir)
    write_csv(fold_dir)
    w = _writer(fold_dir / "tensorboard")
    if w is None:
        return
    step = int(rec.get("epoch", 0))
    for k, v in rec.items():
        if k == "epoch" or isinstance(v, bool) or not isinstance(v, (int, float)):
            continue
        if math.isfinite(v):
            w.add_scalar(scalar_name(k), float(v), step)
    w.flush()


def close(fold_dir: Path | None = None) -> None:
    """Close the TensorBoard writer of ``fold_dir`` (all writers when None)."""
    keys = list(_WRITERS) if fold_dir is None else [str(Path(fold_dir) / "tensorboard")]
    for k in keys:
        w = _WRITERS.pop(k, None)
        if w is not None:
            w.close()


atexit.register(close)
