"""Streaming two-view / single-view data from mammoprep shards.

Plan from the manifest, stream from the tars::

    images.parquet --plan_examples--> [Example] --split_examples--> train / val / test
    shard tars --webdataset--> select (this rank's examples) --> shuffle (raw bytes, seeded)
               --> decode 16-bit PNG --> preprocess (resize, flip, normalise) --> collate
               --> EpochLoader: exactly `steps` batches of `batch_size` per epoch and rank

* An :class:`Example` is one breast (two-view: CC and MLO of the same breast) or one stored
  image (single-view). Its label comes from the task spec (the manifest's ``label_<task>``
  column, the rule of :func:`mammoprep.labels.task_labels`); examples whose label is null,
  breasts with one view in two-view mode and images without a fold are excluded, and every
  exclusion is counted (:class:`PlanReport`).
* Splits are patient-grouped: test = the test fold; validation = a stratified fraction of
  the *training folds'* patients (models are selected on it, never on the test fold).
* Distributed: shards, not examples, are split across ranks (and within a rank across
  DataLoader workers) with near-equal example counts from the manifest, so each shard is
  read once per epoch in all; a training rank's share is cut or repeated to ``ceil(N /
  world)`` examples (same steps on every rank), an evaluating rank keeps exactly its shards'
  examples (:meth:`ShardStream.epoch_plan`). The
  epoch length (steps) comes from the manifest counts, not from the stream, and
  :class:`EpochLoader` yields exactly that many batches on every rank (no DDP hang from
  uneven shards, workers or a skipped corrupt sample).
* Reading shards in other code: :func:`decode_png16` (``KEY.cc.png`` bytes -> ``uint16
  [H, W]``, every bit kept) and :func:`require_16bit` (raises on an image some other decoder
  clipped to 8 bits, e.g. webdataset's ``.decode("l")``); the README's snippets use both.
"""

from __future__ import annotations

import heapq
import json
import math
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from mammoprep import geometry as box_ops
from mammoprep.io.png import decode_png16  # re-exported: the 16-bit-safe shard PNG decoder

from .augment import Augment, apply_view
from .splits import SPLITS, official_folds, split_text
from .tasks import TaskSpec

VIEWS = ("cc", "mlo")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

REQUIRED_COLUMNS = ("key", "shard", "view", "patient", "fold")


class DataError(ValueError):
    """A problem with the shard folder or its manifests (the message names the file)."""


def require_16bit(px: Any, value_bits: int | None = None, name: str = "image") -> np.ndarray:
    """``px`` as ``uint16 [H, W]``, or ValueError when it was decoded to 8 bits.

    Shard PNGs are 16-bit; readers that decode them as 8-bit images (webdataset's
    ``.decode("l")``/``"rgb"``, timm's wds reader, ``PIL.Image.convert("L")``) clip or
    rescale every value. Refused: anything not ``uint16`` (uint8 arrays, PIL 'L' images,
    floats), and, given the sample JSON's ``value_bits`` (> 8), an image whose maximum is
    at most 255. Use :func:`decode_png16` on the raw bytes."""
    arr = np.asarray(px)
    hint = ("shard PNGs are 16-bit: decode the raw bytes with mammotrain.data.decode_png16 "
            "(webdataset: no .decode('l') / 'rgb' for the .png entries)")
    if arr.dtype != np.uint16 or arr.ndim != 2:
        raise ValueError(f"{name}: got {arr.dtype} {list(arr.shape)}, expected uint16 "
                         f"[H, W]; {hint}")
    if value_bits is not None and int(value_bits) > 8 and arr.size and int(arr.max()) <= 255:
        raise ValueError(f"{name}: maximum {int(arr.max())} for {value_bits}-bit values, "
                         f"decoded to 8 bits; {hint}")
    return arr


# --------------------------------------------------------------------------- manifest

def read_manifest(shards: str | Path) -> list[dict[str, Any]]:
    """Rows of ``SHARDS/images.parquet`` (one per stored image) as dicts."""
    import pyarrow.parquet as pq

    path = Path(shards) / "images.parquet"
    if not path.exists():
        raise DataError(f"{path}: manifest not found; is {shards} a folder written by "
                        "`mammoprep shard`?")
    table = pq.read_table(path)
    missing = [c for c in REQUIRED_COLUMNS if c not in table.column_names]
    if missing:
        raise DataError(f"{path}: columns {missing} missing (have {table.column_names})")
    return table.to_pylist()


def folds_in(rows: Iterable[dict[str, Any]]) -> list[int]:
    """Sorted distinct non-null folds of manifest rows."""
    return sorted({int(r["fold"]) for r in rows if r.get("fold") is not None})


@dataclass(frozen=True)
class Example:
    """One example: a breast (two-view, ``views = ('cc', 'mlo')``) or one image
    (single-view, ``views = ('cc',)`` or ``('mlo',)``). ``uid`` is the key (two-view) or
    ``KEY.VIEW`` (single-view). ``sop_uid_hashes``: the manifest's ``sop_uid_hash`` of each
    view (same order as ``views``), to find the source files. ``split``: the publisher's
    official split ('train' / 'test' / None; two-view: where both views agree)."""

    uid: str
    key: str
    views: tuple[str, ...]
    label: int
    patient: str
    fold: int | None
    shard: str
    energy: str | None = None
    manufacturer: str | None = None
    sop_uid_hashes: tuple[str | None, ...] = ()
    split: str | None = None


@dataclass
class PlanReport:
    """What :func:`plan_examples` kept and why it dropped the rest.

    unit: 'breast' (two-view) or 'image' (single-view); excluded counts are in that unit:
    ``label_null`` (label null for the task), ``one_view`` (two-view: a breast with only CC
    or only MLO), ``no_fold`` (no fold assigned), ``label_conflict`` (CC and MLO rows disagree),
    ``one_view_labelled`` (two-view: only one view has a label, e.g. a LUMINA density given
    for one view; that image is used in single-view mode only).
    split: 'kfold' or 'official' (:func:`mammotrain.splits.official_folds`, which also counts
    ``no_split`` / ``train_of_test_patient`` and the ``patients_in_both`` parts).
    """

    task: str
    views: int
    unit: str
    images: int
    candidates: int
    examples: int
    excluded: dict[str, int] = field(default_factory=dict)
    class_counts: dict[int, int] = field(default_factory=dict)
    split_by: str = "fold"
    fold_names: dict[int, str] = field(default_factory=dict)
    split: str = "kfold"
    patients_in_both: int = 0

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["class_counts"] = {str(k): v for k, v in sorted(self.class_counts.items())}
        d["fold_names"] = {str(k): v for k, v in sorted(self.fold_names.items())}
        return d

    def describe(self) -> str:
        ex = ", ".join(f"{k} {v}" for k, v in sorted(self.excluded.items()) if v) or "none"
        official = split_text(self.to_dict())
        return (f"{self.task} {self.views}-view: {self.examples} {self.unit}s of "
                f"{self.candidates} ({self.images} images); excluded: {ex}; classes "
                f"{dict(sorted(self.class_counts.items()))}"
                + (f"; {official}" if official else ""))


def plan_examples(rows: Sequence[dict[str, Any]], task: TaskSpec, views: int,
                  unlabeled: bool = False, need_fold: bool = True
                  ) -> tuple[list[Example], PlanReport]:
    """Manifest rows -> examples of ``task`` in ``views``-view mode (1 or 2), sorted by uid.

    unlabeled: keep examples without a label (label -1) or fold (inference on new images:
    ``mammotrain predict``) instead of excluding them. need_fold False: keep examples
    without a fold (``--split official`` does not use the folds)."""
    if views not in (1, 2):
        raise ValueError(f"views must be 1 or 2, got {views!r}")
    by_key: dict[str, dict[str, dict]] = defaultdict(dict)
    for r in rows:
        by_key[r["key"]][str(r["view"]).lower()] = r
    excluded: Counter = Counter()
    out: list[Example] = []

    def make(uid, key, vs, label, r):
        splits = {by_key[key][v].get("split") for v in vs} - {None}
        return Example(uid, key, vs, label, r["patient"],
                       None if r.get("fold") is None else int(r["fold"]), r["shard"],
                       r.get("energy"), r.get("manufacturer"),
                       tuple(by_key[key][v].get("sop_uid_hash") for v in vs),
                       splits.pop() if len(splits) == 1 else None)

    for key in sorted(by_key):
        per_view = by_key[key]
        if views == 1:
            for v in sorted(per_view):
                r = per_view[v]
                label = task.label(r)
                if unlabeled:
                    out.append(make(f"{key}.{v}", key, (v,), -1 if label is None else label, r))
                elif label is None:
                    excluded["label_null"] += 1
                elif need_fold and r.get("fold") is None:
                    excluded["no_fold"] += 1
                else:
                    out.append(make(f"{key}.{v}", key, (v,), label, r))
            continue
        labels = {v: task.label(r) for v, r in per_view.items()}
        first = per_view[sorted(per_view)[0]]
        if unlabeled and all(v in per_view for v in VIEWS):
            lab = labels[VIEWS[0]]
            out.append(make(key, key, VIEWS, -1 if lab is None else lab, first))
        elif unlabeled:
            excluded["one_view"] += 1
        elif all(lab is None for lab in labels.values()):
            excluded["label_null"] += 1
        elif None in labels.values() and len(set(labels.values()) - {None}) == 1:
            excluded["one_view_labelled"] += 1
        elif len({lab for lab in labels.values()}) > 1:
            excluded["label_conflict"] += 1
        elif not all(v in per_view for v in VIEWS):
            excluded["one_view"] += 1
        elif need_fold and first.get("fold") is None:
            excluded["no_fold"] += 1
        else:
            out.append(make(key, key, VIEWS, labels[VIEWS[0]], first))
    candidates = len(by_key) if views == 2 else len(rows)
    report = PlanReport(task.name, views, "breast" if views == 2 else "image", len(rows),
                        candidates, len(out), dict(excluded),
                        dict(Counter(e.label for e in out)))
    return out, report


#: ``--split-by``: what a test fold is. 'fold': the manifest's patient-level folds;
#: 'vendor' / 'energy': one test fold per manufacturer / energy class (leave one out).
SPLIT_BY = {"fold": None, "vendor": "manufacturer", "energy": "energy"}


def regroup_folds(examples: Sequence[Example], plan: PlanReport, by: str,
                  split: str = "kfold") -> list[Example]:
    """Examples with ``fold`` = the index of their group under ``by`` (:data:`SPLIT_BY`;
    groups sorted by name), for leave-one-vendor-out (or -energy-out) evaluation; ``plan``
    gains ``split_by`` and ``fold_names`` (index -> group) and counts the examples without
    a group (no manufacturer; energy ``unknown``) as excluded (``no_vendor`` /
    ``no_energy``). 'fold' returns them unchanged. ``split`` 'official' (with ``by``
    'fold' only): the publisher's train/test split as one test fold
    (:func:`mammotrain.splits.official_folds`)."""
    if by not in SPLIT_BY:
        raise ValueError(f"split_by must be one of {', '.join(SPLIT_BY)}, got {by!r}")
    if split not in SPLITS or (split == "official" and by != "fold"):
        raise ValueError(f"split must be one of {', '.join(SPLITS)} (official with "
                         f"split_by 'fold' only), got split {split!r}, split_by {by!r}")
    plan.split_by = by
    if split == "official":
        return official_folds(examples, plan)
    column = SPLIT_BY[by]
    if column is None:
        return list(examples)

    def group(e: Example) -> str | None:  # mammoprep writes '' / 'unknown' for none
        v = getattr(e, column)
        return None if v in (None, "") or (by == "energy" and v == "unknown") else str(v)

    groups = [group(e) for e in examples]
    names = sorted({g for g in groups if g is not None})
    index = {n: i for i, n in enumerate(names)}
    kept = [replace(e, fold=index[g]) for e, g in zip(examples, groups) if g is not None]
    if len(kept) < len(examples):
        plan.excluded[f"no_{by}"] = len(examples) - len(kept)
        plan.examples = len(kept)
        plan.class_counts = dict(Counter(e.label for e in kept))
    plan.fold_names = dict(enumerate(names))
    return kept


@dataclass
class Split:
    """Patient-disjoint train / val / test examples for one test fold."""

    test_fold: int
    train: list[Example]
    val: list[Example]
    test: list[Example]

    def describe(self) -> str:
        def part(xs):
            c = Counter(e.label for e in xs)
            return (f"{len(xs)} ({len({e.patient for e in xs})} patients, classes "
                    f"{dict(sorted(c.items()))})")
        return (f"fold {self.test_fold}: train {part(self.train)}, val {part(self.val)}, "
                f"test {part(self.test)}")

    def counts(self) -> dict[str, int]:
        return {"train": len(self.train), "val": len(self.val), "test": len(self.test)}


def split_examples(examples: Sequence[Example], test_fold: int, val_fraction: float = 0.2,
                   seed: int = 0) -> Split:
    """Test = ``fold == test_fold``; validation = ``val_fraction`` of the other folds'
    patients, drawn per stratum (a patient's highest label) with ``(seed, test_fold)``;
    train = the rest. No patient is in two parts: a test patient's examples in other folds
    (possible when folds are vendors, :func:`regroup_folds`) are used nowhere."""
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    test = [e for e in examples if e.fold == test_fold]
    test_patients = {e.patient for e in test}
    pool = [e for e in examples if e.fold != test_fold and e.patient not in test_patients]
    strata: dict[int, set[str]] = defaultdict(set)
    top: dict[str, int] = {}
    for e in pool:
        top[e.patient] = max(top.get(e.patient, -1), e.label)
    for p, lab in top.items():
        strata[lab].add(p)
    rng = np.random.default_rng([seed, test_fold, 7])
    val_patients: set[str] = set()
    for lab in sorted(strata):
        ps = sorted(strata[lab])
        rng.shuffle(ps)
        n = int(round(val_fraction * len(ps)))
        if n == 0 and val_fraction > 0 and len(ps) >= 3:
            n = 1
        val_patients.update(ps[:n])
    train = [e for e in pool if e.patient not in val_patients]
    val = [e for e in pool if e.patient in val_patients]
    return Split(test_fold, train, val, test)


# -------------------------------------------------------------------------- preprocess

@dataclass(frozen=True)
class Preprocess:
    """Per-view image preparation (a pure function of its inputs and the flip decision).

    size: model input in pixels: ``S`` (square ``S x S``) or ``(rows, cols)``, e.g.
        ``(1024, 512)`` (:func:`input_hw`, :func:`parse_size`).
    resize: 'square' (stretch to the input shape, as in LUMINA) or 'letterbox' (keep the
        aspect ratio: scaled to fit inside the input, centred, padded with 0 = background).
    intensity: 'bits' (divide by ``2**bits - 1``, the image's bit depth from the sample JSON:
        ``value_bits`` when present, else ``bits``; harmonised shards record the reference's
        depth) or 'u16' (divide by 65535).
    interpolation: the resize filter, 'bilinear' (LUMINA) or 'bicubic' (most timm weights'
        data config; ``--interpolation timm``); antialiased where it shrinks.

    The output stays one grayscale channel in [0, 1]: replication to 3 channels and the
    ImageNet mean/std are applied on the device by the model's :class:`InputNorm` (3x less
    memory and inter-process traffic in the loader).
    """

    size: int | tuple[int, int] = 224
    resize: str = "square"
    intensity: str = "bits"
    interpolation: str = "bilinear"

    def __post_init__(self):
        object.__setattr__(self, "size", parse_size(self.size))
        if self.interpolation not in INTERPOLATIONS:
            raise ValueError(f"interpolation must be one of {', '.join(INTERPOLATIONS)}, "
                             f"got {self.interpolation!r}")
        if self.resize not in ("square", "letterbox"):
            raise ValueError(f"resize must be 'square' or 'letterbox', got {self.resize!r}")
        if self.intensity not in ("bits", "u16"):
            raise ValueError(f"intensity must be 'bits' or 'u16', got {self.intensity!r}")
        if min(self.hw) < 8:
            raise ValueError(f"size must be >= 8 pixels, got {format_size(self.size)}")

    @property
    def hw(self) -> tuple[int, int]:
        """Model input (rows, cols)."""
        return input_hw(self.size)

    def __call__(self, px: np.ndarray, bits: int | None, boxes, flip: bool
                 ) -> tuple[torch.Tensor, np.ndarray]:
        """``uint16 [H, W]`` -> (float32 ``[1, rows, cols]`` in [0, 1], boxes float32
        ``[N, 4]`` xyxy in input pixels)."""
        img = to_unit(px, bits if self.intensity == "bits" else 16)
        fit = resize_square if self.resize == "square" else letterbox
        img, (sx, sy, dx, dy) = fit(img, self.size, self.interpolation)
        b = box_ops.scale(boxes if boxes is not None else np.zeros((0, 4)), sx, sy, dx, dy)
        if flip:
            img = img.flip(-1)
            b = box_ops.hflip(b, self.hw[1])
        return img[None], b.astype(np.float32)


    def to_stored(self, boxes, stored_hw: tuple[int, int]) -> np.ndarray:
        """Boxes ``[N, 4]`` xyxy at the model input (no flip) -> pixels of the stored image
        of size ``stored_hw`` (rows, cols): the inverse of this resize."""
        sx, sy, dx, dy = fit_mapping(stored_hw, self.size, self.resize)[:4]
        return box_ops.unscale(boxes, sx, sy, dx, dy)


def parse_size(value: Any) -> int | tuple[int, int]:
    """A model input size -> ``S`` (square) or ``(rows, cols)``: ints, ``"512"``,
    ``"1024x512"`` / ``"1024,512"`` (rows x cols), ``[1024, 512]``; a square pair becomes
    ``S``. Raises ValueError naming the value."""
    if isinstance(value, str):
        parts = value.lower().replace(",", "x").split("x")
    elif isinstance(value, (list, tuple)):
        parts = list(value)
    else:
        parts = [value]
    try:
        nums = [int(p) for p in parts]
        if len(nums) not in (1, 2) or any(float(p) != n for p, n in zip(parts, nums)):
            raise ValueError
    except (TypeError, ValueError):
        raise ValueError(f"size must be S or ROWSxCOLS (e.g. 512 or 1024x512), got {value!r}"
                         ) from None
    return nums[0] if len(nums) == 1 or nums[0] == nums[1] else (nums[0], nums[1])


def input_hw(size: int | Sequence[int]) -> tuple[int, int]:
    """Model input (rows, cols) of a size ``S`` or ``(rows, cols)``."""
    size = parse_size(size)
    return (size, size) if isinstance(size, int) else size


def format_size(size: int | Sequence[int]) -> str:
    """``512`` or ``1024x512`` (rows x cols)."""
    h, w = input_hw(size)
    return str(h) if h == w else f"{h}x{w}"


def fit_mapping(hw: tuple[int, int], size: int | tuple[int, int], resize: str
                ) -> tuple[float, float, float, float, int, int]:
    """How an image of ``hw`` (rows, cols) is fitted into the model input ``size`` (``S`` or
    ``(rows, cols)``): box mapping ``(sx, sy, dx, dy)`` for :func:`mammoprep.geometry.scale` and
    the resized ``(rows, cols)`` before padding. 'square' stretches to the input shape;
    'letterbox' scales both axes by one factor (the largest that fits), centred."""
    h, w = hw
    rows, cols = input_hw(size)
    if resize == "square":
        return cols / w, rows / h, 0.0, 0.0, rows, cols
    s = min(rows / h, cols / w)
    nh, nw = min(rows, max(1, round(h * s))), min(cols, max(1, round(w * s)))
    return nw / w, nh / h, float((cols - nw) // 2), float((rows - nh) // 2), nh, nw


def to_unit(px: np.ndarray, bits: int | None) -> torch.Tensor:
    """``uint16 [H, W]`` -> float32 ``[H, W]`` in [0, 1]: ``px / (2**bits - 1)`` (16 if None)."""
    maxv = float((1 << int(bits or 16)) - 1)
    return torch.from_numpy(px.astype(np.float32, copy=False)).div_(maxv).clamp_(0.0, 1.0)


#: resize filters of :class:`Preprocess`
INTERPOLATIONS = ("bilinear", "bicubic")


def _resize(img: torch.Tensor, hw: tuple[int, int], mode: str = "bilinear") -> torch.Tensor:
    """Bilinear or bicubic resize of ``[H, W]`` in [0, 1]; antialiased where it shrinks
    (same as plain interpolation where it enlarges, and cheaper); bicubic overshoot clamped
    to [0, 1]."""
    shrink = hw[0] < img.shape[0] or hw[1] < img.shape[1]
    out = F.interpolate(img[None, None], size=hw, mode=mode, align_corners=False,
                        antialias=shrink)[0, 0]
    return out.clamp_(0.0, 1.0) if mode == "bicubic" else out


def resize_square(img: torch.Tensor, size: int | tuple[int, int], mode: str = "bilinear"
                  ) -> tuple[torch.Tensor, tuple[float, ...]]:
    """float ``[H, W]`` -> ``[rows, cols]`` of ``size`` (stretched; ``mode``: bilinear or
    bicubic); returns the box mapping ``(sx, sy, dx, dy)`` for :func:`mammoprep.geometry.scale`."""
    sx, sy, dx, dy, _, _ = fit_mapping(tuple(img.shape), size, "square")
    return _resize(img, input_hw(size), mode), (sx, sy, dx, dy)


def letterbox(img: torch.Tensor, size: int | tuple[int, int], mode: str = "bilinear"
              ) -> tuple[torch.Tensor, tuple[float, ...]]:
    """float ``[H, W]`` -> ``[rows, cols]`` of ``size``: aspect kept (the largest scale that
    fits), centred, zero padded; returns the box mapping ``(sx, sy, dx, dy)``."""
    sx, sy, dx, dy, nh, nw = fit_mapping(tuple(img.shape), size, "letterbox")
    out = img.new_zeros(input_hw(size))
    out[int(dy):int(dy) + nh, int(dx):int(dx) + nw] = _resize(img, (nh, nw), mode)
    return out, (sx, sy, dx, dy)


def normalize(img: torch.Tensor, in_chans: int, mean: Sequence[float] = IMAGENET_MEAN,
              std: Sequence[float] = IMAGENET_STD) -> torch.Tensor:
    """float ``[..., 1, H, W]`` in [0, 1] -> ``[..., C, H, W]``: replicated to 3 channels with
    ``mean``/``std`` (per channel; the backbone's timm data config, default ImageNet), or one
    channel with the means of those values (ImageNet: 0.449, 0.226)."""
    if in_chans == 1:
        return (img - sum(mean) / len(mean)) / (sum(std) / len(std))
    m = img.new_tensor(tuple(mean)).view(3, 1, 1)
    s = img.new_tensor(tuple(std)).view(3, 1, 1)
    return (img - m) / s


# ----------------------------------------------------------------------------- stream

def _select(src: Iterator[dict], wanted: dict[str, Counter]) -> Iterator[tuple[str, dict]]:
    """Raw tar samples -> ``(uid, sample)`` for this rank's examples (repeated as often as
    the epoch list holds the uid: padding)."""
    for sample in src:
        for uid, n in wanted.get(sample["__key__"], {}).items():
            for _ in range(n):
                yield uid, sample


def _shuffle(src: Iterator, buffer: int, rng: np.random.Generator) -> Iterator:
    """Seeded buffer shuffle (applied to raw bytes, before decoding)."""
    buf: list = []
    for item in src:
        buf.append(item)
        if len(buf) >= buffer:
            j = int(rng.integers(len(buf)))
            buf[j], buf[-1] = buf[-1], buf[j]
            yield buf.pop()
    rng.shuffle(buf)
    yield from buf


def _decode(src: Iterator[tuple[str, dict]], examples: dict[str, Example], prep: Preprocess,
            augment: Augment, rng: np.random.Generator) -> Iterator[dict[str, Any]]:
    for uid, sample in src:
        ex = examples[uid]
        doc = json.loads(sample["json"]) if "json" in sample else {}
        # flips and intensity shared by the views, affine per view (mammotrain.augment)
        params = augment.sample(rng, len(ex.views))
        image = torch.empty((len(ex.views), 1, *prep.hw), dtype=torch.float32)
        boxes, transforms = [], []
        for i, v in enumerate(ex.views):
            name = f"{v}.png"
            if name not in sample:
                raise DataError(f"{sample.get('__url__')}: {sample['__key__']}.{name} listed in "
                                "images.parquet is missing from the shard")
            px = decode_png16(sample[name])
            info = (doc.get("images") or {}).get(v, {})
            bits = (info.get("value_bits") or info.get("bits") or doc.get("value_bits")
                    or doc.get("bits"))
            img, b = prep(px, bits, (doc.get("boxes") or {}).get(v), False)
            image[i], b = apply_view(img, b, params[i])
            boxes.append(b)
            # the shard's original -> stored transform (it carries stored_size)
            transforms.append((doc.get("transform") or {}).get(v)
                              or {"stored_size": list(px.shape)})
        yield {"image": image, "label": ex.label, "uid": uid, "key": ex.key,
               "boxes": boxes, "transforms": transforms, "flipped": params[0].hflip}


def collate(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Examples -> batch: ``image`` float32 ``[B, V, 1, rows, cols]`` in [0, 1] (grayscale; see
    :class:`Preprocess`), ``label`` int64 ``[B]`` (-1 = unlabelled, inference only),
    ``uid``/``key`` lists of str, ``boxes`` list (B) of lists (V) of float32 ``[N, 4]``,
    ``transforms`` list (B) of lists (V) of the shard JSON's original -> stored transform
    (:class:`mammoprep.geometry.Transform` as a dict; at least ``stored_size``),
    ``flipped`` bool ``[B]``."""
    return {"image": torch.stack([s["image"] for s in samples]),
            "label": torch.tensor([s["label"] for s in samples], dtype=torch.int64),
            "uid": [s["uid"] for s in samples], "key": [s["key"] for s in samples],
            "boxes": [s["boxes"] for s in samples],
            "transforms": [s["transforms"] for s in samples],
            "flipped": torch.tensor([s["flipped"] for s in samples], dtype=torch.bool)}


def balanced_draw(uids: Sequence[str], labels: Sequence[int], rng: np.random.Generator
                  ) -> list[str]:
    """``len(uids)`` uids drawn with replacement, each with probability ``1 / (K * n_c)``
    (``n_c``: its class count, ``K``: classes present), so every class is equally likely."""
    counts = Counter(labels)
    p = np.array([1.0 / (len(counts) * counts[lab]) for lab in labels])
    idx = rng.choice(len(uids), size=len(uids), replace=True, p=p / p.sum())
    return [uids[i] for i in idx]


# ----------------------------------------------------------------------- distribution

def assign_shards(counts: Sequence[int], parts: int) -> list[list[int]]:
    """Split shards (``counts``: examples in each, in the given order) into ``parts`` lists
    of indices with near-equal example totals.

    Greedy: shards by decreasing count (ties in the given order, so a shuffled order gives a
    new split each epoch) each go to the part with the smallest total so far (ties: lowest
    part). Every index lands in exactly one part, given order kept within a part; with at
    least ``parts`` shards no part is empty and totals differ by at most ``max(counts)``."""
    if parts < 1:
        raise ValueError(f"parts must be >= 1, got {parts}")
    out: list[list[int]] = [[] for _ in range(parts)]
    heap = [(0, p) for p in range(parts)]  # (total, part): heapq pops the smallest
    for i in sorted(range(len(counts)), key=lambda i: -counts[i]):
        total, p = heapq.heappop(heap)
        out[p].append(i)
        heapq.heappush(heap, (total + int(counts[i]), p))
    return [sorted(o) for o in out]


def fit_length(uids: Sequence[str], n: int) -> list[str]:
    """``uids`` cut to ``n`` entries, or repeated from the head up to ``n``."""
    if not uids:
        return []
    return (list(uids) * math.ceil(n / len(uids)))[:n]


class _CountingReader:
    """A binary file that adds the bytes it returns to ``counter[name]``."""

    def __init__(self, path: Path, counter: Counter):
        self._fh, self._name, self._counter = open(path, "rb"), path.name, counter

    def read(self, n: int = -1) -> bytes:
        data = self._fh.read(n)
        self._counter[self._name] += len(data)
        return data

    def close(self) -> None:
        self._fh.close()


def _open_counted(src: Iterator[dict], counter: Counter, handler: Callable
                  ) -> Iterator[dict]:
    """``{'url'}`` -> ``{'url', 'stream'}`` (webdataset's url_opener for local tars, counting
    the bytes read per shard in ``counter``)."""
    for sample in src:
        try:
            stream = _CountingReader(Path(sample["url"]), counter)
        except OSError as exc:
            exc.args = exc.args + (sample["url"],)
            if handler(exc):
                continue
            break
        try:
            yield {**sample, "stream": stream}
        finally:
            stream.close()


#: how :class:`ShardStream` deals an epoch to ranks: 'shards' (each rank reads its own
#: shards; falls back to 'examples' with fewer shards than ranks) or 'examples' (examples
#: dealt one by one: every rank reads every shard holding one of its examples)
DISTRIBUTE = ("shards", "examples")


class ShardStream(torch.utils.data.IterableDataset):
    """Examples streamed from the shard tars with webdataset (one rank's share).

    Each ``__iter__`` is one epoch (:meth:`epoch_plan`): the epoch's examples (training:
    permuted with ``(seed, epoch)``, or drawn class-balanced) are grouped by shard; the shard
    list (training: shuffled per epoch) is split across ranks with near-equal example counts
    (:func:`assign_shards`), so each shard is read by one rank only; a training rank's
    examples are permuted and cut or repeated to ``ceil(N / world)`` (equal steps on every
    rank, no DDP wait at the epoch end), an evaluating rank keeps exactly its shards'
    examples (every example once over all ranks). Within a rank, its shards are split across
    DataLoader workers the same way; each worker reads its tars, keeps its examples, shuffles
    them in a seeded buffer of ``shuffle_buffer`` raw samples (training), then decodes and
    preprocesses. Yields dicts as taken by :func:`collate`; ``len()`` = this rank's examples
    per epoch.

    distribute: :data:`DISTRIBUTE`.
    handler: webdataset error handler for unreadable tar members (default: raise).
    augment: training augmentation (:class:`mammotrain.augment.Augment`; default: a
        horizontal flip with probability ``flip_p``); evaluation streams never augment.
    balanced: training only: the epoch list is drawn with replacement, every class equally
        likely (each example weighted by 1 / its class count; same length, seeded per epoch).
    bytes_read: bytes read from each tar (Counter: shard name -> bytes) by iterations in this
        process (DataLoader workers count in their own copies).
    """

    def __init__(self, root: str | Path, examples: Sequence[Example], prep: Preprocess, *,
                 train: bool, seed: int = 0, rank: int = 0, world: int = 1, flip_p: float = 0.5,
                 shuffle_buffer: int = 256, handler: Callable | None = None,
                 balanced: bool = False, distribute: str = "shards",
                 augment: Augment | None = None):
        super().__init__()
        if not examples:
            raise DataError(f"{root}: no examples to stream (empty split)")
        if distribute not in DISTRIBUTE:
            raise ValueError(f"distribute must be one of {', '.join(DISTRIBUTE)}, "
                             f"got {distribute!r}")
        if not 0 <= rank < world:
            raise ValueError(f"rank must be in [0, world={world}), got {rank}")
        self.root = Path(root)
        self.examples = {e.uid: e for e in examples}
        if len(self.examples) != len(examples):
            raise DataError(f"{root}: duplicate example uids")
        self.prep = prep
        self.train, self.seed, self.rank, self.world = train, seed, rank, world
        # training augmentation (default: the horizontal flip of flip_p); none in evaluation
        self.augment = (augment or Augment(hflip=flip_p)) if train else Augment()
        self.shuffle_buffer = int(shuffle_buffer)
        self.handler = handler
        self.balanced = bool(balanced and train)
        self.distribute = distribute
        self.epoch = 0
        self.bytes_read: Counter = Counter()

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        if self.train:
            return math.ceil(len(self.examples) / self.world)
        return len(self.epoch_uids())

    def _epoch_list(self) -> list[str]:
        """Every uid of the epoch, all ranks (training: permuted or class-balanced draw with
        ``(seed, epoch)``; evaluation: sorted)."""
        uids = sorted(self.examples)
        if not self.train:
            return uids
        rng = np.random.default_rng([self.seed, self.epoch, 11])
        if self.balanced:
            return balanced_draw(uids, [self.examples[u].label for u in uids], rng)
        return [uids[i] for i in rng.permutation(len(uids))]

    def epoch_plan(self) -> tuple[list[str], list[str]]:
        """(this rank's uids, the shards it reads, in reading order) for the current epoch.
        Training: ``len(self)`` uids on every rank (repeats where a rank is short)."""
        uids = self._epoch_list()
        by_shard: dict[str, list[str]] = defaultdict(list)
        for u in uids:
            by_shard[self.examples[u].shard].append(u)
        shards = sorted(by_shard)
        if self.train:
            order = np.random.default_rng([self.seed, self.epoch, 13]).permutation(len(shards))
            shards = [shards[i] for i in order]
        if self.world == 1 or (self.distribute == "shards" and len(shards) >= self.world):
            part = assign_shards([len(by_shard[s]) for s in shards], self.world)[self.rank]
            shards = [shards[i] for i in part]
            mine = [u for s in shards for u in by_shard[s]]
            if self.train:
                rng = np.random.default_rng([self.seed, self.epoch, self.rank, 17])
                mine = fit_length([mine[i] for i in rng.permutation(len(mine))], len(self))
        else:  # dealt one by one (every rank may read every shard)
            if self.train:
                uids = fit_length(uids, len(self) * self.world)
            mine = uids[self.rank::self.world]
        used = {self.examples[u].shard for u in mine}
        return mine, [s for s in shards if s in used]

    def epoch_uids(self) -> list[str]:
        """This rank's uids for the current epoch (:meth:`epoch_plan`)."""
        return self.epoch_plan()[0]

    def __iter__(self) -> Iterator[dict[str, Any]]:
        import webdataset as wds

        info = torch.utils.data.get_worker_info()
        wid, nworkers = (info.id, info.num_workers) if info else (0, 1)
        if info is not None:
            torch.set_num_threads(1)
        uids, shards = self.epoch_plan()
        wanted: dict[str, Counter] = defaultdict(Counter)
        per_shard: Counter = Counter()
        for uid in uids:
            wanted[self.examples[uid].key][uid] += 1
            per_shard[self.examples[uid].shard] += 1
        part = assign_shards([per_shard[s] for s in shards], nworkers)[wid]
        mine = [shards[i] for i in part]
        if not mine:
            return iter(())
        rng = np.random.default_rng([self.seed, self.epoch, self.rank, wid, int(self.train)])
        handler = self.handler or wds.reraise_exception
        stages: list = [wds.SimpleShardList([str(self.root / s) for s in mine]),
                        partial(_open_counted, counter=self.bytes_read, handler=handler),
                        partial(wds.tariterators.tar_file_expander, handler=handler),
                        partial(wds.tariterators.group_by_keys, handler=handler),
                        partial(_select, wanted=wanted)]
        if self.train and self.shuffle_buffer > 1:
            stages.append(partial(_shuffle, buffer=self.shuffle_buffer, rng=rng))
        stages.append(partial(_decode, examples=self.examples, prep=self.prep,
                              augment=self.augment, rng=rng))
        return iter(wds.DataPipeline(*stages))


# ------------------------------------------------------------------------ epoch loader

def _cat(parts: list[dict[str, Any]]) -> dict[str, Any]:
    if len(parts) == 1:
        return parts[0]
    out = {}
    for k, v in parts[0].items():
        out[k] = torch.cat([p[k] for p in parts]) if torch.is_tensor(v) else [
            x for p in parts for x in p[k]]
    return out


def _take(batch: dict[str, Any], a: int, b: int) -> dict[str, Any]:
    return {k: v[a:b] for k, v in batch.items()}


def rebatch(batches: Iterable[dict[str, Any]], size: int) -> Iterator[dict[str, Any]]:
    """Batches of any sizes (one per worker at a time) -> batches of exactly ``size``; the
    remainder comes last."""
    buf: list[dict[str, Any]] = []
    n = 0
    for b in batches:
        buf.append(b)
        n += len(b["label"])
        while n >= size:
            whole = _cat(buf)
            yield _take(whole, 0, size)
            rest = _take(whole, size, n)
            n -= size
            buf = [rest] if n else []
    if n:
        yield _cat(buf)


class EpochLoader:
    """Exactly :attr:`steps` batches per epoch from a :class:`ShardStream`.

    steps: from the manifest count of this rank's examples ``n``: training
    (``drop_last``) ``max(1, n // batch_size)``, evaluation ``ceil(n / batch_size)``; capped
    by ``max_steps``. Training restarts the stream if it ends early (so every rank runs the
    same number of steps); evaluation never repeats an example.
    """

    def __init__(self, stream: ShardStream, batch_size: int, *, workers: int = 0,
                 drop_last: bool | None = None, max_steps: int | None = None,
                 pin_memory: bool = False):
        self.stream = stream
        self.batch_size = int(batch_size)
        self.drop_last = stream.train if drop_last is None else drop_last
        n = len(stream)
        steps = max(1, n // self.batch_size) if self.drop_last else math.ceil(n / self.batch_size)
        self.steps = min(steps, max_steps) if max_steps else steps
        self.loader = torch.utils.data.DataLoader(
            stream, batch_size=self.batch_size, collate_fn=collate, num_workers=workers,
            pin_memory=pin_memory, persistent_workers=False,
            prefetch_factor=2 if workers else None)
        self.seen = 0

    def set_epoch(self, epoch: int) -> None:
        self.stream.set_epoch(epoch)

    def __len__(self) -> int:
        return self.steps

    def __iter__(self) -> Iterator[dict[str, Any]]:
        produced = 0
        self.seen = 0
        while produced < self.steps:
            got = 0
            for batch in rebatch(self.loader, self.batch_size):
                got += 1
                produced += 1
                self.seen += len(batch["label"])
                yield batch
                if produced >= self.steps:
                    return
            if got == 0:
                raise DataError(f"{self.stream.root}: the stream yielded no examples")
            if not self.stream.train:
                return
