"""The shard format, one versioned contract: :data:`SCHEMA_VERSION`, the configuration that
determines the bytes (:class:`ShardConfig`), the Parquet manifest schemas
(:func:`manifest_schemas`, manifests/SCHEMA.md), and the builders of a sample's JSON and of
its per-view records (:func:`view_record`, :func:`image_row`, :func:`sample_json`).

Layout of one sample (one breast of one study), keys without dots::

    KEY.cc.png, KEY.mlo.png   16-bit grayscale, harmonised, text removed, cropped, resized
    KEY.json                  labels (raw + task forms), boxes per view in stored pixels,
                              transforms, vendor, energy, harmonised flag, schema version
    KEY.cls                   the diagnosis class as ASCII text ("0" benign, "1" malignant),
                              only where the diagnosis task defines one

Boxes: ``[x0, y0, x1, y1]``; ``breast_bbox``: ``[y0, x0, y1, x1]`` (see
:mod:`mammoprep.geometry`).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Any

from ..pipeline import PrepConfig, stored_pixel_spacing

SCHEMA_VERSION = 1


STORED_VIEWS = ("CC", "MLO")


PARTS = ".parts"


@dataclass(frozen=True)
class ShardConfig:
    """Everything that determines the shard bytes (written to ``config.json``)."""

    prep: PrepConfig = field(default_factory=lambda: PrepConfig(size=1024))
    labels: str | None = None
    samples_per_shard: int = 64
    folds: int = 5
    seed: int = 0
    png_level: int = 1
    salt_fingerprint: str = ""
    #: content digests (filled in by :func:`build_shards`): sha256 of the reference's
    #: bytes, salted HMAC of the parsed label table; a changed file is another config
    reference_sha256: str = ""
    labels_digest: str = ""

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["prep"] = self.prep.to_dict()
        return d

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:16]


def shard_name(i: int) -> str:
    return f"shard-{i:06d}.tar"


def value_bits(meta: dict[str, Any]) -> int | None:
    """Bit depth ``b`` of a stored image's values (they lie in ``0..2^b - 1``; readers divide
    by ``2^b - 1``): the reference's depth for harmonised images, else the decoded values'
    (``value_bits``: a Modality LUT, Rescale or VOI can reach above ``2^BitsStored - 1``),
    else (0028,0101) Bits Stored."""
    if meta.get("harmonized") and meta.get("reference_bits"):
        return int(meta["reference_bits"])
    v = meta.get("value_bits") or meta.get("bits_stored")
    return int(v) if v is not None else None


def manifest_schemas():
    """pyarrow schemas of images.parquet, shards.parquet, rejects.parquet (manifests/SCHEMA.md)."""
    import pyarrow as pa

    box = pa.list_(pa.list_(pa.float64()))
    images = pa.schema([
        ("key", pa.string()), ("shard", pa.string()), ("view", pa.string()),
        ("laterality", pa.string()), ("patient", pa.string()), ("study", pa.string()),
        ("pathology", pa.string()), ("birads", pa.string()), ("density", pa.string()),
        ("label_diagnosis", pa.int8()), ("label_birads2", pa.int8()),
        ("label_birads3", pa.int8()), ("label_density", pa.int8()),
        ("boxes", box), ("boxes_original", box),
        ("manufacturer", pa.string()), ("model", pa.string()), ("kvp", pa.float64()),
        ("energy", pa.string()), ("bits_stored", pa.int16()), ("value_bits", pa.int16()),
        ("photometric", pa.string()),
        ("transfer_syntax", pa.string()), ("presentation_intent", pa.string()),
        ("original_rows", pa.int32()), ("original_cols", pa.int32()),
        ("stored_rows", pa.int32()), ("stored_cols", pa.int32()),
        ("removed_fraction", pa.float64()), ("breast_fraction", pa.float64()),
        ("chest_wall", pa.string()), ("threshold", pa.int32()),
        ("background_level", pa.float64()), ("qc", pa.string()), ("qc_reason", pa.string()),
        ("breast_bbox", pa.list_(pa.int32())),
        ("decode_reduction", pa.int8()),
        ("harmonized", pa.bool_()), ("inverted", pa.bool_()), ("sop_uid_hash", pa.string()),
        ("fold", pa.int8()), ("split", pa.string()), ("mammogram_evidence", pa.string()),
    ])
    shards = pa.schema([("shard", pa.string()), ("samples", pa.int32()), ("images", pa.int32()),
                        ("bytes", pa.int64()), ("sha256", pa.string())])
    rejects = pa.schema([("path", pa.string()), ("reason", pa.string()),
                         ("message", pa.string()), ("stage", pa.string())])
    return images, shards, rejects


MANIFESTS = ("images.parquet", "shards.parquet", "rejects.parquet")


def view_record(item: dict[str, Any], m: dict[str, Any], t, boxes: list,
                original_boxes: list, bbox: list[int] | None, reduction: int,
                qc: dict[str, Any]) -> dict[str, Any]:
    """``images[VIEW]`` of a sample's JSON: one stored view (``item``: the plan's view,
    ``m``: the processed record's metadata, ``t``: its :class:`mammoprep.geometry.Transform`,
    ``boxes``: ``[x0, y0, x1, y1]`` in stored pixels, ``original_boxes``: in original
    pixels, ``bbox``: ``breast_bbox`` ``[y0, x0, y1, x1]`` in original pixels, ``qc``: the
    segmentation QC fields)."""
    return {
        "boxes": boxes, "boxes_original": original_boxes, "transform": t.to_dict(),
        "sop_uid_hash": m.get("sop_uid_hash"), "manufacturer": m.get("manufacturer"),
        "model": m.get("model"), "energy": m.get("energy"),
        "harmonized": m.get("harmonized"), "bits": m.get("bits_stored"),
        "value_bits": value_bits(m),
        **qc, "breast_bbox": bbox,
        "decode_reduction": reduction,
        "stored_pixel_spacing_mm": stored_pixel_spacing(m, t),
        "inverted": m.get("inverted"),
        "presentation_intent": m.get("presentation_intent"),
        "labels": {"raw": item["labels"], **item["tasks"]},
        "split": item.get("split"),
        "mammogram_evidence": item.get("evidence"),
    }


def image_row(sample: dict[str, Any], v: str, item: dict[str, Any], m: dict[str, Any], t,
              boxes: list, original_boxes: list, bbox: list[int] | None, reduction: int,
              qc: dict[str, Any], fold: int | None) -> dict[str, Any]:
    """One images.parquet row (columns: :func:`manifest_schemas`); arguments as for
    :func:`view_record`."""
    return {
        "key": sample["key"], "view": v, "laterality": sample["laterality"],
        "patient": sample["patient"], "study": sample["study"],
        **item["labels"],  # per image: raw values and task labels of this view
        **{f"label_{k}": val for k, val in item["tasks"].items()},
        "boxes": boxes, "boxes_original": [list(map(float, b)) for b in original_boxes],
        "manufacturer": m.get("manufacturer"), "model": m.get("model"), "kvp": m.get("kvp"),
        "energy": m.get("energy"), "bits_stored": m.get("bits_stored"),
        "value_bits": value_bits(m),
        "photometric": m.get("photometric"), "transfer_syntax": m.get("transfer_syntax"),
        "presentation_intent": m.get("presentation_intent"),
        "original_rows": t.original_size[0], "original_cols": t.original_size[1],
        "stored_rows": t.stored_size[0], "stored_cols": t.stored_size[1],
        **qc,
        "breast_bbox": [int(x) for x in (bbox or [])], "decode_reduction": reduction,
        "harmonized": bool(m.get("harmonized")), "inverted": bool(m.get("inverted")),
        "sop_uid_hash": m.get("sop_uid_hash"), "fold": fold,
        "split": item.get("split"), "mammogram_evidence": item.get("evidence"),
    }


def sample_json(sample: dict[str, Any], views: dict[str, dict[str, Any]],
                fold: int | None) -> bytes:
    """``KEY.json`` of a sample: its identity, two-view labels (per view in
    ``images[VIEW]``, :func:`view_record`), boxes and transforms per view, vendor, energy,
    bit depths and :data:`SCHEMA_VERSION`."""
    first = views[sorted(views)[0]]
    doc = {
        "schema": SCHEMA_VERSION, "key": sample["key"], "patient": sample["patient"],
        "study": sample["study"], "laterality": sample["laterality"],
        "views": sorted(views), "fold": fold, "split": sample.get("split"),
        "labels": {"raw": sample["labels"], **sample["tasks"]},  # two-view labels
        "boxes": {v: d["boxes"] for v, d in views.items()},
        "transform": {v: d["transform"] for v, d in views.items()},
        "images": views,
        "manufacturer": first["manufacturer"], "model": first["model"],
        "energy": first["energy"],
        "harmonized": all(d["harmonized"] for d in views.values()),
        "bits": first["bits"], "value_bits": first["value_bits"],
    }
    return json.dumps(doc, sort_keys=True).encode()
