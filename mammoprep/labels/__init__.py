"""Label sources -> one internal table (one :class:`LabelRow` per image) and task labels.

Each source kind is an adapter in its own module, registered in :data:`ADAPTERS`
(``--labels KIND:PATH``):

* ``lumina:DIR`` (:mod:`.lumina`) - the published LUMINA layout and sheets, density as the
  publisher's loader assigns it; ``lumina-per-view:DIR`` - the same, each view its own
  density row;
* ``rsna:CSV`` (:mod:`.rsna`) - RSNA screening ``train.csv``;
* ``cbis-ddsm:CSV[,CSV...]`` (:mod:`.cbis_ddsm`) - CBIS-DDSM mass/calc description tables;
* ``vindr:DIR`` (:mod:`.vindr`) - VinDr-Mammo annotations;
* ``embed:DIR`` (:mod:`.embed`) - EMBED Open Data metadata and clinical tables;
* ``csv:FILE`` / ``parquet:FILE`` or a bare ``.csv``/``.parquet`` path (:mod:`.table`) - the
  generic table (schema: :data:`GENERIC_COLUMNS`).

They share the row/table types and the strict value parser (:mod:`._common`). The task rules
(which images count for which task, which values are excluded) are each adapter's
:class:`TaskRules`; ``mammoprep shard`` applies them per image and writes the result as the
``label_<task>`` columns, which ``mammotrain`` reads.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from ..registry import Registry
from . import cbis_ddsm, embed, lumina, rsna, table, vindr
from ._common import (GENERIC_RULES, TASKS, Adapter, LabelError, LabelRow, LabelTable,
                      TaskRules, is_missing, parse_birads, parse_boxes, parse_density,
                      parse_laterality, parse_pathology, parse_view, task_labels, unmatched)

#: Columns of the generic table: name -> (type, accepted values, required/optional).
GENERIC_COLUMNS = table.COLUMNS

#: The label source kinds of ``--labels KIND:PATH`` (:class:`mammoprep.registry.Registry`).
ADAPTERS: Registry[Adapter] = Registry(
    "label source", lambda kind, known: LabelError(None, f"unknown label source {kind!r}",
                                                   tag="--labels", value=kind,
                                                   hint=f"use one of {usage()}"))


def register_adapter(adapter: Adapter) -> Adapter:
    """Add a label source kind (its name must be new)."""
    return ADAPTERS.register(adapter.kind, adapter)


for _a in (lumina.ADAPTER, lumina.PER_VIEW_ADAPTER, rsna.ADAPTER, cbis_ddsm.ADAPTER,
           vindr.ADAPTER, embed.ADAPTER, table.ADAPTER, table.PARQUET_ADAPTER):
    register_adapter(_a)


def usage() -> str:
    """``lumina:DIR, rsna:CSV, ...`` for messages and ``--help``."""
    return ", ".join(a.usage for a in ADAPTERS.values())


def parse_spec(spec: str) -> tuple[str, str]:
    """``KIND:PATH`` -> (kind, path); a bare ``.csv``/``.parquet`` path is the generic table.
    Raises :class:`LabelError` for unknown kinds."""
    kind, sep, path = spec.partition(":")
    if not sep or kind not in ADAPTERS:
        low = spec.lower()
        if low.endswith((".csv", ".parquet")) and (not sep or len(kind) == 1):  # C:\...
            return ("parquet" if low.endswith(".parquet") else "csv"), spec
        raise LabelError(None, f"unknown label source {spec!r}", tag="--labels", value=spec,
                         hint=f"use one of {usage()}")
    return kind, path


def load_labels(spec: str, roots: Sequence[str | Path] = (), strict: bool = False
                ) -> LabelTable:
    """Parse ``KIND:PATH`` into a :class:`LabelTable` with the adapter's task rules.

    roots: the folders given to ``shard`` (relative image paths in some sources, e.g.
    CBIS-DDSM's, are resolved against them). strict: a value that no legend of the source
    has stops the load (``--strict-labels``); by default it drops that value of that row,
    counted in :attr:`LabelTable.dropped`. Structural problems (a missing table or column,
    an unreadable file) always stop it."""
    kind, path = parse_spec(spec)
    first = path.split(",")[0] if ADAPTERS[kind].several else path
    if not first or not Path(first).exists():
        raise LabelError(first or None, "label source not found", tag="--labels", value=spec,
                         hint=f"{ADAPTERS[kind].usage}: check the path")
    return ADAPTERS[kind].load(path, [Path(r) for r in roots], strict=strict)


__all__ = [
    "ADAPTERS", "Adapter", "GENERIC_COLUMNS", "GENERIC_RULES", "LabelError", "LabelRow",
    "LabelTable", "TASKS", "TaskRules", "is_missing", "load_labels", "parse_birads",
    "parse_boxes", "parse_density", "parse_laterality", "parse_pathology", "parse_spec",
    "parse_view", "register_adapter", "task_labels", "unmatched", "usage",
]
